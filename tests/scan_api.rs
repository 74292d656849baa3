//! The scan over GraphQL reads the same graph as over REST in ⌈N/100⌉
//! requests; `--api auto` falls back to REST where GraphQL is missing; a
//! page that fails is asked again at half the size; a Guest's project is
//! marked, not the page; every Dockerfile path given is read.

mod common;

use common::*;
use gitlab_sim::{FaultKind, FaultRule, Faults, ProjectSpec, Simulator};
use serde_json::Value;

/// 150 projects in a chain of bases, and every kind of odd one.
async fn instance() -> Simulator {
    let mut projects = vec![image_project("g/base", &[])];
    for i in 0..140 {
        let up = if i < 10 {
            "g/base".to_string()
        } else {
            format!("g/p{:03}", i % 10)
        };
        projects.push(image_project(&format!("g/p{i:03}"), &[up.as_str()]));
    }
    projects.extend([
        image_project("g/old", &["g/base"]).archived(),
        ProjectSpec::new("g/nodocker").file("README.md", "hi\n"),
        ProjectSpec::new("g/empty").empty(),
        image_project("g/guest", &["g/base"]).guest(),
        image_project("g/huge", &["g/base"]).dockerfile(&format!(
            "FROM {REG}/g/base\n{}",
            "# padding\n".repeat(120_000)
        )),
        ProjectSpec::new("g/monorepo")
            .file(
                "services/api/Dockerfile",
                &format!("FROM {REG}/g/p001:latest\n"),
            )
            .file("Dockerfile", &format!("FROM {REG}/g/p002:latest\n")),
        ProjectSpec::new("g/alpine-variant").file(
            "docker/Dockerfile.alpine",
            &format!("FROM {REG}/g/base:alpine\n"),
        ),
    ]);
    start(projects).await
}

const PATHS: [&str; 6] = [
    "--dockerfile",
    "Dockerfile",
    "--dockerfile",
    "services/api/Dockerfile",
    "--dockerfile",
    "docker/Dockerfile.alpine",
];

