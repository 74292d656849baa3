//! The shared database: PostgreSQL, for several server replicas at once.
//! Its layout and migrations, connecting (and connecting again after a
//! lost connection), and the two background connections each replica
//! keeps: one that holds the leader's advisory lock and renews this
//! replica's leases and heartbeat, one that listens for `NOTIFY`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::sql::Prepared;
use super::StoreError;

/// The layout this version writes, in `meta.schema_version`.
/// 1: everything of SQLite's layout 4, plus leases on events and triggers
/// and the `replicas` table.
pub const SCHEMA_VERSION: i64 = 1;

/// Each step brings the database from the version before it to its own.
const MIGRATIONS: &[&str] = &["
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    received_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    event_uuid TEXT,
    project_id BIGINT NOT NULL,
    project_path TEXT NOT NULL,
    detail TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    pipeline_id BIGINT,
    pipeline_status TEXT,
    trigger_marker TEXT,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX events_pending ON events(state, id);
CREATE UNIQUE INDEX events_idempotency ON events(idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_pipeline ON events(project_id, pipeline_id) WHERE pipeline_id IS NOT NULL;
CREATE TABLE triggers (
    id BIGSERIAL PRIMARY KEY,
    event_id BIGINT NOT NULL,
    event_uuid TEXT,
    project_id BIGINT NOT NULL,
    project_path TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    upstream TEXT NOT NULL,
    image TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    pipeline_id BIGINT,
    web_url TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    marker TEXT,
    posted BIGINT NOT NULL DEFAULT 0,
    depth BIGINT NOT NULL DEFAULT 0,
    fired_at TEXT,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX triggers_one_queued ON triggers(project_id) WHERE state = 'queued';
CREATE INDEX triggers_due ON triggers(state, next_attempt_at);
CREATE INDEX triggers_event ON triggers(event_id);
CREATE INDEX triggers_running ON triggers(state, pipeline_id);
CREATE INDEX triggers_marker ON triggers(marker);
CREATE TABLE projects (
    id BIGINT PRIMARY KEY,
    json TEXT NOT NULL,
    fetched_at BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE cascades (
    id BIGSERIAL PRIMARY KEY,
    root_project_id BIGINT NOT NULL,
    root_path TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    machine TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX cascades_state ON cascades(state, id);
CREATE TABLE cascade_members (
    cascade_id BIGINT NOT NULL,
    project_id BIGINT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (cascade_id, project_id)
);
CREATE INDEX cascade_members_project ON cascade_members(project_id);
CREATE TABLE attachments (
    trigger_id BIGINT NOT NULL,
    cascade_id BIGINT NOT NULL,
    PRIMARY KEY (trigger_id, cascade_id)
);
CREATE TABLE digests (
    image TEXT NOT NULL,
    platform TEXT NOT NULL,
    digest TEXT NOT NULL,
    previous TEXT,
    first_seen TEXT NOT NULL,
    checked_at TEXT NOT NULL,
    changed_at TEXT,
    PRIMARY KEY (image, platform)
);
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    address TEXT NOT NULL,
    started_at TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    leader BIGINT NOT NULL DEFAULT 0
);
"];

/// Advisory lock keys (any two numbers no other program uses on this
/// database): migrations, the leader's role, cascade steps.
const MIGRATION_LOCK: i64 = 0x6175_746f_6465_7001;
const LEADER_LOCK: i64 = 0x6175_746f_6465_7002;
pub const CASCADE_LOCK: i64 = 0x6175_746f_6465_7003;

/// The database's clock in Unix milliseconds: leases are compared against
/// one clock, whatever the replicas' clocks say.
pub const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Channels: a replica's graph changed (payload: its id); work was queued.
pub const GRAPH_CHANNEL: &str = "autodep_graph";
pub const WORK_CHANNEL: &str = "autodep_work";

/// What the server said, not only that it said something ("db error").
pub fn said(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // "error performing TLS handshake" alone does not say why.
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        }
    }
}

/// `postgres://user:secret@host/db` with the secret left out, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `sslrootcert=FILE` taken out of a URL (the Rust client does not read
/// it; libpq and `psql` do): the URL without it, and the file.
pub fn split_root_cert(url: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("sslrootcert=") {
            Some(path) => {
                root = Some(std::path::PathBuf::from(
                    percent_encoding::percent_decode_str(path)
                        .decode_utf8_lossy()
                        .into_owned(),
                ));
                false
            }
            None => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, root)
}

/// Where and how to connect: the parsed URL, and TLS when it asks for it
/// (`sslmode=require`: the server's certificate and name are verified
/// against the system's CAs and `sslrootcert`, stricter than libpq's
/// `require`, which verifies nothing).
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    url: String,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

fn tls_error(url: &str, why: String) -> StoreError {
    StoreError::Tls {
        url: redacted(url),
        why,
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, StoreError> {
        let (rest, root_cert) = split_root_cert(url);
        let config: postgres::Config = rest.parse().map_err(|source| StoreError::Connect {
            url: redacted(url),
            source,
        })?;
        let require = config.get_ssl_mode() == postgres::config::SslMode::Require;
        let tls = match (require, root_cert) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(tls_error(
                    url,
                    "sslrootcert is only used with sslmode=require".into(),
                ))
            }
            (true, root_cert) => Some(connector(url, root_cert.as_deref())?),
        };
        Ok(Target {
            config,
            url: url.to_string(),
            tls,
        })
    }

    pub fn connect(&self) -> Result<postgres::Client, StoreError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        };
        connected.map_err(|source| StoreError::Connect {
            url: redacted(&self.url),
            source,
        })
    }
}

