//! Image digests from a real registry (Debian's `docker-registry`, the
//! CNCF distribution registry, started on 127.0.0.1 by the test): the
//! client reads each platform's digest out of a multi-platform index, and
//! `watch` rebuilds exactly the projects built on a tag whose image for
//! the platforms they build really changed — once.

mod common;

use common::registry::Registry;
use common::*;
use gitlab_docker_autodep::image::ImageRef;
use gitlab_docker_autodep::registry::{Platform, RegistryClient, RegistryError};
use gitlab_sim::ProjectSpec;

fn platforms(list: &[&str]) -> Vec<Platform> {
    list.iter().map(|p| Platform::parse(p).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_platform_s_digest_is_read_out_of_an_index() {
    if !have_tool("docker-registry") {
        return;
    }
    let reg = Registry::start().await;
    let (amd64, arm64) = reg
        .publish_multi("library/python", "3.12-slim", "amd64 one", "arm64 one")
        .await;
    let client = RegistryClient::new(Default::default());
    let image = ImageRef::parse(&format!("{}/library/python:3.12-slim", reg.host)).unwrap();
    let got = client
        .digests(&image, &platforms(&["linux/amd64", "linux/arm64/v8"]))
        .await
        .unwrap();
    assert_eq!(got[0].1.digest, amd64);
    assert_eq!(got[1].1.digest, arm64);

    // A single-platform tag: its own digest, whatever the platform.
    let single = reg.publish("team/tool", "1", "tool one").await;
    let image = ImageRef::parse(&format!("{}/team/tool:1", reg.host)).unwrap();
    let got = client
        .digests(&image, &platforms(&["linux/amd64"]))
        .await
        .unwrap();
    assert_eq!(got[0].1.digest, single);

    // What is not there says so.
    let missing = ImageRef::parse(&format!("{}/library/python:nope", reg.host)).unwrap();
    assert!(matches!(
        client.digests(&missing, &platforms(&["linux/amd64"])).await,
        Err(RegistryError::NotFound { .. })
    ));
    let none = client
        .digests(
            &ImageRef::parse(&format!("{}/library/python:3.12-slim", reg.host)).unwrap(),
            &platforms(&["linux/s390x"]),
        )
        .await;
    assert!(
        matches!(none, Err(RegistryError::NoPlatform { .. })),
        "{none:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_rebuilds_a_tag_s_dependents_once_when_its_image_really_changed() {
    if !have_tool("docker-registry") {
        return;
    }
    let reg = Registry::start().await;
    reg.publish_multi("library/python", "3.12-slim", "amd64 one", "arm64 one")
        .await;
    reg.publish_multi("library/python", "3.11", "old amd64", "old arm64")
        .await;
    let host = reg.host.clone();
    let sim = start(vec![
        image_project("g/api", &[]).dockerfile(&format!("FROM {host}/library/python:3.12-slim\n")),
        image_project("g/below-api", &["g/api"]),
        image_project("g/legacy", &[]).dockerfile(&format!("FROM {host}/library/python:3.11\n")),
        ProjectSpec::new("g/docs").file("README.md", "no image\n"),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    let watch = |extra: &'static [&'static str]| {
        let sim = &sim;
        let dir = dir.clone();
        async move {
            let mut args = vec![
                "watch",
                "--state-dir",
                dir.as_str(),
                "--poll-interval",
                "50ms",
            ];
            args.extend_from_slice(extra);
            autodep(sim, &args).await
        }
    };
    // First sighting: recorded, nothing rebuilt.
    let first = watch(&[]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        stdout(&first).contains(&format!(
            "first seen: {host}/library/python:3.12-slim (linux/amd64)"
        )),
        "{}",
        stdout(&first)
    );
    assert!(triggered(&sim).is_empty());

    // The same image pushed again: nothing.
    reg.publish_multi("library/python", "3.12-slim", "amd64 one", "arm64 one")
        .await;
    let same = watch(&[]).await;
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert!(!stdout(&same).contains("changed"), "{}", stdout(&same));
    assert!(triggered(&sim).is_empty());

    // Only the arm64 image changed: nothing for linux/amd64.
    reg.publish_multi("library/python", "3.12-slim", "amd64 one", "arm64 two")
        .await;
    let arm = watch(&[]).await;
    assert!(!stdout(&arm).contains("changed"), "{}", stdout(&arm));
    assert!(triggered(&sim).is_empty());

    // The amd64 image changed: its dependents' tree, once; the other tag's
    // users are left alone.
    reg.publish_multi("library/python", "3.12-slim", "amd64 two", "arm64 two")
        .await;
    let changed = watch(&["--recurse"]).await;
    assert_eq!(changed.status.code(), Some(0), "{}", stderr(&changed));
    let text = stdout(&changed);
    assert!(
        text.contains(&format!(
            "digest of {host}/library/python:3.12-slim (linux/amd64) changed from sha256:"
        )),
        "{text}"
    );
    assert_eq!(triggered(&sim), ["g/api", "g/below-api"]);
    // And seen once: the next run changes nothing.
    let again = watch(&[]).await;
    assert!(!stdout(&again).contains("changed"), "{}", stdout(&again));
    assert_eq!(triggered(&sim), ["g/api", "g/below-api"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_registry_is_reported_and_not_fatal() {
    let sim = start(vec![
        image_project("g/api", &[]).dockerfile("FROM 127.0.0.1:9/library/python:3.12\n")
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let out = autodep(
        &sim,
        &["watch", "--state-dir", &state.path().display().to_string()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("cannot check 127.0.0.1:9/library/python:3.12: cannot reach the registry"),
        "{}",
        stderr(&out)
    );
    assert!(triggered(&sim).is_empty());
}

/// `autodep_digest_checks_total` on the server's metrics.
async fn checks(server: &common::server::Server) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("autodep_digest_checks_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until the watcher has checked `n` more times.
async fn more_checks(server: &common::server::Server, n: u64) {
    let from = checks(server).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while checks(server).await < from + n {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher stopped checking"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_watching_external_images_rebuilds_a_changed_tag_s_tree_once() {
    if !have_tool("docker-registry") {
        return;
    }
    let reg = Registry::start().await;
    reg.publish_multi("library/python", "3.12-slim", "amd64 one", "arm64 one")
        .await;
    let host = reg.host.clone();
    let sim = start(vec![
        image_project("g/api", &[]).dockerfile(&format!("FROM {host}/library/python:3.12-slim\n")),
        image_project("g/below-api", &["g/api"]),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let server =
        common::server::Server::start(&sim, state.path(), &["--watch-external", "200ms"]).await;
    sim.add_webhook(
        &format!("{}/webhook", server.url),
        Some(common::server::SECRET),
    );
    more_checks(&server, 1).await;
    let status = server.status().await;
    assert_eq!(
        status["watched"][0]["image"],
        format!("{host}/library/python:3.12-slim")
    );
    assert!(
        triggered(&sim).is_empty(),
        "a first sighting rebuilds nothing"
    );

    // Identical, then arm64 only: nothing.
    reg.publish_multi("library/python", "3.12-slim", "amd64 one", "arm64 one")
        .await;
    more_checks(&server, 2).await;
    reg.publish_multi("library/python", "3.12-slim", "amd64 one", "arm64 two")
        .await;
    more_checks(&server, 2).await;
    assert!(triggered(&sim).is_empty());

    // amd64 changed: one cascade over the tree.
    reg.publish_multi("library/python", "3.12-slim", "amd64 two", "arm64 two")
        .await;
    let status = server.cascades_done().await;
    let cascade = &status["cascades"][0];
    assert!(
        cascade["reason"].as_str().unwrap().contains(&format!(
            "digest of {host}/library/python:3.12-slim (linux/amd64) changed from sha256:"
        )),
        "{cascade}"
    );
    more_checks(&server, 2).await;
    assert_eq!(triggered(&sim), ["g/api", "g/below-api"]);
    assert_eq!(
        server.status().await["cascades"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_success_that_published_nothing_new_starts_no_cascade_with_only_if_digest_changed() {
    if !have_tool("docker-registry") {
        return;
    }
    let reg = Registry::start().await;
    reg.publish("g/base", "latest", "base one").await;
    // GitLab's registry is the real one here: g/base's image lives there.
    let host = reg.host.clone();
    let sim = gitlab_sim::SimBuilder::new()
        .token(TOKEN)
        .registry_host(&host)
        .projects(vec![
            image_project("g/base", &[]),
            image_project("g/app", &[]).dockerfile(&format!("FROM {host}/g/base:latest\n")),
        ])
        .start()
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let server = common::server::Server::start(
        &sim,
        state.path(),
        &["--registry", &host, "--only-if-digest-changed"],
    )
    .await;
    sim.add_webhook(
        &format!("{}/webhook", server.url),
        Some(common::server::SECRET),
    );
    let app_builds =
        |sim: &gitlab_sim::Simulator| triggered(sim).iter().filter(|p| *p == "g/app").count();
    let base_done = |n: usize| {
        move |s: &serde_json::Value| {
            s["events"].as_array().is_some_and(|events| {
                events
                    .iter()
                    .filter(|e| {
                        e["project_path"] == "g/base"
                            && e["detail"].as_str().unwrap_or("").ends_with("success")
                            && e["state"] == "done"
                    })
                    .count()
                    >= n
            }) && s["queue"]["running_cascades"] == 0
                && s["queue"]["queued_triggers"] == 0
        }
    };
    // First sighting: nothing to compare with, so the cascade runs.
    sim.run_pipeline("g/base").unwrap();
    server
        .wait_until(base_done(1), "the first success handled")
        .await;
    assert!(
        sim.wait_pipelines_settled(std::time::Duration::from_secs(30))
            .await
    );
    assert_eq!(app_builds(&sim), 1);

    // A pipeline that published nothing new: no cascade, and it says why.
    sim.run_pipeline("g/base").unwrap();
    let status = server
        .wait_until(base_done(2), "the second success handled")
        .await;
    let said = status["events"].to_string();
    assert!(
        said.contains("are unchanged: no cascade (--only-if-digest-changed)"),
        "{said}"
    );
    assert_eq!(app_builds(&sim), 1);

    // A new image: the cascade runs.
    reg.publish("g/base", "latest", "base two").await;
    sim.run_pipeline("g/base").unwrap();
    server
        .wait_until(base_done(3), "the third success handled")
        .await;
    assert!(
        sim.wait_pipelines_settled(std::time::Duration::from_secs(30))
            .await
    );
    assert_eq!(app_builds(&sim), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_if_changed_triggers_only_when_the_image_really_changed() {
    if !have_tool("docker-registry") {
        return;
    }
    let reg = Registry::start().await;
    reg.publish_multi("library/python", "3.12-slim", "amd64 one", "arm64 one")
        .await;
    let host = reg.host.clone();
    let sim =
        start(vec![image_project("g/api", &[]).dockerfile(&format!(
            "FROM {host}/library/python:3.12-slim\n"
        ))])
        .await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    let image = format!("{host}/library/python:3.12-slim");
    let rebuild = || {
        let (sim, dir, image) = (&sim, dir.clone(), image.clone());
        async move {
            autodep(
                sim,
                &["rebuild", "--if-changed", "--state-dir", &dir, &image],
            )
            .await
        }
    };
    let first = rebuild().await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(triggered(&sim), ["g/api"], "a first check rebuilds");
    let same = rebuild().await;
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert!(
        stderr(&same).contains("are unchanged; nothing rebuilt (--if-changed)"),
        "{}",
        stderr(&same)
    );
    assert_eq!(triggered(&sim), ["g/api"]);
    reg.publish_multi("library/python", "3.12-slim", "amd64 two", "arm64 one")
        .await;
    let changed = rebuild().await;
    assert_eq!(changed.status.code(), Some(0), "{}", stderr(&changed));
    assert_eq!(triggered(&sim), ["g/api", "g/api"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_s_registry_with_token_auth_is_read_with_the_gitlab_token() {
    if !have_tool("docker-registry") {
        return;
    }
    let port = common::registry::free_port();
    let host = format!("127.0.0.1:{port}");
    let sim = gitlab_sim::SimBuilder::new()
        .token(TOKEN)
        .registry_host(&host)
        .projects(vec![
            image_project("g/base", &[]),
            image_project("g/app", &[]).dockerfile(&format!("FROM {host}/g/base:latest\n")),
        ])
        .start()
        .await
        .unwrap();
    // The registry sends clients to GitLab for a token, as GitLab sets it up.
    let reg = Registry::start_at(
        port,
        Some(common::registry::TokenAuth {
            realm: format!("{}/jwt/auth", sim.url()),
            cert_pem: sim.registry_token_cert_pem().to_string(),
            push_token: TOKEN.to_string(),
        }),
    )
    .await;
    reg.publish("g/base", "latest", "base one").await;

    // Without credentials: GitLab's token grants nothing, the registry refuses.
    let anonymous = RegistryClient::new(Default::default());
    let image = ImageRef::parse(&format!("{host}/g/base:latest")).unwrap();
    let refused = anonymous
        .digests(&image, &platforms(&["linux/amd64"]))
        .await;
    assert!(
        matches!(refused, Err(RegistryError::Denied { .. })),
        "{refused:?}"
    );

    // The tool reads it with the GitLab token: a second check knows the
    // digest and rebuilds nothing.
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    let args = [
        "--registry",
        host.as_str(),
        "rebuild",
        "--if-changed",
        "--state-dir",
        dir.as_str(),
        "g/base",
    ];
    let first = autodep(&sim, &args).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(triggered(&sim), ["g/app"]);
    let second = autodep(&sim, &args).await;
    assert!(
        stderr(&second).contains(&format!(
            "the digests of {host}/g/base:latest are unchanged"
        )),
        "{}",
        stderr(&second)
    );
    assert_eq!(triggered(&sim), ["g/app"]);
}

/// A registry that answers every request with 429 and counts them.
async fn rate_limited_registry() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "60"), ("ratelimit-remaining", "0;w=21600")],
                "toomanyrequests",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (host, hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_asks_to_wait_is_reported_and_not_asked_again_that_round() {
    let (host, hits) = rate_limited_registry().await;
    let sim = start(vec![
        image_project("g/a", &[]).dockerfile(&format!("FROM {host}/library/python:3.12\n")),
        image_project("g/b", &[]).dockerfile(&format!("FROM {host}/library/python:3.11\n")),
        image_project("g/c", &[]).dockerfile(&format!("FROM {host}/library/node:22\n")),
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let out = autodep(
        &sim,
        &["watch", "--state-dir", &state.path().display().to_string()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("asks to wait (429), 60 s; checked again on the next run"),
        "{err}"
    );
    assert!(
        err.contains("asked to wait; not asked again this round"),
        "{err}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one request, then it waits"
    );
    assert!(triggered(&sim).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaves_a_host_alone_for_as_long_as_it_asked() {
    let (host, hits) = rate_limited_registry().await;
    let client = RegistryClient::new(Default::default());
    let image = ImageRef::parse(&format!("{host}/library/python:3.12")).unwrap();
    for _ in 0..3 {
        let got = client.digests(&image, &platforms(&["linux/amd64"])).await;
        assert!(
            matches!(got, Err(RegistryError::RateLimited { retry_after: Some(s), .. }) if s <= 60),
            "{got:?}"
        );
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "Retry-After: 60 honoured"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_requests_left_means_the_host_is_left_alone_before_it_refuses() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let digest = format!("sha256:{}", "a".repeat(64));
    let answer = digest.clone();
    let app = axum::Router::new().fallback(move || {
        let (counted, answer) = (counted.clone(), answer.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                [
                    ("docker-content-digest", answer),
                    (
                        "content-type",
                        "application/vnd.oci.image.manifest.v1+json".to_string(),
                    ),
                    ("ratelimit-remaining", "0;w=21600".to_string()),
                ],
                "{}",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = RegistryClient::new(Default::default());
    let image = ImageRef::parse(&format!("{host}/library/python:3.12")).unwrap();
    let first = client
        .digests(&image, &platforms(&["linux/amd64"]))
        .await
        .unwrap();
    assert_eq!(first[0].1.digest, digest, "the last allowed answer is used");
    let second = client.digests(&image, &platforms(&["linux/amd64"])).await;
    assert!(
        matches!(second, Err(RegistryError::RateLimited { .. })),
        "{second:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
