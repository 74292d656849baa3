//! A project's `.autodep.yml` does what the README says, over either API:
//! its own Dockerfiles, dependencies no FROM shows, images it produces on
//! other registries, never or differently triggered; a broken file is
//! reported with its line and the defaults apply; a push to it patches the
//! server's graph.

mod common;

use std::time::Duration;

use common::server::*;
use common::*;
use gitlab_sim::{PipelineStatus, ProjectSpec, Simulator};
use serde_json::Value;

fn ok(spec: ProjectSpec) -> ProjectSpec {
    spec.pipeline(Duration::from_millis(50), PipelineStatus::Success)
}

async fn instance() -> Simulator {
    start(vec![
        image_project("g/base", &[]),
        image_project("g/tools", &[]),
        // Its Dockerfile is where only its configuration says.
        ok(ProjectSpec::new("g/mono")
            .file(".autodep.yml", "dockerfiles: [services/api/Dockerfile]\n")
            .file("services/api/Dockerfile", &format!("FROM {REG}/g/base:latest\n"))),
        // Depends on more than its FROM says, and publishes to Harbor.
        image_project("g/app", &["g/base"]).file(
            ".autodep.yml",
            "# what the Dockerfile does not say\ndepends_on: [g/tools, python:3.12]\nimages: [harbor.example.com/team/app]\n",
        ),
        ok(ProjectSpec::new("g/consumer").dockerfile("FROM harbor.example.com/team/app:1.2\n")),
        // Never triggered, nor what is built on it through it.
        image_project("g/frozen", &["g/base"]).file(".autodep.yml", "trigger: false\n"),
        image_project("g/below-frozen", &["g/frozen"]),
        // Triggered on another branch with a variable.
        image_project("g/rel", &["g/base"])
            .file(".autodep.yml", "trigger: {ref: release, variables: {CHANNEL: stable}}\n")
            .branch_file("release", ".gitlab-ci.yml", gitlab_sim::seed::DEFAULT_CI),
        // A broken file: reported, and the defaults apply.
        image_project("g/bad", &["g/base"]).file(".autodep.yml", "dockerfiles: [a]\nimages: 7: 8\n"),
    ])
    .await
}

fn edges(graph: &Value) -> Vec<String> {
    let mut v: Vec<String> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} <- {} ({} {} line {})",
                e["downstream"].as_str().unwrap(),
                e["upstream"].as_str().unwrap(),
                e["via"].as_str().unwrap(),
                e["file"].as_str().unwrap(),
                e["line"]
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configuration_file_shapes_the_graph_the_same_over_both_apis() {
    let sim = instance().await;
    let mut seen = Vec::new();
    for api in ["graphql", "rest"] {
        sim.clear_requests();
        let out = autodep(&sim, &["--api", api, "graph", "--format", "json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let graph: Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = edges(&graph);
        for expected in [
            "g/mono <- g/base (FROM services/api/Dockerfile line 1)",
            "g/app <- g/tools (depends_on .autodep.yml line 2)",
            "g/consumer <- g/app (FROM Dockerfile line 1)",
            "g/bad <- g/base (FROM Dockerfile line 1)",
        ] {
            assert!(
                e.contains(&expected.to_string()),
                "{api}: no {expected:?} in {e:#?}"
            );
        }
        assert!(
            graph["external"]["docker.io/library/python"]
                .as_array()
                .is_some_and(|users| users.contains(&Value::from("g/app"))),
            "{api}: {}",
            graph["external"]
        );
        let note = graph["notes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["project"] == "g/bad")
            .unwrap_or_else(|| panic!("{api}: no note for g/bad"));
        let message = note["message"].as_str().unwrap();
        assert!(
            message.starts_with(".autodep.yml line 2: ")
                && message.ends_with("the defaults are used"),
            "{message}"
        );
        if api == "graphql" {
            let graphql = sim
                .requests()
                .iter()
                .filter(|r| r.endpoint == "graphql")
                .count();
            assert_eq!(graphql, 2, "the page, then g/mono's own Dockerfile");
        }
        seen.push(e);
    }
    assert_eq!(seen[0], seen[1]);

    // `deps` says where each dependency is written when it is not the
    // root Dockerfile's FROM.
    let deps = autodep(&sim, &["deps", "g/tools"]).await;
    assert_eq!(
        lines(&deps),
        [
            "g/tools",
            "└── g/app (declared in .autodep.yml line 2)",
            "    └── g/consumer"
        ]
    );
    let deps = autodep(&sim, &["deps", "g/base"]).await;
    assert!(
        lines(&deps)
            .iter()
            .any(|l| l.ends_with("g/mono (services/api/Dockerfile line 1)")),
        "{}",
        stdout(&deps)
    );

    // The image it publishes on Harbor is a target.
    let deps = autodep(&sim, &["deps", "harbor.example.com/team/app:9"]).await;
    assert_eq!(lines(&deps), ["g/app", "└── g/consumer"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn never_triggered_projects_stop_the_walk_and_others_get_their_ref_and_variables() {
    let sim = instance().await;
    let out = autodep(
        &sim,
        &[
            "-v",
            "rebuild",
            "--recurse",
            "--poll-interval",
            "50ms",
            "g/base",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let built = triggered(&sim);
    assert!(!built.contains(&"g/frozen".to_string()), "{built:?}");
    assert!(!built.contains(&"g/below-frozen".to_string()), "{built:?}");
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("g/frozen: trigger: false in its .autodep.yml"),
        "{said}"
    );
    let rel = sim
        .pipelines()
        .into_iter()
        .find(|p| p.project_path == "g/rel")
        .unwrap();
    assert_eq!(rel.git_ref, "release");
    assert!(
        rel.variables
            .contains(&("CHANNEL".to_string(), "stable".to_string())),
        "{:?}",
        rel.variables
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_to_the_configuration_file_patches_the_server_s_graph() {
    let sim = instance().await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    let consumer = project_id(&sim, "g/consumer").await;
    let consumer_ups = || async {
        server.project(consumer).await["upstreams"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(consumer_ups().await, 1);
    // The project page marks what its .autodep.yml declared.
    let id = project_id(&sim, "g/app").await;
    let page = server.project(id).await;
    let tools = page["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["project"] == "g/tools")
        .unwrap();
    assert_eq!(tools["declared"], true);
    assert_eq!(tools["file"], ".autodep.yml");
    let html = reqwest::get(format!("{}/projects/{id}", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("(declared in .autodep.yml line 2)"), "{html}");
    assert!(
        html.contains("it also produces harbor.example.com/team/app"),
        "{html}"
    );
    // g/app stops publishing to Harbor: g/consumer has no upstream left.
    sim.commit_file("g/app", "main", ".autodep.yml", "depends_on: [g/tools]\n")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while consumer_ups().await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the push was not patched in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn many_projects_own_paths_are_read_in_queries_within_gitlab_s_budget() {
    let mut projects = vec![image_project("g/base", &[])];
    for i in 0..50 {
        projects.push(ok(ProjectSpec::new(&format!("g/svc{i:02}"))
            .file(
                ".autodep.yml",
                &format!("dockerfiles: [svc{i:02}/Dockerfile]\n"),
            )
            .file(
                &format!("svc{i:02}/Dockerfile"),
                &format!("FROM {REG}/g/base\n"),
            )));
    }
    let sim = start(projects).await;
    let out = autodep(&sim, &["--api", "graphql", "deps", "g/base"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 1 + 50, "{}", stdout(&out));
    let graphql = sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "graphql")
        .count();
    assert_eq!(
        graphql,
        1 + 2,
        "a page, then 50 paths in queries of at most 40"
    );
}
