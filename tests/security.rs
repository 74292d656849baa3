//! Attacks on the server and the client, one by one: authentication that
//! cannot be switched off by accident, the secret checked before the body,
//! slow and idle connections, guarded status surfaces, credentials that
//! stay home, forged log and output lines, and a hostile GitLab whose
//! answers redirect, lie about their page count, never end or never move.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use common::server::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A hand-made HTTP server on `ip`:0 that plays a hostile GitLab.
async fn hostile(ip: [u8; 4], router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

async fn run(url: &str, args: &[&str]) -> std::process::Output {
    autodep_env(&[("GITLAB_URL", url), ("GITLAB_TOKEN", TOKEN)], args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_cannot_be_switched_off_by_accident() {
    let sim = start(vec![image_project("g/base", &[])]).await;
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_str().unwrap();
    for (env, args, expect) in [
        (
            vec![],
            vec!["server", "--port", "0", "--webhook-auth-token", ""],
            "the webhook secret is empty",
        ),
        (
            vec![("AUTODEP_WEBHOOK_TOKEN", "")],
            vec!["server", "--port", "0"],
            "webhook secret",
        ),
        (
            vec![],
            vec!["server", "--port", "0"],
            "--insecure-no-webhook-auth",
        ),
    ] {
        let mut all_env = vec![("GITLAB_URL", sim.url()), ("GITLAB_TOKEN", TOKEN.into())];
        all_env.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let env: Vec<(&str, &str)> = all_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut args = args.clone();
        args.extend(["--state-dir", state_arg]);
        let out = autodep_env(&env, &args).await;
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
    // On purpose, it runs, and says so at start.
    let mut cmd = binary();
    cmd.env("GITLAB_URL", sim.url())
        .env("GITLAB_TOKEN", TOKEN)
        .args(["server", "--port", "0", "--insecure-no-webhook-auth"])
        .arg("--state-dir")
        .arg(state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !line.contains("insecure") {
            line.clear();
            if tokio::io::AsyncBufReadExt::read_line(&mut err, &mut line)
                .await
                .unwrap()
                == 0
            {
                break;
            }
        }
    })
    .await
    .expect("a warning at start");
    assert!(line.contains("not authenticated"), "{line}");
}

async fn started(extra: &[&str]) -> (gitlab_sim::Simulator, tempfile::TempDir, Server) {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), extra).await;
    (sim, state, server)
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Sends raw bytes, then reads what comes back until the server closes
/// the connection or `limit` passes.
async fn exchange(addr: &str, request: &[u8], limit: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_is_checked_before_the_body_and_slow_clients_are_cut_off() {
    let (_sim, _state, server) = started(&[
        "--header-read-timeout",
        "4s",
        "--body-read-timeout",
        "2s",
        "--max-connections",
        "4",
    ])
    .await;
    let addr = host_port(&server.url);
    // A wrong secret announcing 100 MB that never come: 401 at once.
    let request = "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: wrong\r\n\
                   Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n";
    let (answer, _) = exchange(&addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Headers that never finish: the connection is closed after the
    // header timeout, not held.
    let (answer, closed) = exchange(
        &addr,
        b"POST /webhook HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(closed, "a slow client's connection stays open: {answer}");
    // Four connections that never finish their headers fill the limit; a
    // client that does send is served, in place of the idlest, long before
    // the header timeout would have freed a place.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let since = std::time::Instant::now();
    let mut served = false;
    while !served && since.elapsed() < Duration::from_secs(4) {
        let (answer, _) = exchange(
            &addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(3),
        )
        .await;
        served = answer.starts_with("HTTP/1.1 200");
    }
    assert!(served, "a fast client was locked out by slow ones");
    // (Idle connections may be replaced after a second; the header
    // timeout, 4 s, would free them only later.)
    assert!(
        since.elapsed() < Duration::from_secs(3),
        "served only after {:?}",
        since.elapsed()
    );
    drop(slow);
    // Four requests in progress (bodies that do not come) are never cut
    // for a newcomer: it is refused until the body timeout frees them.
    // (The slow connections just dropped may still hold their places
    // until the server reads their end: a newcomer refused meanwhile, as
    // it should be, is closed at once and connects again.)
    let mut busy = Vec::new();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: {SECRET}\r\nContent-Length: 1000\r\n\r\n"
    );
    for _ in 0..20 {
        if busy.len() == 4 {
            break;
        }
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => continue,
            _ => busy.push(s),
        }
    }
    assert_eq!(busy.len(), 4, "four requests in progress");
    let mut refused = false;
    for _ in 0..100 {
        let (answer, closed) = exchange(
            &addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        if closed && answer.is_empty() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "a fifth connection was taken while four requests were in progress"
    );
    let mut timed_out = 0;
    for s in &mut busy {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 4, "the slow bodies were answered 408");
    drop(busy);
    let mut healthy = false;
    for _ in 0..100 {
        if reqwest::get(format!("{}/healthz", server.url))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy);
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("autodep_connections_evicted_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("autodep_connections_refused_total"),
        "{metrics}"
    );
    // An oversize body with the right secret: 413.
    let big = "x".repeat(5 * 1024 * 1024);
    let r = reqwest::Client::new()
        .post(format!("{}/webhook", server.url))
        .header("X-Gitlab-Token", SECRET)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_surfaces_are_guarded_and_send_a_strict_policy() {
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "status-secret\n").unwrap();
    let sim = start(vec![image_project("g/base", &[])]).await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::launch(
        &sim,
        state.path(),
        &["--status-token-file", token_file.path().to_str().unwrap()],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..500 {
        let r = client
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready);
    for path in ["/", "/status.json", "/metrics"] {
        let r = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = client
            .get(format!("{}{path}", server.url))
            .bearer_auth("status-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    // Health stays open for probes.
    assert_eq!(
        client
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_pages_move_to_their_own_listener_and_are_refused_on_a_public_one() {
    let sim = start(vec![image_project("g/base", &[])]).await;
    let state = tempfile::tempdir().unwrap();
    // Listening on every address without a status token: refused (the
    // request itself goes to 127.0.0.1).
    let server = Server::launch(&sim, state.path(), &["--host", "0.0.0.0"], &[]).await;
    let url = server.url.replace("0.0.0.0", "127.0.0.1");
    let r = reqwest::get(format!("{url}/status.json")).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("--status-listen"));
    drop(server);
    // With --status-listen, the pages are there and not on the main port.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let status_addr = free.local_addr().unwrap();
    drop(free);
    let state = tempfile::tempdir().unwrap();
    let server = Server::launch(
        &sim,
        state.path(),
        &["--status-listen", &status_addr.to_string()],
        &[],
    )
    .await;
    assert_eq!(
        reqwest::get(format!("{}/status.json", server.url))
            .await
            .unwrap()
            .status(),
        404
    );
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://{status_addr}/status.json")).await {
            ok = r.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "status pages on --status-listen");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_the_url_are_refused_without_echoing_them() {
    let out = autodep_env(
        &[
            ("GITLAB_URL", "https://alice:hunter2@gitlab.example.com"),
            ("GITLAB_TOKEN", TOKEN),
        ],
        &["graph"],
    )
    .await;
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("--token-file") && !err.contains("hunter2"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_never_follows_a_redirect_to_another_origin() {
    // Where the redirect points: records every token it is sent.
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let record = seen.clone();
    let elsewhere = hostile(
        [127, 0, 0, 2],
        Router::new().fallback(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                if let Some(t) = headers.get("private-token") {
                    record.lock().unwrap().push(t.to_str().unwrap().to_string());
                }
                "[]"
            }
        }),
    )
    .await;
    let gitlab = hostile(
        [127, 0, 0, 1],
        Router::new().fallback(move || async move {
            (
                StatusCode::FOUND,
                [("location", format!("http://{elsewhere}/api/v4/projects"))],
            )
                .into_response()
        }),
    )
    .await;
    let out = run(&format!("http://{gitlab}"), &["graph"]).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("redirected") && err.contains(&elsewhere.to_string()),
        "{err}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the token left: {:?}",
        seen.lock().unwrap()
    );
}

fn project_json(id: u64, path: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "path_with_namespace": path, "default_branch": "main",
        "archived": false, "empty_repo": false, "web_url": format!("http://x/{id}"),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lying_page_count_and_keyset_paging_that_never_moves_end() {
    // X-Total-Pages says 2^64-1 and keyset pages keep returning the same
    // project: no overflow, no task per page, and the loop ends.
    let gitlab = hostile(
        [127, 0, 0, 1],
        Router::new().route(
            "/api/v4/projects",
            get(|| async {
                let page: Vec<_> = (1..=100)
                    .map(|i| project_json(i, &format!("g/p{i}")))
                    .collect();
                (
                    [
                        ("x-total-pages", "18446744073709551615"),
                        ("x-next-page", "2"),
                    ],
                    axum::Json(page),
                )
            }),
        ),
    )
    .await;
    let out = run(&format!("http://{gitlab}"), &["graph"]).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("made no progress"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_answer_is_cut_at_the_limit() {
    let gitlab = hostile(
        [127, 0, 0, 1],
        Router::new().route(
            "/api/v4/projects",
            get(|| async {
                // 80 MiB of a JSON array that never closes.
                let chunk = bytes_of(1 << 20);
                let stream = futures_stream(chunk, 80);
                axum::body::Body::from_stream(stream)
            }),
        ),
    )
    .await;
    let out = run(&format!("http://{gitlab}"), &["graph"]).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("larger than"), "{}", stderr(&out));
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'['; n])
}

fn futures_stream(
    chunk: axum::body::Bytes,
    count: usize,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for _ in 0..count {
            if tx.send(Ok(chunk.clone())).await.is_err() {
                return;
            }
        }
    });
    tokio_stream_of(rx)
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_from_gitlab_cannot_forge_output_lines() {
    let gitlab = hostile(
        [127, 0, 0, 1],
        Router::new()
            .route(
                "/api/v4/projects",
                get(|| async {
                    axum::Json(vec![
                        project_json(1, "g/base"),
                        project_json(2, "g/app\nFORGED <- g/base (FROM evil)\x1b[2J"),
                    ])
                }),
            )
            .route(
                "/api/v4/projects/{id}/repository/files/{file}/raw",
                get(
                    |axum::extract::Path((id, _)): axum::extract::Path<(u64, String)>| async move {
                        if id == 2 {
                            "FROM registry.127.0.0.1/g/base\n".to_string()
                        } else {
                            "FROM alpine\n".to_string()
                        }
                    },
                ),
            ),
    )
    .await;
    let out = run(&format!("http://{gitlab}"), &["graph"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("g/app\\x0aFORGED"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_cannot_add_a_project_outside_match() {
    let sim = start(vec![
        image_project("g/img-base", &[]),
        image_project("g/img-app", &["g/img-base"]),
        image_project("other/x", &[]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &["--match", "img"]).await;
    sim.add_webhook(&format!("{}/webhook", server.url), Some(SECRET));
    let before = server.status().await["projects"].clone();
    sim.commit_file(
        "other/x",
        "main",
        "Dockerfile",
        &format!("FROM {REG}/g/img-base\n"),
    )
    .await
    .unwrap();
    let status = server
        .wait_until(
            |s| {
                s["events"].as_array().is_some_and(|e| {
                    e.iter()
                        .any(|e| e["project_path"] == "other/x" && e["state"] == "done")
                })
            },
            "the push processed",
        )
        .await;
    assert_eq!(status["projects"], before);
    let event = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["project_path"] == "other/x")
        .unwrap()
        .clone();
    assert!(
        event["outcome"]
            .as_str()
            .unwrap()
            .contains("outside --match"),
        "{event}"
    );
    sim.run_pipeline("g/img-base").unwrap();
    server
        .wait_until(
            |s| s["triggers"].as_array().is_some_and(|t| !t.is_empty()),
            "a trigger",
        )
        .await;
    let mut triggered = triggered(&sim);
    triggered.dedup();
    assert!(!triggered.contains(&"other/x".to_string()), "{triggered:?}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_state_directory_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let sim = start(vec![image_project("g/base", &[])]).await;
    let parent = tempfile::tempdir().unwrap();
    let state = parent.path().join("state");
    let _server = Server::start(&sim, &state, &[]).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("state.sqlite3")), 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_fields_are_bounded_and_metric_labels_fixed() {
    let (_sim, _state, server) = started(&[]).await;
    let kind = format!("evil{}", "k".repeat(500));
    let (code, _) = server
        .post(
            "Pipeline Hook",
            &serde_json::json!({"object_kind": kind}).to_string(),
            Some(SECRET),
        )
        .await;
    assert_eq!(code, 200);
    let long_path = format!("g/{}\r\nFORGED", "p".repeat(20_000));
    let push = serde_json::json!({
        "object_kind": "push", "ref": "refs/heads/main", "after": "abc",
        "checkout_sha": "abc", "total_commits_count": 30, "commits": [],
        "project": {"id": 77, "path_with_namespace": long_path, "default_branch": "main"},
    });
    let (code, body) = server
        .post("Push Hook", &push.to_string(), Some(SECRET))
        .await;
    assert_eq!(code, 200, "{body}");
    let status = server.status().await;
    let stored = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["project_id"] == 77)
        .unwrap()["project_path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        stored.len() <= 1024 + '…'.len_utf8(),
        "{} bytes stored",
        stored.len()
    );
    assert!(!stored.contains('\n') && !stored.contains('\r'));
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("evilkkk"), "a label from the body");
    assert!(metrics.contains("kind=\"other\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_requests_beyond_the_concurrency_limit_wait_their_turn() {
    let (_sim, _state, server) = started(&[
        "--max-concurrent-requests",
        "1",
        "--body-read-timeout",
        "2s",
    ])
    .await;
    let addr = host_port(&server.url);
    // One request holds the only slot: its body never comes.
    let mut holder = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: {SECRET}\r\nContent-Length: 1000\r\n\r\n"
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    // Until the server holds it (the handler counts itself in flight).
    let mut held = false;
    for _ in 0..500 {
        let metrics = reqwest::get(format!("{}/metrics", server.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics
            .lines()
            .any(|l| l == "autodep_webhook_requests_in_flight 1")
        {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held, "the first request never got in");
    // A second, complete request must not be answered before the first.
    let second = reqwest::Client::new()
        .post(format!("{}/webhook", server.url))
        .header("X-Gitlab-Token", SECRET)
        .body(r#"{"object_kind":"build"}"#)
        .send();
    let mut buf = [0u8; 256];
    let first = holder.read(&mut buf);
    tokio::select! {
        biased;
        n = first => {
            let n = n.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
        }
        _ = second => panic!("the second request was answered while the only slot was taken"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_cannot_forge_log_lines() {
    let gitlab = hostile(
        [127, 0, 0, 1],
        Router::new()
            .route(
                "/api/v4/projects",
                get(|| async {
                    axum::Json(vec![project_json(1, "g/a\nERROR forged line\r\x1b[1mbold")])
                }),
            )
            .route(
                "/api/v4/projects/{id}/repository/files/{file}/raw",
                get(|| async { "FROM ${UNSET_NAME}/x\n" }),
            ),
    )
    .await;
    // -v logs a note per project, naming it.
    let out = run(&format!("http://{gitlab}"), &["-v", "graph"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("g/a\\x0aERROR forged line"), "{err}");
    assert!(!err.lines().any(|l| l.starts_with("ERROR forged")), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_failure_says_what_failed() {
    // A plain-HTTP server asked for https: the cause is in the message.
    let gitlab = hostile([127, 0, 0, 1], Router::new().fallback(|| async { "[]" })).await;
    let out = run(
        &format!("https://{gitlab}"),
        &["--max-retries", "0", "graph"],
    )
    .await;
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("corrupt message"), "{}", stderr(&out));
}
