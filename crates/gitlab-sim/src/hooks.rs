//! Pipelines advancing through their states on each project's schedule, and
//! webhook deliveries (Pipeline Hook, Push Hook) with GitLab's headers.
//! Like GitLab, a failed delivery is logged and not retried.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::entities;
use crate::project_hooks::Delivery;
use crate::world::{PipelineStatus, Webhook};
use crate::Shared;

/// One webhook POST as the simulator made it.
#[derive(Debug, Clone, Serialize)]
pub struct HookDelivery {
    pub url: String,
    /// `Pipeline Hook`, `Push Hook`.
    pub event: String,
    pub project: String,
    pub pipeline_id: Option<u64>,
    pub status_sent: Option<String>,
    pub idempotency_key: String,
    pub event_uuid: String,
    pub webhook_uuid: String,
    /// HTTP status of the answer; `None` when it never came.
    pub response_status: Option<u16>,
    pub error: Option<String>,
    #[serde(skip)]
    pub body: Value,
    #[serde(skip)]
    pub token: Option<String>,
}

/// Starts moving a new pipeline through its states.
pub fn schedule(shared: Arc<Shared>, pipeline_id: u64) {
    tokio::spawn(async move { advance(shared, pipeline_id).await });
}

async fn advance(shared: Arc<Shared>, pipeline_id: u64) {
    let Some(behaviour) = ({
        let world = shared.world.lock().expect("world lock");
        world
            .pipelines
            .get(&pipeline_id)
            .and_then(|p| world.projects.get(&p.project_id))
            .map(|p| p.pipeline.clone())
    }) else {
        return;
    };
    let step = behaviour.duration / 5;
    let plan = [
        (step, PipelineStatus::Pending),
        (step, PipelineStatus::Running),
        (
            behaviour.duration.saturating_sub(step * 2),
            behaviour.outcome,
        ),
    ];
    for (wait, status) in plan {
        tokio::time::sleep(wait).await;
        if !transition(&shared, pipeline_id, status) {
            return;
        }
        deliver_pipeline_event(&shared, pipeline_id).await;
    }
}

/// Moves a pipeline to `status` unless it already settled (canceled, say).
fn transition(shared: &Shared, pipeline_id: u64, status: PipelineStatus) -> bool {
    let mut world = shared.world.lock().expect("world lock");
    let Some(p) = world.pipelines.get_mut(&pipeline_id) else {
        return false;
    };
    if p.status.is_settled() {
        return false;
    }
    let now = OffsetDateTime::now_utc();
    p.status = status;
    p.updated_at = now;
    if status == PipelineStatus::Running {
        p.started_at = Some(now);
    }
    if status.is_settled() {
        p.started_at.get_or_insert(now);
        p.finished_at = Some(now);
    }
    true
}

/// Cancels a pipeline that has not settled; fires its hook.
pub fn cancel(shared: &Arc<Shared>, pipeline_id: u64) {
    if transition(shared, pipeline_id, PipelineStatus::Canceled) {
        let shared = shared.clone();
        tokio::spawn(async move { deliver_pipeline_event(&shared, pipeline_id).await });
    }
}

async fn deliver_pipeline_event(shared: &Arc<Shared>, pipeline_id: u64) {
    let (body, project, status, event_uuid) = {
        let world = shared.world.lock().expect("world lock");
        let Some(p) = world.pipelines.get(&pipeline_id) else {
            return;
        };
        let project = &world.projects[&p.project_id];
        let body = entities::pipeline_hook(p, project, None, &shared.base_url());
        (
            body,
            project.path_with_namespace.clone(),
            p.status.as_str().to_string(),
            p.event_uuid.clone(),
        )
    };
    deliver_to_all(
        shared,
        "Pipeline Hook",
        &project,
        Some(pipeline_id),
        Some(status),
        body,
        event_uuid,
    )
    .await;
}

/// Sends a Push Hook for one commit.
pub async fn deliver_push(shared: &Arc<Shared>, project: &str, body: Value) {
    deliver_to_all(shared, "Push Hook", project, None, None, body, None).await;
}

