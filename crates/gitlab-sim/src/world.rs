//! The simulated instance's state: projects, branches with files, registry
//! images, pipelines and their scheduled behaviour, tokens and webhooks.
//! Plain data and the operations GitLab performs on it; no HTTP here.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// GitLab pipeline statuses (see `GITLAB_API.md` §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Created,
    WaitingForResource,
    Preparing,
    Pending,
    Running,
    Success,
    Failed,
    Canceling,
    Canceled,
    Skipped,
    Manual,
    Scheduled,
}

impl PipelineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Created => "created",
            PipelineStatus::WaitingForResource => "waiting_for_resource",
            PipelineStatus::Preparing => "preparing",
            PipelineStatus::Pending => "pending",
            PipelineStatus::Running => "running",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceling => "canceling",
            PipelineStatus::Canceled => "canceled",
            PipelineStatus::Skipped => "skipped",
            PipelineStatus::Manual => "manual",
            PipelineStatus::Scheduled => "scheduled",
        }
    }

    /// Finished for good, or resting (`manual`) until someone acts.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            PipelineStatus::Success
                | PipelineStatus::Failed
                | PipelineStatus::Canceled
                | PipelineStatus::Skipped
                | PipelineStatus::Manual
        )
    }
}

/// How a project's pipelines end, and how long they take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineBehaviour {
    /// Time from creation to the final status.
    #[serde(with = "millis", rename = "duration_ms")]
    pub duration: Duration,
    pub outcome: PipelineStatus,
}

