//! The server runs every rebuild as one cascade: each project once, after
//! all its upstreams; nothing below a failure; finite on cycles; a project
//! two cascades need is built once when its trigger is still queued.

mod common;

use std::time::Duration;

use common::server::*;
use common::*;
use gitlab_sim::{FaultKind, FaultRule, Faults, PipelineStatus, ProjectSpec, Simulator};
use serde_json::Value;

fn project(path: &str, bases: &[&str], ms: u64, outcome: PipelineStatus) -> ProjectSpec {
    image_project(path, bases).pipeline(Duration::from_millis(ms), outcome)
}

async fn serve(sim: &Simulator, args: &[&str]) -> (tempfile::TempDir, Server) {
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(sim, state.path(), args).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    (state, server)
}

/// Waits until no cascade runs and the queue is empty.
async fn settled(server: &Server) -> Value {
    server
        .wait_until(
            |s| {
                s["queue"]["running_cascades"] == 0
                    && s["queue"]["pending_events"] == 0
                    && s["queue"]["queued_triggers"] == 0
                    && s["cascades"].as_array().is_some_and(|c| !c.is_empty())
            },
            "every cascade finished",
        )
        .await
}

fn created_at(sim: &Simulator, path: &str) -> Vec<time::OffsetDateTime> {
    sim.pipelines()
        .into_iter()
        .filter(|p| p.project_path == path)
        .map(|p| p.created_at)
        .collect()
}

