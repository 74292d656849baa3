//! Persisted state: accepted webhook events, the trigger queue, cascades,
//! digests and the last scan's projects. The only module that touches the
//! database — one SQLite file for one server (the default), or PostgreSQL
//! shared by several replicas. An event is committed before GitLab gets
//! its 2xx; triggers are rows until GitLab confirms a pipeline, so a crash
//! loses nothing. The store's logic is written once, against [`sql::Sql`];
//! the two databases differ only in a few statements, picked by
//! [`sql::Backend`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scan::ScannedProject;

mod cascades;
mod database;
mod digests;
pub mod postgres;
mod queue;
mod replicas;
pub mod sql;
mod sqlite;

pub use cascades::{CascadeTx, MemberPipeline, StoredCascade};
pub use database::Database;
pub use digests::{DigestChange, WatchedDigest};
pub use postgres::Notice;
pub use queue::{Accepted, NewEvent, NewTrigger, PipelineFacts, StoredEvent, StoredTrigger};
pub use replicas::{ReplicaFlags, ReplicaHandle, ReplicaRow};
pub use sqlite::SCHEMA_VERSION;

use sql::{args, Backend, Sql};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}. Check that --state-dir exists and is writable")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("PostgreSQL error: {}", postgres::said(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("cannot connect to PostgreSQL at {url}: {}. Check --database (or AUTODEP_DATABASE_URL): host, port, user, password and database name, and that the server accepts this host", postgres::said(.source))]
    Connect {
        url: String,
        source: ::postgres::Error,
    },
    #[error("cannot use TLS with PostgreSQL at {url}: {why}")]
    Tls { url: String, why: String },
    #[error("state database holds data this version cannot read: {0}")]
    Corrupt(String),
    #[error("the state database {path} was written by a newer gitlab-docker-autodep (schema {found}; this version knows up to {known}): run the newer version, or give this one its own --state-dir")]
    Newer {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the PostgreSQL database was written by a newer gitlab-docker-autodep (schema {found}; this version knows up to {known}): upgrade every replica to the newer version, or give this one its own database")]
    NewerPostgres { found: i64, known: i64 },
    #[error("another gitlab-docker-autodep server{holder} is using the state directory {dir}; stop it, or give this one its own --state-dir")]
    Locked { dir: PathBuf, holder: String },
}

/// An open connection to one of the two databases.
enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::PgConn>),
}

/// How long a replica's claim on an event or trigger lasts without a
/// heartbeat, unless `--lease` says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Conn>>,
    backend: Backend,
    /// Running cascades as last committed (see `cascades.rs`): only with
    /// SQLite, where this process is the only writer.
    cascades: Option<Arc<cascades::CascadeCache>>,
    /// Who claims work, and for how long (PostgreSQL).
    me: Arc<postgres::Identity>,
    /// SQLite: an exclusive lock on `server.lock` in the state directory,
    /// held as long as any clone of the store lives: one server per
    /// directory.
    _lock: Option<Arc<std::fs::File>>,
}

/// Writes a project's read unless the stored one began later.
fn upsert_project(sql: &mut dyn Sql, p: &ScannedProject) -> Result<(), StoreError> {
    let json = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sql.exec(
        "INSERT INTO projects (id, json, fetched_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET json = excluded.json, fetched_at = excluded.fetched_at
         WHERE excluded.fetched_at >= projects.fetched_at",
        args![p.project.id, json, p.fetched_at],
    )?;
    Ok(())
}

/// Tells the other replicas that the stored graph changed (PostgreSQL
/// delivers it when the transaction commits).
fn graph_changed(sql: &mut dyn Sql, me: &str) -> Result<(), StoreError> {
    if sql.backend() == Backend::Postgres {
        sql.exec(
            &format!("SELECT pg_notify('{}', ?1)", postgres::GRAPH_CHANNEL),
            args![me],
        )?;
    }
    Ok(())
}

use crate::scan::now_millis;

fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `now - age` as stored times are written (RFC 3339), for comparisons.
fn cutoff_text(age: Duration) -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::try_from(age).unwrap_or(time::Duration::MAX))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn identity(lease: Duration) -> postgres::Identity {
    postgres::Identity {
        id: format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        lease,
    }
}

