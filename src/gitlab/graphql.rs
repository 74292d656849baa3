//! The scan over GraphQL: one request lists a page of up to 100 projects
//! and reads the files asked for in each (`repository.blobs(paths:)`, on
//! each project's default branch). Wire types stay here; what leaves is a
//! [`GraphQlPage`].

use serde::Deserialize;

use super::wire::clean;
use super::{GitLab, GitLabError, Project};

/// Measured with GitLab's own count (`queryComplexity`): about 60 of the
/// 250 allowed at 100 projects and two paths (BENCHMARKS.md).
const SCAN_QUERY: &str =
    "query Scan($first: Int!, $after: String, $paths: [String!]!, $search: String) {
  queryComplexity { score limit }
  projects(first: $first, after: $after, search: $search) {
    pageInfo { hasNextPage endCursor }
    nodes {
      id fullPath archived webUrl
      repository { rootRef empty blobs(paths: $paths) { nodes { path oid size rawTextBlob } } }
    }
  }
}";

/// One file of a project as GraphQL gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub path: String,
    pub oid: String,
    pub size: u64,
    /// `None` for a binary file.
    pub text: Option<String>,
}

/// One project of a page: what the REST listing says of it, and its files
/// (or why they could not be read: a Guest sees the project, not its code).
#[derive(Debug, Clone)]
pub struct GraphQlProject {
    pub project: Project,
    pub files: Result<Vec<Blob>, String>,
}

#[derive(Debug, Clone)]
pub struct GraphQlPage {
    pub projects: Vec<GraphQlProject>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
    /// GitLab's count of this query and its limit.
    pub complexity: Option<(u64, u64)>,
}

#[derive(Deserialize)]
struct Answer {
    data: Option<Data>,
    #[serde(default)]
    errors: Vec<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    message: String,
    #[serde(default)]
    path: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    query_complexity: Option<Complexity>,
    projects: Option<Connection>,
}

