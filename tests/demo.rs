//! `demo` end to end, as a new user runs it: the real binary, its embedded
//! simulated GitLab and server. What it prints at the end is computed from
//! the pipelines that ran, and its exit status follows: the test counts the
//! pipelines from the demo's own event lines and checks the summary and the
//! exit status against them.

mod common;

use std::collections::BTreeMap;

use common::*;

/// Pipelines created per project, from the lines `time project #id created …`.
fn created(text: &str) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [_, project, id, "created", ..] = words.as_slice() {
            if id.starts_with('#') {
                *count.entry(project.to_string()).or_default() += 1;
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_the_cascade_and_reports_what_happened() {
    let out = autodep_env(&[], &["demo", "--pipeline-duration", "300ms"]).await;
    let text = stdout(&out);
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
    let created = created(&text);
    let triggered = created.len() - 1; // platform/base was pushed by a person
    let summary = text
        .lines()
        .find(|l| l.starts_with("Quiet after"))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert!(
        summary.contains(&format!(
            "{triggered} project(s) triggered, 1 failed (apps/flaky)"
        )),
        "{summary}\n{created:?}"
    );
    assert!(
        summary.contains("apps/pinned (pinned by digest"),
        "{summary}"
    );
    assert!(text.contains("The graph (graph --format text)"), "{text}");
    // The verdict and the exit status follow what ran: a project created
    // twice (the server still triggers a diamond's bottom once per upstream
    // success when they finish apart) is named, and the exit status is 1.
    let doubled: Vec<(&String, &usize)> = created.iter().filter(|(_, n)| **n > 1).collect();
    if doubled.is_empty() {
        assert!(
            text.contains("Every planned project was triggered once."),
            "{text}"
        );
        assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    } else {
        for (p, n) in &doubled {
            assert!(
                text.contains(&format!("{p} ×{n}")),
                "{p} not named:\n{text}"
            );
        }
        assert!(text.contains("NOT as planned"), "{text}");
        assert_eq!(out.status.code(), Some(1), "{text}");
    }
}
