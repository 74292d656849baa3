//! `POST /api/graphql`: the subset of GitLab's GraphQL API a scan uses —
//! `projects` with cursor pagination (at most 100 a page), each project's
//! `repository { rootRef empty blobs(paths:) { nodes { path oid
//! rawTextBlob } } }`, and `queryComplexity { score limit }` — on a real
//! GraphQL implementation (async-graphql: schema, parser, validation), with
//! GitLab's limits and messages: complexity 250 (200 anonymous), depth 20
//! (15 anonymous), 10,000 characters of query, GitLab's field costs (a
//! connection doubles its children's cost at 100 nodes; a Gitaly field
//! costs one more; `blobs` one more per path). A Guest's `repository` is
//! `null` with an error carrying that project's path, as GitLab answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Error, Object, Schema, ServerError, SimpleObject,
    ValidationResult, ID,
};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::api::{matches_search, query_pairs};
use crate::auth::{error, identify, Caller};
use crate::world::Project;
use crate::Shared;

/// GitLab's limits (`app/graphql/gitlab_schema.rb`,
/// `app/controllers/graphql_controller.rb`).
pub const MAX_COMPLEXITY: usize = 250;
pub const ANONYMOUS_MAX_COMPLEXITY: usize = 200;
pub const MAX_DEPTH: usize = 20;
pub const ANONYMOUS_MAX_DEPTH: usize = 15;
pub const MAX_PAGE_SIZE: usize = 100;
pub const MAX_QUERY_SIZE: usize = 10_000;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/api/graphql", post(handle))
}

type GitLabSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

/// One request's view of the world: who asks, and the projects they see.
struct Viewer {
    projects: Vec<ProjectView>,
    limit: usize,
    score: Arc<AtomicUsize>,
}

/// A project as a resolver needs it (copied out of the world under its
/// lock, so resolvers never hold it).
#[derive(Clone)]
struct ProjectView {
    id: u64,
    full_path: String,
    archived: bool,
    web_url: String,
    last_activity_at: String,
    guest: bool,
    root_ref: Option<String>,
    /// Files of the default branch: path → (blob id, content).
    files: Arc<std::collections::BTreeMap<String, (String, Vec<u8>)>>,
}

