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

/// Queues triggers for an event as a cascade step does, marking the event
/// done; returns how many were new (the others joined a queued one).
fn queue(store: &Store, event_id: i64, triggers: &[NewTrigger]) -> usize {
    store
        .with_cascades(|tx| {
            let machine = crate::cascade::Cascade::new(Default::default(), false);
            let cascade = tx.create(1, "g/base", "test", &machine)?;
            let mut new = 0;
            for t in triggers {
                new += usize::from(tx.queue(cascade, event_id, None, t)?.1);
            }
            tx.complete_event(event_id, "queued")?;
            Ok(new)
        })
        .unwrap()
}

fn trigger(project_id: u64) -> NewTrigger {
    NewTrigger {
        project_id,
        project_path: format!("g/p{project_id}"),
        git_ref: "main".into(),
        upstream: "g/base".into(),
        image: "img".into(),
        depth: 0,
    }
}

#[test]
fn events_are_deduplicated_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let got = store
        .accept_events(&[event("a"), event("b"), event("a")])
        .unwrap();
    assert!(matches!(got[0], Accepted::New(_)) && matches!(got[1], Accepted::New(_)));
    assert_eq!(got[2], Accepted::Duplicate);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.accept_events(&[event("b")]).unwrap(),
        [Accepted::Duplicate]
    );
    assert_eq!(store.pending_events(10).unwrap().len(), 2);
}

#[test]
fn the_natural_key_and_the_idempotency_key_both_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let with_key = |natural: &str, idem: &str| NewEvent {
        idempotency_key: Some(idem.into()),
        ..event(natural)
    };
    let got = store
        .accept_events(&[
            with_key("pipeline:1:7:success", "k1"),
            // A group hook and a project hook: two keys, one event.
            with_key("pipeline:1:7:success", "k2"),
            // A resend: same key, and (here) a different natural key.
            with_key("pipeline:1:8:success", "k1"),
            with_key("pipeline:1:8:success", "k3"),
        ])
        .unwrap();
    assert!(matches!(got[0], Accepted::New(_)));
    assert_eq!(got[1], Accepted::Duplicate);
    assert_eq!(got[2], Accepted::Duplicate);
    assert!(matches!(got[3], Accepted::New(_)));
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
    {
        let conn = store.lock();
        conn.execute(
            "INSERT INTO projects (id, json) VALUES (1, '{\"old\": true}')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('scanned_at', 'x')",
            [],
        )
        .unwrap();
    }
    assert!(store.load_projects().unwrap().is_none());
    drop(store);
    assert!(
        Store::open(dir.path()).is_ok(),
        "the lock goes with the store"
    );
}

#[test]
fn retention_deletes_only_finished_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ids: Vec<i64> = store
        .accept_events(&[event("old-done"), event("old-pending"), event("new-done")])
        .unwrap()
        .into_iter()
        .map(|a| match a {
            Accepted::New(id) => id,
            Accepted::Duplicate => panic!(),
        })
        .collect();
    store.complete_event(ids[0], "ok").unwrap();
    queue(&store, ids[2], &[trigger(5)]);
    store
        .lock()
        .execute(
            "UPDATE events SET received_at = '2000-01-01T00:00:00Z' WHERE id IN (?1, ?2)",
            params![ids[0], ids[1]],
        )
        .unwrap();
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(store.delete_finished_older_than(day).unwrap(), (1, 0));
    let left: Vec<String> = store
        .recent_events(10)
        .unwrap()
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        left,
        ["done", "pending"],
        "the new one and the pending one stay"
    );
    // A queued trigger is never deleted, however old.
    store
        .lock()
        .execute(
            "UPDATE triggers SET updated_at = '2000-01-01T00:00:00Z'",
            [],
        )
        .unwrap();
    assert_eq!(store.delete_finished_older_than(day).unwrap(), (0, 0));
}

