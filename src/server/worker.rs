//! Drains the durable queue: turns accepted events into cascade steps (or
//! graph patches), and creates the pipelines they queue — in tasks of their
//! own, retrying with backoff until GitLab answers for good.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::AppState;
use crate::gitlab::GitLabError;
use crate::rebuild;
use crate::scan;
use crate::store::{NewEvent, PipelineFacts, StoredEvent, StoredTrigger};

/// Delay before the next attempt of a trigger that failed `attempts` times.
fn backoff(first: Duration, attempts: u32) -> Duration {
    first
        .saturating_mul(1 << attempts.min(16))
        .min(Duration::from_secs(600))
}

/// Errors that a later attempt may not see: keep the work queued.
fn is_transient(e: &GitLabError) -> bool {
    match e {
        GitLabError::Unreachable { .. }
        | GitLabError::Decode { .. }
        | GitLabError::Unauthorized { .. }
        | GitLabError::Redirected { .. } => true,
        GitLabError::Status { status, .. } => *status == 429 || *status >= 500,
        GitLabError::NoAnswer { .. } => true,
        GitLabError::Forbidden { .. }
        | GitLabError::NotFound { .. }
        | GitLabError::TooLarge { .. }
        | GitLabError::GraphQl { .. } => false,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("store task does not panic")
}

pub async fn run(app: Arc<AppState>, mut stopped: watch::Receiver<bool>) {
    let mut next_cleanup = std::time::Instant::now();
    let mut next_reconcile = std::time::Instant::now();
    // Pipelines being created, apart from planning: a slow POST never holds
    // up the events behind it.
    let mut firing = Firing::default();
    loop {
        let leads = app.is_leader();
        if leads && std::time::Instant::now() >= next_cleanup {
            delete_old(&app).await;
            next_cleanup = std::time::Instant::now() + Duration::from_secs(3600);
        }
        if *stopped.borrow() {
            break;
        }
        let mut busy = firing.reap();
        if app.has_graph() {
            busy |= plan_events(&app).await;
        }
        if leads && std::time::Instant::now() >= next_reconcile {
            reconcile(&app).await;
            let period = app
                .config
                .reconcile_interval
                .min(app.config.cascade_timeout)
                .min(Duration::from_secs(60))
                / 4;
            next_reconcile = std::time::Instant::now() + period;
        }
        busy |= firing.start_due(&app).await;
        let store = app.store.clone();
        blocking(move || gauges(&store)).await;
        if busy {
            continue;
        }
        // Idle: wait for an event, a pipeline created, the next retry, or
        // shutdown.
        tokio::select! {
            _ = app.wake.notified() => {}
            _ = firing.next_done() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
    }
    // Shutdown: let the pipelines being created finish.
    firing.drain().await;
}

/// The queue's gauges, as this replica reads the store.
fn gauges(store: &crate::store::Store) {
    if let Ok((events, triggers)) = store.queue_depth() {
        metrics::gauge!("autodep_queue_events").set(events as f64);
        metrics::gauge!("autodep_queue_triggers").set(triggers as f64);
    }
    if let Ok(parked) = store.parked_events() {
        metrics::gauge!("autodep_events_parked").set(parked as f64);
    }
    if let Ok(running) = store.running_cascades() {
        metrics::gauge!("autodep_cascades_running").set(running as f64);
    }
}

/// Triggers being fired, each in its own task.
#[derive(Default)]
struct Firing {
    tasks: tokio::task::JoinSet<()>,
    /// Trigger ids by task, so a task that panicked is forgotten too.
    ids: std::collections::HashMap<tokio::task::Id, i64>,
}

impl Firing {
    /// Forgets the finished tasks; true when some were.
    fn reap(&mut self) -> bool {
        let mut any = false;
        while let Some(done) = self.tasks.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => {
                    tracing::error!("creating a pipeline panicked: {e}");
                    e.id()
                }
            };
            self.ids.remove(&id);
            any = true;
        }
        any
    }

    /// Starts the due triggers not already being fired, up to
    /// `--trigger-parallelism` at once.
    async fn start_due(&mut self, app: &Arc<AppState>) -> bool {
        let limit = app.config.trigger_parallelism.max(1);
        // Flood control: pipelines we started that still run, plus those
        // being created, stay within --max-running.
        let store = app.store.clone();
        let running = blocking(move || store.running_pipelines())
            .await
            .unwrap_or(0);
        let room = limit.saturating_sub(self.ids.len()).min(
            app.config
                .max_running
                .saturating_sub(running + self.ids.len()),
        );
        if room == 0 {
            return false;
        }
        let store = app.store.clone();
        let firing: Vec<i64> = self.ids.values().copied().collect();
        let due = match blocking(move || store.due_triggers(room, &firing)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("cannot read the trigger queue: {e}");
                return false;
            }
        };
        let mut started = false;
        for t in due {
            let (app, trigger_id) = (app.clone(), t.id);
            let handle = self.tasks.spawn(async move {
                fire(&app, t).await;
                app.wake.notify_one();
            });
            self.ids.insert(handle.id(), trigger_id);
            started = true;
        }
        started
    }

    /// Resolves when a task finishes (never, when there is none).
    async fn next_done(&mut self) {
        if self.tasks.is_empty() {
            std::future::pending::<()>().await;
        }
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => {
                self.ids.remove(&id);
            }
            Some(Err(e)) => {
                tracing::error!("creating a pipeline panicked: {e}");
                self.ids.remove(&e.id());
            }
            None => {}
        }
    }

    async fn drain(&mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.ids.clear();
    }
}

