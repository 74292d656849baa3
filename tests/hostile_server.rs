//! A GitLab whose projects hold every hostile Dockerfile: the scan stays
//! complete with every good edge, an oversize file is skipped with its
//! reason, and the server stays up through push events that carry them,
//! through an event that crashes its processing, and through a crashing
//! background task.

mod common;

use std::time::{Duration, Instant};

use common::hostile::shapes;
use common::server::*;
use common::*;
use gitlab_sim::{PipelineStatus, ProjectSpec};
use serde_json::Value;

const MIB: usize = 1 << 20;

fn good_projects() -> Vec<ProjectSpec> {
    vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
        // BuildKit expands the unset VARIANT to nothing: still built on g/base.
        ProjectSpec::new("g/variant")
            .dockerfile(&format!("ARG VARIANT\nFROM {REG}/g/base:1${{VARIANT}}\n"))
            .pipeline(Duration::from_millis(100), PipelineStatus::Success),
        // Names a stage defined after it: not an image.
        ProjectSpec::new("g/forward")
            .dockerfile(&format!(
                "FROM {REG}/g/base AS one\nCOPY --from=two / /\nFROM {REG}/g/app AS two\n"
            ))
            .pipeline(Duration::from_millis(100), PipelineStatus::Success),
    ]
}

fn hostile_projects() -> Vec<ProjectSpec> {
    let mut projects: Vec<ProjectSpec> = shapes(MIB - 1024)
        .into_iter()
        .enumerate()
        .map(|(i, shape)| ProjectSpec::new(&format!("evil/shape-{i:02}")).dockerfile(&shape.text))
        .collect();
    projects.push(
        ProjectSpec::new("evil/too-large")
            .dockerfile(&format!("FROM {REG}/g/base\n{}", "RUN x\n".repeat(MIB / 3))),
    );
    projects
}

