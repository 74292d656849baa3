//! `--watch-external`: every interval, the external image tags of the graph
//! checked for a new digest on the platforms built for. A change is queued
//! as a `digest` event (deduplicated by image, tag and new digest) before
//! it is remembered, so a crash in between repeats it rather than losing
//! it; the worker starts a cascade for that tag's dependents.

use std::sync::Arc;

use super::AppState;
use crate::registry::RegistryClient;
use crate::store::NewEvent;
use crate::watch::{self, Outcome};

pub async fn run(app: Arc<AppState>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let Some(interval) = app.config.watch_external else {
        let _ = stopped.wait_for(|s| *s).await;
        return;
    };
    loop {
        // One replica checks: the leader.
        if app.has_graph() && app.is_leader() {
            check_once(&app, &app.registry_client).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

async fn check_once(app: &Arc<AppState>, client: &RegistryClient) {
    let tags = app.graph().graph.external_tags();
    metrics::gauge!("autodep_watched_images").set(tags.len() as f64);
    let observed = watch::observe(client, &app.store, &tags, &app.config.platforms).await;
    let observed = match observed {
        Ok(o) => o,
        Err(e) => {
            tracing::error!("cannot read the digests seen: {e}");
            return;
        }
    };
    let mut events = Vec::new();
    for o in &observed {
        match &o.outcome {
            Outcome::Changed { from, to } => {
                let detail = format!(
                    "digest of {} ({}) changed from {from} to {to}",
                    o.image(),
                    o.platform
                );
                tracing::info!("{detail}");
                metrics::counter!("autodep_digest_changes_total").increment(1);
                events.push(NewEvent {
                    kind: "digest".into(),
                    dedupe_key: format!("digest:{}:{to}", o.image()),
                    idempotency_key: None,
                    event_uuid: None,
                    project_id: 0,
                    project_path: o.image(),
                    detail,
                    pipeline: None,
                });
            }
            Outcome::Unchecked { error } => {
                metrics::counter!("autodep_registry_errors_total").increment(1);
                tracing::warn!(
                    "cannot check {}: {error}; checked again next time",
                    o.image()
                );
            }
            Outcome::First { .. } | Outcome::Same { .. } => {}
        }
    }
    let store = app.store.clone();
    let saved = tokio::task::spawn_blocking(move || {
        store.accept_events(&events)?;
        watch::remember(&store, &observed)
    })
    .await;
    match saved {
        Ok(Ok(())) => {
            metrics::counter!("autodep_digest_checks_total").increment(1);
            app.wake.notify_one()
        }
        Ok(Err(e)) => tracing::error!("cannot record a digest check: {e}"),
        Err(e) => tracing::error!("a digest check failed: {e}"),
    }
}
