//! The simulator behaves like GitLab for any well-written client:
//! pagination, authentication, errors, encoding, bodies, faults.

mod common;

use std::time::Duration;

use common::TOKEN;
use gitlab_sim::{FaultKind, FaultRule, Faults, ProjectSpec, SimBuilder, TokenScope};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn sim_with(n: usize) -> gitlab_sim::Simulator {
    let projects = (0..n).map(|i| ProjectSpec::new(&format!("g/p{i:05}")));
    SimBuilder::new()
        .token(TOKEN)
        .token_with_scope("glpat-read", TokenScope::ReadApi)
        .token_with_scope("glpat-expired", TokenScope::Expired)
        .job_token("job-123")
        .project(
            ProjectSpec::new("Group/Sub/My.Proj")
                .dockerfile("FROM alpine\n")
                .public(),
        )
        .project(
            ProjectSpec::new("g/old")
                .dockerfile("FROM alpine\n")
                .archived(),
        )
        .project(ProjectSpec::new("g/empty").empty())
        .projects(projects)
        .start()
        .await
        .expect("simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = req.send().await.expect("request");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn offset_pagination_headers() {
    let sim = sim_with(247).await; // 250 projects
    let url = format!("{}/api/v4/projects", sim.url());
    let (s, h, body) = call(
        client()
            .get(&url)
            .query(&[("per_page", "1000")])
            .header("PRIVATE-TOKEN", TOKEN),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        body.as_array().unwrap().len(),
        100,
        "per_page is capped at 100"
    );
    assert_eq!(header(&h, "x-per-page").as_deref(), Some("100"));
    assert_eq!(header(&h, "x-total").as_deref(), Some("250"));
    assert_eq!(header(&h, "x-total-pages").as_deref(), Some("3"));
    assert_eq!(header(&h, "x-next-page").as_deref(), Some("2"));
    assert_eq!(header(&h, "x-prev-page").as_deref(), Some(""));
    let (_, h, body) = call(
        client()
            .get(&url)
            .query(&[("per_page", "100"), ("page", "3")])
            .header("PRIVATE-TOKEN", TOKEN),
    )
    .await;
    assert_eq!(body.as_array().unwrap().len(), 50);
    assert_eq!(
        header(&h, "x-next-page").as_deref(),
        Some(""),
        "empty, not absent, on the last page"
    );
    assert_eq!(header(&h, "x-prev-page").as_deref(), Some("2"));
    let link = header(&h, "link").unwrap();
    assert!(
        link.contains("rel=\"prev\"")
            && link.contains("rel=\"first\"")
            && link.contains("rel=\"last\"")
    );
    assert!(!link.contains("rel=\"next\""));
    // Following the pages collects every project exactly once.
    let mut ids = std::collections::BTreeSet::new();
    let mut page = 1;
    loop {
        let (_, h, body) = call(
            client()
                .get(&url)
                .query(&[("per_page", "100"), ("page", &page.to_string())])
                .header("PRIVATE-TOKEN", TOKEN),
        )
        .await;
        for p in body.as_array().unwrap() {
            assert!(ids.insert(p["id"].as_u64().unwrap()));
        }
        match header(&h, "x-next-page").filter(|v| !v.is_empty()) {
            Some(next) => page = next.parse().unwrap(),
            None => break,
        }
    }
    assert_eq!(ids.len(), 250);
}

#[tokio::test]
async fn large_counts_and_offset_ceiling() {
    let sim = sim_with(10_001).await;
    let url = format!("{}/api/v4/projects", sim.url());
    let (_, h, _) = call(
        client()
            .get(&url)
            .query(&[("per_page", "1")])
            .header("PRIVATE-TOKEN", TOKEN),
    )
    .await;
    assert_eq!(header(&h, "x-total"), None, "no X-Total past 10,000");
    assert_eq!(header(&h, "x-total-pages"), None);
    assert!(!header(&h, "link").unwrap().contains("rel=\"last\""));
    let (s, _, body) = call(
        client()
            .get(&url)
            .query(&[("per_page", "100"), ("page", "502")])
            .header("PRIVATE-TOKEN", TOKEN),
    )
    .await;
    assert_eq!(s, 405);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("maximum allowed offset of 50000"));
}

#[tokio::test]
async fn keyset_pagination_follows_links() {
    let sim = sim_with(120).await;
    let mut next = Some(format!(
        "{}/api/v4/projects?pagination=keyset&order_by=id&sort=asc&per_page=50",
        sim.url()
    ));
    let mut ids = Vec::new();
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        let (s, h, body) = call(client().get(&url).header("PRIVATE-TOKEN", TOKEN)).await;
        assert_eq!(s, 200);
        assert_eq!(header(&h, "x-total"), None);
        ids.extend(
            body.as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_u64().unwrap()),
        );
        next = header(&h, "link").map(|l| {
            l.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string()
        });
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, (1..=123).collect::<Vec<u64>>());
}

