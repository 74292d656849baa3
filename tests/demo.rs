//! `demo` end to end, as a new user runs it: the real binary, its embedded
//! simulated GitLab and server. What it prints at the end is computed from
//! the pipelines that ran, and its exit status follows.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_the_cascade_and_reports_what_happened() {
    let out = autodep_env(&[], &["demo", "--pipeline-duration", "300ms"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    // The plan it shows first, then the cascade, line by line.
    assert!(
        text.contains("What a rebuild of platform/base reaches"),
        "{text}"
    );
    for project in [
        "platform/node",
        "platform/python",
        "apps/api",
        "apps/worker",
        "apps/bundle",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(project) && l.contains("success") && l.contains("after ")),
            "{project} never succeeded after an upstream:\n{text}"
        );
    }
    // The closing summary: counted from the pipelines that ran.
    let summary = text
        .lines()
        .find(|l| l.starts_with("Quiet after"))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert!(
        summary.contains("6 project(s) triggered, 1 failed (apps/flaky)"),
        "{summary}"
    );
    assert!(
        summary.contains("apps/pinned (pinned by digest"),
        "{summary}"
    );
    assert!(
        text.contains("Every planned project was triggered once."),
        "{text}"
    );
    assert!(text.contains("The graph (graph --format text)"), "{text}");
}
