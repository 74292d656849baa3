//! The scan over GraphQL: ⌈N/100⌉ requests, each listing a page of
//! projects and reading every Dockerfile path of each in the same query.
//! A page that times out or gets a 5xx is asked again at half the size
//! (100 → 50 → 25 …); an error on one project's repository (a Guest) marks
//! that project, not the page.

use std::sync::Arc;

use std::collections::HashMap;

use super::{
    dockerfiles_of, now_millis, read_config, state_from_files, DockerfileState, FileRead, Progress,
    ProjectInfo, ScanOptions, ScannedProject,
};
use crate::config::{ProjectConfig, CONFIG_FILE};
use crate::gitlab::{Blob, GitLab, GitLabError, GraphQlProject};

/// GitLab's largest page (`default_max_page_size`).
pub const PAGE: usize = 100;
/// Paths per query: each costs GitLab's count 2 at a page of 100 (a page
/// with 2 paths costs 65 of the 250 allowed, with 4 paths 73), so 40 keep
/// a query near 150.
pub const MAX_PATHS: usize = 40;

/// Whether `--api auto` falls back to REST after this error: GraphQL is
/// missing (404), disabled or forbidden, or refuses the query.
pub fn falls_back(e: &GitLabError) -> bool {
    matches!(
        e,
        GitLabError::NotFound { .. } | GitLabError::Forbidden { .. } | GitLabError::GraphQl { .. }
    ) || matches!(e, GitLabError::Status { status, .. } if *status == 400 || *status == 405)
}

/// Worth asking again with a smaller page.
fn is_overload(e: &GitLabError) -> bool {
    match e {
        GitLabError::Status { status, .. } => *status >= 500,
        GitLabError::NoAnswer { .. } | GitLabError::TooLarge { .. } => true,
        _ => false,
    }
}

pub(super) async fn scan(
    gitlab: &GitLab,
    opts: &ScanOptions,
    progress: Arc<dyn Progress>,
) -> Result<Vec<ScannedProject>, GitLabError> {
    let mut paths = opts.dockerfiles.clone();
    paths.push(CONFIG_FILE.to_string());
    let mut after: Option<String> = None;
    let mut size = PAGE;
    let mut scanned = Vec::new();
    loop {
        let fetched_at = now_millis();
        let page = match gitlab
            .graphql_projects(size, after.as_deref(), &paths, opts.search.as_deref(), None)
            .await
        {
            Ok(page) => page,
            Err(e) if is_overload(&e) && size > 1 => {
                size /= 2;
                tracing::warn!("a GraphQL page failed ({e}); asking for {size} projects at a time");
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some((score, limit)) = page.complexity {
            tracing::debug!(score, limit, size, "GraphQL page");
        }
        let extra = read_configured(gitlab, opts, &page.projects).await?;
        for p in page.projects {
            let more = extra.get(&p.project.id).cloned().unwrap_or_default();
            scanned.push(scanned_project(p, more, opts, fetched_at).await);
            progress.fetched();
        }
        progress.listed(scanned.len());
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => return Ok(scanned),
        }
    }
}

/// The configuration a project's blobs carry.
fn config_of(p: &GraphQlProject) -> (Option<ProjectConfig>, Option<String>) {
    let blobs = p.files.as_deref().unwrap_or_default();
    read_config(&file_read(blobs, CONFIG_FILE, usize::MAX))
}

/// Paths named only in projects' `.autodep.yml`: one more query, for just
/// those projects, returning each one's blobs.
async fn read_configured(
    gitlab: &GitLab,
    opts: &ScanOptions,
    page: &[GraphQlProject],
) -> Result<HashMap<u64, Vec<Blob>>, GitLabError> {
    let mut ids = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    for p in page {
        let (config, _) = config_of(p);
        let own = dockerfiles_of(config.as_ref(), opts);
        let missing: Vec<&String> = own
            .iter()
            .filter(|d| !opts.dockerfiles.contains(d))
            .collect();
        if !missing.is_empty() {
            ids.push(p.project.id);
            for m in missing {
                if !paths.contains(m) {
                    paths.push(m.clone());
                }
            }
        }
    }
    let mut out: HashMap<u64, Vec<Blob>> = HashMap::new();
    for chunk in ids.chunks(PAGE) {
        for some_paths in paths.chunks(MAX_PATHS) {
            let page = gitlab
                .graphql_projects(PAGE, None, some_paths, None, Some(chunk))
                .await?;
            for p in page.projects {
                if let Ok(blobs) = p.files {
                    out.entry(p.project.id).or_default().extend(blobs);
                }
            }
        }
    }
    Ok(out)
}

fn file_read(blobs: &[Blob], path: &str, limit: usize) -> FileRead {
    match blobs.iter().find(|b| b.path == path) {
        None => FileRead::Missing,
        Some(b) if b.size as usize > limit => FileRead::TooLarge { limit },
        Some(b) => match &b.text {
            Some(text) => FileRead::Found {
                text: text.clone(),
                blob_id: Some(b.oid.clone()),
            },
            // A binary file is no Dockerfile.
            None => FileRead::Missing,
        },
    }
}

async fn scanned_project(
    p: GraphQlProject,
    more: Vec<Blob>,
    opts: &ScanOptions,
    fetched_at: i64,
) -> ScannedProject {
    let (config, config_error) = config_of(&p);
    let project = ProjectInfo::from(p.project);
    let dockerfile = if project.archived {
        DockerfileState::Archived
    } else {
        match p.files {
            Err(error) => DockerfileState::Unreadable { error },
            Ok(_) if project.empty_repo => DockerfileState::EmptyRepo,
            Ok(mut blobs) => {
                blobs.extend(more);
                let reads = dockerfiles_of(config.as_ref(), opts)
                    .iter()
                    .map(|path| (path.clone(), file_read(&blobs, path, opts.max_file_bytes)))
                    .collect();
                state_from_files(&project, reads, &opts.registry_host).await
            }
        }
    };
    ScannedProject {
        project,
        dockerfile,
        fetched_at,
        config,
        config_error,
    }
}