impl Store {
    /// Opens (creating if needed) `DIR/state.sqlite3`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_sqlite(dir, &dir.join("state.sqlite3"))
    }

    fn open_sqlite(dir: &Path, path: &Path) -> Result<Store, StoreError> {
        let (conn, lock) = sqlite::open(dir, path)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(Conn::Sqlite(conn))),
            backend: Backend::Sqlite,
            cascades: Some(Default::default()),
            me: Arc::new(identity(DEFAULT_LEASE)),
            _lock: Some(Arc::new(lock)),
        })
    }

    /// Opens the database the server was told to use; `lease` is how long
    /// this replica's claims on work last without its heartbeat.
    pub fn connect(
        database: &Database,
        state_dir: &Path,
        lease: Duration,
    ) -> Result<Store, StoreError> {
        match database {
            Database::Sqlite(None) => Store::open(state_dir),
            Database::Sqlite(Some(path)) => {
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
                Store::open_sqlite(dir.unwrap_or(Path::new(".")), path)
            }
            Database::Postgres(url) => Ok(Store {
                conn: Arc::new(Mutex::new(Conn::Postgres(Box::new(
                    postgres::PgConn::open(url)?,
                )))),
                backend: Backend::Postgres,
                cascades: None,
                me: Arc::new(identity(lease)),
                _lock: None,
            }),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This replica's name among the others.
    pub fn replica_id(&self) -> &str {
        &self.me.id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        // A panic while holding the lock cannot leave the database
        // inconsistent (transactions roll back), so a poisoned lock is
        // still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the connection, each statement on its own.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        match &mut *conn {
            Conn::Sqlite(c) => f(&mut sql::Sqlite(&*c)),
            Conn::Postgres(pg) => {
                pg.ensure()?;
                let (client, prepared) = pg.parts();
                f(&mut sql::Pg { client, prepared })
            }
        }
    }

    /// Runs `f` in one transaction: all of it is committed, or none.
    fn with_tx<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        match &mut *conn {
            Conn::Sqlite(c) => {
                let mut tx = sql::Sqlite(c.transaction()?);
                let out = f(&mut tx)?;
                tx.0.commit()?;
                Ok(out)
            }
            Conn::Postgres(pg) => {
                pg.ensure()?;
                let (client, prepared) = pg.parts();
                let mut tx = client.transaction()?;
                let out = f(&mut sql::Pg {
                    client: &mut tx,
                    prepared,
                })?;
                tx.commit()?;
                Ok(out)
            }
        }
    }

    /// The same database on a connection of its own (PostgreSQL), so that
    /// accepting webhooks does not wait behind the worker's statements.
    /// With SQLite, the same connection: one writer at a time anyway.
    pub fn own_connection(&self) -> Result<Store, StoreError> {
        let target = match &*self.lock() {
            Conn::Postgres(pg) => pg.target(),
            Conn::Sqlite(_) => return Ok(self.clone()),
        };
        Ok(Store {
            conn: Arc::new(Mutex::new(Conn::Postgres(Box::new(
                postgres::PgConn::connect(target)?,
            )))),
            ..self.clone()
        })
    }

    /// Runs a statement as it is: for tests that age or damage rows.
    #[doc(hidden)]
    pub fn execute_for_tests(&self, statement: &str) -> Result<usize, StoreError> {
        self.with_conn(|sql| sql.exec(statement, &[]))
    }

    /// Stores a rescan begun at `started_at` (Unix milliseconds) with the
    /// rule of [`crate::scan::merge_scan`]: a project read later (a push
    /// patch) is kept, whichever write comes last.
    pub fn save_projects(
        &self,
        projects: &[ScannedProject],
        started_at: i64,
    ) -> Result<(), StoreError> {
        let me = self.me.id.clone();
        self.with_tx(|sql| {
            for p in projects {
                upsert_project(sql, p)?;
            }
            let scanned: std::collections::HashSet<i64> =
                projects.iter().map(|p| p.project.id as i64).collect();
            // Read before this scan began and not seen by it: gone.
            let stale = sql.rows(
                "SELECT id FROM projects WHERE fetched_at < ?1",
                args![started_at],
            )?;
            for row in stale {
                let id = row.int(0)?;
                if !scanned.contains(&id) {
                    sql.exec("DELETE FROM projects WHERE id = ?1", args![id])?;
                }
            }
            sql.exec(
                "INSERT INTO meta (key, value) VALUES ('scanned_at', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                args![now_text()],
            )?;
            graph_changed(sql, &me)
        })
    }

    /// Stores one project's read (a push patch) unless a newer read of it
    /// is stored.
    pub fn save_project(&self, project: &ScannedProject) -> Result<(), StoreError> {
        let me = self.me.id.clone();
        self.with_tx(|sql| {
            upsert_project(sql, project)?;
            graph_changed(sql, &me)
        })
    }

    fn scanned_at(sql: &mut dyn Sql) -> Result<Option<String>, StoreError> {
        sql.row("SELECT value FROM meta WHERE key = 'scanned_at'", &[])?
            .map(|r| r.text(0))
            .transpose()
    }

    /// How long ago the stored scan was saved, if one was.
    pub fn scan_age(&self) -> Result<Option<Duration>, StoreError> {
        let saved = self.with_conn(Store::scanned_at)?;
        Ok(saved
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|at| {
                let age = time::OffsetDateTime::now_utc() - at;
                Duration::from_secs_f64(age.as_seconds_f64().max(0.0))
            }))
    }

    /// The stored scan, or `None` when no scan was ever saved.
    pub fn load_projects(&self) -> Result<Option<Vec<ScannedProject>>, StoreError> {
        let rows = self.with_conn(|sql| {
            if Store::scanned_at(sql)?.is_none() {
                return Ok(None);
            }
            sql.rows("SELECT json FROM projects ORDER BY id", &[])
                .map(Some)
        })?;
        let Some(rows) = rows else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_str(&row.text(0)?) {
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
mod tests;