/// A TLS connector trusting the system's CAs and those in `root_cert`.
fn connector(
    url: &str,
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = root_cert {
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| {
                tls_error(
                    url,
                    format!("cannot read sslrootcert {}: {e}", path.display()),
                )
            })?;
        if certs.is_empty() {
            return Err(tls_error(
                url,
                format!("sslrootcert {} holds no certificate", path.display()),
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| tls_error(url, format!("sslrootcert {}: {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error(url, e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// One connection to PostgreSQL and the statements prepared on it; made
/// again when it was lost.
pub struct PgConn {
    /// Always there but while dropped (see `Drop`).
    client: Option<postgres::Client>,
    pub prepared: Prepared,
    /// When the connection last answered.
    used: std::time::Instant,
    target: Target,
}

impl PgConn {
    /// Connects and brings the layout up to date (one replica at a time).
    pub fn open(url: &str) -> Result<PgConn, StoreError> {
        let mut conn = PgConn::connect(Target::parse(url)?)?;
        migrate(conn.parts().0)?;
        Ok(conn)
    }

    /// Another connection to the same target (no migration: done).
    pub fn connect(target: Target) -> Result<PgConn, StoreError> {
        Ok(PgConn {
            used: std::time::Instant::now(),
            client: Some(target.connect()?),
            prepared: Prepared::new(),
            target,
        })
    }

    /// Connects again when the connection was lost (a restarted database,
    /// a failover); statements are prepared again on the new one. The
    /// client learns that the server closed a connection only when it next
    /// uses it, so one idle for a while is asked first (a round trip at
    /// most once a second).
    pub fn ensure(&mut self) -> Result<(), StoreError> {
        let idle = self.used.elapsed() > Duration::from_secs(1);
        let lost = match self.client.as_mut() {
            None => true,
            Some(c) => c.is_closed() || (idle && c.is_valid(Duration::from_secs(2)).is_err()),
        };
        if lost {
            self.client = Some(self.target.connect()?);
            self.prepared.clear();
        }
        self.used = std::time::Instant::now();
        Ok(())
    }

    /// The client and the statements prepared on it.
    pub fn parts(&mut self) -> (&mut postgres::Client, &mut Prepared) {
        let client = self.client.as_mut().expect("a client until dropped");
        (client, &mut self.prepared)
    }

    pub fn target(&self) -> Target {
        self.target.clone()
    }
}

impl Drop for PgConn {
    /// `postgres::Client` closes its connection by blocking on a runtime of
    /// its own, which panics on an async runtime's thread (where the last
    /// clone of a store may well be dropped): it is closed on a thread.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            std::thread::spawn(move || drop(client));
        }
    }
}

fn migrate(client: &mut postgres::Client) -> Result<(), StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = (|| {
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
        let found: i64 = client
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerPostgres {
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (version, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let mut tx = client.transaction()?;
            tx.batch_execute(step)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&(version as i64 + 1).to_string()],
            )?;
            tx.commit()?;
        }
        Ok(())
    })();
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
    result
}

/// What another replica (or this one) told through `NOTIFY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The stored graph changed; the payload names who changed it.
    Graph { from: String },
    /// Work was queued: look for it now rather than at the next poll.
    Work,
    /// The listening connection was made again: notices may have been
    /// missed, so reload.
    Reconnected,
}

/// Listens on the two channels until `stop`; connects again when the
/// connection is lost (and says so, since notices were missed meanwhile).
pub fn listen(
    target: Target,
    notices: tokio::sync::mpsc::UnboundedSender<Notice>,
    stop: Arc<AtomicBool>,
) {
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let mut client = match target.connect().and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {GRAPH_CHANNEL}; LISTEN {WORK_CHANNEL};"))?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot listen for other replicas' changes: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if !first && notices.send(Notice::Reconnected).is_err() {
            return;
        }
        first = false;
        while !stop.load(Ordering::SeqCst) && !client.is_closed() {
            use ::postgres::fallible_iterator::FallibleIterator;
            let mut got = client.notifications();
            let mut waiting = got.timeout_iter(Duration::from_millis(500));
            loop {
                let notice = match waiting.next() {
                    Ok(Some(n)) if n.channel() == GRAPH_CHANNEL => Notice::Graph {
                        from: n.payload().to_string(),
                    },
                    Ok(Some(_)) => Notice::Work,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("the listening connection failed: {}", said(&e));
                        break;
                    }
                };
                if notices.send(notice).is_err() {
                    return;
                }
            }
        }
    }
}

