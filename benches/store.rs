//! The state database over a long life: its size after a million webhook
//! events, the cost of the retention sweep that deletes them, and its size
//! once a second million has come and gone (freed pages are reused, so the
//! file holds one retention window, not the server's whole history).
//!
//! `cargo bench --bench store [-- EVENTS]` (default 1,000,000).

use std::time::Instant;

use gitlab_docker_autodep::store::{Accepted, NewEvent, PipelineFacts, Store};

const BATCH: usize = 1000;

/// A pipeline hook as the server stores it: a project's success, most of
/// which start nothing.
fn event(n: usize) -> NewEvent {
    let project = n % 10_000;
    NewEvent {
        kind: "pipeline".into(),
        dedupe_key: format!("pipeline:{project}:{n}:success"),
        idempotency_key: Some(format!("{:032x}", n as u128 * 0x9e37_79b9_7f4a_7c15)),
        event_uuid: Some(format!("{:032x}", n as u128 * 0x2545_f491_4f6c_dd1d)),
        project_id: project as u64 + 1,
        project_path: format!("platform/team-{}/service-{project}", project % 40),
        detail: format!("pipeline {n} success"),
        pipeline: Some(PipelineFacts {
            id: n as u64,
            status: "success".into(),
            trigger_marker: None,
        }),
    }
}

/// Accepts `count` events from `first` on and marks each done, a thousand
/// per transaction.
fn fill(store: &Store, first: usize, count: usize) -> f64 {
    let started = Instant::now();
    for start in (first..first + count).step_by(BATCH) {
        let events: Vec<NewEvent> = (start..(start + BATCH).min(first + count))
            .map(event)
            .collect();
        let ids: Vec<i64> = store
            .accept_events(&events)
            .expect("accept")
            .into_iter()
            .filter_map(|a| match a {
                Accepted::New(id) => Some(id),
                Accepted::Duplicate => None,
            })
            .collect();
        store
            .with_cascades(|tx| {
                for id in &ids {
                    tx.complete_event(*id, "no running cascade waits for it")?;
                }
                Ok(())
            })
            .expect("complete");
    }
    started.elapsed().as_secs_f64()
}

fn size(dir: &std::path::Path) -> u64 {
    ["state.sqlite3", "state.sqlite3-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// The database file and its write-ahead log, apart.
fn files(dir: &std::path::Path) -> String {
    let len = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    format!(
        "database {} + log {}",
        mib(len("state.sqlite3")),
        mib(len("state.sqlite3-wal"))
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let seconds = fill(&store, 0, events);
    let full = size(dir.path());
    println!(
        "{events} events accepted and done in {seconds:.1} s ({:.0}/s): {} ({:.0} bytes per event)",
        events as f64 / seconds,
        files(dir.path()),
        full as f64 / events as f64
    );
    let started = Instant::now();
    let (deleted, _) = store
        .delete_finished_older_than(std::time::Duration::ZERO)
        .expect("sweep");
    println!(
        "retention sweep: {deleted} events deleted in {:.2} s; {}",
        started.elapsed().as_secs_f64(),
        files(dir.path())
    );
    let seconds = fill(&store, events, events);
    let again = size(dir.path());
    println!(
        "another {events} events in {seconds:.1} s: {} ({:+.1} % against the first fill)",
        files(dir.path()),
        (again as f64 / full as f64 - 1.0) * 100.0
    );
}
