//! `demo`: a guided run against the embedded simulated GitLab — the
//! server, a rebuild of a base image, and a summary counted from what ran.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use gitlab_docker_autodep::gitlab::{ClientConfig, Credential, GitLab};
use gitlab_docker_autodep::graph::Target;
use gitlab_docker_autodep::image::Registry;
use gitlab_docker_autodep::plan::TriggerPlan;
use gitlab_docker_autodep::server::{self, ServerConfig};
use gitlab_sim::{PipelineStatus, ProjectSpec, SimBuilder};

use super::{EXIT_OK, EXIT_PIPELINE_FAILED};

const DIGEST: &str = "sha256:4b8a8f9d3c2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a";

/// A small, realistic set of image projects: a base chain, a diamond, a
/// failing project, and the usual bystanders.
fn demo_projects(reg: &str, duration: Duration) -> Vec<ProjectSpec> {
    let ok = |spec: ProjectSpec| spec.pipeline(duration, PipelineStatus::Success);
    vec![
        ok(ProjectSpec::new("platform/base").dockerfile("FROM debian:bookworm-slim\nRUN apt-get update && apt-get -y upgrade\n")),
        ok(ProjectSpec::new("platform/python").dockerfile(&format!("FROM {reg}/platform/base:latest\nRUN apt-get install -y python3\n"))),
        ok(ProjectSpec::new("platform/node").dockerfile(&format!("FROM {reg}/platform/base:latest\nRUN apt-get install -y nodejs\n"))),
        ok(ProjectSpec::new("apps/api").dockerfile(&format!("FROM {reg}/platform/python:3.12\nCOPY . /app\n"))),
        ok(ProjectSpec::new("apps/worker").dockerfile("ARG CI_REGISTRY\nFROM $CI_REGISTRY/platform/python:3.12\nCOPY . /app\n")),
        ok(ProjectSpec::new("apps/bundle").dockerfile(&format!(
            "FROM {reg}/platform/python:3.12 AS py\nRUN pip wheel -w /wheels .\nFROM {reg}/platform/node:20\nCOPY --from=py /wheels /wheels\n"
        ))),
        ProjectSpec::new("apps/flaky")
            .dockerfile(&format!("FROM {reg}/platform/node:20\nRUN npm test\n"))
            .pipeline(duration, PipelineStatus::Failed),
        ok(ProjectSpec::new("apps/legacy").dockerfile(&format!("FROM {reg}/platform/base\n")).archived()),
        ok(ProjectSpec::new("apps/pinned").dockerfile(&format!("FROM {reg}/platform/base@{DIGEST}\n"))),
        ok(ProjectSpec::new("docs/site").file("README.md", "# docs\n")),
    ]
}

pub async fn run(pipeline_duration: Duration) -> anyhow::Result<u8> {
    let token = "glpat-demo";
    let secret = "demo-webhook-secret";
    let builder = SimBuilder::new().token(token);
    let reg = builder.registry();
    let sim = builder
        .projects(demo_projects(&reg, pipeline_duration))
        .start()
        .await?;
    let state = tempfile_dir()?;
    let url = reqwest::Url::parse(&sim.url())?;
    let gitlab = GitLab::new(ClientConfig::new(url, Credential::Token(token.into())))?;
    let config = ServerConfig {
        retry_delay: Duration::from_secs(1),
        ..ServerConfig::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(secret.into()),
            state.clone(),
        )
    };
    let server = server::start(
        gitlab,
        Registry::new([reg.as_str()]).context("registry")?,
        config,
    )
    .await?;
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !server.app.is_ready() {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "the demo server did not finish its first scan in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.add_webhook(&format!("http://{}/webhook", server.addr), Some(secret));
    println!("Simulated GitLab:  {}  (registry {reg})", sim.url());
    println!(
        "Webhook server:    http://{}/  (status page; state in {})",
        server.addr,
        state.display()
    );
    let view = server.app.graph();
    let base = view
        .graph
        .node_by_path("platform/base")
        .context("demo graph has platform/base")?;
    println!("\nWhat a rebuild of platform/base reaches (deps --recurse):\n");
    print!(
        "{}",
        view.graph.plan(&Target::Project(base), true).render_tree()
    );
    println!(
        "\nA new platform/base pipeline starts; every success calls the webhook, which triggers"
    );
    println!(
        "the next layer (each line: time, project, pipeline, status, why it was triggered):\n"
    );

    let started = Instant::now();
    sim.run_pipeline("platform/base")?;
    let mut last: HashMap<u64, PipelineStatus> = HashMap::new();
    let mut quiet_polls = 0;
    while started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let pipelines = sim.pipelines();
        for p in &pipelines {
            if last.get(&p.id) == Some(&p.status) {
                continue;
            }
            last.insert(p.id, p.status);
            let why = p
                .variables
                .iter()
                .find(|(k, _)| k == "AUTODEP_UPSTREAM")
                .map(|(_, v)| format!("after {v}"))
                .unwrap_or_else(|| "pushed by a person".into());
            println!(
                "{:>7.2}s  {:<16} #{:<3} {:<8} {why}",
                started.elapsed().as_secs_f64(),
                p.project_path,
                p.id,
                p.status.as_str()
            );
        }
        let settled = pipelines.iter().all(|p| p.status.is_settled());
        let queue = server.app.store.queue_depth()?;
        // The cascade's end, not only a lull: a hook that is slow to come
        // would otherwise be mistaken for the end of the rebuild.
        let running = server.app.store.running_cascades()?;
        quiet_polls = if settled && queue == (0, 0) && running == 0 {
            quiet_polls + 1
        } else {
            0
        };
        if quiet_polls >= 10 {
            break;
        }
    }
    let plan = view.graph.plan(&Target::Project(base), true);
    let outcome = Outcome::of(&plan, &sim.pipelines());
    println!(
        "\nQuiet after {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        outcome.summary()
    );
    println!("\nThe graph (graph --format text):\n");
    print!("{}", server.app.graph().graph.to_text());
    server.shutdown().await?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(if outcome.as_planned() {
        EXIT_OK
    } else {
        EXIT_PIPELINE_FAILED
    })
}

