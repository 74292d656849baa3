//! The webhook server as a child process, for the end-to-end tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gitlab_sim::Simulator;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use super::{binary, TOKEN};

pub const SECRET: &str = "hook-secret";

pub struct Server {
    pub child: tokio::process::Child,
    pub url: String,
}

impl Server {
    /// Starts the server and waits until it is ready.
    pub async fn start(sim: &Simulator, state: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(sim, state, extra, &[]).await
    }

    /// Starts the server with extra environment and waits until it is ready.
    pub async fn start_with_env(
        sim: &Simulator,
        state: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let server = Server::launch(sim, state, extra, env).await;
        server.wait_until(|s| s["ready"] == true, "ready").await;
        server
    }

    /// Starts the server and returns once it listens.
    pub async fn launch(
        sim: &Simulator,
        state: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = binary();
        cmd.envs(env.iter().copied());
        cmd.env("GITLAB_URL", sim.url())
            .env("GITLAB_TOKEN", TOKEN)
            .args(["server", "--webhook-auth-token", SECRET])
            .args(if extra.contains(&"--port") {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
            .arg("--state-dir")
            .arg(state)
            .args(["--trigger-retry-delay", "100ms"])
            .args(if extra.contains(&"--host") {
                &[][..]
            } else {
                &["--host", "127.0.0.1"][..]
            })
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("server starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("server prints its address")
            .unwrap()
            .expect("a line");
        let url = first
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, url }
    }

    pub async fn status(&self) -> Value {
        reqwest::get(format!("{}/status.json", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn wait_until(&self, done: impl Fn(&Value) -> bool, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status().await;
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until some cascade exists and none runs.
    pub async fn cascades_done(&self) -> Value {
        self.wait_until(
            |s| {
                s["queue"]["running_cascades"] == 0
                    && s["cascades"].as_array().is_some_and(|c| !c.is_empty())
            },
            "the cascade finished",
        )
        .await
    }

    /// A project's page as JSON.
    pub async fn project(&self, id: u64) -> Value {
        reqwest::get(format!("{}/projects/{id}?format=json", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The paths of the projects a project's page says it is built on.
    pub async fn upstreams(&self, id: u64) -> Vec<String> {
        self.project(id).await["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["project"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn post(&self, event: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = reqwest::Client::new()
            .post(format!("{}/webhook", self.url))
            .header("content-type", "application/json")
            .header("X-Gitlab-Event", event)
            .body(body.to_string());
        if let Some(t) = token {
            r = r.header("X-Gitlab-Token", t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Waits until every pipeline settled and the server's queue is empty,
/// several polls in a row.
pub async fn wait_quiet(sim: &Simulator, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while quiet < 5 {
        assert!(
            Instant::now() < deadline,
            "never quiet: {:#}",
            server.status().await
        );
        let s = server.status().await;
        let empty = s["queue"]["pending_events"] == 0 && s["queue"]["queued_triggers"] == 0;
        let settled = sim.pipelines().iter().all(|p| p.status.is_settled());
        quiet = if empty && settled { quiet + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server's queue is empty, no cascade runs and every
/// pipeline settled (at most `within`).
pub async fn wait_settled(sim: &Simulator, server: &Server, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = server.status().await;
        let done = s["queue"]["running_cascades"] == 0
            && s["queue"]["pending_events"] == 0
            && s["queue"]["queued_triggers"] == 0;
        if done && sim.pipelines().iter().all(|p| p.status.is_settled()) {
            return;
        }
        assert!(Instant::now() < deadline, "never finished: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Of `expected`, the projects never built, and the projects built more
/// than once with how often.
pub fn built(sim: &Simulator, expected: &[String]) -> (Vec<String>, Vec<(String, usize)>) {
    let mut built: std::collections::BTreeMap<String, usize> = Default::default();
    for p in sim.pipelines() {
        *built.entry(p.project_path).or_default() += 1;
    }
    let missing = expected
        .iter()
        .filter(|p| !built.contains_key(*p))
        .cloned()
        .collect();
    let doubled = built.into_iter().filter(|(_, n)| *n > 1).collect();
    (missing, doubled)
}