/// This replica as the other replicas see it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub lease: Duration,
}

/// Until `stop`: holds (or waits for) the leader's advisory lock, writes
/// this replica's heartbeat, and renews the leases it holds, every third
/// of a lease. A lost connection drops the leader's role at once (the lock
/// went with it) and is made again.
pub fn keep_alive(
    target: Target,
    me: Identity,
    address: String,
    flags: super::ReplicaFlags,
    stop: Arc<AtomicBool>,
) {
    let super::ReplicaFlags {
        leader,
        database_ok,
    } = flags;
    let period = me.lease / 3;
    let started = super::now_text();
    let host = hostname();
    while !stop.load(Ordering::SeqCst) {
        let mut client = match target.connect() {
            Ok(c) => c,
            Err(e) => {
                database_ok.store(false, Ordering::SeqCst);
                tracing::warn!("cannot keep this replica's leases: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = beat(&mut client, &me, &address, &leader, &started, &host) {
                tracing::warn!(
                    "lost the database connection that holds leases: {}",
                    said(&e)
                );
                break;
            }
            database_ok.store(true, Ordering::SeqCst);
            std::thread::sleep(period.min(Duration::from_secs(1)));
        }
        leader.store(false, Ordering::SeqCst);
        database_ok.store(false, Ordering::SeqCst);
    }
    let _ = release(&mut target.connect().ok(), &me);
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn beat(
    client: &mut postgres::Client,
    me: &Identity,
    address: &str,
    leader: &AtomicBool,
    started: &str,
    host: &str,
) -> Result<(), postgres::Error> {
    if !leader.load(Ordering::SeqCst) {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?
            .get(0);
        if got {
            tracing::info!(replica = %me.id, "this replica leads now: rescans, reconciliation, retention, digest checks");
        }
        leader.store(got, Ordering::SeqCst);
    }
    let lease = me.lease.as_millis() as i64;
    let is_leader = i64::from(leader.load(Ordering::SeqCst));
    client.execute(
        &format!(
            "INSERT INTO replicas (id, host, pid, address, started_at, seen_at, leader)
             VALUES ($1, $2, $3, $4, $5, {NOW_MS}, $6)
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, leader = excluded.leader"
        ),
        &[
            &me.id,
            &host,
            &(std::process::id() as i64),
            &address,
            &started,
            &is_leader,
        ],
    )?;
    for table in ["events", "triggers"] {
        client.execute(
            &format!(
                "UPDATE {table} SET lease_until = {NOW_MS} + $2
                 WHERE lease_owner = $1 AND lease_until > 0 AND state IN ('pending', 'queued')"
            ),
            &[&me.id, &lease],
        )?;
    }
    // Replicas gone for a day are forgotten.
    client.execute(
        &format!("DELETE FROM replicas WHERE seen_at < {NOW_MS} - 86400000"),
        &[],
    )?;
    Ok(())
}

/// A replica that stops hands its leases back and leaves the list.
fn release(client: &mut Option<postgres::Client>, me: &Identity) -> Result<(), postgres::Error> {
    let Some(client) = client else {
        return Ok(());
    };
    for table in ["events", "triggers"] {
        client.execute(
            &format!(
                "UPDATE {table} SET lease_until = 0, lease_owner = NULL WHERE lease_owner = $1"
            ),
            &[&me.id],
        )?;
    }
    client.execute("DELETE FROM replicas WHERE id = $1", &[&me.id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(
            super::redacted("postgres://autodep:s3cret@db:5432/autodep"),
            "postgres://autodep:***@db:5432/autodep"
        );
        assert_eq!(
            super::redacted("postgres://db/autodep"),
            "postgres://db/autodep"
        );
    }
}
