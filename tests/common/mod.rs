//! Helpers for the end-to-end tests: the real binary against the simulator
//! over HTTP on 127.0.0.1.
#![allow(dead_code)]

use std::process::Output;
use std::time::Duration;

use gitlab_sim::{PipelineStatus, ProjectSpec, SimBuilder, Simulator};

pub mod hostile;
pub mod postgres;
pub mod proxy;
pub mod registry;
pub mod server;

pub const TOKEN: &str = "glpat-e2e";
/// The simulator's registry for a GitLab on 127.0.0.1.
pub const REG: &str = "registry.127.0.0.1";

/// `g/base`, then four layers of 12 or 13 projects, each built on one or
/// two projects of the layer above: 50 projects with many diamonds.
pub fn layered_projects(rng: &mut rand::rngs::StdRng) -> Vec<ProjectSpec> {
    let mut layers: Vec<Vec<String>> = vec![vec!["g/base".into()]];
    let mut specs = vec![image_project("g/base", &[])];
    for layer in 1..=4 {
        let size = if layer == 4 { 13 } else { 12 };
        let mut this = Vec::new();
        for i in 0..size {
            let path = format!("g/l{layer}-{i:02}");
            let above = &layers[layer - 1];
            let mut bases = vec![above[rand::Rng::random_range(rng, 0..above.len())].clone()];
            if above.len() > 1 && rand::Rng::random_bool(rng, 0.5) {
                bases.push(above[rand::Rng::random_range(rng, 0..above.len())].clone());
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

/// The projects `layered_projects` builds on `g/base`: all of them but it.
pub fn layered_paths() -> Vec<String> {
    (1..=4)
        .flat_map(|l| (0..if l == 4 { 13 } else { 12 }).map(move |i| format!("g/l{l}-{i:02}")))
        .collect()
}

/// A project whose Dockerfile is `FROM` each of `bases` (paths on our registry).
pub fn image_project(path: &str, bases: &[&str]) -> ProjectSpec {
    let mut text = String::new();
    for base in bases {
        text.push_str(&format!("FROM {REG}/{base}:latest\nRUN make\n"));
    }
    if bases.is_empty() {
        text.push_str("FROM alpine:3.20\n");
    }
    ProjectSpec::new(path)
        .dockerfile(&text)
        .pipeline(Duration::from_millis(100), PipelineStatus::Success)
}

pub async fn start(projects: Vec<ProjectSpec>) -> Simulator {
    SimBuilder::new()
        .token(TOKEN)
        .projects(projects)
        .start()
        .await
        .expect("simulator starts")
}

/// Runs the binary with the simulator's URL and token in the environment.
pub async fn autodep(sim: &Simulator, args: &[&str]) -> Output {
    autodep_env(
        &[("GITLAB_URL", sim.url().as_str()), ("GITLAB_TOKEN", TOKEN)],
        args,
    )
    .await
}

/// The binary, with none of the variables it reads inherited from the
/// environment the tests run in (CI sets some of them).
pub fn binary() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gitlab-docker-autodep"));
    for var in [
        "GITLAB_URL",
        "GITLAB_TOKEN",
        "CI_SERVER_URL",
        "CI_JOB_TOKEN",
        "AUTODEP_LOG",
        "AUTODEP_WEBHOOK_TOKEN",
        "CI_REGISTRY",
        "AUTODEP_FAILPOINTS",
        "AUTODEP_DATABASE_URL",
        "AUTODEP_ADVERTISE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

pub async fn autodep_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = binary();
    cmd.envs(env.iter().copied()).args(args).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the binary finishes within two minutes")
        .expect("the binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn lines(o: &Output) -> Vec<String> {
    stdout(o).lines().map(str::to_string).collect()
}

/// Paths of the projects that got a pipeline, sorted.
pub fn triggered(sim: &Simulator) -> Vec<String> {
    let mut v: Vec<String> = sim
        .pipelines()
        .into_iter()
        .map(|p| p.project_path)
        .collect();
    v.sort();
    v
}

/// Whether an external tool a check needs is installed. Without it the
/// check is skipped (scripts/test says so), except with CI=true, where every
/// check is required.
pub fn have_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required when CI=true"
        );
        eprintln!("skipped: {name} is not installed");
    }
    found
}

/// A project's id, as the simulator's API says.
pub async fn project_id(sim: &Simulator, path: &str) -> u64 {
    let p: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v4/projects/{}",
            sim.url(),
            path.replace('/', "%2F")
        ))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    p["id"].as_u64().unwrap()
}

/// `nginx -t` on a server block (in a scratch `nginx.conf` of its own, in
/// `dir`): `Err` with nginx's complaint.
pub fn nginx_accepts(dir: &std::path::Path, site: &str) -> Result<(), String> {
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let main = format!(
        "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  include {0}/site.conf;\n}}\n",
        dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let out = std::process::Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .output()
        .expect("nginx is installed (scripts/test installs nginx-light when missing)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