/// Reconciliation: a pipeline of a running cascade whose hook has not come
/// after `--reconcile-interval` is asked for through the API; if it ended,
/// its end becomes an event like the hook's (the same natural key, so a
/// late hook is a duplicate). A lost, paused or dropped hook delays a
/// cascade; it does not stop it.
async fn reconcile(app: &Arc<AppState>) {
    let store = app.store.clone();
    let timeout = app.config.cascade_timeout;
    match blocking(move || store.close_cascades_older_than(timeout)).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("closed {n} cascade(s) still running after --cascade-timeout"),
        Err(e) => tracing::warn!("cannot close old cascades: {e}"),
    }
    let store = app.store.clone();
    let age = app.config.reconcile_interval;
    let stale = match blocking(move || store.unreported_pipelines(age, 50)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot look for unreported pipelines: {e}");
            return;
        }
    };
    for (trigger_id, project_id, project_path, pipeline_id) in stale {
        let pipeline = match app.gitlab.pipeline(project_id, pipeline_id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(project = %project_path, pipeline = pipeline_id, "cannot poll a pipeline whose hook has not come: {e}");
                continue;
            }
        };
        let store = app.store.clone();
        let ended = crate::cascade::Outcome::from_status(&pipeline.status).is_some();
        let recorded = blocking(move || {
            if !ended {
                return store.trigger_looked_at(trigger_id);
            }
            let event = NewEvent {
                kind: "pipeline".into(),
                dedupe_key: format!("pipeline:{project_id}:{pipeline_id}:{}", pipeline.status),
                idempotency_key: None,
                event_uuid: None,
                project_id,
                project_path: project_path.clone(),
                detail: format!(
                    "pipeline {pipeline_id} {} (polled: no hook came)",
                    pipeline.status
                ),
                pipeline: Some(PipelineFacts {
                    id: pipeline_id,
                    status: pipeline.status.clone(),
                    trigger_marker: None,
                }),
            };
            store.accept_events(&[event])?;
            store.trigger_looked_at(trigger_id)
        })
        .await;
        match recorded {
            Ok(()) if ended => {
                metrics::counter!("autodep_pipelines_reconciled_total").increment(1);
                tracing::warn!(
                    pipeline = pipeline_id,
                    "no hook came for a pipeline that ended; polled it"
                );
                app.wake.notify_one();
            }
            Ok(()) => {}
            Err(e) => tracing::warn!("cannot record a polled pipeline: {e}"),
        }
    }
}

/// Retention: finished events and triggers older than `--retention` go.
async fn delete_old(app: &Arc<AppState>) {
    let store = app.store.clone();
    let age = app.config.retention;
    match blocking(move || store.delete_finished_older_than(age)).await {
        Ok((0, 0)) => {}
        Ok((events, triggers)) => {
            tracing::info!(
                events,
                triggers,
                "deleted finished work older than --retention"
            )
        }
        Err(e) => tracing::warn!("cannot delete old events: {e}"),
    }
}

