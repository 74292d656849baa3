//! `gitlab-sim`: runs the GitLab simulator standalone, for demos, manual
//! testing and benchmarks. Prints its base URL as the first line on stdout
//! and serves until killed.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use gitlab_sim::{Fixture, SimBuilder, SyntheticSpec};

#[derive(Parser)]
#[command(version, about = "A GitLab REST API v4 simulator on loopback")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Accepted personal access token (api scope); repeatable.
    /// Default: glpat-simulator.
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Seed projects, tokens and webhooks from a JSON fixture file.
    #[arg(long, conflicts_with = "synthetic")]
    fixture: Option<PathBuf>,
    /// Seed N generated projects whose Dockerfiles form a layered DAG.
    #[arg(long)]
    synthetic: Option<usize>,
    /// Registry host for images (default: registry. + listen IP).
    #[arg(long)]
    registry: Option<String>,
    /// Deliver Pipeline and Push Hooks to this URL; repeatable.
    #[arg(long = "webhook")]
    webhooks: Vec<String>,
    /// Secret sent as X-Gitlab-Token with every hook.
    #[arg(long)]
    webhook_token: Option<String>,
    /// Added to every API request (milliseconds), like a GitLab far away.
    #[arg(long)]
    latency_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = SimBuilder::new().listen(args.listen);
    if let Some(registry) = &args.registry {
        builder = builder.registry_host(registry);
    }
    if let Some(path) = &args.fixture {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read fixture {}", path.display()))?;
        let fixture: Fixture = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid fixture (see the crate docs for the format)",
                path.display()
            )
        })?;
        builder = builder.fixture(fixture);
    }
    if let Some(n) = args.synthetic {
        let registry = builder.registry();
        builder = builder.projects(gitlab_sim::seed::synthetic(
            &SyntheticSpec::new(n),
            &registry,
        ));
    }
    let tokens = if args.tokens.is_empty() && args.fixture.is_none() {
        vec!["glpat-simulator".to_string()]
    } else {
        args.tokens
    };
    for token in &tokens {
        builder = builder.token(token);
    }
    for url in &args.webhooks {
        builder = builder.webhook(url, args.webhook_token.as_deref());
    }
    let sim = builder.start().await?;
    if let Some(ms) = args.latency_ms {
        sim.set_faults(gitlab_sim::Faults {
            latency_ms: Some((ms, ms)),
            rules: Vec::new(),
        });
    }
    println!("{}", sim.url());
    eprintln!(
        "gitlab-sim: serving on {} (registry {}); tokens: {}",
        sim.url(),
        sim.registry_host(),
        tokens.join(", ")
    );
    tokio::signal::ctrl_c().await.ok();
    Ok(())
}
