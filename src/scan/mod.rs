//! From GitLab to the facts the graph is built from: every project, and for
//! each one its Dockerfile's base images. Fetches with bounded concurrency,
//! keeps going past a project that fails, and reports what it could not read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{self, ProjectConfig, CONFIG_FILE};
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
    /// The Dockerfile it is in, relative to the repository root.
    #[serde(default = "default_file")]
    pub file: String,
}

fn default_file() -> String {
    DOCKERFILE_PATH.to_string()
}

impl From<&BaseImage> for ScannedImage {
    fn from(b: &BaseImage) -> Self {
        ScannedImage {
            reference: b.reference.clone(),
            via: b.via.as_str().to_string(),
            line: b.line,
            unresolved: b.unresolved,
            file: default_file(),
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
    /// Its `.autodep.yml`, when it has a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ProjectConfig>,
    /// Why its `.autodep.yml` was not used (line and reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
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

/// Which API a scan reads through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// GraphQL, and REST when GraphQL is missing, disabled or refuses.
    #[default]
    Auto,
    GraphQl,
    Rest,
}

/// What a scan reads and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// GitLab's project search (`--match`).
    pub search: Option<String>,
    /// The registry host the build arguments name.
    pub registry_host: String,
    pub api: Api,
    /// Dockerfile paths read in every project (`--dockerfile`).
    pub dockerfiles: Vec<String>,
    /// A larger Dockerfile is `TooLarge` (`--max-dockerfile-size`; over
    /// REST the client's own cap enforces it while reading).
    pub max_file_bytes: usize,
}

impl ScanOptions {
    pub fn new(registry_host: &str) -> ScanOptions {
        ScanOptions {
            search: None,
            registry_host: registry_host.to_string(),
            api: Api::Auto,
            dockerfiles: vec![DOCKERFILE_PATH.to_string()],
            max_file_bytes: 1 << 20,
        }
    }
}

/// A project's configuration file as read: the configuration, or why it
/// is not used. No file is no configuration and no error.
pub fn read_config(read: &FileRead) -> (Option<ProjectConfig>, Option<String>) {
    match read {
        FileRead::Missing => (None, None),
        FileRead::TooLarge { .. } => (
            None,
            Some(format!(
                "{CONFIG_FILE}: larger than {} bytes; the defaults are used",
                config::MAX_CONFIG_BYTES
            )),
        ),
        FileRead::Found { text, .. } => match config::parse(text) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        },
    }
}

/// The Dockerfile paths of a project: its configuration's, else the
/// global list.
pub fn dockerfiles_of<'a>(
    config: Option<&'a ProjectConfig>,
    opts: &'a ScanOptions,
) -> &'a [String] {
    config
        .and_then(|c| c.dockerfiles.as_deref())
        .unwrap_or(&opts.dockerfiles)
}

/// One file as it was read.
#[derive(Debug, Clone)]
pub enum FileRead {
    Found {
        text: String,
        blob_id: Option<String>,
    },
    Missing,
    TooLarge {
        limit: usize,
    },
}

/// A project's state from its files: every image of every file found
/// (each recording its file); a file too large makes the project
/// `TooLarge` (reported, never half-read); none found is `Missing`.
/// Extraction runs on the blocking pool.
pub async fn state_from_files(
    project: &ProjectInfo,
    reads: Vec<(String, FileRead)>,
    registry_host: &str,
) -> DockerfileState {
    if let Some(limit) = reads.iter().find_map(|(_, r)| match r {
        FileRead::TooLarge { limit } => Some(*limit),
        _ => None,
    }) {
        return DockerfileState::TooLarge { limit };
    }
    let found: Vec<(String, String, Option<String>)> = reads
        .into_iter()
        .filter_map(|(path, r)| match r {
            FileRead::Found { text, blob_id } => Some((path, text, blob_id)),
            _ => None,
        })
        .collect();
    if found.is_empty() {
        return DockerfileState::Missing;
    }
    let args = ci_build_args(registry_host, project);
    let name = project.path.clone();
    let extracted = tokio::task::spawn_blocking(move || {
        let blob_id = found.first().and_then(|(_, _, b)| b.clone());
        let mut images = Vec::new();
        for (path, text, _) in &found {
            let extraction = dockerfile::extract(text, &args);
            for d in &extraction.diagnostics {
                tracing::debug!(project = %name, file = %path, line = d.line, "Dockerfile: {}", d.message);
            }
            images.extend(extraction.images.iter().map(|b| {
                let mut image = ScannedImage::from(b);
                image.file = path.clone();
                image
            }));
        }
        (blob_id, images)
    })
    .await;
    match extracted {
        Ok((blob_id, images)) => DockerfileState::Found { blob_id, images },
        Err(e) => DockerfileState::Failed {
            error: format!("reading the Dockerfile failed: {e}"),
        },
    }
}

/// Lists projects and reads their Dockerfiles, over the API the options
/// say. Fails only when the listing fails or GitLab is unreachable or
/// rejects the token; a single project's failure is recorded in its state.
pub async fn scan(
    gitlab: &GitLab,
    opts: &ScanOptions,
    progress: Arc<dyn Progress>,
) -> Result<Scan, GitLabError> {
    let started = Instant::now();
    let before = gitlab
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut projects = match opts.api {
        Api::Rest => rest::scan(gitlab, opts, progress).await?,
        Api::GraphQl => graphql::scan(gitlab, opts, progress).await?,
        Api::Auto => match graphql::scan(gitlab, opts, progress.clone()).await {
            Err(e) if graphql::falls_back(&e) => {
                tracing::warn!("GraphQL cannot be used ({e}); scanning over REST, one request per project and file");
                rest::scan(gitlab, opts, progress).await?
            }
            other => other?,
        },
    };
    projects.sort_by_key(|p| p.project.id);
    projects.dedup_by_key(|p| p.project.id);
    Ok(Scan {
        projects,
        requests: gitlab
            .stats()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            - before,
        elapsed: started.elapsed(),
    })
}

pub use rest::scan_project;

mod graphql;
mod rest;

pub use graphql::MAX_PATHS;

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
            config: None,
            config_error: None,
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