#[tokio::test]
async fn filters_search_archived_simple() {
    let sim = sim_with(3).await;
    let url = format!("{}/api/v4/projects", sim.url());
    let get = |q: Vec<(&'static str, &'static str)>| {
        let url = url.clone();
        async move {
            call(client().get(&url).query(&q).header("PRIVATE-TOKEN", TOKEN))
                .await
                .2
        }
    };
    let found = get(vec![("search", "MY.pro")]).await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["path_with_namespace"], "Group/Sub/My.Proj");
    let not_archived = get(vec![("archived", "false"), ("per_page", "100")]).await;
    assert!(not_archived
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["archived"] == false));
    assert_eq!(not_archived.as_array().unwrap().len(), 5);
    let simple = get(vec![("simple", "true")]).await;
    assert!(
        simple[0].get("archived").is_none(),
        "simple shape has no archived"
    );
    let asc = get(vec![("order_by", "id"), ("sort", "asc")]).await;
    assert_eq!(asc[0]["id"], 1);
    let empty = get(vec![("search", "g/empty"), ("search_namespaces", "true")]).await;
    assert_eq!(empty[0]["empty_repo"], true);
    assert_eq!(
        empty[0]["default_branch"], "main",
        "an empty repo still reports a default branch"
    );
}

#[tokio::test]
async fn authentication_like_gitlab() {
    let sim = sim_with(0).await;
    let url = format!("{}/api/v4/projects/1", sim.url());
    let (s, _, body) = call(client().get(&url).header("PRIVATE-TOKEN", "wrong")).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"})
        )
    );
    let (s, _, body) = call(client().get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(s, 200, "{body}");
    let (s, h, body) = call(client().get(&url).header("PRIVATE-TOKEN", "glpat-expired")).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"], "invalid_token");
    assert!(h.contains_key("www-authenticate"));
    // Anonymous callers see public projects only, invisible = missing.
    let (s, _, _) = call(client().get(&url)).await;
    assert_eq!(s, 200, "project 1 is public");
    let (s, _, body) = call(client().get(format!("{}/api/v4/projects/2", sim.url()))).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Project Not Found"})
        )
    );
    // A read_api token cannot create pipelines.
    let (s, _, body) = call(
        client()
            .post(format!("{url}/pipeline"))
            .header("PRIVATE-TOKEN", "glpat-read")
            .json(&json!({"ref": "main"})),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(body["error"], "insufficient_scope");
    // A job token is ignored where the route does not accept it…
    let (s, _, body) = call(
        client()
            .post(format!("{url}/pipeline"))
            .header("JOB-TOKEN", "job-123")
            .json(&json!({"ref": "main"})),
    )
    .await;
    assert_eq!(
        (s, body),
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"})
        )
    );
    // …and accepted on the raw file route.
    let (s, _, body) = call(
        client()
            .get(format!("{url}/repository/files/Dockerfile/raw"))
            .header("JOB-TOKEN", "job-123"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body, Value::String("FROM alpine\n".into()));
}

