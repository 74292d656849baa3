//! From GitLab to the facts the graph is built from: every project, and for
//! each one its Dockerfile's base images. Fetches with bounded concurrency,
//! keeps going past a project that fails, and reports what it could not read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dockerfile::{self, BaseImage, BuildArgs};
use crate::gitlab::{GitLab, GitLabError, Project};

/// Where the Dockerfile is read, relative to the repository root.
pub const DOCKERFILE_PATH: &str = "Dockerfile";

/// What the scan learned about one project's Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DockerfileState {
    Found {
        blob_id: Option<String>,
        images: Vec<ScannedImage>,
    },
    Missing,
    /// Not read: archived projects are never triggered.
    Archived,
    EmptyRepo,
    /// Larger than `--max-dockerfile-size`: not downloaded past the limit.
    TooLarge {
        limit: usize,
    },
    /// The token may see the project but not read its files (a Guest
    /// member: 403). Nothing a retry could fix; the scan is still complete.
    Unreadable {
        error: String,
    },
    /// Reading it failed; the graph may miss this project's edges.
    Failed {
        error: String,
    },
}

/// A base image as the scan records it (a Dockerfile `BaseImage`, stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedImage {
    pub reference: String,
    pub via: String,
    pub line: usize,
    pub unresolved: bool,
}

impl From<&BaseImage> for ScannedImage {
    fn from(b: &BaseImage) -> Self {
        ScannedImage {
            reference: b.reference.clone(),
            via: b.via.as_str().to_string(),
            line: b.line,
            unresolved: b.unresolved,
        }
    }
}

/// A project as the tool keeps it (the scan's result, stored between runs):
/// not GitLab's JSON, which stays in `gitlab::wire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectInfo {
    pub id: u64,
    /// `group/sub/project` as GitLab shows it (capitals kept).
    pub path: String,
    /// `None` for a project without a repository.
    pub default_branch: Option<String>,
    pub archived: bool,
    pub empty_repo: bool,
    pub web_url: String,
}

