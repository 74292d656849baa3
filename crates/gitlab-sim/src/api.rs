//! The REST API v4 subset: projects, repository files and tree, pipelines,
//! pipeline triggers and container registry repositories.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::auth::{error, identify, message, require_write, Caller};
use crate::entities;
use crate::paging::{self, param};
use crate::world::{Project, World};
use crate::Shared;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v4/projects", get(list_projects))
        .route("/api/v4/projects/{id}", get(get_project))
        .route(
            "/api/v4/projects/{id}/repository/files/{file}",
            get(get_file),
        )
        .route(
            "/api/v4/projects/{id}/repository/files/{file}/raw",
            get(get_raw_file),
        )
        .route("/api/v4/projects/{id}/repository/tree", get(get_tree))
        .route("/api/v4/projects/{id}/pipeline", post(create_pipeline))
        .route(
            "/api/v4/projects/{id}/trigger/pipeline",
            post(trigger_pipeline),
        )
        .route("/api/v4/projects/{id}/pipelines", get(list_pipelines))
        .route(
            "/api/v4/projects/{id}/pipelines/{pipeline}",
            get(get_pipeline),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pipeline}/cancel",
            post(cancel_pipeline),
        )
        .route(
            "/api/v4/projects/{id}/pipelines/{pipeline}/variables",
            get(pipeline_variables),
        )
        .route(
            "/api/v4/projects/{id}/registry/repositories",
            get(list_registry),
        )
}

/// Unmatched routes, e.g. an unencoded `/` in `:id`.
pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}))
}

/// Decodes `application/x-www-form-urlencoded` (also query strings).
pub fn parse_form(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

pub(crate) fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref().map(parse_form).unwrap_or_default()
}

type ApiResult = Result<Response, Response>;

/// Request parameters as key/value pairs, in the order sent.
type Params = Vec<(String, String)>;

/// Looks a project up as GitLab does; invisible is the same as missing.
pub(crate) fn visible<'w>(
    world: &'w World,
    id: &str,
    caller: Caller,
) -> Result<&'w Project, Response> {
    match world.find_project(id) {
        Some(p) if caller.authenticated() || p.visibility == "public" => Ok(p),
        _ => Err(message(StatusCode::NOT_FOUND, "404 Project Not Found")),
    }
}

/// Who calls, and the project of the route's `:id` as that caller sees it.
pub(crate) fn caller_and_project<'w>(
    world: &'w World,
    headers: &HeaderMap,
    query: &[(String, String)],
    id: &str,
    job_token_allowed: bool,
) -> Result<(Caller, &'w Project), Response> {
    let caller = identify(world, headers, query, job_token_allowed)?;
    Ok((caller, visible(world, id, caller)?))
}

fn truthy(v: Option<&str>) -> Option<bool> {
    v.map(|v| matches!(v, "true" | "1" | "yes"))
}

/// GitLab's project search: every term in the project's path (with
/// `search_namespaces`, in its full path).
pub(crate) fn matches_search(full_path: &str, terms: &[String], namespaces: bool) -> bool {
    let haystack = if namespaces {
        full_path.to_lowercase()
    } else {
        full_path
            .rsplit('/')
            .next()
            .unwrap_or(full_path)
            .to_lowercase()
    };
    terms.iter().all(|term| haystack.contains(term.as_str()))
}