#[test]
fn queued_triggers_coalesce_per_project() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ids: Vec<i64> = store
        .accept_events(&[event("a"), event("b")])
        .unwrap()
        .into_iter()
        .map(|a| match a {
            Accepted::New(id) => id,
            Accepted::Duplicate => panic!(),
        })
        .collect();
    assert_eq!(queue(&store, ids[0], &[trigger(2), trigger(3)]), 2);
    assert_eq!(queue(&store, ids[1], &[trigger(3), trigger(4)]), 1);
    assert_eq!(store.queue_depth().unwrap(), (0, 3));
    let due = store.due_triggers(10).unwrap();
    assert_eq!(due.len(), 3);
    store.trigger_done(due[0].id, 77, "http://x").unwrap();
    store
        .trigger_retry(due[1].id, std::time::Duration::from_secs(60), "503")
        .unwrap();
    store
        .with_cascades(|tx| tx.trigger_failed(due[2].id, "403"))
        .unwrap();
    assert!(
        store.due_triggers(10).unwrap().is_empty(),
        "the retried one is not due yet"
    );
    // Once done, a project can be queued again.
    let id = match store.accept_events(&[event("c")]).unwrap()[0] {
        Accepted::New(id) => id,
        Accepted::Duplicate => panic!(),
    };
    assert_eq!(queue(&store, id, &[trigger(2)]), 1);
}

fn new_event_id(store: &Store, key: &str) -> i64 {
    match store.accept_events(&[event(key)]).unwrap()[0] {
        Accepted::New(id) => id,
        Accepted::Duplicate => panic!("duplicate"),
    }
}

#[test]
fn a_second_cascade_joins_a_queued_trigger_and_a_failed_step_keeps_nothing() {
    use crate::cascade::Cascade;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let event_id = new_event_id(&store, "e1");
    let empty = Cascade::new(Default::default(), false);
    let (first, second, t1, t2) = store
        .with_cascades(|tx| {
            let first = tx.create(1, "g/a", "a succeeded", &empty)?;
            let second = tx.create(2, "g/b", "b succeeded", &empty)?;
            let (t1, new1) = tx.queue(first, event_id, None, &trigger(7))?;
            let (t2, new2) = tx.queue(second, event_id, None, &trigger(7))?;
            assert!(new1 && !new2, "the second joins");
            Ok((first, second, t1, t2))
        })
        .unwrap();
    assert_eq!(t1, t2);
    let attached: Vec<i64> = store
        .with_cascades(|tx| tx.attached(t1))
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(attached, [first, second]);
    // A step that fails half-way leaves nothing behind.
    let failed: Result<(), StoreError> = store.with_cascades(|tx| {
        tx.create(3, "g/c", "c succeeded", &empty)?;
        Err(StoreError::Corrupt("on purpose".into()))
    });
    assert!(failed.is_err());
    assert_eq!(store.recent_cascades(10).unwrap().len(), 2);
}

#[test]
fn an_older_database_is_migrated_and_a_newer_one_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The first server's layout: no retry columns, no cascades, no
        // fetch times, no schema version.
        let conn = Connection::open(dir.path().join("state.sqlite3")).unwrap();
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
    let version: i64 = store
        .lock()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    store
        .lock()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(store);
    let err = Store::open(dir.path())
        .err()
        .expect("a newer schema is refused");
    let text = err.to_string();
    assert!(text.contains("newer gitlab-docker-autodep"), "{text}");
    assert!(text.contains("--state-dir"), "{text}");
}

#[test]
fn a_digest_is_first_seen_then_same_then_changed_with_the_previous_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = "docker.io/library/python:3.12-slim";
    assert_eq!(
        store
            .record_digest(image, "linux/amd64", "sha256:a")
            .unwrap(),
        DigestChange::First
    );
    assert_eq!(
        store
            .record_digest(image, "linux/amd64", "sha256:a")
            .unwrap(),
        DigestChange::Same
    );
    // Another platform is its own row.
    assert_eq!(
        store
            .record_digest(image, "linux/arm64", "sha256:x")
            .unwrap(),
        DigestChange::First
    );
    assert_eq!(
        store
            .record_digest(image, "linux/amd64", "sha256:b")
            .unwrap(),
        DigestChange::Changed {
            previous: "sha256:a".into()
        }
    );
    let watched = store.watched_digests().unwrap();
    assert_eq!(watched.len(), 2);
    assert_eq!(watched[0].digest, "sha256:b");
    assert_eq!(watched[0].previous.as_deref(), Some("sha256:a"));
    assert!(watched[0].changed_at.is_some());
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
    {
        let conn = store.lock();
        conn.execute(
            "INSERT INTO cascades (id, root_project_id, root_path, reason, state, machine, created_at, updated_at)
             VALUES (7, 0, 'g/base', 'test', 'running', ?1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            [machine.to_string()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO attachments (trigger_id, cascade_id) VALUES (1, 7)",
            [],
        )
        .unwrap();
    }
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
    let conn = store.lock();
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
