//! Persisted state (SQLite, WAL): accepted webhook events, the trigger
//! queue, and the last scan's projects. The only module that touches the
//! disk. An event is committed before GitLab gets its 2xx; triggers are
//! rows until GitLab confirms a pipeline, so a crash loses nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::scan::ScannedProject;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}. Check that --state-dir exists and is writable")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds data this version cannot read: {0}")]
    Corrupt(String),
    #[error("another gitlab-docker-autodep server{holder} is using the state directory {dir}; stop it, or give this one its own --state-dir")]
    Locked { dir: PathBuf, holder: String },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    kind TEXT NOT NULL,              -- pipeline | push
    dedupe_key TEXT NOT NULL UNIQUE, -- the natural key (project, pipeline, status / commit)
    event_uuid TEXT,                 -- X-Gitlab-Event-UUID, propagated to GitLab
    project_id INTEGER NOT NULL,
    project_path TEXT NOT NULL,
    detail TEXT NOT NULL,            -- pipeline id / pushed commit
    state TEXT NOT NULL,             -- pending | done | parked
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS events_pending ON events(state, id);
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL,
    event_uuid TEXT,
    project_id INTEGER NOT NULL,
    project_path TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    upstream TEXT NOT NULL,
    image TEXT NOT NULL,
    state TEXT NOT NULL,             -- queued | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    pipeline_id INTEGER,
    web_url TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- At most one queued trigger per project: later ones coalesce into it.
