//! Two server replicas on one PostgreSQL database, behind a balancer as a
//! Kubernetes Service puts them: a 50-project cascade and a stream of
//! other events while a random replica is killed with SIGKILL, 20 times,
//! and started again. Every pipeline's creation is answered late, so
//! kills land between a pipeline created and its answer. Hooks that reach
//! no replica are lost (GitLab does not resend them); reconciliation finds
//! those pipelines. At the end
//! every project of the plan was built, duplicates are counted (none is
//! possible here: a killed replica posts nothing after its death, and the
//! replica that takes its trigger over after the lease looks for the
//! pipeline by its marker before posting), and every event a replica
//! answered 2xx for is stored and done.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::*;
use common::*;
use gitlab_sim::{FaultKind, FaultRule, Faults};
use rand::{Rng, SeedableRng};
use serde_json::json;

const ROUNDS: usize = 20;

/// Pipeline Hooks of projects nothing is built on, posted through the
/// balancer until `stop`: the keys of those answered 2xx.
async fn stream(balancer: String, stop: Arc<AtomicBool>, accepted: Arc<Mutex<Vec<u64>>>) {
    let client = reqwest::Client::new();
    let mut pipeline = 900_000u64;
    while !stop.load(Ordering::SeqCst) {
        pipeline += 1;
        let body = json!({
            "object_kind": "pipeline",
            "object_attributes": {"id": pipeline, "status": "success", "ref": "main", "tag": false, "source": "push"},
            "project": {"id": 999_000 + pipeline % 5, "path_with_namespace": format!("s/solo-{}", pipeline % 5), "default_branch": "main"},
        });
        let sent = client
            .post(format!("{balancer}/webhook"))
            .header("X-Gitlab-Token", SECRET)
            .header("X-Gitlab-Event", "Pipeline Hook")
            .timeout(Duration::from_secs(5))
            .json(&body)
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            accepted.lock().unwrap().push(pipeline);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stream's events the database holds: pipeline id and state.
fn stored_stream(url: String) -> BTreeMap<u64, String> {
    std::thread::spawn(move || {
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        db.query(
            "SELECT pipeline_id, state FROM events WHERE project_path LIKE 's/solo-%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
        .collect()
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_survive_twenty_sigkills_with_nothing_lost() {
    let Some(cluster) = common::postgres::cluster() else {
        return;
    };
    let url = cluster.database();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261130);
    let sim = start(layered_projects(&mut rng)).await;
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let ports = [
        common::registry::free_port().to_string(),
        common::registry::free_port().to_string(),
    ];
    let args = |i: usize| {
        vec![
            "--port",
            ports[i].as_str(),
            "--database",
            url.as_str(),
            "--lease",
            "3s",
            "--reconcile-interval",
            "300ms",
        ]
    };
    let mut servers = [
        Server::start(&sim, states[0].path(), &args(0)).await,
        Server::start(&sim, states[1].path(), &args(1)).await,
    ];
    let backends = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();
    let balancer = format!("http://{}", common::proxy::balance(backends).await);
    sim.add_webhook(&format!("{balancer}/webhook"), Some(SECRET));
    let (stop, accepted) = (Arc::new(AtomicBool::new(false)), Arc::default());
    let streaming = tokio::spawn(stream(
        balancer.clone(),
        stop.clone(),
        Arc::clone(&accepted),
    ));

    // Every pipeline is created at once and its answer comes 500 ms
    // later: a replica killed meanwhile leaves a pipeline it never heard
    // of, which the one taking its trigger over must find, not double.
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![FaultRule::new(
            "pipeline_create",
            FaultKind::HoldAfter { hold_ms: 500 },
        )],
    });
    sim.run_pipeline("g/base").unwrap();
    servers[0]
        .wait_until(
            |s| s["cascades"].as_array().is_some_and(|c| !c.is_empty()),
            "the cascade started",
        )
        .await;
    let mut leaders_seen = std::collections::BTreeSet::new();
    for _ in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let i = rng.random_range(0..2);
        servers[i].child.start_kill().unwrap();
        servers[i].child.wait().await.unwrap();
        servers[i] = Server::launch(&sim, states[i].path(), &args(i), &[]).await;
        let s = servers[1 - i].status().await;
        if let Some(leader) = s["replicas"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["leader"] == true))
        {
            leaders_seen.insert(leader["id"].as_str().unwrap_or("").to_string());
        }
    }
    stop.store(true, Ordering::SeqCst);
    streaming.await.unwrap();

    wait_settled(&sim, &servers[0], Duration::from_secs(180)).await;
    let (missing, doubled) = built(&sim, &layered_paths());
    let lost = sim
        .hook_deliveries()
        .iter()
        .filter(|d| d.response_status != Some(200))
        .count();
    let answered: Vec<u64> = accepted.lock().unwrap().clone();
    let stored = stored_stream(url.clone());
    let not_stored: Vec<&u64> = answered
        .iter()
        .filter(|p| !stored.contains_key(p))
        .collect();
    let not_done: Vec<(&u64, &String)> = stored.iter().filter(|(_, s)| *s != "done").collect();
    eprintln!(
        "replicas: {ROUNDS} kills, {} leaders seen, {lost} hook deliveries failed; {} built, {} missing, {} built twice; stream: {} answered 2xx, {} stored",
        leaders_seen.len(),
        layered_paths().len() - missing.len(),
        missing.len(),
        doubled.len(),
        answered.len(),
        stored.len(),
    );
    assert!(missing.is_empty(), "never built: {missing:?}");
    assert!(doubled.is_empty(), "built twice: {doubled:?}");
    assert!(answered.len() > 100, "the stream ran: {}", answered.len());
    assert!(
        not_stored.is_empty(),
        "answered 2xx, never stored: {not_stored:?}"
    );
    assert!(not_done.is_empty(), "stored, never processed: {not_done:?}");
    // The replicas killed last drop out of the list after their lease;
    // then both running replicas are listed, and one of them leads.
    let count = |s: &serde_json::Value, field: &str| {
        s["replicas"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r[field] == true).count())
    };
    servers[1]
        .wait_until(
            |s| count(s, "alive") == 2 && count(s, "leader") == 1,
            "both replicas alive, one leader",
        )
        .await;
    assert!(leaders_seen.len() > 1, "the leader's role moved");

    // A replica stopped as Kubernetes stops it (SIGTERM) exits cleanly and
    // leaves at once: its leases and role handed back, not left to lapse.
    let stopping = servers[0].status().await["replica"]["id"].clone();
    let pid = servers[0].child.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = servers[0].child.wait().await.unwrap();
    assert!(status.success(), "SIGTERM: {status:?}");
    let s = servers[1].status().await;
    let listed = s["replicas"].as_array().unwrap();
    assert!(
        listed.iter().all(|r| r["id"] != stopping),
        "the stopped replica left the list: {listed:#?}"
    );
}