#[allow(clippy::too_many_arguments)]
async fn deliver_to_all(
    shared: &Arc<Shared>,
    event: &str,
    project: &str,
    pipeline_id: Option<u64>,
    status_sent: Option<String>,
    body: Value,
    event_uuid: Option<String>,
) {
    let now = OffsetDateTime::now_utc();
    let branch = body
        .get("ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("refs/heads/"))
        .map(str::to_string);
    let (hooks, paused) = {
        let world = shared.world.lock().expect("world lock");
        let mut hooks: Vec<(Option<u64>, Webhook, Option<&'static str>)> = world
            .webhooks
            .iter()
            .map(|h| (None, h.clone(), None))
            .collect();
        let (project_id, namespace) = world
            .project_by_path(project)
            .map(|p| (p.id, p.namespace_path().to_string()))
            .unwrap_or_default();
        for h in world
            .project_hooks
            .values()
            .filter(|h| h.covers(project_id, &namespace))
        {
            let dropped = match h.wants(event, branch.as_deref(), now) {
                Delivery::NotSubscribed => continue,
                Delivery::Send => None,
                Delivery::Dropped(why) => Some(why),
            };
            let hook = Webhook {
                url: h.url.clone(),
                token: h.token.clone(),
            };
            hooks.push((Some(h.id), hook, dropped));
        }
        (hooks, world.paused_hooks.contains(project))
    };
    if hooks.is_empty() {
        return;
    }
    // One Idempotency-Key per hook execution (a group hook and a project
    // hook deliver the same event with two; a resend reuses its own); the
    // recursion-detection UUID is propagated from the request that caused it.
    let event_uuid = event_uuid.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    for (hook_id, hook, dropped) in hooks {
        let delivery = HookDelivery {
            url: hook.url.clone(),
            event: event.to_string(),
            project: project.to_string(),
            pipeline_id,
            status_sent: status_sent.clone(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            event_uuid: event_uuid.clone(),
            webhook_uuid: String::new(),
            response_status: None,
            error: None,
            body: body.clone(),
            token: hook.token.clone(),
        };
        let dropped = dropped.or(paused.then_some("hook paused"));
        if let Some(why) = dropped {
            let mut dropped = delivery;
            dropped.error = Some(format!("dropped: {why}"));
            shared.hook_log.lock().expect("hook log lock").push(dropped);
            continue;
        }
        let sent = send(shared, delivery).await;
        if let Some(id) = hook_id {
            // GitLab counts 2xx and 3xx as success.
            let ok = sent
                .response_status
                .is_some_and(|s| (200..400).contains(&s));
            let mut world = shared.world.lock().expect("world lock");
            if let Some(h) = world.project_hooks.get_mut(&id) {
                h.record(ok, OffsetDateTime::now_utc());
            }
        }
    }
}

/// POSTs one delivery (fresh `X-Gitlab-Webhook-UUID`) and logs the outcome.
pub async fn send(shared: &Arc<Shared>, mut delivery: HookDelivery) -> HookDelivery {
    delivery.webhook_uuid = uuid::Uuid::new_v4().to_string();
    let mut request = shared
        .http
        .post(&delivery.url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/json")
        .header("user-agent", "GitLab/18.6.0")
        .header("x-gitlab-event", &delivery.event)
        .header("x-gitlab-instance", shared.base_url())
        .header("x-gitlab-webhook-uuid", &delivery.webhook_uuid)
        .header("x-gitlab-event-uuid", &delivery.event_uuid)
        .header("idempotency-key", &delivery.idempotency_key)
        .body(delivery.body.to_string());
    if let Some(token) = &delivery.token {
        request = request.header("x-gitlab-token", token);
    }
    match request.send().await {
        Ok(response) => delivery.response_status = Some(response.status().as_u16()),
        Err(e) => delivery.error = Some(e.to_string()),
    }
    shared
        .hook_log
        .lock()
        .expect("hook log lock")
        .push(delivery.clone());
    delivery
}
