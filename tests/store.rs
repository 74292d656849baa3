//! The store's suite, run against both databases: SQLite in a temporary
//! directory, and PostgreSQL in a throwaway cluster (tests/common/postgres.rs).
//! What replicas add — leases, claims, the leader's role — is tested on
//! PostgreSQL with two stores on one database, as two replicas have.

mod common;

use std::time::Duration;

use gitlab_docker_autodep::cascade::Cascade;
use gitlab_docker_autodep::store::{
    Accepted, Database, DigestChange, NewEvent, NewTrigger, Store, StoreError,
};

/// Runs `check` on a fresh SQLite store and a fresh PostgreSQL one (when
/// PostgreSQL is installed), each on its own thread (the PostgreSQL client
/// is synchronous).
fn on_both(check: fn(&dyn Fn() -> Store)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    check(&move || Store::open(&path).unwrap());
    if let Some(cluster) = common::postgres::cluster() {
        let url = cluster.database();
        check(&move || pg(&url, Duration::from_secs(30)));
    }
}

fn pg(url: &str, lease: Duration) -> Store {
    let db = Database::parse(url).unwrap();
    Store::connect(&db, std::path::Path::new("."), lease).unwrap()
}

fn event(key: &str, project_id: u64) -> NewEvent {
    NewEvent {
        kind: "pipeline".into(),
        dedupe_key: key.into(),
        idempotency_key: None,
        event_uuid: Some("uuid".into()),
        project_id,
        project_path: format!("g/p{project_id}"),
        detail: "pipeline 1".into(),
        pipeline: None,
    }
}