impl ProjectView {
    fn of(p: &Project, base: &str) -> ProjectView {
        let branch = p.branches.get(&p.default_branch);
        let files = branch
            .map(|b| {
                b.files
                    .iter()
                    .map(|(path, blob)| {
                        (path.clone(), (blob.blob_id.clone(), blob.content.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        ProjectView {
            id: p.id,
            full_path: p.path_with_namespace.clone(),
            archived: p.archived,
            web_url: format!("{base}/{}", p.path_with_namespace),
            last_activity_at: crate::entities::iso(p.last_activity_at),
            guest: p.guest,
            root_ref: branch.map(|_| p.default_branch.clone()),
            files: Arc::new(files),
        }
    }
}

/// GitLab's connection cost: children plus the resolver's own, times
/// `1 + page × 0.01` (a page of 100 doubles it).
fn connection(child: usize, own: usize, first: Option<i32>) -> usize {
    let page = first
        .map(|f| f.clamp(0, MAX_PAGE_SIZE as i32) as usize)
        .unwrap_or(MAX_PAGE_SIZE);
    ((child + own) as f64 * (1.0 + page as f64 * 0.01)).ceil() as usize
}

struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Projects the caller can see, by id, oldest first.
    #[graphql(
        complexity = "connection(child_complexity, 1 + if search.is_some() { 5 } else { 0 }, first)"
    )]
    async fn projects(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
        membership: Option<bool>,
        ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<ProjectConnection> {
        let _ = membership; // every seeded project counts as the caller's
        let caller = ctx.data::<Viewer>()?;
        let terms: Vec<String> = search
            .map(|s| s.split_whitespace().map(str::to_lowercase).collect())
            .unwrap_or_default();
        let wanted: Option<Vec<u64>> = ids.map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().rsplit('/').next()?.parse().ok())
                .collect()
        });
        let start = match after {
            Some(cursor) => {
                decode_cursor(&cursor).ok_or_else(|| Error::new("Please provide a valid cursor"))?
            }
            None => 0,
        };
        let first = first.unwrap_or(MAX_PAGE_SIZE as i32);
        if first < 0 {
            return Err(Error::new(
                "Argument 'first' on Field 'projects' has an invalid value",
            ));
        }
        let page = (first as usize).min(MAX_PAGE_SIZE);
        let mut matching = caller
            .projects
            .iter()
            .filter(|p| p.id > start)
            .filter(|p| wanted.as_ref().is_none_or(|w| w.contains(&p.id)))
            .filter(|p| matches_search(&p.full_path, &terms, false));
        let nodes: Vec<ProjectNode> = matching
            .by_ref()
            .take(page)
            .cloned()
            .map(ProjectNode)
            .collect();
        let has_next_page = matching.next().is_some();
        let end_cursor = nodes.last().map(|n| encode_cursor(n.0.id));
        Ok(ProjectConnection {
            page_info: PageInfo {
                has_next_page,
                end_cursor,
            },
            nodes,
        })
    }

    /// The cost of this query as the server counts it, and the limit.
    #[graphql(complexity = 1)]
    async fn query_complexity(&self, ctx: &Context<'_>) -> async_graphql::Result<QueryComplexity> {
        let caller = ctx.data::<Viewer>()?;
        Ok(QueryComplexity {
            score: caller.score.load(Ordering::SeqCst) as i32,
            limit: caller.limit as i32,
        })
    }
}

fn encode_cursor(id: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{{\"id\":\"{id}\"}}"))
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value["id"].as_str()?.parse().ok()
}

#[derive(SimpleObject)]
struct QueryComplexity {
    score: i32,
    limit: i32,
}

#[derive(SimpleObject)]
struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

#[derive(SimpleObject)]
struct ProjectConnection {
    page_info: PageInfo,
    nodes: Vec<ProjectNode>,
}

struct ProjectNode(ProjectView);

#[Object(name = "Project")]
impl ProjectNode {
    async fn id(&self) -> ID {
        ID(format!("gid://gitlab/Project/{}", self.0.id))
    }

    async fn full_path(&self) -> &str {
        &self.0.full_path
    }

    async fn archived(&self) -> bool {
        self.0.archived
    }

    async fn web_url(&self) -> &str {
        &self.0.web_url
    }

    async fn last_activity_at(&self) -> &str {
        &self.0.last_activity_at
    }

    /// `null` with an error for a caller who may not read the code.
    async fn repository(&self) -> async_graphql::Result<Option<Repository>> {
        if self.0.guest {
            return Err(Error::new(
                "The resource that you are attempting to access does not exist or you don't have permission to perform this action",
            ));
        }
        Ok(Some(Repository(self.0.clone())))
    }
}

struct Repository(ProjectView);

#[Object]
impl Repository {
    /// The default branch (a Gitaly call).
    #[graphql(complexity = 2)]
    async fn root_ref(&self) -> Option<&str> {
        self.0.root_ref.as_deref()
    }

    #[graphql(complexity = 2)]
    async fn empty(&self) -> bool {
        self.0.root_ref.is_none()
    }

    #[graphql(complexity = 2)]
    async fn exists(&self) -> bool {
        true
    }

