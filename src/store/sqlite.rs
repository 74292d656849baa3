//! The default database: one SQLite file (WAL, synchronous FULL) in the
//! state directory, for one server — a lock file in the directory says
//! so. Its layout, and the steps that bring an older file up to date.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

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
CREATE INDEX IF NOT EXISTS triggers_event ON triggers(event_id);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cascades (
    id INTEGER PRIMARY KEY,
    root_project_id INTEGER NOT NULL,
    root_path TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,             -- running | finished | closed
    machine TEXT NOT NULL,           -- cascade::Cascade as JSON
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cascades_state ON cascades(state, id);
-- Which cascades wait for a trigger's pipeline (several, when they joined).
CREATE TABLE IF NOT EXISTS digests (
    image TEXT NOT NULL,             -- registry/path:tag
    platform TEXT NOT NULL,          -- os/arch[/variant]
    digest TEXT NOT NULL,
    previous TEXT,
    first_seen TEXT NOT NULL,
    checked_at TEXT NOT NULL,
    changed_at TEXT,
    PRIMARY KEY (image, platform)
);
CREATE TABLE IF NOT EXISTS cascade_members (
    cascade_id INTEGER NOT NULL,
    project_id INTEGER NOT NULL,
    member TEXT NOT NULL,            -- cascade::Member as JSON
    PRIMARY KEY (cascade_id, project_id)
);
CREATE INDEX IF NOT EXISTS cascade_members_project ON cascade_members(project_id);
CREATE TABLE IF NOT EXISTS attachments (
    trigger_id INTEGER NOT NULL,
    cascade_id INTEGER NOT NULL,
    PRIMARY KEY (trigger_id, cascade_id)
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

/// The layout this version writes, kept in SQLite's `user_version`.
/// 1: events, triggers, projects (the first server); 2: retries, cascades,
/// attachments, markers; 3: `projects.fetched_at`, `triggers_event`,
/// `triggers.fired_at`, `digests`; 4: `cascade_members` (older cascades
/// keep their members in their JSON until their next step), the indexes
/// `events_pipeline` and `triggers_running`; 5: the index
/// `triggers_marker`, and the lease columns PostgreSQL's replicas use
/// (unused here: one server, nothing to share; kept so that one statement
/// serves both).
pub const SCHEMA_VERSION: i64 = 5;

/// Brings a database written by an earlier version up to date: columns
/// added since are added, with their defaults. Every step is idempotent, so
/// a crash halfway is finished by the next start.
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    for (table, column, definition) in [
        ("events", "attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("events", "next_attempt_at", "INTEGER NOT NULL DEFAULT 0"),
        ("events", "idempotency_key", "TEXT"),
        ("events", "pipeline_id", "INTEGER"),
        ("events", "pipeline_status", "TEXT"),
        ("events", "trigger_marker", "TEXT"),
        ("triggers", "marker", "TEXT"),
        ("triggers", "posted", "INTEGER NOT NULL DEFAULT 0"),
        ("triggers", "depth", "INTEGER NOT NULL DEFAULT 0"),
        ("projects", "fetched_at", "INTEGER NOT NULL DEFAULT 0"),
        ("triggers", "fired_at", "TEXT"),
        ("events", "lease_owner", "TEXT"),
        ("events", "lease_until", "INTEGER NOT NULL DEFAULT 0"),
        ("triggers", "lease_owner", "TEXT"),
        ("triggers", "lease_until", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        let exists = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !exists {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition};"
            ))?;
        }
    }
    conn.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency ON events(idempotency_key)
         WHERE idempotency_key IS NOT NULL;
         CREATE INDEX IF NOT EXISTS events_pipeline ON events(project_id, pipeline_id)
         WHERE pipeline_id IS NOT NULL;
         CREATE INDEX IF NOT EXISTS triggers_running ON triggers(state, pipeline_id);
         CREATE INDEX IF NOT EXISTS triggers_marker ON triggers(marker);",
    )?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
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

/// Opens (creating if needed) the database `path`, with the lock of `dir`.
pub fn open(dir: &Path, path: &Path) -> Result<(Connection, std::fs::File), StoreError> {
    let path = path.to_path_buf();
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
    // After a checkpoint the log is cut back to this size, so one large
    // burst does not leave a large file behind.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(open_err)?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path,
            found,
            known: SCHEMA_VERSION,
        });
    }
    conn.execute_batch(SCHEMA).map_err(open_err)?;
    migrate(&conn).map_err(open_err)?;
    Ok((conn, lock))
}
