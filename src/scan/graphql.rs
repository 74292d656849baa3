//! The scan over GraphQL: ⌈N/100⌉ requests, each listing a page of
//! projects and reading every Dockerfile path of each in the same query.
//! A page that times out or gets a 5xx is asked again at half the size
//! (100 → 50 → 25 …); an error on one project's repository (a Guest) marks
//! that project, not the page.

use std::sync::Arc;

use super::{
    now_millis, state_from_files, DockerfileState, FileRead, Progress, ProjectInfo, ScanOptions,
    ScannedProject,
};
use crate::gitlab::{GitLab, GitLabError, GraphQlProject};

/// GitLab's largest page (`default_max_page_size`).
pub const PAGE: usize = 100;

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
    let mut after: Option<String> = None;
    let mut size = PAGE;
    let mut scanned = Vec::new();
    loop {
        let fetched_at = now_millis();
        let page = match gitlab
            .graphql_projects(
                size,
                after.as_deref(),
                &opts.dockerfiles,
                opts.search.as_deref(),
            )
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
        for p in page.projects {
            scanned.push(scanned_project(p, opts, fetched_at).await);
            progress.fetched();
        }
        progress.listed(scanned.len());
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => return Ok(scanned),
        }
    }
}

async fn scanned_project(p: GraphQlProject, opts: &ScanOptions, fetched_at: i64) -> ScannedProject {
    let project = ProjectInfo::from(p.project);
    let dockerfile = if project.archived {
        DockerfileState::Archived
    } else {
        match p.files {
            Err(error) => DockerfileState::Unreadable { error },
            Ok(_) if project.empty_repo => DockerfileState::EmptyRepo,
            Ok(blobs) => {
                let limit = opts.max_file_bytes;
                let reads = opts
                    .dockerfiles
                    .iter()
                    .map(|path| {
                        let read = match blobs.iter().find(|b| &b.path == path) {
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
                        };
                        (path.clone(), read)
                    })
                    .collect();
                state_from_files(&project, reads, &opts.registry_host).await
            }
        }
    };
    ScannedProject {
        project,
        dockerfile,
        fetched_at,
    }
}
