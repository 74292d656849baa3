//! The server's cascades: `cascade.rs`'s pure state machine driven by
//! pipeline events and stored step by step.
//!
//! - A pipeline of ours ends (matched by its id, else by the
//!   `AUTODEP_TRIGGER_ID` among its variables): every cascade waiting for it
//!   advances — its dependents whose upstreams all succeeded are queued,
//!   those below a failure are pruned.
//! - Any other successful pipeline starts a cascade: the plan of everything
//!   reachable from that project, each member waiting for its affected
//!   upstreams inside the plan.
//! - A project already queued by another cascade is not queued twice: the
//!   new cascade joins that trigger, whose pipeline then advances both.
//!
//! Each step runs in one store transaction with the event marked done, so a
//! crash replays a step whole or not at all.

use crate::cascade::{Action, Cascade, Event, Outcome};
use crate::graph::Target;
use crate::image::Registry;
use crate::store::{CascadeTx, NewTrigger, StoreError, StoredEvent};

use super::GraphView;

/// Applies a pipeline event; returns what happened, for the event's outcome.
/// `unchanged`: with `--only-if-digest-changed`, why an outside success
/// starts nothing (its images' digests did not change).
pub(super) fn on_pipeline_event(
    tx: &mut CascadeTx,
    view: &GraphView,
    registry: &Registry,
    event: &StoredEvent,
    accept_manual: bool,
    unchanged: Option<&str>,
) -> Result<String, StoreError> {
    let outcome_text = match &event.pipeline {
        None => "a pipeline event without its pipeline; nothing to do".to_string(),
        Some(p) => {
            let ours = match tx.trigger_by_pipeline(event.project_id, p.id)? {
                Some(t) => Some(t),
                None => match &p.trigger_marker {
                    Some(marker) => tx.trigger_by_marker(marker)?,
                    None => None,
                },
            };
            let outcome = Outcome::from_status(&p.status);
            match (ours, outcome) {
                (Some(trigger), Some(outcome)) => advance(
                    tx,
                    trigger,
                    event,
                    Event::Finished {
                        project_id: event.project_id,
                        outcome,
                    },
                )?,
                (None, Some(Outcome::Succeeded)) => match unchanged {
                    Some(why) => {
                        metrics::counter!("autodep_cascades_skipped_total").increment(1);
                        format!(
                            "{} of {} succeeded, but {why}: no cascade (--only-if-digest-changed)",
                            event.detail, event.project_path
                        )
                    }
                    None => start(tx, view, registry, event, accept_manual)?,
                },
                _ => format!(
                    "pipeline {} of {} ({}) is not one of ours; nothing to do",
                    p.id, event.project_path, p.status
                ),
            }
        }
    };
    tx.complete_event(event.id, &outcome_text)?;
    Ok(outcome_text)
}

/// An external image tag changed (`--watch-external`): a cascade over
/// everything built on that tag. `event.project_path` is `name:tag`.
pub(super) fn on_digest_event(
    tx: &mut CascadeTx,
    view: &GraphView,
    event: &StoredEvent,
    accept_manual: bool,
) -> Result<String, StoreError> {
    let image = &event.project_path;
    let split = image.rfind(':').filter(|i| !image[*i..].contains('/'));
    let outcome = match split {
        None => format!("{image} has no tag; nothing to do"),
        Some(i) => {
            let plan = view.graph.plan_for_tag(&image[..i], &image[i + 1..], true);
            if plan.triggers.is_empty() {
                format!("nothing is built on {image} any more")
            } else {
                let mut cascade = Cascade::from_plan(&plan, accept_manual);
                let id = tx.create(0, image, &event.detail, &cascade)?;
                let actions = cascade.start();
                let (queued, finished) = record(tx, id, cascade, actions, event.id, None)?;
                metrics::counter!("autodep_cascades_total").increment(1);
                describe(id, &queued, finished)
            }
        }
    };
    tx.complete_event(event.id, &outcome)?;
    Ok(outcome)
}

