use super::*;

fn event(key: &str) -> NewEvent {
    NewEvent {
        kind: "pipeline".into(),
        dedupe_key: key.into(),
        idempotency_key: None,
        event_uuid: Some("uuid".into()),
        project_id: 1,
        project_path: "g/base".into(),
        detail: "pipeline 1".into(),
        pipeline: None,
    }
}

#[test]
fn one_store_per_directory_and_a_stale_scan_means_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let second = Store::open(dir.path()).err().expect("locked");
    let text = second.to_string();
    assert!(
        text.contains(&format!("(pid {})", std::process::id())) && text.contains("--state-dir"),
        "{text}"
    );
    // A scan stored by another version (a shape this one cannot read).
    store
        .execute_for_tests("INSERT INTO projects (id, json) VALUES (1, '{\"old\": true}')")
        .unwrap();
    store
        .execute_for_tests("INSERT INTO meta (key, value) VALUES ('scanned_at', 'x')")
        .unwrap();
    assert!(store.load_projects().unwrap().is_none());
    drop(store);
    assert!(
        Store::open(dir.path()).is_ok(),
        "the lock goes with the store"
    );
}

#[test]
fn an_older_database_is_migrated_and_a_newer_one_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The first server's layout: no retry columns, no cascades, no
        // fetch times, no schema version.
        let conn = rusqlite::Connection::open(dir.path().join("state.sqlite3")).unwrap();
        conn.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, received_at TEXT NOT NULL, kind TEXT NOT NULL,
                dedupe_key TEXT NOT NULL UNIQUE, event_uuid TEXT, project_id INTEGER NOT NULL,
                project_path TEXT NOT NULL, detail TEXT NOT NULL, state TEXT NOT NULL, outcome TEXT);
             INSERT INTO events (received_at, kind, dedupe_key, project_id, project_path, detail, state)
                VALUES ('2026-01-01T00:00:00Z', 'pipeline', 'old', 1, 'g/base', 'pipeline 1', 'done');
             CREATE TABLE projects (id INTEGER PRIMARY KEY, json TEXT NOT NULL);",
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    // The old event still deduplicates; new rows use the new columns.
    let got = store.accept_events(&[event("old"), event("new")]).unwrap();
    assert_eq!(got[0], Accepted::Duplicate);
    assert!(matches!(got[1], Accepted::New(_)));
    drop(store);
    let raw = rusqlite::Connection::open(dir.path().join("state.sqlite3")).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(raw);
    let err = Store::open(dir.path())
        .err()
        .expect("a newer schema is refused");
    let text = err.to_string();
    assert!(text.contains("newer gitlab-docker-autodep"), "{text}");
    assert!(text.contains("--state-dir"), "{text}");
}

#[test]
fn a_cascade_stored_the_old_way_moves_to_member_rows_at_its_next_step() {
    use crate::cascade::{Event, MemberState, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let member = |id: u64, waits: &[u64], state: &str| {
        serde_json::json!({
            "project_id": id, "project": format!("g/p{id}"), "git_ref": "main",
            "upstream": "g/base", "image": "img", "waits_for": waits, "depth": waits.len(),
            "state": {"state": state},
        })
    };
    // As the previous layout kept it: every member in the cascade's JSON.
    let machine = serde_json::json!({
        "members": {"1": member(1, &[], "triggered"), "2": member(2, &[1], "waiting")},
        "accept_manual": false,
    });
    store
        .execute_for_tests(&format!(
            "INSERT INTO cascades (id, root_project_id, root_path, reason, state, machine, created_at, updated_at)
             VALUES (7, 0, 'g/base', 'test', 'running', '{machine}', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')"
        ))
        .unwrap();
    store
        .execute_for_tests("INSERT INTO attachments (trigger_id, cascade_id) VALUES (1, 7)")
        .unwrap();
    store
        .with_cascades(|tx| {
            for (id, mut cascade) in tx.attached(1)? {
                cascade.on_event(Event::Finished {
                    project_id: 1,
                    outcome: Outcome::Succeeded,
                });
                tx.save(id, cascade)?;
            }
            Ok(())
        })
        .unwrap();
    let stored = store.cascade(7).unwrap().unwrap();
    assert_eq!(stored.machine.members[&1].state, MemberState::Succeeded);
    assert_eq!(stored.machine.members[&2].state, MemberState::Triggered);
    let conn = rusqlite::Connection::open(dir.path().join("state.sqlite3")).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM cascade_members WHERE cascade_id = 7",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 2, "every member got its row");
    let json: String = conn
        .query_row("SELECT machine FROM cascades WHERE id = 7", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!json.contains("g/p1"), "the members left the JSON: {json}");
}