/// `--database` as operators give it: a URL in a file (a mounted secret),
/// `sqlite://PATH`; a wrong one is refused with what to do, without the
/// password.
#[tokio::test(flavor = "multi_thread")]
async fn the_database_option_reads_files_and_refuses_what_it_cannot_use() {
    let sim = start(vec![image_project("g/base", &[])]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database_url");
    let db = dir.path().join("elsewhere/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&file, format!("sqlite://{}\n", db.display())).unwrap();
    let server = Server::start(
        &sim,
        &dir.path().join("state"),
        &["--database-file", file.to_str().unwrap()],
    )
    .await;
    assert!(db.exists(), "the SQLite file is where the URL says");
    assert!(!dir.path().join("state").join("state.sqlite3").exists());
    drop(server);
    for (url, says) in [
        ("mysql://u:hunter2@db/x", "use sqlite://PATH or postgres://"),
        (
            "postgres://u:hunter2@127.0.0.1:1/x",
            "cannot connect to PostgreSQL",
        ),
    ] {
        let out = autodep_env(
            &[("GITLAB_URL", &sim.url()), ("GITLAB_TOKEN", TOKEN)],
            &[
                "server",
                "--insecure-no-webhook-auth",
                "--port",
                "0",
                "--database",
                url,
            ],
        )
        .await;
        let err = stderr(&out);
        assert!(!out.status.success(), "{url}");
        assert!(
            err.contains(says) && !err.contains("hunter2"),
            "{url}: {err}"
        );
    }
}

/// Runs statements on the cluster's `postgres` database (off the runtime).
fn admin(cluster: &common::postgres::Cluster, statements: String) {
    let url = cluster.url("postgres");
    std::thread::spawn(move || {
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        db.batch_execute(&statements).unwrap();
    })
    .join()
    .unwrap();
}

/// The database refuses the replica for a while (a failover, a restart):
/// `/readyz` says so, and once the database is back the replica connects
/// again by itself and runs the next cascade.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_off_from_the_database_is_not_ready_and_recovers() {
    let Some(cluster) = common::postgres::cluster() else {
        return;
    };
    let url = cluster.database();
    let name = url.rsplit('/').next().unwrap().to_string();
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &["--database", &url, "--lease", "3s"]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    let readyz = |want: u16| {
        let url = format!("{}/readyz", server.url);
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let r = reqwest::get(&url).await.unwrap();
                if r.status() == want {
                    return r.text().await.unwrap();
                }
                assert!(std::time::Instant::now() < deadline, "/readyz never {want}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    admin(
        cluster,
        format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
        ),
    );
    let why = readyz(503).await;
    assert!(why.contains("database"), "{why}");
    admin(
        cluster,
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true;"),
    );
    readyz(200).await;
    sim.run_pipeline("g/base").unwrap();
    server.cascades_done().await;
    wait_settled(&sim, &server, Duration::from_secs(60)).await;
    let (missing, doubled) = built(&sim, &["g/app".to_string()]);
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "{missing:?} {doubled:?}"
    );
}