/// What the cascade did, against what the plan said it would do.
struct Outcome {
    /// Pipelines the server created, per project.
    triggered: BTreeMap<String, usize>,
    failed: Vec<String>,
    /// Planned, not triggered, and not below a failure: lost.
    missing: Vec<String>,
    /// Planned, not triggered, because an upstream failed.
    pruned: Vec<String>,
    /// Triggered but not in the plan.
    unexpected: Vec<String>,
    skipped: Vec<String>,
}

impl Outcome {
    fn of(plan: &TriggerPlan, pipelines: &[gitlab_sim::Pipeline]) -> Outcome {
        let mut triggered: BTreeMap<String, usize> = BTreeMap::new();
        for p in pipelines.iter().filter(|p| p.source != "push") {
            *triggered.entry(p.project_path.clone()).or_default() += 1;
        }
        let failed: Vec<String> = pipelines
            .iter()
            .filter(|p| p.status != PipelineStatus::Success)
            .map(|p| p.project_path.clone())
            .collect();
        let mut pruned: Vec<String> = Vec::new();
        let mut missing = Vec::new();
        for t in &plan.triggers {
            if triggered.contains_key(&t.project) {
                continue;
            }
            let below_failure = t
                .waits_for_paths
                .iter()
                .any(|u| failed.contains(u) || pruned.contains(u));
            if below_failure {
                pruned.push(t.project.clone());
            } else {
                missing.push(t.project.clone());
            }
        }
        let unexpected = triggered
            .keys()
            .filter(|p| !plan.triggers.iter().any(|t| &t.project == *p))
            .cloned()
            .collect();
        let skipped = plan
            .skipped
            .iter()
            .map(|s| format!("{} ({})", s.project, s.reason))
            .collect();
        Outcome {
            triggered,
            failed,
            missing,
            pruned,
            unexpected,
            skipped,
        }
    }

    /// Each planned project triggered once, or left out below a failure;
    /// nothing else triggered.
    fn as_planned(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.triggered.values().all(|n| *n == 1)
    }

    fn summary(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let doubled: Vec<String> = self
            .triggered
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, n)| format!("{p} ×{n}"))
            .collect();
        let mut text = format!(
            "{} project(s) triggered, {} failed ({}); not triggered below a failure: {}; left out by the plan: {}.",
            self.triggered.len(),
            self.failed.len(),
            list(&self.failed),
            list(&self.pruned),
            list(&self.skipped),
        );
        if self.as_planned() {
            text.push_str("\nEvery planned project was triggered once.");
        } else {
            text.push_str(&format!(
                "\nNOT as planned: never triggered {}; triggered outside the plan {}; triggered more than once {}.",
                list(&self.missing),
                list(&self.unexpected),
                list(&doubled)
            ));
        }
        text
    }
}

/// A fresh state directory for the demo's server.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "gitlab-docker-autodep-demo-{}",
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