    /// The blobs at these paths on `ref` (default: the default branch);
    /// paths that do not exist are left out.
    #[graphql(complexity = "connection(child_complexity, 2 + paths.len(), None)")]
    async fn blobs(
        &self,
        paths: Vec<String>,
        #[graphql(name = "ref")] git_ref: Option<String>,
    ) -> async_graphql::Result<BlobConnection> {
        if let Some(r) = git_ref {
            if Some(r.as_str()) != self.0.root_ref.as_deref() {
                return Err(Error::new("Ref is not valid"));
            }
        }
        let nodes = paths
            .iter()
            .filter_map(|path| {
                let (oid, content) = self.0.files.get(path)?;
                Some(Blob {
                    path: path.clone(),
                    oid: oid.clone(),
                    size: content.len() as i64,
                    raw_text_blob: String::from_utf8(content.clone()).ok(),
                })
            })
            .collect();
        Ok(BlobConnection { nodes })
    }
}

#[derive(SimpleObject)]
struct BlobConnection {
    nodes: Vec<Blob>,
}

#[derive(SimpleObject)]
#[graphql(name = "RepositoryBlob")]
struct Blob {
    path: String,
    oid: String,
    size: i64,
    /// `null` for a binary file.
    raw_text_blob: Option<String>,
}

/// Checks complexity and depth as GitLab does and with its words, and
/// keeps the score for `queryComplexity`.
struct Limits;

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Limits)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let (limit, depth_limit, score) = match ctx.data_opt::<Viewer>() {
            Some(c) => (c.limit, c.limit_depth(), c.score.clone()),
            None => (MAX_COMPLEXITY, MAX_DEPTH, Arc::new(AtomicUsize::new(0))),
        };
        score.store(result.complexity, Ordering::SeqCst);
        if result.complexity > limit {
            return Err(vec![ServerError::new(
                format!(
                    "Query has complexity of {}, which exceeds max complexity of {limit}",
                    result.complexity
                ),
                None,
            )]);
        }
        if result.depth > depth_limit {
            return Err(vec![ServerError::new(
                format!(
                    "Query has depth of {}, which exceeds max depth of {depth_limit}",
                    result.depth
                ),
                None,
            )]);
        }
        Ok(result)
    }
}

impl Viewer {
    fn limit_depth(&self) -> usize {
        if self.limit == MAX_COMPLEXITY {
            MAX_DEPTH
        } else {
            ANONYMOUS_MAX_DEPTH
        }
    }
}

fn schema() -> GitLabSchema {
    Schema::build(QueryRoot, EmptyMutation, EmptySubscription)
        .extension(Limits)
        .finish()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let caller = {
        let world = shared.world.lock().expect("world lock");
        let who = identify(&world, &headers, &query_pairs(&raw), false)?;
        let base = shared.base_url();
        let projects = world
            .projects
            .values()
            .filter(|p| who.authenticated() || p.visibility == "public")
            .map(|p| ProjectView::of(p, &base))
            .collect();
        let limit = if matches!(who, Caller::Anonymous) {
            ANONYMOUS_MAX_COMPLEXITY
        } else {
            MAX_COMPLEXITY
        };
        Viewer {
            projects,
            limit,
            score: Arc::new(AtomicUsize::new(0)),
        }
    };
    let request: Value = serde_json::from_slice(&body).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            json!({"errors": [{"message": "Unexpected end of document"}]}),
        )
    })?;
    let query = request["query"].as_str().unwrap_or("").to_string();
    if query.len() > MAX_QUERY_SIZE {
        return Ok(Json(json!({"errors": [{"message": "Query too large"}]})).into_response());
    }
    let mut gql = async_graphql::Request::new(query).data(caller);
    if let Ok(vars) = serde_json::from_value(request["variables"].clone()) {
        gql = gql.variables(async_graphql::Variables::from_json(vars));
    }
    if let Some(name) = request["operationName"].as_str() {
        gql = gql.operation_name(name);
    }
    let response = schema().execute(gql).await;
    Ok(Json(response).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("not a cursor"), None);
    }

    #[test]
    fn a_page_of_100_doubles_a_connection_s_cost() {
        assert_eq!(connection(10, 2, Some(100)), 24);
        assert_eq!(connection(10, 2, Some(50)), 18);
        assert_eq!(connection(10, 2, None), 24);
    }
}