fn edges(graph: &Value) -> Vec<(String, String)> {
    let mut e: Vec<(String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["upstream"].as_str().unwrap().to_string(),
                e["downstream"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    e.sort();
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_dockerfiles_leave_the_scan_complete_and_every_good_edge() {
    let mut projects = good_projects();
    projects.extend(hostile_projects());
    let sim = start(projects).await;
    let out = autodep(&sim, &["graph", "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let graph: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        edges(&graph),
        [
            pair("g/app", "g/forward"),
            pair("g/base", "g/app"),
            pair("g/base", "g/forward"),
            pair("g/base", "g/variant"),
        ]
    );
    let too_large = graph["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "evil/too-large")
        .unwrap();
    assert_eq!(too_large["dockerfile"], "too_large");
    assert!(
        graph["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["project"] == "evil/too-large"
                && n["message"]
                    .as_str()
                    .unwrap()
                    .contains("--max-dockerfile-size")),
        "{:#}",
        graph["notes"]
    );
    // Raising the limit reads it, and it is then an edge.
    let out = autodep(
        &sim,
        &[
            "--max-dockerfile-size",
            "4MiB",
            "deps",
            "--first-level",
            "g/base",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("evil/too-large"), "{}", stdout(&out));
    // -v says why it was skipped at the default limit.
    let out = autodep(&sim, &["-v", "deps", "g/base"]).await;
    assert!(
        stderr(&out).contains("evil/too-large: Dockerfile larger than 1048576 bytes"),
        "{}",
        stderr(&out)
    );
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_stays_up_through_hostile_pushes_and_a_crashing_event() {
    let mut projects = good_projects();
    projects.push(image_project("evil/crashes", &["g/base"]));
    projects.push(
        ProjectSpec::new("evil/too-large")
            .dockerfile(&format!("FROM {REG}/g/base\n{}", "RUN x\n".repeat(MIB / 3))),
    );
    let sim = start(projects).await;
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start_with_env(
        &sim,
        state.path(),
        &["--max-event-attempts", "3"],
        &[("AUTODEP_FAILPOINTS", "event-panic:evil/crashes")],
    )
    .await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    // The oversize Dockerfile is named, with the reason, on the status page.
    let status = server.status().await;
    assert!(
        status["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["project"] == "evil/too-large"
                && s["reason"]
                    .as_str()
                    .unwrap()
                    .contains("--max-dockerfile-size")),
        "{:#}",
        status["skipped"]
    );
    let page = reqwest::get(&server.url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Skipped projects") && page.contains("evil/too-large"));
    // Every hostile shape pushed to a project the graph knows.
    for shape in shapes(MIB - 1024) {
        sim.commit_file("g/forward", "main", "Dockerfile", &shape.text)
            .await
            .unwrap();
    }
    // Processing this push panics every time: it is retried, then parked.
    sim.commit_file("evil/crashes", "main", "Dockerfile", "FROM alpine\n")
        .await
        .unwrap();
    let status = server
        .wait_until(
            |s| s["queue"]["parked_events"] == 1 && s["queue"]["pending_events"] == 0,
            "the crashing event parked and the hostile pushes processed",
        )
        .await;
    let parked: Vec<&Value> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "parked")
        .collect();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0]["project_path"], "evil/crashes");
    assert_eq!(parked[0]["attempts"], 3);
    assert!(parked[0]["outcome"].as_str().unwrap().contains("panicked"));
    // The events behind it were not blocked, and the server still works:
    // a base success triggers its dependents.
    sim.commit_file(
        "g/forward",
        "main",
        "Dockerfile",
        &format!("FROM {REG}/g/base\n"),
    )
    .await
    .unwrap();
    server
        .wait_until(|s| s["queue"]["pending_events"] == 0, "push processed")
        .await;
    sim.run_pipeline("g/base").unwrap();
    server
        .wait_until(
            |s| {
                s["triggers"]
                    .as_array()
                    .is_some_and(|t| t.iter().filter(|t| t["state"] == "done").count() >= 4)
            },
            "the base's dependents triggered",
        )
        .await;
    let mut first_level: Vec<String> = sim
        .pipelines()
        .into_iter()
        .filter(|p| p.source == "api")
        .map(|p| p.project_path)
        .collect();
    first_level.sort();
    first_level.dedup();
    assert!(
        ["evil/crashes", "g/app", "g/forward", "g/variant"]
            .iter()
            .all(|p| first_level.contains(&p.to_string())),
        "{first_level:?}"
    );
    let (code, metrics) = get(&format!("{}/metrics", server.url)).await;
    assert_eq!(code, 200);
    assert!(metrics.contains("autodep_events_parked 1"), "{metrics}");
    assert!(server.child.try_wait().unwrap().is_none(), "server exited");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_background_task_is_restarted_and_readiness_says_so() {
    let sim = start(good_projects()).await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::launch(
        &sim,
        state.path(),
        &["--refresh-interval", "1h"],
        &[("AUTODEP_FAILPOINTS", "refresher-panic:after-scan")],
    )
    .await;
    // The refresher panics after each scan; while it waits to restart,
    // /readyz answers 503, and each restart is counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_unready = false;
    let mut restarts = 0.0;
    while Instant::now() < deadline && !(saw_unready && restarts >= 2.0) {
        let (code, body) = get(&format!("{}/readyz", server.url)).await;
        // (Before the first scan it is 503 for another reason.)
        if code == 503 && body.contains("restarting") {
            saw_unready = true;
        }
        let (_, metrics) = get(&format!("{}/metrics", server.url)).await;
        restarts = metrics
            .lines()
            .find(|l| l.starts_with("autodep_task_restarts_total{task=\"refresher\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_unready, "/readyz never answered 503");
    assert!(restarts >= 2.0, "restarts counted: {restarts}");
    // Webhooks are still served.
    let (code, _) = get(&format!("{}/healthz", server.url)).await;
    assert_eq!(code, 200);
}