async fn list_projects(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let world = shared.world.lock().expect("world lock");
    let caller = identify(&world, &headers, &query, false)?;
    let base = shared.base_url();
    let search: Vec<String> = param(&query, "search")
        .map(|s| s.split_whitespace().map(str::to_lowercase).collect())
        .unwrap_or_default();
    let search_namespaces = truthy(param(&query, "search_namespaces")).unwrap_or(false);
    let archived = truthy(param(&query, "archived"));
    let active = truthy(param(&query, "active")).unwrap_or(false);
    let simple = truthy(param(&query, "simple")).unwrap_or(false) || !caller.authenticated();
    let after = param(&query, "last_activity_after").and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    let id_after = param(&query, "id_after").and_then(|v| v.parse::<u64>().ok());
    let id_before = param(&query, "id_before").and_then(|v| v.parse::<u64>().ok());
    let mut projects: Vec<&Project> = world
        .projects
        .values()
        .filter(|p| caller.authenticated() || p.visibility == "public")
        .filter(|p| archived.is_none_or(|a| p.archived == a))
        .filter(|p| !active || !p.archived)
        .filter(|p| after.is_none_or(|t| p.last_activity_at > t))
        .filter(|p| id_after.is_none_or(|id| p.id > id))
        .filter(|p| id_before.is_none_or(|id| p.id < id))
        .filter(|p| matches_search(&p.path_with_namespace, &search, search_namespaces))
        .collect();
    let order_by = param(&query, "order_by").unwrap_or("created_at");
    let descending = param(&query, "sort") != Some("asc");
    match order_by {
        "id" | "created_at" => projects.sort_by_key(|p| p.id),
        "name" | "path" => projects.sort_by_key(|p| p.path().to_lowercase()),
        "last_activity_at" | "updated_at" => projects.sort_by_key(|p| (p.last_activity_at, p.id)),
        other => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("order_by does not have a valid value ({other})")}),
            ))
        }
    }
    if descending {
        projects.reverse();
    }
    let url = format!("{base}/api/v4/projects");
    let render = |p: &Project| {
        if simple {
            entities::project_simple(p, &base)
        } else {
            entities::project_full(p, &base, &shared.registry_host)
        }
    };
    let (page, headers) = if param(&query, "pagination") == Some("keyset") {
        if order_by != "id" {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "Keyset pagination is not yet available for this type of request"}),
            ));
        }
        paging::keyset(&projects, |p| p.id, &query, &url, descending)
    } else {
        paging::offset(
            &projects,
            &query,
            &url,
            Some((paging::MAX_OFFSET, "Project")),
        )?
    };
    // Render outside the lock: other requests need not wait for JSON.
    let page: Vec<Project> = page.into_iter().cloned().collect();
    drop(world);
    let body: Vec<Value> = page.iter().map(render).collect();
    Ok((headers, Json(body)).into_response())
}

async fn get_project(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let world = shared.world.lock().expect("world lock");
    let (caller, project) = caller_and_project(&world, &headers, &query, &id, false)?;
    let base = shared.base_url();
    let body = if caller.authenticated() {
        entities::project_full(project, &base, &shared.registry_host)
    } else {
        entities::project_simple(project, &base)
    };
    Ok(Json(body).into_response())
}

fn file_headers(
    path: &str,
    reference: &str,
    commit: &str,
    blob: &crate::world::FileBlob,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("x-gitlab-blob-id", blob.blob_id.clone());
    set("x-gitlab-commit-id", commit.to_string());
    set(
        "x-gitlab-content-sha256",
        entities::content_sha256(&blob.content),
    );
    set("x-gitlab-encoding", "base64".into());
    set(
        "x-gitlab-file-name",
        path.rsplit('/').next().unwrap_or(path).to_string(),
    );
    set("x-gitlab-file-path", path.to_string());
    set("x-gitlab-last-commit-id", blob.last_commit_id.clone());
    set("x-gitlab-ref", reference.to_string());
    set("x-gitlab-size", blob.content.len().to_string());
    set("x-gitlab-execute-filemode", "false".into());
    h
}

/// Shared lookup of GET/HEAD/raw file routes, in GitLab's order:
/// project, then ref (`404 Commit Not Found`), then path (`404 File Not Found`).
fn find_file(
    shared: &Shared,
    id: &str,
    file: &str,
    headers: &HeaderMap,
    query: &[(String, String)],
    raw: bool,
) -> Result<(HeaderMap, Vec<u8>, Value), Response> {
    let world = shared.world.lock().expect("world lock");
    let (_, project) = caller_and_project(&world, headers, query, id, raw)?;
    if project.guest {
        return Err(message(StatusCode::FORBIDDEN, "403 Forbidden"));
    }
    let reference = match param(query, "ref") {
        Some(r) if !r.is_empty() => r.to_string(),
        Some(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                json!({"error": "ref is empty"}),
            ))
        }
        None if raw => "HEAD".to_string(),
        None => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                json!({"error": "ref is missing"}),
            ))
        }
    };
    let Some((_, branch)) = project.resolve_ref(&reference) else {
        return Err(message(StatusCode::NOT_FOUND, "404 Commit Not Found"));
    };
    let Some(blob) = branch.files.get(file) else {
        return Err(message(StatusCode::NOT_FOUND, "404 File Not Found"));
    };
    let headers = file_headers(file, &reference, &branch.commit, blob);
    let body = entities::file(file, &reference, &branch.commit, blob);
    Ok((headers, blob.content.clone(), body))
}