CREATE UNIQUE INDEX IF NOT EXISTS triggers_one_queued ON triggers(project_id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS triggers_due ON triggers(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Creates the state directory (0700) and the database file (0600) when
/// they do not exist yet, so that SQLite's journal files, which take the
/// database's mode, are private too. An existing directory (a systemd
/// `StateDirectory`, a mounted volume) keeps its mode.
fn private_files(dir: &Path, database: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(database)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Brings a database written by an earlier version up to date.
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let has_attempts: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'attempts'")?
        .exists([])?;
    if !has_attempts {
        conn.execute_batch(
            "ALTER TABLE events ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE events ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    let has_idempotency: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'idempotency_key'")?
        .exists([])?;
    if !has_idempotency {
        conn.execute_batch("ALTER TABLE events ADD COLUMN idempotency_key TEXT;")?;
    }
    conn.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency ON events(idempotency_key)
         WHERE idempotency_key IS NOT NULL;",
    )?;
    let has_marker: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('triggers') WHERE name = 'marker'")?
        .exists([])?;
    if !has_marker {
        conn.execute_batch(
            "ALTER TABLE triggers ADD COLUMN marker TEXT;
             ALTER TABLE triggers ADD COLUMN posted INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    Ok(())
}

/// An event to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: String,
    /// The natural key: the same event delivered twice (a group hook and a
    /// project hook, a resend) has the same one.
    pub dedupe_key: String,
    /// GitLab's `Idempotency-Key`, checked in addition.
    pub idempotency_key: Option<String>,
    pub event_uuid: Option<String>,
    pub project_id: u64,
    pub project_path: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    New(i64),
    Duplicate,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub received_at: String,
    pub kind: String,
    pub event_uuid: Option<String>,
    pub project_id: u64,
    pub project_path: String,
    pub detail: String,
    pub state: String,
    pub outcome: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A trigger to queue for one project.
#[derive(Debug, Clone)]
pub struct NewTrigger {
    pub project_id: u64,
    pub project_path: String,
    pub git_ref: String,
    pub upstream: String,
    pub image: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredTrigger {
    pub id: i64,
    pub event_id: i64,
    pub event_uuid: Option<String>,
    pub project_id: u64,
    pub project_path: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub upstream: String,
    pub image: String,
    pub state: String,
    pub attempts: u32,
    pub pipeline_id: Option<u64>,
    pub web_url: Option<String>,
    pub error: Option<String>,
    pub updated_at: String,
    pub created_at: String,
    /// Sent with the pipeline as `AUTODEP_TRIGGER_ID`: finds it again after
    /// an answer lost in transit.
    #[serde(skip)]
    pub marker: String,
    /// A create request was sent at least once.
    #[serde(skip)]
    pub posted: bool,
}

fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// An exclusive lock on `server.lock` in the state directory, held as
    /// long as any clone of the store lives: one server per directory.
    _lock: Arc<std::fs::File>,
}

/// Takes the state directory's lock, or says who holds it.
fn lock_directory(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("server.lock");
    let io = |e: std::io::Error| {
        StoreError::Sql(rusqlite::Error::InvalidPath(
            format!("{}: {e}", path.display()).into(),
        ))
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            write!(file, "{}", std::process::id()).map_err(io)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            Err(StoreError::Locked {
                dir: dir.to_path_buf(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

impl Store {
    /// Opens (creating if needed) `DIR/state.sqlite3`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("state.sqlite3");
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        private_files(dir, &path).map_err(|e| {
            open_err(rusqlite::Error::InvalidPath(
                format!("{}: {e}", dir.display()).into(),
            ))
        })?;
        let lock = lock_directory(dir)?;
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        // WAL + FULL: a commit is on disk before GitLab hears "accepted".
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        migrate(&conn).map_err(open_err)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            _lock: Arc::new(lock),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts a batch of events in one transaction (one disk sync).
    pub fn accept_events(&self, events: &[NewEvent]) -> Result<Vec<Accepted>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(events.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (received_at, kind, dedupe_key, event_uuid, project_id, project_path, detail, state, idempotency_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8) ON CONFLICT DO NOTHING",
            )?;
            let now = now_text();
            for e in events {
                let changed = insert.execute(params![
                    now,
                    e.kind,
                    e.dedupe_key,
                    e.event_uuid,
                    e.project_id as i64,
                    e.project_path,
                    e.detail,
                    e.idempotency_key
                ])?;
                out.push(if changed == 1 {
                    Accepted::New(tx.last_insert_rowid())
                } else {
                    Accepted::Duplicate
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Pending events whose next attempt is due, oldest first.
    pub fn pending_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.events(
            &format!(
                "WHERE state = 'pending' AND next_attempt_at <= {} ORDER BY id ASC",
                now_millis()
            ),
            limit,
        )
    }

    /// Keeps the event pending; tries again after `delay`.
    pub fn event_retry(
        &self,
        id: i64,
        delay: std::time::Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE events SET attempts = attempts + 1, next_attempt_at = ?2, outcome = ?3 WHERE id = ?1",
            params![id, now_millis() + delay.as_millis() as i64, error],
        )?;
        Ok(())
    }

    /// Gives up on an event after too many failed attempts.
    pub fn event_parked(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE events SET state = 'parked', attempts = attempts + 1, outcome = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }

    pub fn recent_events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.events("ORDER BY id DESC", limit)
    }

    fn events(&self, clause: &str, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, received_at, kind, event_uuid, project_id, project_path, detail, state, outcome, attempts FROM events {clause} LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(StoredEvent {
                id: r.get(0)?,
                received_at: r.get(1)?,
                kind: r.get(2)?,
                event_uuid: r.get(3)?,
                project_id: r.get::<_, i64>(4)? as u64,
                project_path: r.get(5)?,
                detail: r.get(6)?,
                state: r.get(7)?,
                outcome: r.get(8)?,
                attempts: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queues triggers for an event and marks it done, atomically. A trigger
    /// for a project already queued coalesces into the queued one.
    /// Returns how many new triggers were queued.
    pub fn complete_event(
        &self,
        event_id: i64,
        event_uuid: Option<&str>,
        triggers: &[NewTrigger],
        outcome: &str,
    ) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut queued = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO triggers (event_id, event_uuid, project_id, project_path, git_ref, upstream, image, state, created_at, updated_at, marker)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8, ?9)
                 ON CONFLICT(project_id) WHERE state = 'queued' DO NOTHING",
            )?;
            let now = now_text();
            for t in triggers {
                queued += insert.execute(params![
                    event_id,
                    event_uuid,
                    t.project_id as i64,
                    t.project_path,
                    t.git_ref,
                    t.upstream,
                    t.image,
                    now,
                    uuid::Uuid::new_v4().to_string()
                ])?;
            }
        }
        tx.execute(
            "UPDATE events SET state = 'done', outcome = ?2 WHERE id = ?1",
            params![event_id, outcome],
        )?;
        tx.commit()?;
        Ok(queued)
    }

    /// Queued triggers whose next attempt is due, oldest first.
    pub fn due_triggers(&self, limit: usize) -> Result<Vec<StoredTrigger>, StoreError> {
        self.triggers(
            "WHERE state = 'queued' AND next_attempt_at <= ?2 ORDER BY id ASC",
            limit,
            now_millis(),
        )
    }

    pub fn recent_triggers(&self, limit: usize) -> Result<Vec<StoredTrigger>, StoreError> {
        self.triggers("WHERE ?2 >= 0 ORDER BY id DESC", limit, 0)
    }

    fn triggers(
        &self,
        clause: &str,
        limit: usize,
        now: i64,
    ) -> Result<Vec<StoredTrigger>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, event_id, event_uuid, project_id, project_path, git_ref, upstream, image, state, attempts, pipeline_id, web_url, error, updated_at,
                    created_at, COALESCE(marker, 'trigger-' || id), posted
             FROM triggers {clause} LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![limit as i64, now], |r| {
            Ok(StoredTrigger {
                id: r.get(0)?,
                event_id: r.get(1)?,
                event_uuid: r.get(2)?,
                project_id: r.get::<_, i64>(3)? as u64,
                project_path: r.get(4)?,
                git_ref: r.get(5)?,
                upstream: r.get(6)?,
                image: r.get(7)?,
                state: r.get(8)?,
                attempts: r.get(9)?,
                pipeline_id: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                web_url: r.get(11)?,
                error: r.get(12)?,
                updated_at: r.get(13)?,
                created_at: r.get(14)?,
                marker: r.get(15)?,
                posted: r.get::<_, i64>(16)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Recorded before the first create request, so that after a crash
    /// the next attempt looks for the pipeline before posting.
    pub fn trigger_posting(&self, id: i64) -> Result<(), StoreError> {
        self.lock()
            .execute("UPDATE triggers SET posted = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn trigger_done(&self, id: i64, pipeline_id: u64, web_url: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE triggers SET state = 'done', pipeline_id = ?2, web_url = ?3, error = NULL, attempts = attempts + 1, updated_at = ?4 WHERE id = ?1",
            params![id, pipeline_id as i64, web_url, now_text()],
        )?;
        Ok(())
    }

    /// Keeps the trigger queued; tries again after `delay`.
    pub fn trigger_retry(
        &self,
        id: i64,
        delay: std::time::Duration,
        error: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE triggers SET attempts = attempts + 1, next_attempt_at = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, now_millis() + delay.as_millis() as i64, error, now_text()],
        )?;
        Ok(())
    }

    /// Gives up: GitLab refused for a reason retrying cannot fix.
    pub fn trigger_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE triggers SET state = 'failed', attempts = attempts + 1, error = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, error, now_text()],
        )?;
        Ok(())
    }

    /// Deletes what is finished and older than `age`: events done or parked,
    /// triggers done or failed. Pending work is never deleted. Returns
    /// `(events, triggers)` deleted.
    pub fn delete_finished_older_than(
        &self,
        age: std::time::Duration,
    ) -> Result<(usize, usize), StoreError> {
        let cutoff = time::OffsetDateTime::now_utc()
            - time::Duration::try_from(age).unwrap_or(time::Duration::MAX);
        let cutoff = cutoff
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let triggers = tx.execute(
            "DELETE FROM triggers WHERE state IN ('done', 'failed') AND updated_at < ?1",
            [&cutoff],
        )?;
        let events = tx.execute(
            "DELETE FROM events WHERE state IN ('done', 'parked') AND received_at < ?1
             AND NOT EXISTS (SELECT 1 FROM triggers t WHERE t.event_id = events.id)",
            [&cutoff],
        )?;
        tx.commit()?;
        Ok((events, triggers))
    }

    /// Events given up on after too many failed attempts.
    pub fn parked_events(&self) -> Result<u64, StoreError> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM events WHERE state = 'parked'",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// `(pending events, queued triggers)`
    pub fn queue_depth(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.lock();
        let events: i64 = conn.query_row(
            "SELECT COUNT(*) FROM events WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        let triggers: i64 = conn.query_row(
            "SELECT COUNT(*) FROM triggers WHERE state = 'queued'",
            [],
            |r| r.get(0),
        )?;
        Ok((events as u64, triggers as u64))
    }

    /// Replaces the stored scan.
    pub fn save_projects(&self, projects: &[ScannedProject]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM projects", [])?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO projects (id, json) VALUES (?1, ?2)")?;
            for p in projects {
                let json =
                    serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                insert.execute(params![p.project.id as i64, json])?;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('scanned_at', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [now_text()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn save_project(&self, project: &ScannedProject) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(project).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.lock().execute(
            "INSERT INTO projects (id, json) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET json = excluded.json",
            params![project.project.id as i64, json],
        )?;
        Ok(())
    }

    /// How long ago the stored scan was saved, if one was.
    pub fn scan_age(&self) -> Result<Option<std::time::Duration>, StoreError> {
        let saved: Option<String> = self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = 'scanned_at'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(saved
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|at| {
                let age = time::OffsetDateTime::now_utc() - at;
                std::time::Duration::from_secs_f64(age.as_seconds_f64().max(0.0))
            }))
    }

    /// The stored scan, or `None` when no scan was ever saved.
    pub fn load_projects(&self) -> Result<Option<Vec<ScannedProject>>, StoreError> {
        let conn = self.lock();
        let scanned: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'scanned_at'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if scanned.is_none() {
            return Ok(None);
        }
        let mut stmt = conn.prepare("SELECT json FROM projects ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            match serde_json::from_str(&json?) {
                Ok(project) => out.push(project),
                // Written by another version: a rescan replaces it.
                Err(e) => {
                    tracing::warn!(
                        "the stored scan cannot be read by this version ({e}); rescanning"
                    );
                    return Ok(None);
                }
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
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
        }
    }

    fn trigger(project_id: u64) -> NewTrigger {
        NewTrigger {
            project_id,
            project_path: format!("g/p{project_id}"),
            git_ref: "main".into(),
            upstream: "g/base".into(),
            image: "img".into(),
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
        store.complete_event(ids[0], None, &[], "ok").unwrap();
        store
            .complete_event(ids[2], None, &[trigger(5)], "ok")
            .unwrap();
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
        assert_eq!(
            store
                .complete_event(ids[0], None, &[trigger(2), trigger(3)], "queued")
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .complete_event(ids[1], None, &[trigger(3), trigger(4)], "queued")
                .unwrap(),
            1
        );
        assert_eq!(store.queue_depth().unwrap(), (0, 3));
        let due = store.due_triggers(10).unwrap();
        assert_eq!(due.len(), 3);
        store.trigger_done(due[0].id, 77, "http://x").unwrap();
        store
            .trigger_retry(due[1].id, std::time::Duration::from_secs(60), "503")
            .unwrap();
        store.trigger_failed(due[2].id, "403").unwrap();
        assert!(
            store.due_triggers(10).unwrap().is_empty(),
            "the retried one is not due yet"
        );
        // Once done, a project can be queued again.
        let id = match store.accept_events(&[event("c")]).unwrap()[0] {
            Accepted::New(id) => id,
            Accepted::Duplicate => panic!(),
        };
        assert_eq!(
            store
                .complete_event(id, None, &[trigger(2)], "queued")
                .unwrap(),
            1
        );
    }
}