/// GitLab refused to create a trigger's pipeline for good: the cascades
/// waiting for it prune below it.
pub(super) fn on_trigger_failed(
    tx: &mut CascadeTx,
    trigger_id: i64,
    project_id: u64,
    error: &str,
) -> Result<(), StoreError> {
    let (event_id, event_uuid) = tx.trigger_failed(trigger_id, error)?;
    for (id, mut cascade) in tx.attached(trigger_id)? {
        let actions = cascade.on_event(Event::NotCreated {
            project_id,
            reason: error.to_string(),
        });
        record(tx, id, cascade, actions, event_id, event_uuid.as_deref())?;
    }
    Ok(())
}

/// Our pipeline ended: every cascade waiting for it advances.
fn advance(
    tx: &mut CascadeTx,
    trigger: i64,
    event: &StoredEvent,
    happened: Event,
) -> Result<String, StoreError> {
    let mut said = Vec::new();
    for (id, mut cascade) in tx.attached(trigger)? {
        let actions = cascade.on_event(happened.clone());
        let (queued, finished) = record(
            tx,
            id,
            cascade,
            actions,
            event.id,
            event.event_uuid.as_deref(),
        )?;
        said.push(describe(id, &queued, finished));
    }
    if said.is_empty() {
        return Ok(format!(
            "{} of {}: no running cascade waits for it",
            event.detail, event.project_path
        ));
    }
    Ok(said.join("; "))
}

/// An outside success: a new cascade over everything built on the project.
fn start(
    tx: &mut CascadeTx,
    view: &GraphView,
    registry: &Registry,
    event: &StoredEvent,
    accept_manual: bool,
) -> Result<String, StoreError> {
    let g = &view.graph;
    let target = g
        .node_by_id(event.project_id)
        .map(Target::Project)
        .or_else(|| {
            g.target(&format!("{}/{}", registry.primary(), event.project_path))
                .ok()
        });
    let Some(target) = target else {
        return Ok(format!("{} has no known dependents", event.project_path));
    };
    let plan = g.plan(&target, true);
    if plan.triggers.is_empty() {
        return Ok("no dependents".into());
    }
    let mut cascade = Cascade::from_plan(&plan, accept_manual);
    let reason = format!("{} of {} succeeded", event.detail, event.project_path);
    let id = tx.create(event.project_id, &event.project_path, &reason, &cascade)?;
    let actions = cascade.start();
    let (queued, finished) = record(
        tx,
        id,
        cascade,
        actions,
        event.id,
        event.event_uuid.as_deref(),
    )?;
    metrics::counter!("autodep_cascades_total").increment(1);
    Ok(describe(id, &queued, finished))
}

/// Queues (or joins) a trigger for every member the machine said to build,
/// and stores the cascade's new state. Returns the projects queued and
/// whether the cascade is finished.
fn record(
    tx: &mut CascadeTx,
    cascade_id: i64,
    cascade: Cascade,
    actions: Vec<Action>,
    event_id: i64,
    event_uuid: Option<&str>,
) -> Result<(Vec<String>, bool), StoreError> {
    let mut queued = Vec::new();
    for action in actions {
        let Action::Trigger { project_id } = action else {
            continue;
        };
        let Some(m) = cascade.members.get(&project_id) else {
            continue;
        };
        let trigger = NewTrigger {
            project_id,
            project_path: m.project.clone(),
            git_ref: m.git_ref.clone(),
            upstream: m.upstream.clone(),
            image: m.image.clone(),
            depth: m.depth,
        };
        let (_, new) = tx.queue(cascade_id, event_id, event_uuid, &trigger)?;
        metrics::counter!("autodep_triggers_queued_total").increment(u64::from(new));
        queued.push(if new {
            m.project.clone()
        } else {
            format!("{} (joined)", m.project)
        });
    }
    let finished = cascade.is_finished();
    tx.save(cascade_id, cascade)?;
    Ok((queued, finished))
}

fn describe(id: i64, queued: &[String], finished: bool) -> String {
    let state = if finished { "finished" } else { "running" };
    if queued.is_empty() {
        format!("cascade {id} ({state})")
    } else {
        format!("cascade {id} ({state}): queued {}", queued.join(", "))
    }
}