impl Default for PipelineBehaviour {
    fn default() -> Self {
        PipelineBehaviour {
            duration: Duration::from_millis(300),
            outcome: PipelineStatus::Success,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[derive(Debug, Clone)]
pub struct FileBlob {
    pub content: Vec<u8>,
    pub blob_id: String,
    pub last_commit_id: String,
}

#[derive(Debug, Clone)]
pub struct Branch {
    pub commit: String,
    pub files: BTreeMap<String, FileBlob>,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: u64,
    pub namespace_id: u64,
    /// As created, capitals preserved (`Group/Sub/Proj`).
    pub path_with_namespace: String,
    pub default_branch: String,
    pub archived: bool,
    pub visibility: String,
    pub branches: BTreeMap<String, Branch>,
    /// Registry repository names below the project path ("" = the root image).
    pub images: Vec<String>,
    pub trigger_token: String,
    pub pipeline: PipelineBehaviour,
    pub created_at: OffsetDateTime,
    pub last_activity_at: OffsetDateTime,
    /// The token's user is only a Guest here: it sees the project but
    /// cannot read its repository or create pipelines (403).
    pub guest: bool,
    /// The project's settings let no one set pipeline variables
    /// (`ci_pipeline_variables_minimum_override_role: no_one_allowed`).
    pub pipeline_variables_forbidden: bool,
}

impl Project {
    pub fn path(&self) -> &str {
        self.path_with_namespace
            .rsplit('/')
            .next()
            .unwrap_or(&self.path_with_namespace)
    }

    pub fn namespace_path(&self) -> &str {
        match self.path_with_namespace.rfind('/') {
            Some(i) => &self.path_with_namespace[..i],
            None => "",
        }
    }

    pub fn empty_repo(&self) -> bool {
        self.branches.is_empty()
    }

    /// Resolves a ref (branch, `HEAD` or a branch's commit SHA) to a branch.
    pub fn resolve_ref(&self, reference: &str) -> Option<(&str, &Branch)> {
        let name = if reference == "HEAD" {
            self.default_branch.as_str()
        } else {
            reference
        };
        if let Some((n, b)) = self.branches.get_key_value(name) {
            return Some((n.as_str(), b));
        }
        self.branches
            .iter()
            .find(|(_, b)| b.commit == reference)
            .map(|(n, b)| (n.as_str(), b))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    pub id: u64,
    pub iid: u64,
    pub project_id: u64,
    pub project_path: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub status: PipelineStatus,
    /// `api`, `trigger`, `pipeline` (job token), `push`, `web`.
    pub source: String,
    pub variables: Vec<(String, String)>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// `X-Gitlab-Event-UUID` of the request that created it, if any.
    pub event_uuid: Option<String>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    Api,
    ReadApi,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    pub token: Option<String>,
}

#[derive(Debug, Default)]
pub struct World {
    pub projects: BTreeMap<u64, Project>,
    by_path: HashMap<String, u64>,
    pub pipelines: BTreeMap<u64, Pipeline>,
    pub tokens: HashMap<String, TokenScope>,
    pub job_tokens: Vec<String>,
    pub webhooks: Vec<Webhook>,
    /// Projects whose hook deliveries are dropped, as GitLab does while a
    /// hook is paused or disabled after failures.
    pub paused_hooks: std::collections::HashSet<String>,
    /// Hooks made through the project hooks API, by id.
    pub project_hooks: BTreeMap<u64, crate::project_hooks::ProjectHook>,
    pub next_hook_id: u64,
    /// Days until the tokens expire, as `/personal_access_tokens/self`
    /// says (365 unless a test changes it).
    pub token_days_left: i64,
    next_project_id: u64,
    next_pipeline_id: u64,
    commit_counter: u64,
}

/// A 40-hex-digit id, like a git SHA, derived from the input.
pub fn fake_sha(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p);
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    digest[..20].iter().map(|b| format!("{b:02x}")).collect()
}

impl World {
    pub fn project_by_path(&self, path: &str) -> Option<&Project> {
        let id = self.by_path.get(&path.to_lowercase())?;
        self.projects.get(id)
    }

    /// `:id` as GitLab reads it: digits, or a (decoded) full path.
    pub fn find_project(&self, id_or_path: &str) -> Option<&Project> {
        if !id_or_path.is_empty() && id_or_path.bytes().all(|b| b.is_ascii_digit()) {
            return id_or_path
                .parse()
                .ok()
                .and_then(|id| self.projects.get(&id));
        }
        if !id_or_path.contains('/') {
            return None;
        }
        self.project_by_path(id_or_path)
    }

    fn next_commit(&mut self, seed: &str) -> String {
        self.commit_counter += 1;
        fake_sha(&[seed.as_bytes(), &self.commit_counter.to_le_bytes()])
    }

    /// Adds a project; `files` per branch. Returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn add_project(
        &mut self,
        path_with_namespace: &str,
        default_branch: &str,
        branches: BTreeMap<String, BTreeMap<String, String>>,
        archived: bool,
        visibility: &str,
        images: Vec<String>,
        pipeline: PipelineBehaviour,
        now: OffsetDateTime,
    ) -> Result<u64, String> {
        let key = path_with_namespace.to_lowercase();
        if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
            return Err(format!("invalid project path {path_with_namespace:?}"));
        }
        if self.by_path.contains_key(&key) {
            return Err(format!("project {path_with_namespace:?} already exists"));
        }
        self.next_project_id += 1;
        let id = self.next_project_id;
        let mut project_branches = BTreeMap::new();
        for (name, files) in branches {
            let commit = self.next_commit(&format!("{key}@{name}"));
            let files = files
                .into_iter()
                .map(|(path, content)| {
                    let blob = FileBlob {
                        blob_id: fake_sha(&[b"blob", content.as_bytes()]),
                        content: content.into_bytes(),
                        last_commit_id: commit.clone(),
                    };
                    (path, blob)
                })
                .collect();
            project_branches.insert(name, Branch { commit, files });
        }
        let namespace = key.rfind('/').map(|i| &key[..i]).unwrap_or("");
        let project = Project {
            id,
            namespace_id: 1000 + namespace_number(namespace),
            path_with_namespace: path_with_namespace.to_string(),
            default_branch: default_branch.to_string(),
            archived,
            visibility: visibility.to_string(),
            branches: project_branches,
            images,
            trigger_token: format!("glptt-{}", &fake_sha(&[key.as_bytes(), b"trigger"])[..20]),
            pipeline,
            created_at: now,
            last_activity_at: now,
            guest: false,
            pipeline_variables_forbidden: false,
        };
        self.by_path.insert(key, id);
        self.projects.insert(id, project);
        Ok(id)
    }

    /// Writes one file on a branch as a new commit. Returns
    /// `(before, after, added)` where `added` says the file is new.
    pub fn commit_file(
        &mut self,
        project_id: u64,
        branch: &str,
        path: &str,
        content: &str,
        now: OffsetDateTime,
    ) -> Result<(String, String, bool), String> {
        let commit = self.next_commit(&format!("{project_id}@{branch}:{path}"));
        let project = self
            .projects
            .get_mut(&project_id)
            .ok_or_else(|| format!("no project {project_id}"))?;
        let zero = "0".repeat(40);
        let entry = project
            .branches
            .entry(branch.to_string())
            .or_insert_with(|| Branch {
                commit: zero.clone(),
                files: BTreeMap::new(),
            });
        let before = std::mem::replace(&mut entry.commit, commit.clone());
        let added = !entry.files.contains_key(path);
        entry.files.insert(
            path.to_string(),
            FileBlob {
                blob_id: fake_sha(&[b"blob", content.as_bytes()]),
                content: content.as_bytes().to_vec(),
                last_commit_id: commit.clone(),
            },
        );
        project.last_activity_at = now;
        Ok((before, commit, added))
    }

    /// Creates a pipeline in `created` state.
    pub fn create_pipeline(
        &mut self,
        project_id: u64,
        branch: &str,
        source: &str,
        variables: Vec<(String, String)>,
        event_uuid: Option<String>,
        now: OffsetDateTime,
    ) -> Pipeline {
        self.next_pipeline_id += 1;
        let id = self.next_pipeline_id;
        let iid = self
            .pipelines
            .values()
            .filter(|p| p.project_id == project_id)
            .count() as u64
            + 1;
        let project = &self.projects[&project_id];
        let sha = project
            .branches
            .get(branch)
            .map(|b| b.commit.clone())
            .unwrap_or_default();
        let pipeline = Pipeline {
            id,
            iid,
            project_id,
            project_path: project.path_with_namespace.clone(),
            git_ref: branch.to_string(),
            sha,
            status: PipelineStatus::Created,
            source: source.to_string(),
            variables,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            event_uuid,
        };
        self.pipelines.insert(id, pipeline.clone());
        pipeline
    }
}

fn namespace_number(namespace: &str) -> u64 {
    namespace
        .bytes()
        .fold(0u64, |acc, b| acc.wrapping_mul(31).wrapping_add(b as u64))
        % 1_000_000
}