fn finished_at(sim: &Simulator, path: &str) -> time::OffsetDateTime {
    sim.pipelines()
        .into_iter()
        .find(|p| p.project_path == path)
        .and_then(|p| p.finished_at)
        .unwrap_or_else(|| panic!("{path} never finished"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diamond_builds_its_bottom_once_after_both_sides_even_when_they_finish_apart() {
    let ok = PipelineStatus::Success;
    let sim = start(vec![
        project("g/base", &[], 100, ok),
        project("g/fast", &["g/base"], 100, ok),
        project("g/slow", &["g/base"], 900, ok),
        project("g/bottom", &["g/fast", "g/slow"], 100, ok),
        project("g/below", &["g/bottom"], 100, ok),
    ])
    .await;
    let (_state, server) = serve(&sim, &[]).await;
    sim.run_pipeline("g/base").unwrap();
    let status = settled(&server).await;
    assert_eq!(
        triggered(&sim),
        ["g/base", "g/below", "g/bottom", "g/fast", "g/slow"]
    );
    let bottom = created_at(&sim, "g/bottom");
    assert!(
        bottom[0] >= finished_at(&sim, "g/slow"),
        "built before its slow side finished"
    );
    assert!(created_at(&sim, "g/below")[0] >= finished_at(&sim, "g/bottom"));
    let cascade = &status["cascades"][0];
    assert_eq!(cascade["state"], "finished");
    assert!(cascade["reason"].as_str().unwrap().contains("g/base"));
    // Every pipeline it created says which cascade it belongs to.
    let id = cascade["id"].to_string();
    for p in sim
        .pipelines()
        .iter()
        .filter(|p| p.project_path != "g/base")
    {
        assert!(
            p.variables
                .contains(&("AUTODEP_CASCADE".to_string(), id.clone())),
            "{}: {:?}",
            p.project_path,
            p.variables
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_stops_its_subtree_and_the_rest_goes_on() {
    let ok = PipelineStatus::Success;
    let sim = start(vec![
        project("g/base", &[], 100, ok),
        project("g/broken", &["g/base"], 100, PipelineStatus::Failed),
        project("g/under-broken", &["g/broken"], 100, ok),
        project("g/fine", &["g/base"], 100, ok),
        project("g/under-fine", &["g/fine"], 100, ok),
    ])
    .await;
    let (_state, server) = serve(&sim, &[]).await;
    sim.run_pipeline("g/base").unwrap();
    let status = settled(&server).await;
    assert_eq!(
        triggered(&sim),
        ["g/base", "g/broken", "g/fine", "g/under-fine"]
    );
    let members = &status["cascades"][0]["members"];
    let under = members
        .as_object()
        .unwrap()
        .values()
        .find(|m| m["project"] == "g/under-broken")
        .unwrap();
    assert_eq!(under["state"]["state"], "pruned", "{under}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cycle_is_built_once_and_the_cascade_ends() {
    let ok = PipelineStatus::Success;
    // g/a and g/b are built on each other; g/base starts it.
    let sim = start(vec![
        project("g/base", &[], 100, ok),
        project("g/a", &["g/base", "g/b"], 100, ok),
        project("g/b", &["g/a"], 100, ok),
    ])
    .await;
    let (_state, server) = serve(&sim, &[]).await;
    sim.run_pipeline("g/base").unwrap();
    settled(&server).await;
    // Our own successes advance the cascade; they never start another.
    assert!(sim.wait_pipelines_settled(Duration::from_secs(10)).await);
    assert_eq!(triggered(&sim), ["g/a", "g/b", "g/base"]);
    let status = server.status().await;
    assert_eq!(
        status["cascades"].as_array().unwrap().len(),
        1,
        "{status:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_cascades_that_need_a_queued_project_build_it_once() {
    let ok = PipelineStatus::Success;
    let sim = start(vec![
        project("g/base-1", &[], 100, ok),
        project("g/base-2", &[], 100, ok),
        project("g/both", &["g/base-1", "g/base-2"], 100, ok),
    ])
    .await;
    let (_state, server) = serve(&sim, &[]).await;
    // GitLab makes the first trigger of g/both wait (429, retry in 1 s):
    // it stays queued while the second cascade reaches it.
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![FaultRule::new(
            "pipeline_create",
            FaultKind::RateLimit {
                retry_after_secs: 1,
            },
        )
        .count(1)],
    });
    sim.run_pipeline("g/base-1").unwrap();
    server
        .wait_until(
            |s| s["queue"]["queued_triggers"] == 1,
            "g/both queued by the first cascade",
        )
        .await;
    sim.run_pipeline("g/base-2").unwrap();
    let status = settled(&server).await;
    assert_eq!(created_at(&sim, "g/both").len(), 1, "{status:#}");
    let cascades = status["cascades"].as_array().unwrap();
    assert_eq!(cascades.len(), 2);
    assert!(
        cascades.iter().all(|c| c["state"] == "finished"),
        "{status:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_hook_delays_a_cascade_but_does_not_stop_it() {
    let ok = PipelineStatus::Success;
    let sim = start(vec![
        project("g/base", &[], 100, ok),
        project("g/silent", &["g/base"], 100, ok),
        project("g/below", &["g/silent"], 100, ok),
    ])
    .await;
    let (_state, server) = serve(&sim, &["--reconcile-interval", "500ms"]).await;
    // GitLab paused g/silent's hook: its pipeline's end is never delivered.
    sim.pause_hooks("g/silent", true);
    sim.run_pipeline("g/base").unwrap();
    let status = settled(&server).await;
    assert_eq!(
        triggered(&sim),
        ["g/base", "g/below", "g/silent"],
        "{status:#}"
    );
    assert!(sim
        .hook_deliveries()
        .iter()
        .any(|d| d.project == "g/silent" && d.error.as_deref() == Some("dropped: hook paused")));
    let polled = status["events"].as_array().unwrap().iter().any(|e| {
        e["project_path"] == "g/silent" && e["detail"].as_str().unwrap().contains("polled")
    });
    assert!(polled, "{status:#}");
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("autodep_pipelines_reconciled_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_max_running_pipelines_run_at_once_shallowest_first() {
    let ok = PipelineStatus::Success;
    let sim = start(vec![
        project("g/base", &[], 100, ok),
        project("g/first", &["g/base"], 300, ok),
        project("g/second", &["g/base"], 300, ok),
        project("g/deeper", &["g/first"], 300, ok),
    ])
    .await;
    let (_state, server) = serve(&sim, &["--max-running", "1"]).await;
    sim.run_pipeline("g/base").unwrap();
    settled(&server).await;
    let mut ours: Vec<_> = sim
        .pipelines()
        .into_iter()
        .filter(|p| p.project_path != "g/base")
        .collect();
    ours.sort_by_key(|p| p.created_at);
    let order: Vec<&str> = ours.iter().map(|p| p.project_path.as_str()).collect();
    // g/deeper became ready when g/first ended, but g/second (depth 0) was
    // waiting longer at a shallower depth.
    assert_eq!(order, ["g/first", "g/second", "g/deeper"]);
    for pair in ours.windows(2) {
        assert!(
            pair[1].created_at >= pair[0].finished_at.unwrap(),
            "{} started while {} ran",
            pair[1].project_path,
            pair[0].project_path
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cascade_older_than_the_timeout_is_closed_with_the_reason() {
    let ok = PipelineStatus::Success;
    let sim = start(vec![
        project("g/base", &[], 100, ok),
        project("g/silent", &["g/base"], 100, ok),
    ])
    .await;
    let (_state, server) = serve(
        &sim,
        &["--cascade-timeout", "1s", "--reconcile-interval", "1h"],
    )
    .await;
    // Its end is never heard of: only the timeout ends the cascade.
    sim.pause_hooks("g/silent", true);
    sim.run_pipeline("g/base").unwrap();
    let status = server
        .wait_until(
            |s| {
                s["cascades"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["state"] == "closed"))
            },
            "the cascade closed",
        )
        .await;
    let cascade = &status["cascades"][0];
    assert!(
        cascade["reason"]
            .as_str()
            .unwrap()
            .contains("--cascade-timeout"),
        "{cascade}"
    );
    assert_eq!(status["queue"]["running_cascades"], 0);
}