fn new_id(store: &Store, key: &str) -> i64 {
    match store.accept_events(&[event(key, 1)]).unwrap()[0] {
        Accepted::New(id) => id,
        Accepted::Duplicate => panic!("duplicate"),
    }
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

/// Queues triggers for an event as a cascade step does, marking the event
/// done; returns how many were new (the others joined a queued one).
fn queue(store: &Store, event_id: i64, triggers: &[NewTrigger]) -> usize {
    store
        .with_cascades(|tx| {
            let machine = Cascade::new(Default::default(), false);
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

#[test]
fn events_are_deduplicated_and_survive_reopening() {
    on_both(|open| {
        let store = open();
        let got = store
            .accept_events(&[event("a", 1), event("b", 1), event("a", 1)])
            .unwrap();
        assert!(matches!(got[0], Accepted::New(_)) && matches!(got[1], Accepted::New(_)));
        assert_eq!(got[2], Accepted::Duplicate);
        drop(store);
        let store = open();
        assert_eq!(
            store.accept_events(&[event("b", 1)]).unwrap(),
            [Accepted::Duplicate]
        );
        assert_eq!(store.pending_events(10).unwrap().len(), 2);
    });
}

#[test]
fn the_natural_key_and_the_idempotency_key_both_deduplicate() {
    on_both(|open| {
        let store = open();
        let mut first = event("k1", 1);
        first.idempotency_key = Some("idem".into());
        let mut resent = event("k2", 1);
        resent.idempotency_key = Some("idem".into());
        let got = store.accept_events(&[first, resent]).unwrap();
        assert!(matches!(got[0], Accepted::New(_)));
        assert_eq!(got[1], Accepted::Duplicate, "same Idempotency-Key");
        assert_eq!(
            store.accept_events(&[event("k1", 1)]).unwrap(),
            [Accepted::Duplicate],
            "same natural key"
        );
    });
}

#[test]
fn retention_deletes_only_finished_old_rows() {
    on_both(|open| {
        let store = open();
        let old_done = new_id(&store, "old-done");
        let old_pending = new_id(&store, "old-pending");
        let new_done = new_id(&store, "new-done");
        store.complete_event(old_done, "ok").unwrap();
        queue(&store, new_done, &[trigger(5)]);
        store
            .execute_for_tests(&format!(
                "UPDATE events SET received_at = '2000-01-01T00:00:00Z' WHERE id IN ({old_done}, {old_pending})"
            ))
            .unwrap();
        let day = Duration::from_secs(86_400);
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
            .execute_for_tests("UPDATE triggers SET updated_at = '2000-01-01T00:00:00Z'")
            .unwrap();
        assert_eq!(store.delete_finished_older_than(day).unwrap(), (0, 0));
    });
}

#[test]
fn queued_triggers_coalesce_per_project() {
    on_both(|open| {
        let store = open();
        let (a, b) = (new_id(&store, "a"), new_id(&store, "b"));
        assert_eq!(queue(&store, a, &[trigger(2), trigger(3)]), 2);
        assert_eq!(queue(&store, b, &[trigger(3), trigger(4)]), 1);
        assert_eq!(store.queue_depth().unwrap(), (0, 3));
        let due = store.due_triggers(10, &[]).unwrap();
        assert_eq!(due.len(), 3);
        assert_eq!(
            store.due_triggers(10, &[due[0].id]).unwrap().len(),
            2,
            "one being fired here is left out"
        );
        store.trigger_done(due[0].id, 77, "http://x").unwrap();
        store
            .trigger_retry(due[1].id, Duration::from_secs(60), "503")
            .unwrap();
        store
            .with_cascades(|tx| tx.trigger_failed(due[2].id, "403"))
            .unwrap();
        assert!(
            store.due_triggers(10, &[]).unwrap().is_empty(),
            "the retried one is not due yet"
        );
        // Once done, a project can be queued again.
        let c = new_id(&store, "c");
        assert_eq!(queue(&store, c, &[trigger(2)]), 1);
    });
}

#[test]
fn a_second_cascade_joins_a_queued_trigger_and_a_failed_step_keeps_nothing() {
    on_both(|open| {
        let store = open();
        let event_id = new_id(&store, "e1");
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
        assert_eq!(
            store.cascades_of(7, 10).unwrap().len(),
            0,
            "no member rows yet"
        );
    });
}

#[test]
fn a_digest_is_first_seen_then_same_then_changed_with_the_previous_kept() {
    on_both(|open| {
        let store = open();
        let image = "docker.io/library/python:3.12-slim";
        let record =
            |platform: &str, digest: &str| store.record_digest(image, platform, digest).unwrap();
        assert_eq!(record("linux/amd64", "sha256:a"), DigestChange::First);
        assert_eq!(record("linux/amd64", "sha256:a"), DigestChange::Same);
        assert_eq!(record("linux/arm64", "sha256:x"), DigestChange::First);
        assert_eq!(
            record("linux/amd64", "sha256:b"),
            DigestChange::Changed {
                previous: "sha256:a".into()
            }
        );
        let watched = store.watched_digests().unwrap();
        assert_eq!(watched.len(), 2);
        assert_eq!(watched[0].digest, "sha256:b");
        assert_eq!(watched[0].previous.as_deref(), Some("sha256:a"));
        assert!(watched[0].changed_at.is_some());
        assert_eq!(
            store.digest_of(image, "linux/arm64").unwrap().as_deref(),
            Some("sha256:x")
        );
    });
}

#[test]
fn a_rescan_keeps_a_newer_read_and_drops_what_it_no_longer_saw() {
    use gitlab_docker_autodep::scan::ScannedProject;
    on_both(|open| {
        let store = open();
        assert!(store.load_projects().unwrap().is_none(), "no scan yet");
        let project = |id: u64, fetched_at: i64| {
            let mut p: ScannedProject = serde_json::from_value(serde_json::json!({
                "project": {"id": id, "path": format!("g/p{id}"), "default_branch": "main",
                            "archived": false, "empty_repo": false, "web_url": "http://x"},
                "dockerfile": {"state": "missing"},
            }))
            .unwrap();
            p.fetched_at = fetched_at;
            p
        };
        store
            .save_projects(&[project(1, 100), project(2, 100), project(3, 100)], 100)
            .unwrap();
        // A push patch of 2 read at 300, after the next rescan began.
        store.save_project(&project(2, 300)).unwrap();
        // That rescan (begun at 200) no longer sees 3, and read 2 at 250.
        store
            .save_projects(&[project(1, 200), project(2, 250)], 200)
            .unwrap();
        let stored = store.load_projects().unwrap().unwrap();
        let got: Vec<(u64, i64)> = stored
            .iter()
            .map(|p| (p.project.id, p.fetched_at))
            .collect();
        assert_eq!(got, [(1, 200), (2, 300)]);
        assert!(store.scan_age().unwrap().unwrap() < Duration::from_secs(60));
    });
}

/// Two stores on one PostgreSQL database: two replicas.
fn replicas(lease: Duration) -> Option<(Store, Store)> {
    let url = common::postgres::cluster()?.database();
    Some((pg(&url, lease), pg(&url, lease)))
}

#[test]
fn replicas_claim_distinct_work_and_take_over_an_expired_lease() {
    let Some((a, b)) = replicas(Duration::from_millis(1500)) else {
        return;
    };
    std::thread::spawn(move || {
        for key in ["e1", "e2", "e3"] {
            let mut e = event(key, 10 + key.len() as u64);
            e.project_id = match key {
                "e1" => 1,
                "e2" => 2,
                _ => 3,
            };
            a.accept_events(&[e]).unwrap();
        }
        let first = a.pending_events(2).unwrap();
        assert_eq!(first.len(), 2);
        let rest = b.pending_events(10).unwrap();
        assert_eq!(rest.len(), 1, "b gets only what a did not claim");
        assert!(rest[0].id > first[1].id);
        assert!(
            b.pending_events(10).unwrap().len() == 1,
            "b's own claim is b's again"
        );
        assert!(a.pending_events(10).unwrap().len() == 2, "a keeps its own");
        // a stops renewing (no heartbeat runs here): after its lease b
        // takes its work over.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if b.pending_events(10).unwrap().len() == 3 {
                break;
            }
            assert!(std::time::Instant::now() < until, "the lease never expired");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Triggers: each one goes to one replica.
        let (e4, e5) = (new_id(&a, "e4"), new_id(&a, "e5"));
        queue(&a, e4, &[trigger(20), trigger(21)]);
        queue(&a, e5, &[trigger(22)]);
        let ta = a.due_triggers(2, &[]).unwrap();
        let tb = b.due_triggers(10, &[]).unwrap();
        assert_eq!((ta.len(), tb.len()), (2, 1));
        assert!(ta.iter().all(|t| tb.iter().all(|u| u.id != t.id)));
        // What the other one is firing counts against --max-running.
        assert_eq!(b.running_pipelines().unwrap(), 2);
        assert_eq!(a.running_pipelines().unwrap(), 1);
        // The fence: a posts only while its claim holds. Once it lapsed and
        // b took the trigger, a may not post (and b may).
        assert!(a.trigger_posting(ta[0].id).unwrap());
        assert!(!b.trigger_posting(ta[0].id).unwrap(), "not b's");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while b.due_triggers(10, &[]).unwrap().len() < 3 {
            assert!(std::time::Instant::now() < until, "a's lease never lapsed");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!a.trigger_posting(ta[0].id).unwrap(), "a lost it");
        assert!(b.trigger_posting(ta[0].id).unwrap(), "b has it");
    })
    .join()
    .unwrap();
}

#[test]
fn one_projects_events_stay_in_order_across_replicas() {
    let Some((a, b)) = replicas(Duration::from_secs(30)) else {
        return;
    };
    std::thread::spawn(move || {
        a.accept_events(&[event("p1-first", 1), event("p1-second", 1), event("p2", 2)])
            .unwrap();
        let first = a.pending_events(1).unwrap();
        assert_eq!(first[0].project_id, 1);
        let other = b.pending_events(10).unwrap();
        let projects: Vec<u64> = other.iter().map(|e| e.project_id).collect();
        assert_eq!(
            projects,
            [2],
            "project 1's second event waits for its first"
        );
        a.complete_event(first[0].id, "done").unwrap();
        let next = b.pending_events(10).unwrap();
        assert!(next.iter().any(|e| e.project_id == 1), "now it is free");
    })
    .join()
    .unwrap();
}

#[test]
fn a_newer_postgres_schema_is_refused_with_what_to_do() {
    let Some(cluster) = common::postgres::cluster() else {
        return;
    };
    let url = cluster.database();
    std::thread::spawn(move || {
        let store = pg(&url, Duration::from_secs(30));
        store
            .execute_for_tests("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
            .unwrap();
        let db = Database::parse(&url).unwrap();
        let err = Store::connect(&db, std::path::Path::new("."), Duration::from_secs(1))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("upgrade every replica"), "{err}");
        let wrong = Database::parse("postgres://autodep:hunter2@127.0.0.1:1/x").unwrap();
        let err = Store::connect(&wrong, std::path::Path::new("."), Duration::from_secs(1))
            .err()
            .expect("no server there");
        let text = err.to_string();
        assert!(
            text.contains("AUTODEP_DATABASE_URL") && !text.contains("hunter2"),
            "{text}"
        );
    })
    .join()
    .unwrap();
}

/// `sslmode=require` with `sslrootcert`, as libpq reads them: the
/// connection is encrypted and the server's certificate verified; without
/// the CA that signed it, the connection is refused and says why.
#[test]
fn tls_to_postgres_verifies_the_server() {
    let Some(cluster) = common::postgres::cluster() else {
        return;
    };
    let Some(ca) = cluster.ca.clone() else {
        return;
    };
    let url = cluster.database();
    std::thread::spawn(move || {
        let store = pg(
            &format!("{url}?sslmode=require&sslrootcert={}", ca.display()),
            Duration::from_secs(30),
        );
        // Fails unless this very connection is encrypted.
        store
            .execute_for_tests(
                "DO $$ BEGIN IF NOT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) \
                 THEN RAISE EXCEPTION 'not encrypted'; END IF; END $$",
            )
            .unwrap();
        assert_eq!(store.accept_events(&[event("tls", 1)]).unwrap().len(), 1);
        let db = Database::parse(&format!("{url}?sslmode=require")).unwrap();
        let err = Store::connect(&db, std::path::Path::new("."), Duration::from_secs(1))
            .err()
            .expect("an unknown CA is refused");
        let text = err.to_string();
        assert!(
            text.contains("cannot connect") && text.to_lowercase().contains("certificate"),
            "{text}"
        );
        // The server does not require TLS: without sslmode, plain.
        let plain = pg(&url, Duration::from_secs(30));
        assert!(plain
            .execute_for_tests(
                "DO $$ BEGIN IF (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) \
                 THEN RAISE EXCEPTION 'encrypted'; END IF; END $$",
            )
            .is_ok());
    })
    .join()
    .unwrap();
}