/// Turns pending events into queued triggers. Returns whether it did work.
///
/// Each event is processed in its own task: an error or a panic costs that
/// event an attempt (retried with backoff, parked after
/// `--max-event-attempts`), never the events behind it. Only when GitLab
/// itself is unreachable or refuses the token do all events wait, without
/// losing attempts.
async fn plan_events(app: &Arc<AppState>) -> bool {
    let store = app.store.clone();
    let events = match blocking(move || store.pending_events(200)).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("cannot read pending events: {e}");
            return false;
        }
    };
    let mut did = false;
    for event in events {
        let task = {
            let (app, event) = (app.clone(), event.clone());
            tokio::spawn(async move { process_event(&app, &event).await })
        };
        let failure = match task.await {
            // A cascade step: recorded in its own transaction.
            Ok(Ok(None)) => {
                did = true;
                continue;
            }
            Ok(Ok(Some(outcome))) => {
                let store = app.store.clone();
                let id = event.id;
                match blocking(move || store.complete_event(id, &outcome)).await {
                    Ok(_) => did = true,
                    Err(e) => tracing::error!("cannot record event {}: {e}", event.id),
                }
                continue;
            }
            // GitLab is down or the token is wrong: everything waits.
            Ok(Err(e)) if e.is_fatal() => {
                tracing::warn!("event {} ({}) waits: {e}", event.id, event.project_path);
                break;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => {
                metrics::counter!("autodep_event_panics_total").increment(1);
                format!("processing panicked: {}", panic_text(e))
            }
        };
        did |= event_failed(app, &event, &failure).await;
    }
    did
}

/// What an event leads to: `None` when it was recorded with its cascade
/// step already, else the outcome to record.
type Processed = Option<String>;

async fn process_event(app: &Arc<AppState>, event: &StoredEvent) -> Result<Processed, GitLabError> {
    if crate::failpoint::hit("event-panic", &event.project_path) {
        panic!("failpoint event-panic for {}", event.project_path);
    }
    match event.kind.as_str() {
        "pipeline" => {
            cascade_step(app, event).await;
            Ok(None)
        }
        "push" => refresh_project(app, event).await.map(Some),
        "digest" => {
            cascade_step(app, event).await;
            Ok(None)
        }
        other => Ok(Some(format!("{other} events are not used"))),
    }
}

/// With `--only-if-digest-changed`, a project's success: the digests of
/// the image tags others build on, against those seen before. `Some(why)`
/// when none changed; the observations to remember once the step is done.
async fn digest_check(
    app: &Arc<AppState>,
    event: &StoredEvent,
) -> (Option<String>, Vec<crate::watch::Observation>) {
    let success = event
        .pipeline
        .as_ref()
        .is_some_and(|p| p.status == "success");
    if !app.config.only_if_digest_changed || !success {
        return (None, Vec::new());
    }
    let view = app.graph();
    let Some(n) = view.graph.node_by_id(event.project_id) else {
        return (None, Vec::new());
    };
    let tags = view.graph.produced_tags(n);
    let observed = crate::watch::observe(
        &app.registry_client,
        &app.store,
        &tags,
        &app.config.platforms,
    )
    .await
    .unwrap_or_default();
    match crate::watch::reason_to_rebuild(&observed) {
        Some(why) => {
            tracing::info!(project = %event.project_path, "rebuilding: {why}");
            (None, observed)
        }
        None => (Some(crate::watch::unchanged(&observed)), observed),
    }
}

/// A pipeline or digest event advances (or starts) cascades, in one
/// transaction.
async fn cascade_step(app: &Arc<AppState>, event: &StoredEvent) {
    let (unchanged, observed) = digest_check(app, event).await;
    let (store, view, registry) = (app.store.clone(), app.graph(), app.registry.clone());
    let accept_manual = app.config.accept_manual;
    let stored = event.clone();
    let step = blocking(move || {
        let outcome = store.with_cascades(|tx| match stored.kind.as_str() {
            "digest" => super::cascades::on_digest_event(tx, &view, &stored, accept_manual),
            _ => super::cascades::on_pipeline_event(
                tx,
                &view,
                &registry,
                &stored,
                accept_manual,
                unchanged.as_deref(),
            ),
        });
        // Remembered after the step: a crash in between sees it again.
        if outcome.is_ok() {
            if let Err(e) = crate::watch::remember(&store, &observed) {
                tracing::warn!("cannot record the digests seen: {e}");
            }
        }
        outcome
    })
    .await;
    match step {
        Ok(outcome) => {
            tracing::info!(project = %event.project_path, "{}: {outcome}", event.detail);
            app.wake.notify_one();
        }
        // The store failed: the event stays pending and is tried again.
        Err(e) => panic!("cannot record a cascade step for event {}: {e}", event.id),
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no message".into()),
        Err(e) => e.to_string(),
    }
}

/// Records a failed attempt: retry with backoff, or park the event.
async fn event_failed(app: &Arc<AppState>, event: &StoredEvent, error: &str) -> bool {
    let store = app.store.clone();
    let (id, error) = (event.id, error.to_string());
    let attempts = event.attempts + 1;
    let parked = attempts >= app.config.max_event_attempts;
    let result = if parked {
        tracing::error!(
            "event {} ({}) failed {attempts} times and is parked: {error}",
            event.id,
            event.project_path
        );
        metrics::counter!("autodep_events_parked_total").increment(1);
        blocking(move || store.event_parked(id, &error)).await
    } else {
        let delay = backoff(app.config.retry_delay, event.attempts);
        tracing::warn!(
            "event {} ({}) failed, retrying in {delay:?}: {error}",
            event.id,
            event.project_path
        );
        blocking(move || store.event_retry(id, delay, &error)).await
    };
    if let Err(e) = result {
        tracing::error!("cannot record event {}: {e}", event.id);
    }
    true
}

