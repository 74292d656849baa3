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

#[tokio::test(flavor = "multi_thread")]
async fn a_push_patch_is_not_undone_by_a_rescan_that_read_the_project_before_it() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/other", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    // Over REST, where the held answer is the read of that one file.
    let (state, server) = serve(&sim, &["--refresh-interval", "3s", "--api", "rest"]).await;
    let app = project_id(&sim, "g/app").await;
    // The next rescan's read of g/app's Dockerfile is answered 3 s late:
    // it carries what was committed before the push below.
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![FaultRule {
            endpoint: "*".into(),
            path_contains: Some(format!("/projects/{app}/repository/files")),
            kind: FaultKind::HoldAfter { hold_ms: 3000 },
            fraction: 1.0,
            count: Some(1),
            for_ms: None,
        }],
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sim.answers_held() == 0 {
        assert!(std::time::Instant::now() < deadline, "no rescan came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rescans = server.status().await["rescans"].as_u64().unwrap();
    sim.commit_file(
        "g/app",
        "main",
        "Dockerfile",
        &format!("FROM {REG}/g/other:latest\n"),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.upstreams(app).await != ["g/other"] {
        assert!(
            std::time::Instant::now() < deadline,
            "the push was not patched in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The held rescan ends now, with its older read of g/app.
    server
        .wait_until(
            |s| s["rescans"].as_u64().unwrap() > rescans,
            "the held rescan finished",
        )
        .await;
    assert_eq!(
        server.upstreams(app).await,
        ["g/other"],
        "the rescan's older read replaced the push patch in memory"
    );
    // And on disk, where a restart would read it.
    let mut server = server;
    server.child.kill().await.unwrap();
    let store = gitlab_docker_autodep::store::Store::open(state.path()).unwrap();
    let stored = store.load_projects().unwrap().unwrap();
    let app = stored.iter().find(|p| p.project.id == app).unwrap();
    assert!(
        format!("{:?}", app.dockerfile).contains("g/other"),
        "the rescan's older read replaced the push patch on disk: {:?}",
        app.dockerfile
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_project_and_one_that_refuses_variables_do_not_break_a_cascade() {
    let sim = start(vec![
        image_project("g/base", &[]),
        // GitLab refuses pipeline variables here: built without them,
        // matched by its pipeline id, and what is below it still follows.
        image_project("g/no-vars", &["g/base"]).forbid_pipeline_variables(),
        image_project("g/below-no-vars", &["g/no-vars"]),
        // The token is only a Guest here: its Dockerfile cannot be read.
        image_project("g/guest", &["g/base"]).guest(),
    ])
    .await;
    let graph = autodep(&sim, &["graph", "--format", "json"]).await;
    assert_eq!(graph.status.code(), Some(0), "{}", stderr(&graph));
    let (_state, server) = serve(&sim, &[]).await;
    let status = server.status().await;
    assert!(
        status["skipped"].to_string().contains("g/guest"),
        "the Guest project is listed as not readable: {}",
        status["skipped"]
    );
    sim.run_pipeline("g/base").unwrap();
    settled(&server).await;
    assert_eq!(triggered(&sim), ["g/base", "g/below-no-vars", "g/no-vars"]);
    let no_vars = sim
        .pipelines()
        .into_iter()
        .find(|p| p.project_path == "g/no-vars")
        .unwrap();
    assert!(no_vars.variables.is_empty(), "{:?}", no_vars.variables);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_hook_is_silent_is_shown_waiting_with_its_age() {
    let ok = PipelineStatus::Success;
    let sim = start(vec![
        project("g/base", &[], 100, ok),
        project("g/mid", &["g/base"], 100, ok),
        project("g/leaf", &["g/mid"], 100, ok),
    ])
    .await;
    // Polling is far off: only the hook could tell the server.
    let (_state, server) = serve(&sim, &["--reconcile-interval", "1h"]).await;
    sim.pause_hooks("g/mid", true);
    sim.run_pipeline("g/base").unwrap();
    // Null until the cascade exists.
    let cascade_json = || async {
        let r = reqwest::get(format!("{}/cascades/1?format=json", server.url))
            .await
            .unwrap();
        if r.status() == 404 {
            return Value::Null;
        }
        r.json::<Value>().await.unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mid = loop {
        let c = cascade_json().await;
        let mid = c["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["project"] == "g/mid").cloned());
        if let Some(mid) = mid.filter(|m| m["pipeline"]["pipeline_id"].is_u64()) {
            break mid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "g/mid never triggered: {c}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(sim.wait_pipelines_settled(Duration::from_secs(30)).await);
    assert!(mid["pipeline"]["fired_at"].is_string(), "{mid}");
    assert!(mid["pipeline"]["last_hook_at"].is_null(), "{mid}");
    assert!(
        mid["why"]
            .as_str()
            .unwrap()
            .contains("no hook heard from it yet"),
        "{mid}"
    );
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("autodep_pipelines_without_hook 1\n"),
        "{metrics}"
    );
    let page = reqwest::get(format!("{}/cascades/1", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<b>no hook since</b> <time"), "{page}");
    let front = reqwest::get(&server.url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        front.contains("1 pipeline(s) of running cascades have sent no webhook yet"),
        "{front}"
    );
    // g/leaf waits: its upstream's end is unknown.
    assert!(triggered(&sim).iter().all(|p| p != "g/leaf"));
}
