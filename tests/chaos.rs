//! Chaos: a 50-project cascade while the server is killed with SIGKILL at
//! random moments, 20 times, and restarted on the same state directory and
//! port. Hooks sent while it is down are lost (the simulator, like GitLab,
//! does not resend them); reconciliation finds those pipelines. At the end
//! every project of the plan was built, and none twice.

mod common;

use std::time::Duration;

use common::server::*;
use common::*;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sigkills_during_a_cascade_lose_nothing_and_double_nothing() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261130);
    let specs = layered_projects(&mut rng);
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
    wait_settled(&sim, &server, Duration::from_secs(120)).await;
    let (missing, doubled) = built(&sim, &layered_paths());
    let lost = sim
        .hook_deliveries()
        .iter()
        .filter(|d| d.response_status != Some(200) && d.status_sent.as_deref() == Some("success"))
        .count();
    eprintln!(
        "chaos: {ROUNDS} kills, {lost} success hooks lost; {} built, {} missing, {} doubled",
        layered_paths().len() - missing.len(),
        missing.len(),
        doubled.len()
    );
    assert!(missing.is_empty(), "never built: {missing:?}");
    assert!(doubled.is_empty(), "built twice: {doubled:?}");
}
