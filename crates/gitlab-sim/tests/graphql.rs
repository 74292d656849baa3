//! `POST /api/graphql` answers like GitLab's for the scan's query: cursor
//! pages of at most 100, blobs of the default branch, GitLab's limits and
//! error texts, a Guest's repository `null` with an error on its path.

mod common;

use common::TOKEN;
use gitlab_sim::{ProjectSpec, SimBuilder};
use serde_json::{json, Value};

const SCAN: &str = "query Scan($after: String, $paths: [String!]!, $first: Int) {
  queryComplexity { score limit }
  projects(first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { id fullPath archived repository { rootRef empty blobs(paths: $paths) { nodes { path oid rawTextBlob } } } }
  }
}";

async fn post(sim: &gitlab_sim::Simulator, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{}/api/graphql", sim.url()))
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn sim() -> gitlab_sim::Simulator {
    let mut b = SimBuilder::new().token(TOKEN);
    for i in 0..150 {
        b = b.project(
            ProjectSpec::new(&format!("g/p{i:03}")).dockerfile(&format!("FROM alpine:{i}\n")),
        );
    }
    b.project(ProjectSpec::new("g/secret").dockerfile("FROM x\n").guest())
        .project(ProjectSpec::new("g/monorepo").file("services/api/Dockerfile", "FROM api\n"))
        .project(ProjectSpec::new("g/public").dockerfile("FROM y\n").public())
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_of_100_with_cursors_read_every_project_s_files() {
    let sim = sim().await;
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, body) = post(
            &sim,
            Some(TOKEN),
            json!({"query": SCAN, "variables": {"after": after, "paths": ["Dockerfile", "services/api/Dockerfile"], "first": 100}}),
        )
        .await;
        assert_eq!(status, 200);
        pages += 1;
        let data = &body["data"];
        let complexity = &data["queryComplexity"];
        assert_eq!(complexity["limit"], 250);
        assert!(complexity["score"].as_i64().unwrap() < 250, "{complexity}");
        for node in data["projects"]["nodes"].as_array().unwrap() {
            seen.push(node.clone());
        }
        if data["projects"]["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = data["projects"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_string);
    }
    assert_eq!(pages, 2);
    assert_eq!(seen.len(), 153);
    let p = seen.iter().find(|n| n["fullPath"] == "g/p007").unwrap();
    assert!(p["id"]
        .as_str()
        .unwrap()
        .starts_with("gid://gitlab/Project/"));
    assert_eq!(p["repository"]["rootRef"], "main");
    let blobs = p["repository"]["blobs"]["nodes"].as_array().unwrap();
    assert_eq!(blobs.len(), 1, "a path that does not exist is left out");
    assert_eq!(blobs[0]["rawTextBlob"], "FROM alpine:7\n");
    let mono = seen.iter().find(|n| n["fullPath"] == "g/monorepo").unwrap();
    assert_eq!(
        mono["repository"]["blobs"]["nodes"][0]["path"],
        "services/api/Dockerfile"
    );
}

#[tokio::test]
async fn a_guest_s_repository_is_null_with_an_error_on_that_project_only() {
    let sim = sim().await;
    let (_, body) = post(
        &sim,
        Some(TOKEN),
        json!({"query": SCAN, "variables": {"paths": ["Dockerfile"], "first": 100, "after": "eyJpZCI6IjE1MCJ9"}}),
    )
    .await;
    let nodes = body["data"]["projects"]["nodes"].as_array().unwrap();
    let index = nodes
        .iter()
        .position(|n| n["fullPath"] == "g/secret")
        .unwrap();
    assert!(nodes[index]["repository"].is_null());
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0]["path"],
        json!(["projects", "nodes", index, "repository"])
    );
    assert!(errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("don't have permission"));
    assert!(nodes[index + 1]["repository"]["blobs"]["nodes"].is_array());
}

#[tokio::test]
async fn gitlab_s_limits_and_words() {
    let sim = sim().await;
    // Eight aliased pages of 100 with their blobs: over 250.
    let heavy = format!(
        "{{ {} }}",
        (0..8)
            .map(|i| format!("p{i}: projects(first: 100) {{ nodes {{ repository {{ blobs(paths: [\"a\", \"b\", \"c\"]) {{ nodes {{ path oid rawTextBlob }} }} }} }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (_, body) = post(&sim, Some(TOKEN), json!({"query": heavy})).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("Query has complexity of "), "{message}");
    assert!(
        message.ends_with(", which exceeds max complexity of 250"),
        "{message}"
    );

    let long = format!(
        "{{ projects(first: 1) {{ nodes {{ id }} }} }}{}",
        " ".repeat(10_000)
    );
    let (_, body) = post(&sim, Some(TOKEN), json!({"query": long})).await;
    assert_eq!(body["errors"][0]["message"], "Query too large");

    let (_, body) = post(
        &sim,
        Some(TOKEN),
        json!({"query": "{ projects { nodes { nope } } }"}),
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{body}"
    );

    // Anonymous: public projects only, and the lower limit.
    let (_, body) = post(
        &sim,
        None,
        json!({"query": "{ queryComplexity { limit } projects { nodes { fullPath } } }"}),
    )
    .await;
    assert_eq!(body["data"]["queryComplexity"]["limit"], 200);
    assert_eq!(
        body["data"]["projects"]["nodes"],
        json!([{"fullPath": "g/public"}])
    );

    // More than 100 asked: 100 given.
    let (_, body) = post(
        &sim,
        Some(TOKEN),
        json!({"query": "{ projects(first: 500) { nodes { id } } }"}),
    )
    .await;
    assert_eq!(
        body["data"]["projects"]["nodes"].as_array().unwrap().len(),
        100
    );
}