async fn get_file(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let (h, _, body) = find_file(&shared, &id, &file, &headers, &query, false)?;
    Ok((h, Json(body)).into_response())
}

async fn get_raw_file(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let (mut h, content, _) = find_file(&shared, &id, &file, &headers, &query, true)?;
    h.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "cache-control",
        HeaderValue::from_static("max-age=0, private, must-revalidate, no-store, no-cache"),
    );
    Ok((h, content).into_response())
}

async fn get_tree(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let world = shared.world.lock().expect("world lock");
    let (_, project) = caller_and_project(&world, &headers, &query, &id, false)?;
    if project.guest {
        return Err(message(StatusCode::FORBIDDEN, "403 Forbidden"));
    }
    let reference = param(&query, "ref")
        .unwrap_or(&project.default_branch)
        .to_string();
    let Some((_, branch)) = project.resolve_ref(&reference) else {
        return Err(message(StatusCode::NOT_FOUND, "404 Tree Not Found"));
    };
    let dir = param(&query, "path")
        .unwrap_or("")
        .trim_matches('/')
        .to_string();
    let recursive = truthy(param(&query, "recursive")).unwrap_or(false);
    let mut entries: std::collections::BTreeMap<String, &'static str> = Default::default();
    for path in branch.files.keys() {
        let rel = if dir.is_empty() {
            path.as_str()
        } else if let Some(r) = path.strip_prefix(&format!("{dir}/")) {
            r
        } else {
            continue;
        };
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let parts: Vec<&str> = rel.split('/').collect();
        for depth in 1..parts.len() {
            if !recursive && depth > 1 {
                break;
            }
            entries.insert(format!("{prefix}{}", parts[..depth].join("/")), "tree");
        }
        if recursive || parts.len() == 1 {
            entries.insert(format!("{prefix}{rel}"), "blob");
        }
    }
    let items: Vec<Value> = entries
        .iter()
        .map(|(path, kind)| {
            let id = match branch.files.get(path) {
                Some(b) => b.blob_id.clone(),
                None => crate::world::fake_sha(&[path.as_bytes(), branch.commit.as_bytes()]),
            };
            json!({
                "id": id,
                "name": path.rsplit('/').next().unwrap_or(path),
                "type": kind,
                "path": path,
                "mode": if *kind == "tree" { "040000" } else { "100644" },
            })
        })
        .collect();
    let url = format!(
        "{}/api/v4/projects/{}/repository/tree",
        shared.base_url(),
        project.id
    );
    let (page, h) = paging::offset(&items, &query, &url, None)?;
    Ok((h, Json(page)).into_response())
}

/// Reads parameters from the query string and a JSON or form body.
fn body_params(
    headers: &HeaderMap,
    body: &Bytes,
    query: &[(String, String)],
) -> Result<(Params, Option<Value>), Response> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut pairs = query.to_vec();
    if body.is_empty() {
        return Ok((pairs, None));
    }
    if content_type.starts_with("application/json") {
        let value: Value = serde_json::from_slice(body).map_err(|_| {
            error(StatusCode::BAD_REQUEST, json!({"error": "The provided content-type 'application/json' is not supported or the body is not valid JSON."}))
        })?;
        if let Some(obj) = value.as_object() {
            for (k, v) in obj {
                if let Some(s) = v.as_str() {
                    pairs.push((k.clone(), s.to_string()));
                }
            }
        }
        return Ok((pairs, Some(value)));
    }
    pairs.extend(parse_form(&String::from_utf8_lossy(body)));
    Ok((pairs, None))
}

