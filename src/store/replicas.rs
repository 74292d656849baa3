//! Server replicas sharing one PostgreSQL database: each keeps a heartbeat
//! and its leases alive, one of them holds the leader's role, and all hear
//! of each other's changes. With SQLite there is one server: it leads and
//! hears nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::postgres::{self, Notice, NOW_MS};
use super::sql::{args, Backend};
use super::{Conn, Store, StoreError};

/// What this replica's background connection keeps up to date.
#[derive(Debug, Clone, Default)]
pub struct ReplicaFlags {
    /// It holds the leader's role: it runs rescans, reconciliation,
    /// retention and digest checks.
    pub leader: Arc<AtomicBool>,
    /// Its last heartbeat reached the database.
    pub database_ok: Arc<AtomicBool>,
}

/// This replica's background connections.
pub struct ReplicaHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// What the other replicas said (PostgreSQL only).
    pub notices: Option<tokio::sync::mpsc::UnboundedReceiver<Notice>>,
}

impl ReplicaHandle {
    /// Hands the leases and the leader's role back, and waits for that.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ReplicaHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A replica as the status page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub address: String,
    pub started_at: String,
    /// Milliseconds since its last heartbeat.
    pub seen_ms_ago: i64,
    /// Heard from within a lease; one that is not is presumed dead and its
    /// work taken over.
    pub alive: bool,
    /// It holds the leader's role (and is alive).
    pub leader: bool,
    /// This process.
    pub this: bool,
}

impl Store {
    /// Starts this replica's heartbeat and listener (PostgreSQL), which
    /// keep `flags` up to date; `address` is how the status page names it.
    /// With SQLite this server is the only one and leads.
    pub fn start_replica(&self, address: &str, flags: ReplicaFlags) -> ReplicaHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let target = match &*self.lock() {
            Conn::Postgres(pg) => pg.target(),
            Conn::Sqlite(_) => {
                flags.leader.store(true, Ordering::SeqCst);
                flags.database_ok.store(true, Ordering::SeqCst);
                return ReplicaHandle {
                    stop,
                    threads: Vec::new(),
                    notices: None,
                };
            }
        };
        let (send, notices) = tokio::sync::mpsc::unbounded_channel();
        let keep = {
            let (target, me) = (target.clone(), (*self.me).clone());
            let (stop, address) = (stop.clone(), address.to_string());
            std::thread::spawn(move || postgres::keep_alive(target, me, address, flags, stop))
        };
        let listen = {
            let stop = stop.clone();
            std::thread::spawn(move || postgres::listen(target, send, stop))
        };
        ReplicaHandle {
            stop,
            threads: vec![keep, listen],
            notices: Some(notices),
        }
    }

    /// The replicas heard from within three leases, leader first.
    pub fn replicas(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(Vec::new());
        }
        let lease = self.me.lease.as_millis() as i64;
        let window = 3 * lease;
        let rows = self.with_conn(|sql| {
            sql.rows(
                &format!(
                    "SELECT id, host, pid, address, started_at, {NOW_MS} - seen_at, leader FROM replicas
                     WHERE seen_at > {NOW_MS} - ?1 ORDER BY leader DESC, started_at, id"
                ),
                args![window],
            )
        })?;
        rows.iter()
            .map(|r| {
                let id = r.text(0)?;
                let seen_ms_ago = r.int(5)?;
                let alive = seen_ms_ago < lease;
                Ok(ReplicaRow {
                    this: id == self.me.id,
                    id,
                    host: r.text(1)?,
                    pid: r.int(2)?,
                    address: r.text(3)?,
                    started_at: r.text(4)?,
                    seen_ms_ago,
                    alive,
                    leader: alive && r.int(6)? != 0,
                })
            })
            .collect()
    }
}
