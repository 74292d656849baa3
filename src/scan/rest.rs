//! The scan over REST: project pages (in parallel where GitLab says how
//! many), and for each project one request per Dockerfile path, read while
//! later pages still load.

use std::sync::Arc;

use super::{
    dockerfiles_of, now_millis, read_config, state_from_files, DockerfileState, FileRead, Progress,
    ProjectInfo, ScanOptions, ScannedProject,
};
use crate::config::{ProjectConfig, CONFIG_FILE};
use crate::gitlab::{GitLab, GitLabError, Project};

/// Reads one project's Dockerfiles on its default branch.
pub async fn scan_project(
    gitlab: &GitLab,
    project: Project,
    opts: &ScanOptions,
) -> Result<ScannedProject, GitLabError> {
    let fetched_at = now_millis();
    let project = ProjectInfo::from(project);
    let (dockerfile, config, config_error) = if project.archived {
        (DockerfileState::Archived, None, None)
    } else if project.empty_repo {
        (DockerfileState::EmptyRepo, None, None)
    } else {
        read_files(gitlab, &project, opts).await?
    };
    Ok(ScannedProject {
        project,
        dockerfile,
        fetched_at,
        config,
        config_error,
    })
}

/// One file on the default branch; `Err` with the project's state when
/// reading it says the project cannot be read.
async fn read_one(
    gitlab: &GitLab,
    project: &ProjectInfo,
    path: &str,
) -> Result<Result<FileRead, DockerfileState>, GitLabError> {
    let branch = project.default_branch.as_deref().unwrap_or("HEAD");
    Ok(Ok(match gitlab.file(project.id, path, branch).await {
        Ok(None) => FileRead::Missing,
        Ok(Some(file)) => FileRead::Found {
            text: file.text,
            blob_id: file.blob_id,
        },
        Err(GitLabError::TooLarge { limit, .. }) => FileRead::TooLarge { limit },
        Err(e @ GitLabError::Forbidden { .. }) => {
            return Ok(Err(DockerfileState::Unreadable {
                error: e.to_string(),
            }))
        }
        Err(e) if e.is_fatal() => return Err(e),
        Err(e) => {
            return Ok(Err(DockerfileState::Failed {
                error: e.to_string(),
            }))
        }
    }))
}

/// Its configuration file (one more request), then each Dockerfile path
/// it names (or the global ones).
async fn read_files(
    gitlab: &GitLab,
    project: &ProjectInfo,
    opts: &ScanOptions,
) -> Result<(DockerfileState, Option<ProjectConfig>, Option<String>), GitLabError> {
    let (config, config_error) = match read_one(gitlab, project, CONFIG_FILE).await? {
        Ok(read) => read_config(&read),
        Err(state) => return Ok((state, None, None)),
    };
    let mut reads = Vec::new();
    for path in dockerfiles_of(config.as_ref(), opts) {
        match read_one(gitlab, project, path).await? {
            Ok(read) => reads.push((path.clone(), read)),
            Err(state) => return Ok((state, config, config_error)),
        }
    }
    let state = state_from_files(project, reads, &opts.registry_host).await;
    Ok((state, config, config_error))
}

pub(super) async fn scan(
    gitlab: &GitLab,
    opts: &ScanOptions,
    progress: Arc<dyn Progress>,
) -> Result<Vec<ScannedProject>, GitLabError> {
    let (pages_tx, mut pages) = tokio::sync::mpsc::unbounded_channel();
    let lister = {
        let gitlab = gitlab.clone();
        let search = opts.search.clone();
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
            let opts = opts.clone();
            let progress = progress.clone();
            tasks.spawn(async move {
                let result = scan_project(&gitlab, project, &opts).await;
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
    Ok(scanned)
}
