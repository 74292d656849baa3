//! Chaos: a 50-project cascade while the server is killed with SIGKILL at
//! random moments, 20 times, and restarted on the same state directory and
//! port. Hooks sent while it is down are lost (the simulator, like GitLab,
//! does not resend them); reconciliation finds those pipelines. At the end
//! every project of the plan was built, and none twice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;
use gitlab_sim::{PipelineStatus, ProjectSpec};
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20;

/// `g/base`, then four layers of 12 or 13 projects, each built on one or
/// two projects of the layer above: 50 projects with many diamonds.
fn projects(rng: &mut rand::rngs::StdRng) -> Vec<ProjectSpec> {
    let mut layers: Vec<Vec<String>> = vec![vec!["g/base".into()]];
    let mut specs = vec![image_project("g/base", &[])];
    for layer in 1..=4 {
        let size = if layer == 4 { 13 } else { 12 };
        let mut this = Vec::new();
        for i in 0..size {
            let path = format!("g/l{layer}-{i:02}");
            let above = &layers[layer - 1];
            let mut bases = vec![above[rng.random_range(0..above.len())].clone()];
            if above.len() > 1 && rng.random_bool(0.5) {
                bases.push(above[rng.random_range(0..above.len())].clone());
            }
            bases.dedup();
            let refs: Vec<&str> = bases.iter().map(String::as_str).collect();
            specs.push(
                image_project(&path, &refs)
                    .pipeline(Duration::from_millis(150), PipelineStatus::Success),
            );
            this.push(path);
        }
        layers.push(this);
    }
    specs
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sigkills_during_a_cascade_lose_nothing_and_double_nothing() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261130);
    let specs = projects(&mut rng);
    assert_eq!(specs.len(), 50);
    let sim = start(specs).await;
    let state = tempfile::tempdir().unwrap();
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port().to_string()
    };
    let args = ["--port", &port, "--reconcile-interval", "300ms"];
    let mut server = Server::start(&sim, state.path(), &args).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    sim.run_pipeline("g/base").unwrap();
    // The root event is in: from here on, hooks may be lost.
    server
        .wait_until(
            |s| s["cascades"].as_array().is_some_and(|c| !c.is_empty()),
            "the cascade started",
        )
        .await;
    for _ in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        server = Server::launch(&sim, state.path(), &args, &[]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = server.status().await;
        let done = s["queue"]["running_cascades"] == 0
            && s["queue"]["pending_events"] == 0
            && s["queue"]["queued_triggers"] == 0;
        if done && sim.pipelines().iter().all(|p| p.status.is_settled()) {
            break;
        }
        assert!(Instant::now() < deadline, "never finished: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut built: BTreeMap<String, usize> = BTreeMap::new();
    for p in sim.pipelines() {
        *built.entry(p.project_path).or_default() += 1;
    }
    let expected: Vec<String> = (1..=4)
        .flat_map(|l| (0..if l == 4 { 13 } else { 12 }).map(move |i| format!("g/l{l}-{i:02}")))
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|p| !built.contains_key(*p))
        .collect();
    let doubled: Vec<(&String, &usize)> = built.iter().filter(|(_, n)| **n > 1).collect();
    let lost = sim
        .hook_deliveries()
        .iter()
        .filter(|d| d.response_status != Some(200) && d.status_sent.as_deref() == Some("success"))
        .count();
    eprintln!(
        "chaos: {ROUNDS} kills, {lost} success hooks lost; {} built, {} missing, {} doubled",
        built.len() - 1,
        missing.len(),
        doubled.len()
    );
    assert!(missing.is_empty(), "never built: {missing:?}");
    assert!(doubled.is_empty(), "built twice: {doubled:?}");
}
