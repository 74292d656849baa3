//! The simulator's own HTTP endpoints under `/-/sim/`: read the logs, set
//! faults, register webhooks, commit files. Not part of GitLab's API.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::faults::Faults;
use crate::world::{PipelineBehaviour, Webhook};
use crate::{entities, hooks, Shared};

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/-/sim/requests", get(requests))
        .route("/-/sim/counters", get(counters))
        .route("/-/sim/pipelines", get(pipelines))
        .route("/-/sim/hooks", get(hook_log))
        .route("/-/sim/faults", put(set_faults).get(get_faults))
        .route("/-/sim/webhooks", post(add_webhook))
        .route("/-/sim/commits", post(commit))
        .route(
            "/-/sim/projects/{id}/pipeline_behaviour",
            put(set_behaviour),
        )
}

async fn requests(State(s): State<Arc<Shared>>) -> Response {
    Json(s.requests.lock().expect("log lock").clone()).into_response()
}

async fn counters(State(s): State<Arc<Shared>>) -> Response {
    Json(s.counters.lock().expect("counters lock").clone()).into_response()
}

async fn pipelines(State(s): State<Arc<Shared>>) -> Response {
    let world = s.world.lock().expect("world lock");
    Json(world.pipelines.values().cloned().collect::<Vec<_>>()).into_response()
}

async fn hook_log(State(s): State<Arc<Shared>>) -> Response {
    Json(s.hook_log.lock().expect("hook log lock").clone()).into_response()
}

async fn set_faults(State(s): State<Arc<Shared>>, Json(faults): Json<Faults>) -> Response {
    s.faults.lock().expect("faults lock").set(faults);
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(s): State<Arc<Shared>>) -> Response {
    Json(s.faults.lock().expect("faults lock").config.clone()).into_response()
}

async fn add_webhook(State(s): State<Arc<Shared>>, Json(hook): Json<Webhook>) -> Response {
    s.world.lock().expect("world lock").webhooks.push(hook);
    StatusCode::CREATED.into_response()
}

#[derive(Deserialize)]
struct CommitRequest {
    project: String,
    branch: Option<String>,
    path: String,
    content: String,
}

async fn commit(State(s): State<Arc<Shared>>, Json(req): Json<CommitRequest>) -> Response {
    let branch = match req.branch {
        Some(b) => b,
        None => match s
            .world
            .lock()
            .expect("world lock")
            .project_by_path(&req.project)
        {
            Some(p) => p.default_branch.clone(),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    Json(json!({"message": "404 Project Not Found"})),
                )
                    .into_response()
            }
        },
    };
    match commit_and_push(&s, &req.project, &branch, &req.path, &req.content).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"message": e}))).into_response(),
    }
}

async fn set_behaviour(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Json(b): Json<PipelineBehaviour>,
) -> Response {
    let mut world = s.world.lock().expect("world lock");
    let Some(pid) = world.find_project(&id).map(|p| p.id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Project Not Found"})),
        )
            .into_response();
    };
    if let Some(p) = world.projects.get_mut(&pid) {
        p.pipeline = b;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Commits one file and delivers the Push Hook.
pub(crate) async fn commit_and_push(
    shared: &Arc<Shared>,
    project: &str,
    branch: &str,
    path: &str,
    content: &str,
) -> Result<(), String> {
    let now = time::OffsetDateTime::now_utc();
    let (body, project_path) = {
        let mut world = shared.world.lock().expect("world lock");
        let id = world
            .project_by_path(project)
            .map(|p| p.id)
            .ok_or_else(|| format!("no project {project}"))?;
        let (before, after, added) = world.commit_file(id, branch, path, content, now)?;
        let p = &world.projects[&id];
        let body = entities::push_hook(
            p,
            branch,
            &before,
            &after,
            path,
            added,
            now,
            &shared.base_url(),
        );
        (body, p.path_with_namespace.clone())
    };
    hooks::deliver_push(shared, &project_path, body).await;
    Ok(())
}