fn start_pipeline(
    shared: &Arc<Shared>,
    world: &mut World,
    project_id: u64,
    git_ref: &str,
    source: &str,
    variables: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Value, Response> {
    let project = &world.projects[&project_id];
    if project.archived || project.guest {
        return Err(message(StatusCode::FORBIDDEN, "403 Forbidden"));
    }
    if project.pipeline_variables_forbidden && !variables.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            json!({"message": {"base": ["Insufficient permissions to set pipeline variables"]}}),
        ));
    }
    let Some(branch) = project.branches.get(git_ref) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            json!({"message": {"base": ["Reference not found"]}}),
        ));
    };
    if !branch.files.contains_key(".gitlab-ci.yml") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            json!({"message": {"base": ["Missing CI config file"]}}),
        ));
    }
    let event_uuid = headers
        .get("x-gitlab-event-uuid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let now = time::OffsetDateTime::now_utc();
    let pipeline = world.create_pipeline(project_id, git_ref, source, variables, event_uuid, now);
    let body = entities::pipeline(&pipeline, &shared.base_url());
    crate::hooks::schedule(shared.clone(), pipeline.id);
    Ok(body)
}

async fn create_pipeline(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult {
    let query = query_pairs(&raw);
    let (params, json_body) = body_params(&headers, &body, &query)?;
    let mut world = shared.world.lock().expect("world lock");
    let caller = identify(&world, &headers, &query, false)?;
    let project_id = visible(&world, &id, caller)?.id;
    require_write(caller)?;
    let Some(git_ref) = param(&params, "ref").map(str::to_string) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            json!({"error": "ref is missing"}),
        ));
    };
    // Variables: JSON `[{key, value, variable_type}]` or form `variables[0][key]`.
    let mut variables = Vec::new();
    if let Some(list) = json_body.as_ref().and_then(|b| b.get("variables")) {
        let Some(items) = list.as_array() else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                json!({"error": "variables is invalid"}),
            ));
        };
        for item in items {
            match (
                item.get("key").and_then(Value::as_str),
                item.get("value").and_then(Value::as_str),
            ) {
                (Some(k), Some(v)) => variables.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "variables[key] is missing, variables[value] is missing"}),
                    ))
                }
            }
        }
    } else {
        let mut indexed: std::collections::BTreeMap<String, (Option<String>, Option<String>)> =
            Default::default();
        for (k, v) in &params {
            let Some(rest) = k.strip_prefix("variables[") else {
                continue;
            };
            let Some((index, field)) = rest.split_once("][") else {
                continue;
            };
            let entry = indexed.entry(index.to_string()).or_default();
            match field.trim_end_matches(']') {
                "key" => entry.0 = Some(v.clone()),
                "value" => entry.1 = Some(v.clone()),
                _ => {}
            }
        }
        for (_, (k, v)) in indexed {
            if let Some(k) = k {
                variables.push((k, v.unwrap_or_default()));
            }
        }
    }
    let body = start_pipeline(
        &shared, &mut world, project_id, &git_ref, "api", variables, &headers,
    )?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn trigger_pipeline(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult {
    let query = query_pairs(&raw);
    let (params, json_body) = body_params(&headers, &body, &query)?;
    let mut world = shared.world.lock().expect("world lock");
    let Some(token) = param(&params, "token").map(str::to_string) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            json!({"error": "token is missing"}),
        ));
    };
    let Some(git_ref) = param(&params, "ref").map(str::to_string) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            json!({"error": "ref is missing"}),
        ));
    };
    let Some(project) = world.find_project(&id) else {
        return Err(message(StatusCode::NOT_FOUND, "404 Project Not Found"));
    };
    let project_id = project.id;
    let source = if project.trigger_token == token {
        "trigger"
    } else if world.job_tokens.contains(&token) {
        "pipeline"
    } else {
        return Err(message(StatusCode::NOT_FOUND, "404 Not Found"));
    };
    let mut variables = Vec::new();
    if let Some(map) = json_body.as_ref().and_then(|b| b.get("variables")) {
        let Some(obj) = map.as_object() else {
            return Err(message(
                StatusCode::BAD_REQUEST,
                "variables needs to be a map of key-valued strings",
            ));
        };
        for (k, v) in obj {
            let Some(v) = v.as_str() else {
                return Err(message(
                    StatusCode::BAD_REQUEST,
                    "variables needs to be a map of key-valued strings",
                ));
            };
            variables.push((k.clone(), v.to_string()));
        }
    } else {
        for (k, v) in &params {
            if let Some(name) = k
                .strip_prefix("variables[")
                .and_then(|r| r.strip_suffix(']'))
            {
                variables.push((name.to_string(), v.clone()));
            }
        }
    }
    let body = start_pipeline(
        &shared, &mut world, project_id, &git_ref, source, variables, &headers,
    )?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn get_pipeline(
    State(shared): State<Arc<Shared>>,
    Path((id, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let world = shared.world.lock().expect("world lock");
    let (_, project) = caller_and_project(&world, &headers, &query, &id, true)?;
    let p = pipeline_of(&world, project.id, &pipeline)?;
    Ok(Json(entities::pipeline(p, &shared.base_url())).into_response())
}

/// A pipeline of this project by the id in the path, or GitLab's 404.
fn pipeline_of<'w>(
    world: &'w crate::world::World,
    project_id: u64,
    pipeline: &str,
) -> Result<&'w crate::world::Pipeline, Response> {
    pipeline
        .parse::<u64>()
        .ok()
        .and_then(|pid| world.pipelines.get(&pid))
        .filter(|p| p.project_id == project_id)
        .ok_or_else(|| message(StatusCode::NOT_FOUND, "404 Not found"))
}

