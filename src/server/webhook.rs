//! `POST /webhook`: check the secret, decide what the event means, persist
//! it, answer. Nothing here waits for GitLab: the worker does that.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

use super::AppState;
use crate::store::{Accepted, NewEvent, PipelineFacts, Store};

/// What an event asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Persist and act on it.
    Accept(NewEvent),
    /// Answer 200 and do nothing; the reason is logged at debug level.
    Ignore(String),
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// A field of the body as it is stored and shown: control characters
/// escaped, at most `limit` bytes.
fn stored(text: &str, limit: usize) -> String {
    let mut text = crate::printable::one_line(text).into_owned();
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// A dedupe key of bounded size: a long one is replaced by its SHA-256, so
/// two different keys still never collide.
fn bounded_key(key: String) -> String {
    use sha2::{Digest, Sha256};
    if key.len() <= 200 {
        return key;
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Decides what a webhook body means. `Err` when it claims to be a GitLab
/// event but lacks what every such event has (a 400 for the sender).
/// `watched(project_id, path)`: whether a change to that file changes the
/// project's dependencies (one of its Dockerfiles or its configuration).
pub fn classify(
    idempotency_key: Option<&str>,
    event_uuid: Option<&str>,
    body: &Value,
    watched: &dyn Fn(u64, &str) -> bool,
) -> Result<Decision, String> {
    // System hooks name push events in `event_name` only.
    let Some(kind) = body
        .get("object_kind")
        .or_else(|| body.get("event_name"))
        .and_then(Value::as_str)
    else {
        return Ok(Decision::Ignore(
            "no object_kind: not an event we use".into(),
        ));
    };
    let project_id = || u64_at(body, &["project", "id"]).or_else(|| u64_at(body, &["project_id"]));
    let path = || str_at(body, &["project", "path_with_namespace"]);
    let default_branch = || str_at(body, &["project", "default_branch"]);
    let event = |dedupe: String, project_id: u64, path: &str, detail: String| NewEvent {
        kind: kind.to_string(),
        dedupe_key: bounded_key(dedupe),
        idempotency_key: idempotency_key.map(|k| bounded_key(format!("idem:{k}"))),
        event_uuid: event_uuid
            .filter(|u| u.len() <= 64 && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .map(str::to_string),
        project_id,
        project_path: stored(path, 1024),
        detail: stored(&detail, 256),
        pipeline: None,
    };
    match kind {
        "pipeline" => {
            let attrs = body
                .get("object_attributes")
                .ok_or("pipeline event without object_attributes")?;
            let (Some(project_id), Some(path)) = (project_id(), path()) else {
                return Err(
                    "pipeline event without project.id and project.path_with_namespace".into(),
                );
            };
            let pipeline_id =
                u64_at(attrs, &["id"]).ok_or("pipeline event without object_attributes.id")?;
            let status = str_at(attrs, &["status"]).unwrap_or("");
            let git_ref = str_at(attrs, &["ref"]).unwrap_or("");
            let tag = attrs.get("tag").and_then(Value::as_bool).unwrap_or(false);
            // A success may start a cascade; every end advances one.
            if crate::cascade::Outcome::from_status(status).is_none() {
                return Ok(Decision::Ignore(format!(
                    "pipeline {pipeline_id} of {path} is {status:?}, not finished"
                )));
            }
            if tag {
                return Ok(Decision::Ignore(format!(
                    "pipeline {pipeline_id} of {path} ran for tag {git_ref}"
                )));
            }
            match str_at(attrs, &["source"]) {
                Some("parent_pipeline") => {
                    return Ok(Decision::Ignore(format!(
                        "pipeline {pipeline_id} of {path} is a child pipeline"
                    )));
                }
                // Merge request pipelines do not publish the project's image.
                Some(source @ ("merge_request_event" | "external_pull_request_event")) => {
                    return Ok(Decision::Ignore(format!(
                        "pipeline {pipeline_id} of {path} is a {source} pipeline"
                    )));
                }
                _ => {}
            }
            match default_branch() {
                Some(branch) if branch == git_ref => {}
                branch => {
                    return Ok(Decision::Ignore(format!(
                        "pipeline {pipeline_id} of {path} ran on {git_ref:?}, not the default branch {:?}",
                        branch.unwrap_or("?")
                    )))
                }
            }
            let marker = attrs
                .get("variables")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|v| str_at(v, &["key"]) == Some(crate::rebuild::TRIGGER_ID_VARIABLE))
                .and_then(|v| str_at(v, &["value"]))
                .map(|m| stored(m, 64));
            let mut accepted = event(
                format!("pipeline:{project_id}:{pipeline_id}:{status}"),
                project_id,
                path,
                format!("pipeline {pipeline_id} {status}"),
            );
            accepted.pipeline = Some(PipelineFacts {
                id: pipeline_id,
                status: status.to_string(),
                trigger_marker: marker,
            });
            Ok(Decision::Accept(accepted))
        }
        "push" => {
            let (Some(project_id), Some(path)) = (project_id(), path()) else {
                return Err("push event without project id and project.path_with_namespace".into());
            };
            let git_ref = body.get("ref").and_then(Value::as_str).unwrap_or("");
            let after = body.get("after").and_then(Value::as_str).unwrap_or("");
            let branch = default_branch().unwrap_or("");
            if git_ref != format!("refs/heads/{branch}") {
                return Ok(Decision::Ignore(format!(
                    "push to {git_ref} of {path}, not the default branch"
                )));
            }
            if body.get("checkout_sha").is_some_and(Value::is_null) {
                return Ok(Decision::Ignore(format!(
                    "push to {path} deleted the branch"
                )));
            }
            let commits = body.get("commits").and_then(Value::as_array);
            let listed = commits.map_or(0, Vec::len) as u64;
            let total = u64_at(body, &["total_commits_count"]).unwrap_or(listed);
            let touches = commits.into_iter().flatten().any(|c| {
                ["added", "modified", "removed"].iter().any(|k| {
                    c.get(k).and_then(Value::as_array).is_some_and(|files| {
                        files
                            .iter()
                            .any(|f| f.as_str().is_some_and(|f| watched(project_id, f)))
                    })
                })
            });
            // GitLab lists at most 20 commits; when some are missing we
            // cannot tell, so refresh.
            if !touches && listed >= total {
                return Ok(Decision::Ignore(format!(
                    "push to {path} does not touch its Dockerfiles"
                )));
            }
            Ok(Decision::Accept(event(
                format!("push:{project_id}:{after}"),
                project_id,
                path,
                format!("push {after}"),
            )))
        }
        other => Ok(Decision::Ignore(format!("{other} events are not used"))),
    }
}

/// Writes accepted events in batches: one transaction (one disk sync) for
/// everything that arrived meanwhile, so throughput does not pay one sync
/// per event and nothing is answered before it is on disk.
pub type AcceptQueue = mpsc::Sender<(NewEvent, oneshot::Sender<Result<Accepted, String>>)>;

pub fn spawn_writer(store: Store) -> AcceptQueue {
    let (tx, mut rx) = mpsc::channel::<(NewEvent, oneshot::Sender<Result<Accepted, String>>)>(4096);
    std::thread::Builder::new()
        .name("event-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < 1024 {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let events: Vec<NewEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
                // A connection the database closed is made again by the
                // next attempt; a batch that did commit is all duplicates
                // the second time, which is answered the same.
                let accepted = store
                    .accept_events(&events)
                    .or_else(|_| store.accept_events(&events));
                match accepted {
                    Ok(results) => {
                        for ((_, reply), result) in batch.into_iter().zip(results) {
                            let _ = reply.send(Ok(result));
                        }
                    }
                    Err(e) => {
                        for (_, reply) in batch {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        })
        .expect("can start the event writer thread");
    tx
}

fn answer(status: StatusCode, outcome: &str, detail: &str) -> Response {
    (status, Json(json!({"status": outcome, "detail": detail}))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `kind` label of the event metrics: a fixed set, whatever the body says.
fn kind_label(object_kind: &str) -> &'static str {
    match object_kind {
        "pipeline" => "pipeline",
        "push" => "push",
        "tag_push" => "tag_push",
        "build" => "build",
        "merge_request" => "merge_request",
        "unknown" => "unknown",
        _ => "other",
    }
}

/// Reads a body of at most `limit` bytes: `Err` is the answer to send.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, Response> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("body larger than {limit} bytes (--max-body-bytes)"),
        )),
        Err(e) => Err(answer(
            StatusCode::REQUEST_TIMEOUT,
            "incomplete",
            &format!("the body could not be read: {e}"),
        )),
    }
}

/// Counts webhook requests being handled (`autodep_webhook_requests_in_flight`).
struct InFlight;

impl InFlight {
    fn new() -> InFlight {
        metrics::gauge!("autodep_webhook_requests_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("autodep_webhook_requests_in_flight").decrement(1.0);
    }
}

/// Checks the secret from the headers before a byte of the body is read.
pub async fn handle(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let _in_flight = InFlight::new();
    if let Some(expected) = &app.webhook_token {
        let given = header(&headers, "x-gitlab-token").unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            metrics::counter!("autodep_events_total", "kind" => "unknown", "outcome" => "unauthorized").increment(1);
            return answer(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong X-Gitlab-Token",
            );
        }
    }
    let body = match read_body(body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(answer) => {
            metrics::counter!("autodep_events_total", "kind" => "unknown", "outcome" => "unreadable").increment(1);
            return answer;
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            metrics::counter!("autodep_events_total", "kind" => "unknown", "outcome" => "malformed").increment(1);
            return answer(
                StatusCode::BAD_REQUEST,
                "malformed",
                &format!("body is not JSON: {e}"),
            );
        }
    };
    let kind = kind_label(
        value
            .get("object_kind")
            .and_then(Value::as_str)
            .unwrap_or("unknown"),
    );
    let decision = classify(
        header(&headers, "idempotency-key"),
        header(&headers, "x-gitlab-event-uuid"),
        &value,
        &|project, path| app.watches(project, path),
    );
    let event = match decision {
        Err(reason) => {
            metrics::counter!("autodep_events_total", "kind" => kind, "outcome" => "malformed")
                .increment(1);
            return answer(StatusCode::BAD_REQUEST, "malformed", &reason);
        }
        Ok(Decision::Ignore(reason)) => {
            tracing::debug!(%kind, "ignored: {reason}");
            metrics::counter!("autodep_events_total", "kind" => kind, "outcome" => "ignored")
                .increment(1);
            app.remember_ignored(&reason);
            return answer(StatusCode::OK, "ignored", &reason);
        }
        Ok(Decision::Accept(event)) => event,
    };
    let (reply, receipt) = oneshot::channel();
    if app.accept_queue.send((event, reply)).await.is_err() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down; GitLab can resend this event",
        );
    }
    match receipt.await {
        Ok(Ok(Accepted::New(id))) => {
            metrics::counter!("autodep_events_total", "kind" => kind, "outcome" => "accepted")
                .increment(1);
            app.wake.notify_one();
            answer(StatusCode::OK, "accepted", &format!("event {id}"))
        }
        Ok(Ok(Accepted::Duplicate)) => {
            metrics::counter!("autodep_events_total", "kind" => kind, "outcome" => "duplicate")
                .increment(1);
            answer(StatusCode::OK, "duplicate", "already accepted")
        }
        Ok(Err(e)) => {
            tracing::error!("could not store a webhook event: {e}");
            metrics::counter!("autodep_events_total", "kind" => kind, "outcome" => "store_error")
                .increment(1);
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "could not store the event; GitLab can resend it",
            )
        }
        Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "shutting down; GitLab can resend this event",
        ),
    }
}
