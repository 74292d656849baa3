//! `rebuild`, `deps` and `graph` end to end: the real binary against the
//! GitLab simulator.

mod common;

use std::time::Duration;

use common::*;
use gitlab_sim::{FaultKind, FaultRule, Faults, PipelineStatus, ProjectSpec};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn code(o: &std::process::Output) -> i32 {
    o.status.code().expect("exited normally")
}

#[tokio::test(flavor = "multi_thread")]
async fn first_level_rebuild_triggers_direct_dependents_on_their_default_branch() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app1", &["g/base"]),
        image_project("g/app2", &["g/base"]).default_branch("develop"),
        image_project("g/leaf", &["g/app2"]),
        image_project("g/other", &[]),
    ])
    .await;
    let out = autodep(&sim, &["rebuild", &format!("{REG}/g/base:1.2.3")]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&out), ["g/app1", "g/app2"]);
    assert_eq!(
        triggered(&sim),
        ["g/app1", "g/app2"],
        "the leaf is not first-level"
    );
    let pipelines = sim.pipelines();
    let app2 = pipelines
        .iter()
        .find(|p| p.project_path == "g/app2")
        .unwrap();
    assert_eq!(
        app2.git_ref, "develop",
        "pipelines run on the default branch"
    );
    let vars: std::collections::HashMap<_, _> = app2.variables.iter().cloned().collect();
    assert_eq!(vars["AUTODEP_UPSTREAM"], "g/base");
    assert_eq!(
        vars["AUTODEP_UPSTREAM_IMAGE"],
        format!("{REG}/g/base:latest")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn options_before_or_after_the_subcommand_and_token_file() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let tf = token_file.to_str().unwrap();
    let url = sim.url();
    let before = autodep_env(
        &[],
        &[
            "--url",
            &url,
            "--token-file",
            tf,
            "rebuild",
            "--dry-run",
            "g/base",
        ],
    )
    .await;
    let after = autodep_env(
        &[],
        &[
            "rebuild",
            "g/base",
            "--dry-run",
            "--token-file",
            tf,
            "--url",
            &url,
        ],
    )
    .await;
    assert_eq!(code(&before), 0, "{}", stderr(&before));
    assert_eq!(lines(&before), ["g/app"]);
    assert_eq!(lines(&after), ["g/app"]);
    assert!(sim.pipelines().is_empty(), "--dry-run triggers nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn match_limits_the_scan() {
    let sim = start(vec![
        image_project("team-a/base", &[]),
        image_project("team-a/frontend", &["team-a/base"]),
        image_project("team-b/backend", &["team-a/base"]),
    ])
    .await;
    let out = autodep(
        &sim,
        &[
            "--match",
            "frontend",
            "rebuild",
            &format!("{REG}/team-a/base"),
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&out), ["team-a/frontend"]);
    assert_eq!(triggered(&sim), ["team-a/frontend"]);
    let listed: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == "projects")
        .collect();
    assert!(
        listed.iter().all(|r| r.query.contains("search=frontend")),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_groups_sub_images_and_capitals() {
    let sim = start(vec![
        ProjectSpec::new("Org/Platform/Base-Images")
            .dockerfile("FROM alpine\n")
            .images(&["", "slim", "tools/go"]),
        ProjectSpec::new("Org/Platform").dockerfile("FROM alpine\n"),
        image_project("org/apps/API", &[])
            .dockerfile(&format!("FROM {REG}/org/platform/base-images/slim:2\n")),
        image_project("org/apps/worker", &[]).dockerfile(&format!(
            "FROM {REG}/org/platform/base-images/tools/go:1 AS b\nFROM {REG}/org/platform:3\n"
        )),
    ])
    .await;
    let out = autodep(
        &sim,
        &["rebuild", &format!("{REG}/Org/Platform/Base-Images/slim:9")],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        lines(&out),
        ["org/apps/API", "org/apps/worker"],
        "sub-images belong to their project; longest path wins"
    );
    let out = autodep(&sim, &["deps", &format!("{REG}/org/platform")]).await;
    assert_eq!(lines(&out), ["Org/Platform", "└── org/apps/worker"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn archived_missing_empty_and_pinned_are_skipped_and_said_why() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/old", &["g/base"]).archived(),
        ProjectSpec::new("g/nodocker").file("README.md", "hi\n"),
        ProjectSpec::new("g/empty").empty(),
        image_project("g/pinned", &[]).dockerfile(&format!("FROM {REG}/g/base@{DIGEST}\n")),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let out = autodep(&sim, &["-v", "--api", "rest", "rebuild", "g/base"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&out), ["g/app"]);
    assert_eq!(triggered(&sim), ["g/app"]);
    let err = stderr(&out);
    for expected in [
        "g/old: archived",
        "g/nodocker: no Dockerfile on main",
        "g/empty: empty repository",
        "g/pinned: pinned by digest",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let files = sim
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == "file_raw")
        .count();
    // Each readable project: its .autodep.yml and its Dockerfile.
    assert_eq!(files, 4 * 2, "archived and empty projects are not read");

    // Over GraphQL: the same reasons, from one request and no file reads.
    sim.clear_requests();
    let out = autodep(&sim, &["-v", "--api", "graphql", "deps", "g/base"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&out)[..2], ["g/base", "└── g/app"]);
    let err = stderr(&out);
    for expected in [
        "g/old: archived",
        "g/nodocker: no Dockerfile on main",
        "g/empty: empty repository",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let endpoints: Vec<&str> = sim.requests().iter().map(|r| r.endpoint).collect();
    assert_eq!(
        endpoints,
        ["graphql"],
        "one request lists and reads everything"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recurse_builds_a_diamond_bottom_once_after_both_sides() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/left", &["g/base"]),
        image_project("g/right", &["g/base"])
            .pipeline(Duration::from_millis(400), PipelineStatus::Success),
        image_project("g/bottom", &["g/left", "g/right"]),
    ])
    .await;
    let out = autodep(
        &sim,
        &["rebuild", "--recurse", "--poll-interval", "20ms", "g/base"],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let got = lines(&out);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter().all(|l| l.split('\t').nth(1) == Some("success")),
        "{got:?}"
    );
    assert_eq!(
        triggered(&sim),
        ["g/bottom", "g/left", "g/right"],
        "bottom once"
    );
    let p = sim.pipelines();
    let find = |path: &str| p.iter().find(|x| x.project_path == path).unwrap();
    let bottom = find("g/bottom");
    for side in ["g/left", "g/right"] {
        let side = find(side);
        assert!(
            bottom.created_at >= side.finished_at.unwrap(),
            "bottom starts after {} finished",
            side.project_path
        );
    }
    // Independent branches run in parallel: right starts before left ends.
    assert!(find("g/right").created_at < find("g/left").finished_at.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn recurse_failure_stops_the_subtree_and_exits_non_zero() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/mid", &["g/base"])
            .pipeline(Duration::from_millis(100), PipelineStatus::Failed),
        image_project("g/leaf", &["g/mid"]),
        image_project("g/sibling", &["g/base"]),
    ])
    .await;
    let out = autodep(
        &sim,
        &["rebuild", "--recurse", "--poll-interval", "20ms", "g/base"],
    )
    .await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        triggered(&sim),
        ["g/mid", "g/sibling"],
        "the leaf is never triggered"
    );
    let text = stdout(&out);
    assert!(text.contains("g/mid\tfailed"), "{text}");
    assert!(text.contains("g/leaf\tnot_triggered"), "{text}");
    assert!(text.contains("g/sibling\tsuccess"), "{text}");
    assert!(
        stderr(&out).contains("upstream g/mid did not succeed"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_cycle_terminates_and_triggers_each_once() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/a", &["g/base", "g/b"]),
        image_project("g/b", &["g/a"]),
    ])
    .await;
    let out = autodep(
        &sim,
        &[
            "rebuild",
            "--recurse",
            "--json",
            "--poll-interval",
            "20ms",
            "g/base",
        ],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(triggered(&sim), ["g/a", "g/b"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cycles"], serde_json::json!([["g/a", "g/b"]]));
    let p = sim.pipelines();
    assert!(
        p[1].created_at >= p[0].finished_at.unwrap(),
        "b waits for a, reached first"
    );
    // Rebuilding a member of the cycle triggers the other one only.
    let out = autodep(
        &sim,
        &["rebuild", "--recurse", "--poll-interval", "20ms", "g/a"],
    )
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(triggered(&sim), ["g/a", "g/b", "g/b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_reports_each_result_and_json_says_why() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/ok", &["g/base"]),
        image_project("g/bad", &["g/base"])
            .pipeline(Duration::from_millis(50), PipelineStatus::Failed),
    ])
    .await;
    let out = autodep(
        &sim,
        &[
            "rebuild",
            "--wait",
            "--json",
            "--poll-interval",
            "20ms",
            "g/base",
        ],
    )
    .await;
    assert_eq!(code(&out), 1);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert!(r["pipeline_id"].as_u64().is_some());
        assert!(r["web_url"].as_str().unwrap().contains("/-/pipelines/"));
        assert_eq!(r["upstream"], "g/base");
    }
    let status = |p: &str| results.iter().find(|r| r["project"] == p).unwrap()["status"].clone();
    assert_eq!(status("g/ok"), "success");
    assert_eq!(status("g/bad"), "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn external_base_images_can_be_rebuilt_too() {
    let sim = start(vec![
        image_project("g/a", &[]).dockerfile("FROM alpine:3.19\n"),
        image_project("g/b", &[]).dockerfile("FROM docker.io/library/alpine:3.20\n"),
        image_project("g/c", &[]).dockerfile("FROM debian\n"),
    ])
    .await;
    let out = autodep(&sim, &["rebuild", "--dry-run", "alpine"]).await;
    assert_eq!(lines(&out), ["g/a", "g/b"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_formats() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let text = stdout(&autodep(&sim, &["graph"]).await);
    assert!(
        text.contains(&format!(
            "g/app <- g/base (FROM {REG}/g/base:latest, line 1)"
        )),
        "{text}"
    );
    assert!(
        text.contains("g/base <- docker.io/library/alpine (external)"),
        "{text}"
    );
    let dot = stdout(&autodep(&sim, &["graph", "--format", "dot"]).await);
    assert!(
        dot.starts_with("digraph images {") && dot.contains("0 -> 1"),
        "{dot}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&autodep(&sim, &["graph", "--format", "json"]).await.stdout)
            .unwrap();
    assert_eq!(json["edges"][0]["upstream"], "g/base");
    assert_eq!(json["edges"][0]["downstream"], "g/app");
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_token_unreachable_gitlab_and_usage_errors_have_distinct_exits() {
    let sim = start(vec![image_project("g/base", &[])]).await;
    let out = autodep_env(
        &[("GITLAB_URL", &sim.url()), ("GITLAB_TOKEN", "nope")],
        &["rebuild", "g/base"],
    )
    .await;
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("GitLab rejected the token"),
        "{}",
        stderr(&out)
    );

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = autodep_env(
        &[("GITLAB_URL", &url), ("GITLAB_TOKEN", TOKEN)],
        &["--max-retries", "1", "rebuild", "g/base"],
    )
    .await;
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("cannot reach GitLab"),
        "{}",
        stderr(&out)
    );

    let out = autodep_env(&[("GITLAB_TOKEN", TOKEN)], &["rebuild", "g/base"]).await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no GitLab URL"), "{}", stderr(&out));
    let out = autodep(&sim, &["rebuild", "not a valid image"]).await;
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("not a valid image reference"),
        "{}",
        stderr(&out)
    );
    let out = autodep(&sim, &["rebuild", &format!("{REG}/g/nope")]).await;
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no project builds"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn storms_of_429_and_5xx_still_give_the_right_answer() {
    let mut projects = vec![image_project("g/base", &[])];
    for i in 0..30 {
        projects.push(image_project(&format!("g/app{i:02}"), &["g/base"]));
    }
    let sim = start(projects).await;
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![
            FaultRule::new(
                "*",
                FaultKind::RateLimit {
                    retry_after_secs: 1,
                },
            )
            .fraction(0.2)
            .count(5),
            FaultRule::new("*", FaultKind::Error { status: 503 })
                .fraction(0.3)
                .count(15),
            FaultRule::new("*", FaultKind::Drop).fraction(0.1).count(5),
        ],
    });
    let out = autodep(&sim, &["--max-retries", "12", "rebuild", "g/base"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 30);
    assert_eq!(triggered(&sim).len(), 30, "each dependent exactly once");
    let requests = sim.requests();
    assert!(requests.iter().any(|r| r.status == 429) && requests.iter().any(|r| r.status == 503));
    // After a 429, the same request comes back no sooner than Retry-After.
    for (i, r) in requests.iter().enumerate().filter(|(_, r)| r.status == 429) {
        let retry = requests[i + 1..]
            .iter()
            .find(|x| x.path == r.path && x.query == r.query && x.method == r.method)
            .expect("retried");
        assert!(
            retry.at_ms - r.at_ms >= 1000.0,
            "retried after {} ms",
            retry.at_ms - r.at_ms
        );
    }
}

/// `g/base`, `g/app` on it, and a third project on it whose Dockerfile
/// GitLab answers with `status`.
async fn base_app_and_unreadable(third: &str, status: u16) -> gitlab_sim::Simulator {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
        image_project(third, &["g/base"]),
    ])
    .await;
    sim.set_faults(Faults {
        latency_ms: None,
        rules: vec![
            FaultRule::new("file_raw", FaultKind::Error { status }).path_contains("/projects/3/")
        ],
    });
    sim
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_that_cannot_be_read_is_reported_and_the_rest_goes_on() {
    let sim = base_app_and_unreadable("g/broken", 500).await;
    let out = autodep(
        &sim,
        &["--api", "rest", "--max-retries", "2", "rebuild", "g/base"],
    )
    .await;
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert_eq!(
        lines(&out),
        ["g/app"],
        "the readable dependent is still triggered"
    );
    assert_eq!(triggered(&sim), ["g/app"]);
    let err = stderr(&out);
    assert!(
        err.contains("1 project(s) could not be read") && err.contains("g/broken"),
        "{err}"
    );
    let tries = sim
        .requests()
        .iter()
        .filter(|r| r.path.contains("/projects/3/"))
        .count();
    assert_eq!(tries, 3, "one request and two retries");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_nothing_uses_is_a_usage_error_with_the_closest_names() {
    let sim = start(vec![
        image_project("g/a", &[]).dockerfile("FROM alpine:3.19\n"),
        image_project("g/c", &[]).dockerfile("FROM debian\n"),
    ])
    .await;
    for args in [["rebuild", "alpin"], ["deps", "alpin"]] {
        let out = autodep(&sim, &args).await;
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("no scanned project is built on docker.io/library/alpin")
                && err.contains("closest names that are: docker.io/library/alpine"),
            "{err}"
        );
    }
    assert!(triggered(&sim).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_the_token_may_not_read_is_skipped_without_failing_the_run() {
    // A Guest member sees the project but gets 403 on its files.
    let sim = base_app_and_unreadable("g/guest-only", 403).await;
    let out = autodep(&sim, &["--api", "rest", "rebuild", "g/base"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&out), ["g/app"]);
    let err = stderr(&out);
    assert!(
        err.contains("g/guest-only: Dockerfile not readable with this token; skipped"),
        "{err}"
    );
    let tries = sim
        .requests()
        .iter()
        .filter(|r| r.path.contains("/projects/3/"))
        .count();
    assert_eq!(tries, 1, "a 403 is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn inside_gitlab_ci_the_registry_is_ci_registry() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &[]).dockerfile("FROM gitlab.example.com:5050/g/base:1\n"),
    ])
    .await;
    let url = sim.url();
    let env = [
        ("GITLAB_URL", url.as_str()),
        ("GITLAB_TOKEN", TOKEN),
        ("CI_REGISTRY", "gitlab.example.com:5050"),
    ];
    let out = autodep_env(&env, &["rebuild", "--dry-run", "g/base"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&out), ["g/app"]);
}

/// GitLab creates the pipeline, then the answer is lost (a 502 from a proxy,
/// a connection closed mid-answer): the pipeline must not be created twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_after_the_pipeline_was_created_does_not_double_it() {
    for fault in [FaultKind::ErrorAfter { status: 502 }, FaultKind::DropAfter] {
        let sim = start(vec![
            image_project("g/base", &[]),
            image_project("g/app", &["g/base"]),
            image_project("g/other", &["g/base"]),
        ])
        .await;
        sim.set_faults(Faults {
            latency_ms: None,
            rules: vec![FaultRule::new("pipeline_create", fault.clone())
                .path_contains("/projects/2/")
                .count(1)],
        });
        let out = autodep(&sim, &["rebuild", "g/base"]).await;
        assert_eq!(code(&out), 0, "{fault:?}: {}", stderr(&out));
        assert_eq!(triggered(&sim), ["g/app", "g/other"], "{fault:?}");
        let app = sim
            .pipelines()
            .into_iter()
            .find(|p| p.project_path == "g/app")
            .unwrap();
        assert!(
            app.variables.iter().any(|(k, _)| k == "AUTODEP_TRIGGER_ID"),
            "{:?}",
            app.variables
        );
        let posts = sim
            .requests()
            .iter()
            .filter(|r| r.endpoint == "pipeline_create" && r.path.contains("/projects/2/"))
            .count();
        assert_eq!(posts, 1, "{fault:?}: posted again instead of looking");
    }
}
