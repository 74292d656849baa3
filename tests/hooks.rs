//! Set-up from the command line: `hooks sync` puts exactly one webhook on
//! every project of the graph, so the server hears GitLab with no hook made
//! by hand; a second run changes nothing; `hooks status` and `doctor` name
//! what is broken (a paused hook, a read-only token, the wrong registry
//! host) with the fix.

mod common;

use std::time::Duration;

use common::server::*;
use common::*;
use gitlab_sim::project_hooks::AlertStatus;
use gitlab_sim::world::TokenScope;
use gitlab_sim::{ProjectSpec, SimBuilder, Simulator};

const READ_ONLY: &str = "glpat-read-only";

/// A base, a tree of nine built on it, and 190 projects built on nothing
/// of ours: 200 in all, ten of which need a hook.
async fn instance() -> Simulator {
    let mut projects = vec![
        image_project("g/base", &[]),
        image_project("g/mid-a", &["g/base"]),
        image_project("g/mid-b", &["g/base"]),
    ];
    for i in 0..7 {
        let up = if i % 2 == 0 { "g/mid-a" } else { "g/mid-b" };
        projects.push(image_project(&format!("g/leaf-{i}"), &[up]));
    }
    for i in 0..190 {
        projects.push(
            ProjectSpec::new(&format!("other/p{i}"))
                .dockerfile("FROM alpine:3.20\n")
                .pipeline(
                    Duration::from_millis(50),
                    gitlab_sim::PipelineStatus::Success,
                ),
        );
    }
    SimBuilder::new()
        .token(TOKEN)
        .token_with_scope(READ_ONLY, TokenScope::ReadApi)
        .projects(projects)
        .start()
        .await
        .expect("simulator starts")
}

