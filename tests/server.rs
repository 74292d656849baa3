//! The webhook server end to end: the real binary, the simulator's
//! pipelines POSTing real-shaped hooks at it, a real SQLite file.

mod common;

use std::time::Duration;

use common::server::*;
use common::*;
use gitlab_sim::{FaultKind, FaultRule, Faults, PipelineStatus, Simulator};
use serde_json::{json, Value};

fn count(sim: &Simulator, path: &str) -> usize {
    sim.pipelines()
        .iter()
        .filter(|p| p.project_path == path)
        .count()
}

async fn sim_with_hook(projects: Vec<gitlab_sim::ProjectSpec>) -> Simulator {
    start(projects).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_success_cascades_through_the_tree_once_per_upstream_success() {
    let sim = sim_with_hook(vec![
        image_project("g/base", &[]),
        image_project("g/mid", &["g/base"]),
        image_project("g/leaf", &["g/mid"]),
        image_project("g/other", &["g/base"]),
        image_project("g/bystander", &[]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    sim.run_pipeline("g/base").unwrap();
    wait_quiet(&sim, &server).await;
    assert_eq!(triggered(&sim), ["g/base", "g/leaf", "g/mid", "g/other"]);
    let p = sim.pipelines();
    let mid = p.iter().find(|x| x.project_path == "g/mid").unwrap();
    assert_eq!(mid.source, "api");
    assert!(mid
        .variables
        .contains(&("AUTODEP_UPSTREAM".into(), "g/base".into())));
    // The trigger carried the event's X-Gitlab-Event-UUID back to GitLab.
    let base_uuid = sim
        .hook_deliveries()
        .iter()
        .find(|d| d.project == "g/base" && d.status_sent.as_deref() == Some("success"))
        .unwrap()
        .event_uuid
        .clone();
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.endpoint == "pipeline_create"
            && r.event_uuid.as_deref() == Some(base_uuid.as_str())));
    let status = server.status().await;
    assert_eq!(status["triggers"].as_array().unwrap().len(), 3);
    assert!(status["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["state"] == "done"));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_status_branch_tag_malformed_oversize_and_fixtures() {
    let sim = sim_with_hook(vec![
        image_project("gitlab-org/gitlab-test", &[]),
        image_project("g/app", &["gitlab-org/gitlab-test"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &["--max-body-bytes", "20000"]).await;
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gitlab/webhooks/pipeline.json"
    ))
    .unwrap();
    let mut body: Value = serde_json::from_str(&fixture).unwrap();
    body["object_attributes"]["source"] = json!("push");
    body["project"]["id"] = json!(1);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = body.clone();
        f(&mut b);
        b.to_string()
    };
    let hook = "Pipeline Hook";
    assert_eq!(server.post(hook, &body.to_string(), None).await.0, 401);
    assert_eq!(
        server.post(hook, &body.to_string(), Some("wrong")).await.0,
        401
    );
    let cases: Vec<(String, &str)> = vec![
        (
            with(&|b| b["object_attributes"]["status"] = json!("running")),
            "running",
        ),
        (
            with(&|b| b["object_attributes"]["ref"] = json!("feature")),
            "not the default branch",
        ),
        (
            with(&|b| b["object_attributes"]["tag"] = json!(true)),
            "tag",
        ),
        (fixture.clone(), "merge_request_event"),
    ];
    for (b, why) in cases {
        let (status, answer) = server.post(hook, &b, Some(SECRET)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "ignored", "{why}: {answer}");
        assert!(answer["detail"].as_str().unwrap().contains(why), "{answer}");
    }
    let (status, answer) = server.post(hook, "{not json", Some(SECRET)).await;
    assert_eq!(status, 400);
    assert!(
        answer["detail"].as_str().unwrap().contains("not JSON"),
        "{answer}"
    );
    let (status, _) = server
        .post(
            hook,
            &format!("{{\"pad\":\"{}\"}}", "x".repeat(30_000)),
            Some(SECRET),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        server.status().await["events"].as_array().unwrap().len(),
        0,
        "nothing ignored was stored"
    );
    // Every real payload gets a 2xx: GitLab disables hooks that fail.
    for (file, event) in [
        ("pipeline.json", "Pipeline Hook"),
        ("pipeline_docs.json", "Pipeline Hook"),
        ("push.json", "Push Hook"),
        ("push_docs.json", "Push Hook"),
        ("tag_push.json", "Tag Push Hook"),
        ("tag_push_docs.json", "Tag Push Hook"),
        ("job.json", "Job Hook"),
        ("build.json", "Job Hook"),
        ("system_push.json", "System Hook"),
    ] {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/gitlab/webhooks/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let (status, answer) = server.post(event, &text, Some(SECRET)).await;
        assert_eq!(status, 200, "{file}: {answer}");
    }
    // A successful default-branch pipeline is accepted once, then a duplicate.
    let (status, answer) = server.post(hook, &body.to_string(), Some(SECRET)).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("accepted")),
        "{answer}"
    );
    let (_, answer) = server.post(hook, &body.to_string(), Some(SECRET)).await;
    assert_eq!(answer["status"], "duplicate");
    server
        .wait_until(
            |s| {
                s["triggers"]
                    .as_array()
                    .is_some_and(|t| t.len() == 1 && t[0]["state"] == "done")
            },
            "the trigger",
        )
        .await;
    assert_eq!(triggered(&sim), ["g/app"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_events_are_not_acted_on_twice() {
    let sim = sim_with_hook(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    sim.run_pipeline("g/base").unwrap();
    wait_quiet(&sim, &server).await;
    assert_eq!(count(&sim, "g/app"), 1);
    let success = sim
        .hook_deliveries()
        .into_iter()
        .find(|d| d.project == "g/base" && d.status_sent.as_deref() == Some("success"))
        .unwrap();
    let again = sim.resend(&success).await;
    assert_eq!(again.response_status, Some(200));
    wait_quiet(&sim, &server).await;
    assert_eq!(
        count(&sim, "g/app"),
        1,
        "the resend (same Idempotency-Key) triggered nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_changing_from_takes_effect_without_a_rescan() {
    let sim = sim_with_hook(vec![
        image_project("g/base", &[]),
        image_project("g/app", &[]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &["--refresh-interval", "1h"]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    let listings = || {
        sim.requests()
            .iter()
            .filter(|r| r.endpoint == "projects")
            .count()
    };
    let listed_before = listings();
    sim.commit_file(
        "g/app",
        "main",
        "Dockerfile",
        &format!("FROM {REG}/g/base:2\n"),
    )
    .await
    .unwrap();
    server
        .wait_until(
            |s| {
                s["events"].as_array().is_some_and(|e| {
                    e.iter()
                        .any(|e| e["kind"] == "push" && e["state"] == "done")
                })
            },
            "the push",
        )
        .await;
    // A push elsewhere than the Dockerfile is ignored.
    sim.commit_file("g/app", "main", "README.md", "hello\n")
        .await
        .unwrap();
    sim.run_pipeline("g/base").unwrap();
    wait_quiet(&sim, &server).await;
    assert_eq!(count(&sim, "g/app"), 1, "the new FROM line was used");
    assert_eq!(listings(), listed_before, "no full rescan");
    let pushes = server.status().await["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "push")
        .count();
    assert_eq!(pushes, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_5xx_storm_then_restart_loses_nothing() {
    let mut projects = vec![image_project("g/base", &[])];
    for i in 0..5 {
        projects.push(image_project(&format!("g/app{i}"), &["g/base"]));
    }
    let sim = start(projects).await;
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(&sim, state.path(), &["--max-retries", "0"]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![FaultRule::new(
            "pipeline_create",
            FaultKind::Error { status: 503 },
        )],
    });
    sim.run_pipeline("g/base").unwrap();
    // The event is accepted and its triggers are failing against the storm.
    server
        .wait_until(
            |s| {
                s["triggers"].as_array().is_some_and(|t| {
                    t.len() == 5
                        && t.iter()
                            .all(|t| t["state"] == "queued" && t["attempts"].as_u64() >= Some(1))
                })
            },
            "triggers failing",
        )
        .await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    assert_eq!(triggered(&sim), ["g/base"], "nothing got through the storm");
    sim.set_faults(Faults::default());
    let server = Server::start(&sim, state.path(), &[]).await;
    server
        .wait_until(
            |s| s["queue"]["queued_triggers"] == 0,
            "the queue drains after restart",
        )
        .await;
    for i in 0..5 {
        assert_eq!(count(&sim, &format!("g/app{i}")), 1, "g/app{i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_cleanly_and_endpoints_answer() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(&sim, state.path(), &[]).await;
    let get = |path: &str| reqwest::get(format!("{}{path}", server.url));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let page = get("/").await.unwrap().text().await.unwrap();
    assert!(page.contains("<svg") && page.contains("g/app"), "{page}");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("autodep_gitlab_requests_total"),
        "{metrics}"
    );
    let pid = server.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_is_served_from_the_store_at_restart() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(&sim, state.path(), &[]).await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    // GitLab's project list now fails; the stored graph still serves.
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![FaultRule::new("projects", FaultKind::Error { status: 502 })],
    });
    sim.clear_requests();
    let server = Server::start(&sim, state.path(), &["--max-retries", "0"]).await;
    let s = server.status().await;
    assert_eq!(s["projects"], 2);
    assert_eq!(s["dependencies"], 1);
    assert!(
        !sim.requests().iter().any(|r| r.endpoint == "projects"),
        "a stored scan younger than --refresh-interval is not redone at start"
    );
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    sim.set_pipeline_behaviour(
        "g/base",
        gitlab_sim::PipelineBehaviour {
            duration: Duration::from_millis(50),
            outcome: PipelineStatus::Success,
        },
    )
    .unwrap();
    sim.run_pipeline("g/base").unwrap();
    wait_quiet(&sim, &server).await;
    assert_eq!(count(&sim, "g/app"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_the_same_state_directory_is_refused() {
    let sim = sim_with_hook(vec![image_project("g/base", &[])]).await;
    let state = tempfile::tempdir().unwrap();
    let _first = Server::start(&sim, state.path(), &[]).await;
    let out = autodep(
        &sim,
        &[
            "server",
            "--port",
            "0",
            "--webhook-auth-token",
            SECRET,
            "--state-dir",
            state.path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another gitlab-docker-autodep server (pid"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_event_delivered_with_two_idempotency_keys_is_stored_once() {
    let sim = sim_with_hook(vec![image_project("g/base", &[])]).await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    let body = json!({
        "object_kind": "pipeline",
        "object_attributes": {"id": 42, "status": "success", "ref": "main", "tag": false, "source": "push"},
        "project": {"id": 1, "path_with_namespace": "g/base", "default_branch": "main"},
    })
    .to_string();
    // A group hook and a project hook: GitLab gives each execution its own key.
    let mut answers = Vec::new();
    for key in ["key-from-group-hook", "key-from-project-hook"] {
        let r = reqwest::Client::new()
            .post(format!("{}/webhook", server.url))
            .header("X-Gitlab-Token", SECRET)
            .header("X-Gitlab-Event", "Pipeline Hook")
            .header("Idempotency-Key", key)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        answers.push(r.json::<Value>().await.unwrap()["status"].clone());
    }
    assert_eq!(answers, [json!("accepted"), json!("duplicate")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_does_not_double_a_pipeline_whose_answer_was_lost() {
    let sim = sim_with_hook(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![
            FaultRule::new("pipeline_create", FaultKind::ErrorAfter { status: 502 }).count(1),
        ],
    });
    sim.run_pipeline("g/base").unwrap();
    wait_quiet(&sim, &server).await;
    assert_eq!(count(&sim, "g/app"), 1, "{:#?}", sim.pipelines());
    let status = server.status().await;
    assert_eq!(status["triggers"][0]["state"], "done");
}