#[tokio::test]
async fn errors_and_encoding_like_gitlab() {
    let sim = sim_with(0).await;
    let base = format!("{}/api/v4/projects", sim.url());
    let auth = |r: reqwest::RequestBuilder| r.header("PRIVATE-TOKEN", TOKEN);
    let cases: Vec<(String, u16, Value)> = vec![
        (
            format!("{base}/Group%2FSub%2FMy.Proj/repository/files/Dockerfile"),
            400,
            json!({"error": "ref is missing"}),
        ),
        (
            format!("{base}/group%2Fsub%2Fmy.proj/repository/files/Dockerfile?ref=nope"),
            404,
            json!({"message": "404 Commit Not Found"}),
        ),
        (
            format!("{base}/1/repository/files/Nope?ref=main"),
            404,
            json!({"message": "404 File Not Found"}),
        ),
        (
            format!("{base}/Group/Sub/My.Proj"),
            404,
            json!({"error": "404 Not Found"}),
        ),
        (
            format!("{base}/nope"),
            404,
            json!({"message": "404 Project Not Found"}),
        ),
        (
            format!("{base}/999"),
            404,
            json!({"message": "404 Project Not Found"}),
        ),
        (
            format!("{base}/1/pipelines/999"),
            404,
            json!({"message": "404 Not found"}),
        ),
        (
            format!("{base}/3/repository/files/Dockerfile?ref=main"),
            404,
            json!({"message": "404 Commit Not Found"}),
        ),
    ];
    for (url, status, body) in cases {
        let (s, _, got) = call(auth(client().get(&url))).await;
        assert_eq!((s.as_u16(), &got), (status, &body), "{url}");
    }
    // HEAD gives the X-Gitlab-* headers and no body.
    let r = auth(client().head(format!("{base}/1/repository/files/Dockerfile?ref=HEAD")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-gitlab-file-path"], "Dockerfile");
    assert!(r.headers().contains_key("x-gitlab-blob-id"));
    assert!(r.bytes().await.unwrap().is_empty());
    // Pipelines: 201, missing ref, unknown ref, archived, form encoding.
    let (s, _, body) = call(auth(client().post(format!("{base}/1/pipeline")).form(&[
        ("ref", "main"),
        ("variables[0][key]", "K"),
        ("variables[0][value]", "V"),
    ])))
    .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(sim.pipelines()[0].variables, vec![("K".into(), "V".into())]);
    let (s, _, body) = call(auth(
        client().post(format!("{base}/1/pipeline")).json(&json!({})),
    ))
    .await;
    assert_eq!(
        (s.as_u16(), body),
        (400, json!({"error": "ref is missing"}))
    );
    let (s, _, body) = call(auth(
        client()
            .post(format!("{base}/1/pipeline"))
            .json(&json!({"ref": "nope"})),
    ))
    .await;
    assert_eq!(
        (s.as_u16(), body),
        (400, json!({"message": {"base": ["Reference not found"]}}))
    );
    let (s, _, body) = call(auth(
        client()
            .post(format!("{base}/2/pipeline"))
            .json(&json!({"ref": "main"})),
    ))
    .await;
    assert_eq!(
        (s.as_u16(), body),
        (403, json!({"message": "403 Forbidden"}))
    );
    let (s, _, body) = call(
        client()
            .post(format!("{base}/1/trigger/pipeline"))
            .json(&json!({"token": "x", "ref": "main", "variables": {"A": 1}})),
    )
    .await;
    assert_eq!(s, 404, "{body}");
    let token = sim.trigger_token("group/sub/my.proj").unwrap();
    let (s, _, body) = call(
        client()
            .post(format!("{base}/1/trigger/pipeline"))
            .json(&json!({"token": token, "ref": "main", "variables": {"A": 1}})),
    )
    .await;
    assert_eq!(
        (s.as_u16(), body),
        (
            400,
            json!({"message": "variables needs to be a map of key-valued strings"})
        )
    );
    let (s, _, body) = call(
        client()
            .post(format!("{base}/1/trigger/pipeline"))
            .json(&json!({"token": "job-123", "ref": "main"})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        body["source"], "pipeline",
        "a job token makes a multi-project pipeline"
    );
}

#[tokio::test]
async fn faults_are_injected_and_logged() {
    let sim = sim_with(0).await;
    let url = format!("{}/api/v4/projects/1", sim.url());
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![
            FaultRule::new(
                "project",
                FaultKind::RateLimit {
                    retry_after_secs: 7,
                },
            )
            .count(1),
            FaultRule::new("project", FaultKind::Error { status: 502 }).count(1),
            FaultRule::new("project", FaultKind::Drop).count(1),
        ],
    });
    let r = client()
        .get(&url)
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert!(r.headers().contains_key("ratelimit-reset"));
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "Retry later\n");
    let r = client()
        .get(&url)
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let dropped = match client()
        .get(&url)
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
    {
        Ok(r) => r.bytes().await.is_err(),
        Err(_) => true,
    };
    assert!(dropped, "the third request's connection breaks");
    let r = client()
        .get(&url)
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the rules were limited to one firing each");
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 502, 200, 200]);
    assert_eq!(sim.counters()["project 200"], 2);
    // Latency is added to every request.
    sim.set_faults(Faults {
        latency_ms: Some((30, 30)),
        rules: vec![],
    });
    let started = std::time::Instant::now();
    client()
        .get(&url)
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(30));
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let sim = sim_with(0).await;
    let control = format!("{}/-/sim", sim.url());
    let r = client()
        .put(format!("{control}/faults"))
        .json(&json!({"rules": [{"endpoint": "projects", "kind": "error", "status": 503}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client()
        .get(format!("{}/api/v4/projects", sim.url()))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let requests: Value = client()
        .get(format!("{control}/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests[0]["status"], 503);
    assert_eq!(requests[0]["endpoint"], "projects");
    let r = client().post(format!("{control}/commits")).json(&json!({"project": "group/sub/my.proj", "path": "Dockerfile", "content": "FROM busybox\n"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = client()
        .get(format!(
            "{}/api/v4/projects/1/repository/files/Dockerfile/raw",
            sim.url()
        ))
        .header("PRIVATE-TOKEN", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "FROM busybox\n");
}
