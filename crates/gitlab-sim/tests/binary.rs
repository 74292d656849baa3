//! The `gitlab-sim` binary: prints its URL first, serves a fixture file or a
//! synthetic instance, and accepts the tokens it is given.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Running(Child, String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gitlab-sim"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gitlab-sim starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "first line is the URL: {url:?}"
    );
    Running(child, url)
}

#[tokio::test]
async fn serves_a_fixture_file() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("fixture.json");
    std::fs::write(
        &fixture,
        r#"{"tokens": {"glpat-a": "api"}, "projects": [
            {"path": "g/base", "files": {"Dockerfile": "FROM alpine\n"}},
            {"path": "g/app", "default_branch": "develop", "files": {"Dockerfile": "FROM registry.127.0.0.1/g/base\n"}, "pipeline": {"duration_ms": 10, "outcome": "failed"}}
        ]}"#,
    )
    .unwrap();
    let sim = run(&["--fixture", fixture.to_str().unwrap()]);
    let client = reqwest::Client::new();
    let projects: serde_json::Value = client
        .get(format!("{}/api/v4/projects?order_by=id&sort=asc", sim.1))
        .header("PRIVATE-TOKEN", "glpat-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(projects[1]["path_with_namespace"], "g/app");
    assert_eq!(projects[1]["default_branch"], "develop");
    let r = client
        .get(format!("{}/api/v4/projects", sim.1))
        .header("PRIVATE-TOKEN", "glpat-simulator")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "with a fixture, only its tokens are accepted"
    );
}

#[tokio::test]
async fn serves_a_synthetic_instance() {
    let sim = run(&["--synthetic", "250", "--token", "t"]);
    let r = reqwest::Client::new()
        .get(format!("{}/api/v4/projects?per_page=1", sim.1))
        .header("PRIVATE-TOKEN", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-total"], "250");
}