/// A push changed the Dockerfile: re-read that one project.
async fn refresh_project(app: &Arc<AppState>, event: &StoredEvent) -> Result<String, GitLabError> {
    // With --match the graph holds only the projects GitLab's search
    // matched; a push cannot add another one (the next rescan adds it if
    // the search now matches it).
    if app.config.match_keyword.is_some() && !app.graph().projects.contains_key(&event.project_id) {
        return Ok("project outside --match; not added to the graph".into());
    }
    let project = match app.gitlab.project(&event.project_id.to_string()).await {
        Ok(p) => p,
        Err(GitLabError::NotFound { .. }) => return Ok("project no longer visible".into()),
        Err(e) => return Err(e),
    };
    let scanned = scan::scan_project(&app.gitlab, project, &app.scan_options()).await?;
    let store = app.store.clone();
    let saved = scanned.clone();
    if let Err(e) = blocking(move || store.save_project(&saved)).await {
        tracing::error!("cannot store the refreshed project: {e}");
    }
    let patched = app.clone();
    blocking(move || patched.patch_project(scanned)).await;
    tracing::info!(project = %event.project_path, "graph patched after a push");
    Ok("graph refreshed".into())
}

async fn fire(app: &Arc<AppState>, t: StoredTrigger) {
    let gitlab = app.gitlab.with_event_uuid(t.event_uuid.clone());
    let mut variables = rebuild::autodep_variables(&t.upstream, &t.upstream, &t.image);
    if let Some(cascade) = t.cascade_id {
        variables.push(("AUTODEP_CASCADE".into(), cascade.to_string()));
    }
    // What the project's .autodep.yml adds, as the graph knows it now.
    if let Some(crate::config::Trigger::With {
        variables: extra, ..
    }) = app
        .graph()
        .projects
        .get(&t.project_id)
        .and_then(|p| p.config.as_ref())
        .map(|c| &c.trigger)
    {
        variables.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let store = app.store.clone();
    match blocking(move || store.trigger_posting(t.id)).await {
        Ok(true) => {}
        Ok(false) => {
            metrics::counter!("autodep_triggers_total", "outcome" => "lease_lost").increment(1);
            tracing::warn!(project = %t.project_path, "not creating the pipeline: this replica's claim on the trigger lapsed (the database did not hear from it), another replica takes it over");
            return;
        }
        Err(e) => {
            tracing::error!("cannot record a trigger's attempt: {e}");
            return;
        }
    }
    // Our clock and GitLab's may differ: look back further than needed.
    let since = time::OffsetDateTime::parse(
        &t.created_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        - time::Duration::minutes(10);
    let result = rebuild::create_pipeline(
        &gitlab,
        t.project_id,
        &t.git_ref,
        &variables,
        &t.marker,
        since,
        t.posted,
    )
    .await;
    let store = app.store.clone();
    let outcome = match result {
        Ok(p) => {
            tracing::info!(project = %t.project_path, pipeline = p.id, "pipeline created (upstream {})", t.upstream);
            metrics::counter!("autodep_triggers_total", "outcome" => "created").increment(1);
            blocking(move || store.trigger_done(t.id, p.id, &p.web_url)).await
        }
        Err(e) if is_transient(&e) => {
            let delay = backoff(app.config.retry_delay, t.attempts);
            tracing::warn!(project = %t.project_path, "trigger failed, retrying in {delay:?}: {e}");
            metrics::counter!("autodep_triggers_total", "outcome" => "retry").increment(1);
            let msg = e.to_string();
            blocking(move || store.trigger_retry(t.id, delay, &msg)).await
        }
        Err(e) => {
            tracing::error!(project = %t.project_path, "trigger failed for good: {e}");
            metrics::counter!("autodep_triggers_total", "outcome" => "failed").increment(1);
            let msg = e.to_string();
            let (id, project) = (t.id, t.project_id);
            let done = blocking(move || {
                store.with_cascades(|tx| super::cascades::on_trigger_failed(tx, id, project, &msg))
            })
            .await;
            app.wake.notify_one();
            done
        }
    };
    if let Err(e) = outcome {
        tracing::error!("cannot record a trigger's outcome: {e}");
    }
}