fn secret_file(dir: &std::path::Path) -> String {
    let path = dir.join("webhook-secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_sync_then_server_then_a_base_build_rebuilds_the_tree_with_no_hook_made_by_hand() {
    let sim = instance().await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    let url = format!("{}/webhook", server.url);
    let secret = secret_file(state.path());
    let sync = [
        "hooks",
        "sync",
        "--webhook-url",
        &url,
        "--webhook-auth-token-file",
        &secret,
    ];
    let dry = autodep(&sim, &[&sync[..], &["--dry-run"]].concat()).await;
    assert_eq!(
        dry.status.code(),
        Some(1),
        "changes pending: {}",
        stdout(&dry)
    );
    assert!(
        stdout(&dry).contains("g/leaf-3: hook would be created"),
        "{}",
        stdout(&dry)
    );
    assert!(
        sim.project_hooks("g/base").is_empty(),
        "a dry run changes nothing"
    );

    let first = autodep(&sim, &sync).await;
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    assert!(
        stdout(&first).contains("hooks: 10 created, 0 updated, 0 deleted, 0 in place"),
        "{}",
        stdout(&first)
    );
    let hooks = sim.project_hooks("g/mid-a");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["pipeline_events"], true);
    assert_eq!(hooks[0]["push_events_branch_filter"], "main");
    assert_eq!(hooks[0]["job_events"], false);
    assert!(sim.project_hooks("other/p7").is_empty(), "not in the graph");

    let second = autodep(&sim, &sync).await;
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(
        lines(&second),
        ["hooks: 0 created, 0 updated, 0 deleted, 10 in place, 0 skipped, 0 failed; nothing to change"]
    );

    // Only the hooks made above tell the server anything.
    sim.run_pipeline("g/base").unwrap();
    server.cascades_done().await;
    let mut expected = vec!["g/base", "g/mid-a", "g/mid-b"];
    let leaves: Vec<String> = (0..7).map(|i| format!("g/leaf-{i}")).collect();
    expected.extend(leaves.iter().map(String::as_str));
    expected.sort();
    assert_eq!(triggered(&sim), expected);

    let status = autodep(&sim, &["hooks", "status", "--webhook-url", &url]).await;
    assert_eq!(status.status.code(), Some(0), "{}", stdout(&status));
    assert!(stdout(&status).contains("hooks: 10 healthy, 0 not"));

    // A hook changed by hand is put back; a duplicate is deleted.
    sim.set_hook_alert("g/leaf-0", AlertStatus::TemporarilyDisabled);
    let status = autodep(&sim, &["hooks", "status", "--webhook-url", &url]).await;
    assert_eq!(status.status.code(), Some(1));
    assert!(
        stdout(&status).contains("g/leaf-0: hook"),
        "{}",
        stdout(&status)
    );
    assert!(
        stdout(&status).contains("paused: GitLab paused it"),
        "{}",
        stdout(&status)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_each_broken_piece_with_the_fix() {
    let sim = instance().await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    let url = format!("{}/webhook", server.url);
    let secret = secret_file(state.path());
    let dir = state.path().join("doctor-state").display().to_string();
    let synced = autodep(
        &sim,
        &[
            "hooks",
            "sync",
            "--webhook-url",
            &url,
            "--webhook-auth-token-file",
            &secret,
        ],
    )
    .await;
    assert_eq!(synced.status.code(), Some(0));
    let doctor = |extra: Vec<String>| {
        let sim = &sim;
        let url = url.clone();
        let dir = dir.clone();
        async move {
            let mut args = vec![
                "doctor".to_string(),
                "--webhook-url".into(),
                url,
                "--state-dir".into(),
                dir,
            ];
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            autodep(sim, &args).await
        }
    };
    let healthy = doctor(vec![]).await;
    assert_eq!(healthy.status.code(), Some(0), "{}", stdout(&healthy));
    assert!(!stdout(&healthy).contains("FAIL"), "{}", stdout(&healthy));
    assert!(
        stdout(&healthy).contains("ok    GraphQL: available"),
        "{}",
        stdout(&healthy)
    );

    // The wrong registry host.
    let wrong = doctor(vec!["--registry".into(), "registry.example.com".into()]).await;
    assert_eq!(wrong.status.code(), Some(1));
    let text = stdout(&wrong);
    assert!(
        text.contains("FAIL  registry: GitLab's registry is registry.127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("fix: pass --registry registry.127.0.0.1"),
        "{text}"
    );

    // A paused hook.
    sim.set_hook_alert("g/mid-b", AlertStatus::TemporarilyDisabled);
    let paused = doctor(vec![]).await;
    assert_eq!(paused.status.code(), Some(1));
    let text = stdout(&paused);
    assert!(
        text.contains("FAIL  webhooks: 1 of 10 hooks are not in order: g/mid-b paused"),
        "{text}"
    );
    assert!(text.contains("fix: run `hooks sync"), "{text}");

    // A token without the api scope.
    let read_only = autodep_env(
        &[
            ("GITLAB_URL", sim.url().as_str()),
            ("GITLAB_TOKEN", READ_ONLY),
        ],
        &["doctor", "--state-dir", &dir],
    )
    .await;
    assert_eq!(read_only.status.code(), Some(1));
    let text = stdout(&read_only);
    assert!(
        text.contains("FAIL  token: token \"gitlab-docker-autodep\" has the scopes [read_api]"),
        "{text}"
    );
    assert!(
        text.contains("fix: create a token with the api scope"),
        "{text}"
    );

    // A token about to expire is a warning, not a failure.
    sim.set_token_days_left(3);
    sim.set_hook_alert("g/mid-b", AlertStatus::Executable);
    let soon = doctor(vec![]).await;
    assert_eq!(soon.status.code(), Some(0), "{}", stdout(&soon));
    assert!(
        stdout(&soon).contains("expires in 3 day(s)"),
        "{}",
        stdout(&soon)
    );

    // The server gone.
    drop(server);
    let gone = doctor(vec![]).await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(stdout(&gone).contains("FAIL  server:"), "{}", stdout(&gone));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_group_hook_instead_of_project_hooks_and_prune_removes_those() {
    let sim = instance().await;
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&sim, state.path(), &[]).await;
    let url = format!("{}/webhook", server.url);
    let secret = secret_file(state.path());
    let sync = |extra: &'static [&'static str]| {
        let mut args = vec![
            "hooks",
            "sync",
            "--webhook-url",
            url.as_str(),
            "--webhook-auth-token-file",
            secret.as_str(),
        ];
        args.extend_from_slice(extra);
        let sim = &sim;
        async move { autodep(sim, &args).await }
    };
    // Project hooks first, as a Free instance would have them.
    assert_eq!(sync(&[]).await.status.code(), Some(0));
    assert_eq!(sim.project_hooks("g/base").len(), 1);
    let group = sync(&["--group", "g"]).await;
    assert_eq!(group.status.code(), Some(0), "{}", stdout(&group));
    assert!(
        stdout(&group).contains("g: hook #11 created"),
        "{}",
        stdout(&group)
    );
    assert_eq!(sim.group_hooks("g").len(), 1);

    // Both hooks deliver every event, each with its own Idempotency-Key:
    // the server still starts one cascade and builds each project once.
    sim.run_pipeline("g/base").unwrap();
    server.cascades_done().await;
    let pipelines = sim.pipelines();
    assert_eq!(pipelines.len(), 10, "each project once: {pipelines:?}");
    let base_success: Vec<_> = sim
        .hook_deliveries()
        .into_iter()
        .filter(|d| d.project == "g/base" && d.status_sent.as_deref() == Some("success"))
        .collect();
    assert_eq!(base_success.len(), 2, "a project hook and a group hook");
    assert_ne!(
        base_success[0].idempotency_key,
        base_success[1].idempotency_key
    );
    assert_eq!(
        server.status().await["cascades"].as_array().unwrap().len(),
        1
    );

    // The group hook replaces the project hooks.
    let pruned = sync(&["--group", "g", "--prune"]).await;
    assert_eq!(pruned.status.code(), Some(0), "{}", stdout(&pruned));
    assert!(
        stdout(&pruned).contains("hooks: 0 created, 0 updated, 10 deleted, 1 in place"),
        "{}",
        stdout(&pruned)
    );
    assert!(sim.project_hooks("g/base").is_empty());
    let again = sync(&["--group", "g"]).await;
    assert!(stdout(&again).contains("1 in place") && stdout(&again).contains("nothing to change"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_the_token_may_not_manage_is_reported_and_skipped() {
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/app", &["g/base"]),
        image_project("g/guarded", &["g/base"]).guest(),
    ])
    .await;
    let out = autodep(
        &sim,
        &[
            "hooks",
            "sync",
            "--all",
            "--webhook-url",
            "https://autodep.example.com/webhook",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "not everything is in place");
    let text = stdout(&out);
    assert!(
        text.contains("g/guarded: skipped: the token may not manage this project's hooks (403)"),
        "{text}"
    );
    assert!(
        text.contains("hooks: 2 created, 0 updated, 0 deleted, 0 in place, 1 skipped"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("no --webhook-auth-token-file"),
        "{}",
        stderr(&out)
    );
}
