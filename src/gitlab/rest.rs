//! The REST endpoints the tool uses: project listing (offset pages in
//! parallel, keyset past that, every loop bounded), files, pipelines and
//! their variables.

use reqwest::Method;
use serde::Deserialize;

use super::{encode_segment, Credential, FileContent, GitLab, GitLabError, Pipeline, Project};

/// Offset pagination is used up to this page (GitLab's own limit is 10,000
/// projects for counted pages; 100 per page).
const OFFSET_PAGES: usize = 100;
/// At most this many keyset pages (10 million projects).
const MAX_KEYSET_PAGES: usize = 100_000;

impl GitLab {
    /// Every project the token can see (`search` narrows it like GitLab's
    /// project search), sent page by page to `pages` as pages arrive, so
    /// callers can start on the first page while later ones load. Pages are
    /// fetched in parallel when GitLab reports the total; past offset
    /// pagination's limits, keyset pagination. A project created while
    /// paging may arrive twice: callers de-duplicate by id.
    pub async fn list_projects_paged(
        &self,
        search: Option<&str>,
        pages: tokio::sync::mpsc::UnboundedSender<Vec<Project>>,
    ) -> Result<(), GitLabError> {
        const PER_PAGE: usize = 100;
        let mut query: Vec<(&'static str, String)> = vec![
            ("order_by", "id".into()),
            ("sort", "asc".into()),
            ("per_page", PER_PAGE.to_string()),
        ];
        if let Some(s) = search {
            query.push(("search", s.to_string()));
        }
        let (headers, first): (_, Vec<Project>) = self.get_json("/projects", &query).await?;
        let first: Vec<Project> = first.into_iter().map(Project::cleaned).collect();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let total_pages = header("x-total-pages").and_then(|v| v.parse::<usize>().ok());
        let has_next = header("x-next-page").is_some_and(|v| !v.is_empty());
        let mut last = first.iter().map(|p| p.id).max().unwrap_or(0);
        let _ = pages.send(first);
        if !has_next {
            return Ok(());
        }
        // GitLab counts pages only up to 10,000 projects; a larger or absurd
        // `X-Total-Pages` (a broken or hostile answer) is not believed.
        match total_pages.filter(|t| (2..=OFFSET_PAGES).contains(t)) {
            Some(total) => {
                // Pages in flight are bounded by the client's concurrency.
                let mut tasks = tokio::task::JoinSet::new();
                let mut next = 2;
                loop {
                    while next <= total && tasks.len() < self.config.concurrency.max(1) {
                        let client = self.clone();
                        let mut q = query.clone();
                        q.push(("page", next.to_string()));
                        tasks.spawn(async move {
                            client
                                .get_json::<Vec<Project>>("/projects", &q)
                                .await
                                .map(|(_, p)| p.into_iter().map(Project::cleaned).collect())
                        });
                        next += 1;
                    }
                    let Some(result) = tasks.join_next().await else {
                        break;
                    };
                    let page = result.map_err(|e| GitLabError::Decode {
                        path: "/projects".into(),
                        detail: format!("a page could not be read: {e}"),
                    })??;
                    let _ = pages.send(page);
                }
            }
            None => {
                // Keyset from the last id seen: no offset ceiling, no count.
                // Every page must move forward, and there is a ceiling.
                for _ in 0..MAX_KEYSET_PAGES {
                    let mut q = query.clone();
                    q.push(("pagination", "keyset".into()));
                    q.push(("id_after", last.to_string()));
                    let (_, page): (_, Vec<Project>) = self.get_json("/projects", &q).await?;
                    let page: Vec<Project> = page.into_iter().map(Project::cleaned).collect();
                    let Some(max) = page.iter().map(|p| p.id).max() else {
                        return Ok(());
                    };
                    if max <= last {
                        return Err(GitLabError::Decode {
                            path: "/projects".into(),
                            detail: format!(
                                "keyset pagination made no progress (a page after id {last} ended at id {max})"
                            ),
                        });
                    }
                    let full = page.len() >= PER_PAGE;
                    let _ = pages.send(page);
                    last = max;
                    if !full {
                        return Ok(());
                    }
                }
                return Err(GitLabError::Decode {
                    path: "/projects".into(),
                    detail: format!(
                        "more than {MAX_KEYSET_PAGES} pages of projects; narrow the scan with --match"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Every project the token can see, sorted by id, without duplicates.
    pub async fn list_projects(&self, search: Option<&str>) -> Result<Vec<Project>, GitLabError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        self.list_projects_paged(search, tx).await?;
        let mut projects = Vec::new();
        while let Ok(page) = rx.try_recv() {
            projects.extend(page);
        }
        projects.sort_by_key(|p| p.id);
        projects.dedup_by_key(|p| p.id);
        Ok(projects)
    }

    pub async fn project(&self, id_or_path: &str) -> Result<Project, GitLabError> {
        let path = format!("/projects/{}", encode_segment(id_or_path));
        Ok(self.get_json::<Project>(&path, &[]).await?.1.cleaned())
    }

    /// A file's text on a ref; `None` when the ref or the file does not exist.
    pub async fn file(
        &self,
        project_id: u64,
        file_path: &str,
        git_ref: &str,
    ) -> Result<Option<FileContent>, GitLabError> {
        let path = format!(
            "/projects/{project_id}/repository/files/{}/raw",
            encode_segment(file_path)
        );
        match self
            .send(
                Method::GET,
                &path,
                &[("ref", git_ref.to_string())],
                None,
                self.config.max_file_bytes,
            )
            .await
        {
            Ok((headers, text)) => Ok(Some(FileContent {
                text,
                blob_id: headers
                    .get("x-gitlab-blob-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            })),
            Err(GitLabError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a pipeline on `git_ref`. With a job token this goes through
    /// the trigger API, which makes it a multi-project (downstream) pipeline.
    pub async fn create_pipeline(
        &self,
        project_id: u64,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Pipeline, GitLabError> {
        let (path, body) = match &self.credential {
            Credential::Token(_) => (
                format!("/projects/{project_id}/pipeline"),
                serde_json::json!({
                    "ref": git_ref,
                    "variables": variables.iter().map(|(k, v)| serde_json::json!({"key": k, "value": v})).collect::<Vec<_>>(),
                }),
            ),
            Credential::JobToken(token) => (
                format!("/projects/{project_id}/trigger/pipeline"),
                serde_json::json!({
                    "token": token,
                    "ref": git_ref,
                    "variables": variables
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect::<serde_json::Map<_, _>>(),
                }),
            ),
        };
        let body = match body {
            serde_json::Value::Object(mut map) if variables.is_empty() => {
                map.remove("variables");
                serde_json::Value::Object(map)
            }
            other => other,
        };
        let (_, text) = self
            .send(
                Method::POST,
                &path,
                &[],
                Some(&body),
                self.config.max_response_bytes,
            )
            .await?;
        serde_json::from_str::<Pipeline>(&text)
            .map(Pipeline::cleaned)
            .map_err(|e| GitLabError::Decode {
                path,
                detail: e.to_string(),
            })
    }

    /// Pipelines of a project on `git_ref` updated after `since`, newest
    /// first (one page of 20).
    pub async fn recent_pipelines(
        &self,
        project_id: u64,
        git_ref: &str,
        since: time::OffsetDateTime,
    ) -> Result<Vec<Pipeline>, GitLabError> {
        let path = format!("/projects/{project_id}/pipelines");
        let since = since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let query = [
            ("ref", git_ref.to_string()),
            ("updated_after", since),
            ("order_by", "id".to_string()),
            ("sort", "desc".to_string()),
            ("per_page", "20".to_string()),
        ];
        let (_, list) = self.get_json::<Vec<Pipeline>>(&path, &query).await?;
        Ok(list.into_iter().map(Pipeline::cleaned).collect())
    }

    /// The variables a pipeline was created with.
    pub async fn pipeline_variables(
        &self,
        project_id: u64,
        pipeline_id: u64,
    ) -> Result<Vec<(String, String)>, GitLabError> {
        #[derive(Deserialize)]
        struct Variable {
            key: String,
            #[serde(default)]
            value: String,
        }
        let path = format!("/projects/{project_id}/pipelines/{pipeline_id}/variables");
        let (_, list) = self.get_json::<Vec<Variable>>(&path, &[]).await?;
        Ok(list.into_iter().map(|v| (v.key, v.value)).collect())
    }

    pub async fn pipeline(
        &self,
        project_id: u64,
        pipeline_id: u64,
    ) -> Result<Pipeline, GitLabError> {
        let path = format!("/projects/{project_id}/pipelines/{pipeline_id}");
        Ok(self.get_json::<Pipeline>(&path, &[]).await?.1.cleaned())
    }
}