impl From<Project> for ProjectInfo {
    fn from(p: Project) -> ProjectInfo {
        ProjectInfo {
            id: p.id,
            path: p.path_with_namespace,
            default_branch: p.default_branch,
            archived: p.archived,
            empty_repo: p.empty_repo,
            web_url: p.web_url,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedProject {
    pub project: ProjectInfo,
    pub dockerfile: DockerfileState,
    /// When the read of its Dockerfile began (Unix milliseconds): of two
    /// reads of one project, the one begun later saw the newer commit. A
    /// push patch and a rescan racing each other are settled by it
    /// ([`ScannedProject::is_newer_than`], [`merge_scan`]).
    #[serde(default)]
    pub fetched_at: i64,
}

impl ScannedProject {
    /// This read began after `other`'s (ties go to this one: the later
    /// writer, as before the rule existed).
    pub fn is_newer_than(&self, other: &ScannedProject) -> bool {
        self.fetched_at >= other.fetched_at
    }
}

/// A finished rescan, begun at `started_at`, laid over what is known now:
/// for each project the newer read wins, so a push patch made while the
/// rescan ran is not undone by the rescan's older read. A project the
/// rescan did not list is dropped unless it was read after the rescan
/// began (a push to a project created meanwhile).
pub fn merge_scan(
    current: &BTreeMap<u64, ScannedProject>,
    scanned: Vec<ScannedProject>,
    started_at: i64,
) -> BTreeMap<u64, ScannedProject> {
    let mut merged: BTreeMap<u64, ScannedProject> = BTreeMap::new();
    for p in scanned {
        let entry = match current.get(&p.project.id) {
            Some(c) if !p.is_newer_than(c) => c.clone(),
            _ => p,
        };
        merged.insert(entry.project.id, entry);
    }
    for (id, c) in current {
        if !merged.contains_key(id) && c.fetched_at >= started_at {
            merged.insert(*id, c.clone());
        }
    }
    merged
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The result of a scan: projects (sorted by id) and the cost of getting them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Scan {
    pub projects: Vec<ScannedProject>,
    pub requests: u64,
    pub elapsed: Duration,
}

impl Scan {
    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.projects.iter().filter_map(|p| match &p.dockerfile {
            DockerfileState::Failed { error } => Some((p.project.path.as_str(), error.as_str())),
            _ => None,
        })
    }

    /// The graph may be missing edges.
    pub fn is_incomplete(&self) -> bool {
        self.failures().next().is_some()
    }
}

/// Told about scan progress (a progress bar, a log line).
pub trait Progress: Send + Sync {
    fn listed(&self, _projects: usize) {}
    fn fetched(&self) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// The build arguments GitLab CI jobs commonly pass to `docker build`.
pub fn ci_build_args(registry_host: &str, project: &ProjectInfo) -> BuildArgs {
    let path = project.path.to_lowercase();
    let namespace = path.rsplit_once('/').map(|(n, _)| n).unwrap_or("");
    BuildArgs::new()
        .with("CI_REGISTRY", registry_host)
        .with("CI_REGISTRY_IMAGE", &format!("{registry_host}/{path}"))
        .with("CI_PROJECT_PATH", &path)
        .with("CI_PROJECT_NAMESPACE", namespace)
}

/// Reads one project's Dockerfile on its default branch.
pub async fn scan_project(
    gitlab: &GitLab,
    project: Project,
    registry_host: &str,
) -> Result<ScannedProject, GitLabError> {
    let fetched_at = now_millis();
    let project = ProjectInfo::from(project);
    let dockerfile = if project.archived {
        DockerfileState::Archived
    } else if project.empty_repo {
        DockerfileState::EmptyRepo
    } else {
        let branch = project
            .default_branch
            .clone()
            .unwrap_or_else(|| "HEAD".into());
        match gitlab.file(project.id, DOCKERFILE_PATH, &branch).await {
            Ok(None) => DockerfileState::Missing,
            Ok(Some(file)) => {
                let args = ci_build_args(registry_host, &project);
                let path = project.path.clone();
                // CPU work of up to tens of milliseconds: off the async runtime.
                let images = tokio::task::spawn_blocking(move || {
                    let extraction = dockerfile::extract(&file.text, &args);
                    for d in &extraction.diagnostics {
                        tracing::debug!(project = %path, line = d.line, "Dockerfile: {}", d.message);
                    }
                    extraction.images.iter().map(ScannedImage::from).collect()
                })
                .await;
                match images {
                    Ok(images) => DockerfileState::Found {
                        blob_id: file.blob_id,
                        images,
                    },
                    Err(e) => DockerfileState::Failed {
                        error: format!("reading the Dockerfile failed: {e}"),
                    },
                }
            }
            Err(GitLabError::TooLarge { limit, .. }) => DockerfileState::TooLarge { limit },
            Err(e @ GitLabError::Forbidden { .. }) => DockerfileState::Unreadable {
                error: e.to_string(),
            },
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => DockerfileState::Failed {
                error: e.to_string(),
            },
        }
    };
    Ok(ScannedProject {
        project,
        dockerfile,
        fetched_at,
    })
}

/// Lists projects and reads every Dockerfile. Fails only when the listing
/// fails or GitLab is unreachable / rejects the token; a single project's
/// failure is recorded in its state.
pub async fn scan(
    gitlab: &GitLab,
    search: Option<&str>,
    registry_host: &str,
    progress: Arc<dyn Progress>,
) -> Result<Scan, GitLabError> {
    let started = Instant::now();
    let before = gitlab
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    // Read Dockerfiles while later project pages are still loading.
    let (pages_tx, mut pages) = tokio::sync::mpsc::unbounded_channel();
    let lister = {
        let gitlab = gitlab.clone();
        let search = search.map(str::to_string);
        tokio::spawn(async move {
            gitlab
                .list_projects_paged(search.as_deref(), pages_tx)
                .await
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut seen = std::collections::HashSet::new();
    while let Some(page) = pages.recv().await {
        for project in page.into_iter().filter(|p| seen.insert(p.id)) {
            let gitlab = gitlab.clone();
            let registry = registry_host.to_string();
            let progress = progress.clone();
            tasks.spawn(async move {
                let result = scan_project(&gitlab, project, &registry).await;
                progress.fetched();
                result
            });
        }
        progress.listed(seen.len());
    }
    if let Err(e) = lister.await.expect("listing task does not panic") {
        tasks.abort_all();
        return Err(e);
    }
    let mut scanned = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result.expect("scan task does not panic") {
            Ok(p) => scanned.push(p),
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    scanned.sort_by_key(|p| p.project.id);
    Ok(Scan {
        projects: scanned,
        requests: gitlab
            .stats()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            - before,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(id: u64, at: i64, blob: &str) -> ScannedProject {
        ScannedProject {
            project: ProjectInfo {
                id,
                path: format!("g/p{id}"),
                default_branch: Some("main".into()),
                archived: false,
                empty_repo: false,
                web_url: String::new(),
            },
            dockerfile: DockerfileState::Found {
                blob_id: Some(blob.into()),
                images: Vec::new(),
            },
            fetched_at: at,
        }
    }

    #[test]
    fn the_newer_read_of_each_project_wins_over_a_rescan() {
        let current: BTreeMap<u64, ScannedProject> = [
            (1, read(1, 150, "pushed during the scan")),
            (2, read(2, 50, "old")),
            (3, read(3, 160, "created and pushed during the scan")),
            (4, read(4, 50, "deleted since")),
        ]
        .into_iter()
        .collect();
        let scanned = vec![read(1, 120, "scan's older read"), read(2, 130, "scan")];
        let merged = merge_scan(&current, scanned, 100);
        let blob = |id| match &merged[&id].dockerfile {
            DockerfileState::Found { blob_id, .. } => blob_id.clone().unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(blob(1), "pushed during the scan");
        assert_eq!(blob(2), "scan");
        assert_eq!(blob(3), "created and pushed during the scan");
        assert!(!merged.contains_key(&4));
    }
}
