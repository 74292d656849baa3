//! The simulator's responses and webhooks have the keys and types of the
//! real GitLab payloads in `tests/fixtures/gitlab`.

mod common;

use std::time::Duration;

use common::{assert_same_shape, fixture, TOKEN};
use gitlab_sim::{PipelineStatus, ProjectSpec, SimBuilder};
use serde_json::{json, Value};

async fn sim() -> gitlab_sim::Simulator {
    SimBuilder::new()
        .token(TOKEN)
        .project(
            ProjectSpec::new("Diaspora/Diaspora-Client")
                .dockerfile("FROM alpine\n")
                .file("app/models/key.rb", "class Key; end\n")
                .images(&["", "releases"])
                .pipeline(Duration::from_millis(50), PipelineStatus::Success),
        )
        .start()
        .await
        .expect("simulator starts")
}

async fn get(url: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn project_entities_match_real_payloads() {
    let sim = sim().await;
    let list = get(&format!("{}/api/v4/projects", sim.url())).await;
    assert_same_shape(&fixture("api/list_projects.json")[0], &list[0], &[]);
    let one = get(&format!(
        "{}/api/v4/projects/diaspora%2Fdiaspora-client",
        sim.url()
    ))
    .await;
    // Keys that need `statistics=true`/`license=true`, maintainer rights
    // (`runners_token`) or GitLab EE are not part of the entity we serve.
    let ee_or_optional = [
        "statistics",
        "license",
        "license_url",
        "runners_token",
        "approvals_before_merge",
        "mirror",
        "mirror_user_id",
        "mirror_trigger_builds",
        "only_mirror_protected_branches",
        "mirror_overwrites_diverged_branches",
        "marked_for_deletion_at",
        "marked_for_deletion_on",
        "spp_repository_pipeline_access",
        "container_expiration_policy.name_regex_delete",
    ];
    assert_same_shape(&fixture("api/get_project.json"), &one, &ee_or_optional);
    assert_eq!(one["path_with_namespace"], "Diaspora/Diaspora-Client");
    assert_eq!(
        one["container_registry_image_prefix"],
        format!("{}/diaspora/diaspora-client", sim.registry_host())
    );
}

#[tokio::test]
async fn file_tree_and_registry_entities_match_real_payloads() {
    let sim = sim().await;
    let base = format!("{}/api/v4/projects/1", sim.url());
    let file = get(&format!(
        "{base}/repository/files/app%2Fmodels%2Fkey.rb?ref=main"
    ))
    .await;
    assert_same_shape(&fixture("api/get_repository_file.json"), &file, &[]);
    assert_eq!(file["file_path"], "app/models/key.rb");
    let tree = get(&format!("{base}/repository/tree?recursive=true")).await;
    assert_same_shape(&fixture("api/list_repository_tree.json")[0], &tree[0], &[]);
    let registry = get(&format!("{base}/registry/repositories")).await;
    assert_same_shape(
        &fixture("api/list_project_registry_repositories.json")[1],
        &registry[1],
        &[],
    );
    assert_eq!(registry[1]["path"], "diaspora/diaspora-client/releases");
}

#[tokio::test]
async fn pipeline_entities_match_real_payloads() {
    let sim = sim().await;
    let client = reqwest::Client::new();
    let base = format!("{}/api/v4/projects/1", sim.url());
    let created: Value = client
        .post(format!("{base}/pipeline"))
        .header("PRIVATE-TOKEN", TOKEN)
        .json(&json!({"ref": "main", "variables": [{"key": "A", "value": "1"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_same_shape(&fixture("api/create_pipeline.json"), &created, &[]);
    let token = sim.trigger_token("diaspora/diaspora-client").unwrap();
    let triggered: Value = client
        .post(format!("{base}/trigger/pipeline"))
        .form(&[
            ("token", token.as_str()),
            ("ref", "main"),
            ("variables[WHY]", "base"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_same_shape(&fixture("api/trigger_pipeline.json"), &triggered, &[]);
    assert_eq!(triggered["source"], "trigger");
    assert!(sim.wait_pipelines_settled(Duration::from_secs(10)).await);
    let got = get(&format!("{base}/pipelines/{}", created["id"])).await;
    assert_same_shape(&fixture("api/get_pipeline.json"), &got, &[]);
    assert_eq!(got["status"], "success");
    let pipelines = sim.pipelines();
    assert_eq!(
        pipelines[0].variables,
        vec![("A".to_string(), "1".to_string())]
    );
    assert_eq!(
        pipelines[1].variables,
        vec![("WHY".to_string(), "base".to_string())]
    );
    // The variables endpoint python-gitlab reads, in GitLab's shape.
    let variables = get(&format!("{base}/pipelines/{}/variables", created["id"])).await;
    assert_same_shape(
        &fixture("api/get_pipeline_variables.json")[0],
        &variables[0],
        &[],
    );
    assert_eq!(variables[0]["key"], "A");
    assert_eq!(variables[0]["value"], "1");
    // Listing filters: by source, and by update time.
    let by_api = get(&format!("{base}/pipelines?source=api")).await;
    assert_eq!(by_api.as_array().unwrap().len(), 1);
    assert_eq!(by_api[0]["id"], created["id"]);
    let later = get(&format!(
        "{base}/pipelines?updated_after=2999-01-01T00:00:00Z"
    ))
    .await;
    assert_eq!(later.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_fault_after_the_handler_leaves_the_pipeline_created() {
    let sim = sim().await;
    sim.set_faults(gitlab_sim::Faults {
        latency_ms: None,
        rules: vec![gitlab_sim::FaultRule::new(
            "pipeline_create",
            gitlab_sim::FaultKind::ErrorAfter { status: 502 },
        )],
    });
    let r = reqwest::Client::new()
        .post(format!("{}/api/v4/projects/1/pipeline", sim.url()))
        .header("PRIVATE-TOKEN", TOKEN)
        .json(&json!({"ref": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(sim.pipelines().len(), 1, "the request took effect");
}

#[tokio::test]
async fn webhooks_match_real_payloads() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push((headers, body));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sim = sim().await;
    sim.add_webhook(&format!("http://{addr}/hook"), Some("s3cret"));
    sim.run_pipeline("diaspora/diaspora-client").unwrap();
    assert!(sim.wait_pipelines_settled(Duration::from_secs(10)).await);
    sim.commit_file(
        "diaspora/diaspora-client",
        "main",
        "Dockerfile",
        "FROM alpine:3.21\n",
    )
    .await
    .unwrap();
    // Deliveries are logged after the answer arrives; wait for all four.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sim.hook_deliveries().len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = received.lock().unwrap().clone();
    let statuses: Vec<&str> = got
        .iter()
        .filter_map(|(_, b)| b["object_attributes"]["status"].as_str())
        .collect();
    assert_eq!(statuses, ["pending", "running", "success"]);
    let (headers, success) = &got[2];
    assert_eq!(headers["x-gitlab-event"], "Pipeline Hook");
    assert_eq!(headers["x-gitlab-token"], "s3cret");
    assert!(headers.contains_key("idempotency-key"));
    assert!(headers.contains_key("x-gitlab-event-uuid"));
    assert!(headers.contains_key("x-gitlab-webhook-uuid"));
    assert_same_shape(
        &fixture("webhooks/pipeline_docs.json"),
        success,
        &["merge_request", "source_pipeline"],
    );
    assert_same_shape(
        &fixture("webhooks/pipeline.json"),
        success,
        &["merge_request", "source_pipeline"],
    );
    let created_at = success["object_attributes"]["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with(" UTC") && created_at.len() == 23,
        "{created_at}"
    );
    assert_eq!(success["object_attributes"]["ref"], "main");
    let (push_headers, push) = &got[3];
    assert_eq!(push_headers["x-gitlab-event"], "Push Hook");
    assert_same_shape(&fixture("webhooks/push_docs.json"), push, &[]);
    assert_eq!(push["ref"], "refs/heads/main");
    assert_eq!(push["commits"][0]["modified"][0], "Dockerfile");

    // A manual resend keeps the Idempotency-Key and changes the webhook UUID.
    let first = sim.hook_deliveries()[2].clone();
    let again = sim.resend(&first).await;
    assert_eq!(again.idempotency_key, first.idempotency_key);
    assert_ne!(again.webhook_uuid, first.webhook_uuid);
    assert_eq!(again.response_status, Some(200));
}