async fn list_pipelines(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let world = shared.world.lock().expect("world lock");
    let (_, project) = caller_and_project(&world, &headers, &query, &id, true)?;
    let base = shared.base_url();
    let mut items: Vec<Value> = world
        .pipelines
        .values()
        .rev()
        .filter(|p| p.project_id == project.id)
        .filter(|p| param(&query, "ref").is_none_or(|r| p.git_ref == r))
        .filter(|p| param(&query, "status").is_none_or(|s| p.status.as_str() == s))
        .filter(|p| param(&query, "source").is_none_or(|s| p.source == s))
        .filter(|p| {
            param(&query, "updated_after")
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .is_none_or(|after| p.updated_at > after)
        })
        .map(|p| entities::pipeline(p, &base))
        .collect();
    if param(&query, "sort") == Some("asc") {
        items.reverse();
    }
    let url = format!("{base}/api/v4/projects/{}/pipelines", project.id);
    let (page, h) = paging::offset(&items, &query, &url, None)?;
    Ok((h, Json(page)).into_response())
}

/// `GET /projects/:id/pipelines/:pipeline_id/variables`: the variables a
/// pipeline was created with, `[{key, value, variable_type}]`.
async fn pipeline_variables(
    State(shared): State<Arc<Shared>>,
    Path((id, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let world = shared.world.lock().expect("world lock");
    let (_, project) = caller_and_project(&world, &headers, &query, &id, true)?;
    let p = pipeline_of(&world, project.id, &pipeline)?;
    Ok(Json(
        p.variables
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v, "variable_type": "env_var"}))
            .collect::<Vec<_>>(),
    )
    .into_response())
}

async fn cancel_pipeline(
    State(shared): State<Arc<Shared>>,
    Path((id, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let pid = {
        let world = shared.world.lock().expect("world lock");
        let (caller, project) = caller_and_project(&world, &headers, &query, &id, false)?;
        require_write(caller)?;
        pipeline_of(&world, project.id, &pipeline)?.id
    };
    crate::hooks::cancel(&shared, pid);
    let world = shared.world.lock().expect("world lock");
    Ok(Json(entities::pipeline(
        &world.pipelines[&pid],
        &shared.base_url(),
    ))
    .into_response())
}

async fn list_registry(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let query = query_pairs(&raw);
    let world = shared.world.lock().expect("world lock");
    let (_, project) = caller_and_project(&world, &headers, &query, &id, true)?;
    let items: Vec<Value> = project
        .images
        .iter()
        .enumerate()
        .map(|(i, name)| entities::registry_repository(project, i, name, &shared.registry_host))
        .collect();
    let url = format!(
        "{}/api/v4/projects/{}/registry/repositories",
        shared.base_url(),
        project.id
    );
    let (page, h) = paging::offset(&items, &query, &url, None)?;
    Ok((h, Json(page)).into_response())
}