async fn graph(sim: &Simulator, api: &str) -> (Value, Vec<&'static str>) {
    sim.clear_requests();
    let args = [&["--api", api][..], &PATHS, &["graph", "--format", "json"]].concat();
    let out = autodep(sim, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let endpoints = sim.requests().iter().map(|r| r.endpoint).collect();
    (serde_json::from_slice(&out.stdout).unwrap(), endpoints)
}

#[tokio::test(flavor = "multi_thread")]
async fn graphql_reads_the_same_graph_as_rest_in_one_request_per_hundred_projects() {
    let sim = instance().await;
    let (over_rest, rest_requests) = graph(&sim, "rest").await;
    let (over_graphql, graphql_requests) = graph(&sim, "graphql").await;
    assert_eq!(over_graphql["edges"], over_rest["edges"]);
    // The same notes; GitLab's own words for a refusal differ by API.
    let notes = |g: &Value| -> Vec<(String, String)> {
        g["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let m = n["message"].as_str().unwrap();
                (
                    n["project"].to_string(),
                    m.split(':').next().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(notes(&over_graphql), notes(&over_rest));
    // The same projects in the same states. GraphQL does not show a
    // repository's default branch to a Guest, nor one of an empty repository.
    let projects = |g: &Value| -> Vec<Value> {
        let mut list = g["projects"].as_array().unwrap().clone();
        for p in &mut list {
            if p["dockerfile"] == "unreadable" || p["dockerfile"] == "empty_repo" {
                p["default_branch"] = Value::Null;
            }
        }
        list
    };
    let (a, b) = (projects(&over_graphql), projects(&over_rest));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    assert_eq!(
        graphql_requests,
        ["graphql", "graphql"],
        "147 projects: two pages"
    );
    // Over REST: the listing's pages, then a request per project for its
    // .autodep.yml and one per path (archived and empty projects are not
    // read).
    assert_eq!(rest_requests.len(), 3 + 145 * (1 + 3), "{rest_requests:?}");

    let edges = over_graphql["edges"].as_array().unwrap();
    let edge = |down: &str| -> Vec<(String, String)> {
        edges
            .iter()
            .filter(|e| e["downstream"] == down)
            .map(|e| {
                (
                    e["upstream"].as_str().unwrap().to_string(),
                    e["file"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // Every path given is read; each edge says which file.
    let mut mono = edge("g/monorepo");
    mono.sort();
    assert_eq!(
        mono,
        [
            ("g/p001".to_string(), "services/api/Dockerfile".to_string()),
            ("g/p002".to_string(), "Dockerfile".to_string())
        ]
    );
    assert_eq!(
        edge("g/alpine-variant"),
        [("g/base".to_string(), "docker/Dockerfile.alpine".to_string())]
    );
    let states: std::collections::HashMap<&str, &str> = over_graphql["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap(),
                p["dockerfile"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states["g/guest"], "unreadable");
    assert_eq!(states["g/huge"], "too_large");
    assert_eq!(states["g/empty"], "empty_repo");
    assert_eq!(states["g/nodocker"], "missing");

    let text = autodep(&sim, &[&PATHS[..], &["graph"]].concat()).await;
    assert!(
        stdout(&text).contains(
            "g/monorepo <- g/p001 (FROM registry.127.0.0.1/g/p001:latest, services/api/Dockerfile line 1)"
        ),
        "{}",
        stdout(&text)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_falls_back_to_rest_where_graphql_is_missing() {
    let sim = instance().await;
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![FaultRule::new("graphql", FaultKind::Error { status: 404 })],
    });
    sim.clear_requests();
    let out = autodep(&sim, &["deps", "g/p001"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("scanning over REST"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lines(&out)[0], "g/p001");
    let graphql = sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "graphql")
        .count();
    assert_eq!(graphql, 1, "one try, then REST");
    // Asked for GraphQL only, the same is an error that says what to do.
    let out = autodep(&sim, &["--api", "graphql", "deps", "g/p001"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_page_is_asked_again_at_half_the_size() {
    let sim = instance().await;
    let (expected, _) = graph(&sim, "graphql").await;
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![FaultRule {
            count: Some(2),
            ..FaultRule::new("graphql", FaultKind::Error { status: 503 })
        }],
    });
    sim.clear_requests();
    let args = [
        &["--api", "graphql", "--max-retries", "0"][..],
        &PATHS,
        &["graph", "--format", "json"],
    ]
    .concat();
    let out = autodep(&sim, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["edges"], expected["edges"]);
    // 100 fails, 50 fails, then pages of 25: 147 projects in 6.
    let graphql = sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "graphql")
        .count();
    assert_eq!(graphql, 2 + 6);
    assert!(
        stderr(&out).contains("asking for 25 projects at a time"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_times_out_is_asked_again_at_half_the_size_at_once() {
    let sim = instance().await;
    let (expected, _) = graph(&sim, "graphql").await;
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![FaultRule {
            count: Some(1),
            ..FaultRule::new("graphql", FaultKind::HoldAfter { hold_ms: 3000 })
        }],
    });
    sim.clear_requests();
    let args = [
        &["--api", "graphql", "--request-timeout", "1s"][..],
        &PATHS,
        &["graph", "--format", "json"],
    ]
    .concat();
    let out = autodep(&sim, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["edges"], expected["edges"]);
    assert!(
        stderr(&out).contains("asking for 50 projects at a time"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn match_narrows_both_apis_to_the_same_projects() {
    let sim = instance().await;
    let mut seen = Vec::new();
    for api in ["rest", "graphql"] {
        let out = autodep(
            &sim,
            &["--api", api, "--match", "p00", "graph", "--format", "json"],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let graph: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut paths: Vec<String> = graph["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_string())
            .collect();
        paths.sort();
        seen.push(paths);
    }
    assert_eq!(seen[0].len(), 10, "{:?}", seen[0]);
    assert_eq!(seen[0], seen[1]);
}