#[derive(Deserialize)]
struct Complexity {
    score: Option<u64>,
    limit: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection {
    page_info: PageInfo,
    nodes: Vec<Option<Node>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    id: String,
    full_path: String,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    web_url: String,
    repository: Option<Repository>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Repository {
    root_ref: Option<String>,
    #[serde(default)]
    empty: bool,
    blobs: Option<BlobNodes>,
}

#[derive(Deserialize)]
struct BlobNodes {
    nodes: Vec<WireBlob>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBlob {
    path: String,
    #[serde(default)]
    oid: String,
    /// GitLab's `BigInt` arrives as a string; the simulator's as a number.
    #[serde(default)]
    size: Option<serde_json::Value>,
    raw_text_blob: Option<String>,
}

/// `gid://gitlab/Project/123` → 123.
fn project_id(gid: &str) -> Option<u64> {
    gid.rsplit('/').next()?.parse().ok()
}

impl GitLab {
    /// One page of projects (all, or those of `ids`) with the files at
    /// `paths` of each.
    pub async fn graphql_projects(
        &self,
        first: usize,
        after: Option<&str>,
        paths: &[String],
        search: Option<&str>,
        ids: Option<&[u64]>,
    ) -> Result<GraphQlPage, GitLabError> {
        let ids: Option<Vec<String>> = ids.map(|ids| {
            ids.iter()
                .map(|id| format!("gid://gitlab/Project/{id}"))
                .collect()
        });
        let body = serde_json::json!({
            "query": SCAN_QUERY,
            "variables": {"first": first, "after": after, "paths": paths, "search": search, "ids": ids},
        });
        let text = self
            .post_graphql(&body, self.config.max_response_bytes)
            .await?;
        let answer: Answer = serde_json::from_str(&text).map_err(|e| GitLabError::Decode {
            path: "/graphql".into(),
            detail: e.to_string(),
        })?;
        decode_page(answer)
    }
}

/// The page, with each error that names a project's repository attached
/// to that project; an error that names no project refuses the query.
fn decode_page(answer: Answer) -> Result<GraphQlPage, GitLabError> {
    let refused = |message: String| GitLabError::GraphQl { message };
    let mut per_node = std::collections::HashMap::new();
    for e in &answer.errors {
        match (
            e.path.first().and_then(|p| p.as_str()),
            e.path.get(2).and_then(|i| i.as_u64()),
        ) {
            (Some("projects"), Some(index)) => {
                per_node.insert(index as usize, e.message.clone());
            }
            _ => return Err(refused(e.message.clone())),
        }
    }
    let data = answer
        .data
        .ok_or_else(|| refused("an answer without data".into()))?;
    let connection = data
        .projects
        .ok_or_else(|| refused("an answer without projects".into()))?;
    let mut projects = Vec::new();
    for (index, node) in connection.nodes.into_iter().enumerate() {
        let Some(node) = node else { continue };
        let Some(id) = project_id(&node.id) else {
            continue;
        };
        // A repository we may not read: its default branch is unknown,
        // and it is not called empty.
        let (default_branch, empty, files) = match (node.repository, per_node.remove(&index)) {
            (_, Some(error)) => (None, false, Err(error)),
            (None, None) => (None, false, Err("no repository in the answer".into())),
            (Some(r), None) => {
                let blobs = r.blobs.map(|b| b.nodes).unwrap_or_default();
                let empty = r.empty || r.root_ref.is_none();
                (r.root_ref, empty, Ok(blobs.into_iter().map(blob).collect()))
            }
        };
        let mut project = Project {
            id,
            path_with_namespace: node.full_path,
            empty_repo: empty,
            default_branch,
            archived: node.archived,
            web_url: node.web_url,
        };
        project = project.cleaned();
        projects.push(GraphQlProject { project, files });
    }
    Ok(GraphQlPage {
        projects,
        next: connection
            .page_info
            .has_next_page
            .then_some(connection.page_info.end_cursor)
            .flatten(),
        complexity: data
            .query_complexity
            .and_then(|c| Some((c.score?, c.limit?))),
    })
}

fn blob(b: WireBlob) -> Blob {
    let size = match &b.size {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let mut path = b.path;
    clean(&mut path);
    Blob {
        size: size.unwrap_or_else(|| b.raw_text_blob.as_ref().map_or(0, |t| t.len() as u64)),
        path,
        oid: b.oid,
        text: b.raw_text_blob,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_on_a_project_mark_that_project_and_others_refuse_the_query() {
        let answer: Answer = serde_json::from_value(serde_json::json!({
            "data": {"projects": {"pageInfo": {"hasNextPage": true, "endCursor": "c2"}, "nodes": [
                {"id": "gid://gitlab/Project/7", "fullPath": "g/a", "archived": false, "webUrl": "",
                 "repository": {"rootRef": "main", "empty": false, "blobs": {"nodes": [
                    {"path": "Dockerfile", "oid": "ab", "size": "12", "rawTextBlob": "FROM alpine\n"}]}}},
                {"id": "gid://gitlab/Project/8", "fullPath": "g/secret", "archived": false, "webUrl": "", "repository": null}
            ]}},
            "errors": [{"message": "no permission", "path": ["projects", "nodes", 1, "repository"]}]
        }))
        .unwrap();
        let page = decode_page(answer).unwrap();
        assert_eq!(page.next.as_deref(), Some("c2"));
        assert_eq!(page.projects[0].project.id, 7);
        let files = page.projects[0].files.as_ref().unwrap();
        assert_eq!(files[0].size, 12);
        assert_eq!(page.projects[1].files, Err("no permission".to_string()));

        let refused: Answer = serde_json::from_value(serde_json::json!({
            "errors": [{"message": "Query has complexity of 300, which exceeds max complexity of 250"}]
        }))
        .unwrap();
        assert!(matches!(
            decode_page(refused),
            Err(GitLabError::GraphQl { .. })
        ));
    }
}
