//! Accepting connections: hyper's own connection settings, not hand-made
//! ones. At most `max_connections` are open at once; request headers must
//! arrive within the header timeout and bodies within the body timeout; and
//! when the limit is reached, the connection that has been idle longest (no
//! request in progress for at least a second: still sending its headers, or a kept-alive
//! connection between requests) is closed to make room, so clients that
//! hold connections without using them cannot lock out those that send.
//! Graceful shutdown lets requests in flight finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How connections are accepted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// A request body must arrive within this time.
    pub body_read_timeout: Duration,
}

/// How long a connection must have been idle before it may be closed to
/// make room: a client sends its request well within it even when this
/// server is busy; one that holds a connection open without sending is
/// much older.
const MIN_IDLE: Duration = Duration::from_secs(1);

/// What the accept loop knows of one open connection.
struct Activity {
    /// Requests in progress.
    in_flight: AtomicUsize,
    /// Milliseconds since the listener started, at the last request's start
    /// or end (the connection's opening before any request).
    last: AtomicU64,
}

struct Open {
    activity: Arc<Activity>,
    abort: tokio::task::AbortHandle,
}

/// The open connections, to pick one to close when the limit is reached.
#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Open>,
}

impl Table {
    /// Closes the connection idle longest, if it has been idle at least
    /// [`MIN_IDLE`] (a connection just opened is still sending its first
    /// request); false when there is none.
    fn evict_idlest(&mut self, now_ms: u64) -> bool {
        let victim = self
            .open
            .iter()
            .filter(|(_, c)| c.activity.in_flight.load(Ordering::SeqCst) == 0)
            .map(|(id, c)| (*id, c.activity.last.load(Ordering::SeqCst)))
            .filter(|(_, last)| now_ms.saturating_sub(*last) >= MIN_IDLE.as_millis() as u64)
            .min_by_key(|(_, last)| *last)
            .map(|(id, _)| id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(c) => {
                c.abort.abort();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `stopped` turns true, then waits (up
/// to 30 s) for the connections in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let table = Arc::new(Mutex::new(Table::default()));
    let epoch = Instant::now();
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let (stream, peer): (_, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let evicted = table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .evict_idlest(epoch.elapsed().as_millis() as u64);
                let freed = if evicted {
                    metrics::counter!("autodep_connections_evicted_total").increment(1);
                    tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                match freed {
                    Some(p) => p,
                    None => {
                        metrics::counter!("autodep_connections_refused_total").increment(1);
                        tracing::debug!(%peer, "every connection is busy; closing");
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(epoch.elapsed().as_millis() as u64),
        });
        let (started, ended) = (activity.clone(), activity.clone());
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request(move |request| {
                    started.in_flight.fetch_add(1, Ordering::SeqCst);
                    started
                        .last
                        .store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
                    request
                })
                .map_response(move |response| {
                    ended.in_flight.fetch_sub(1, Ordering::SeqCst);
                    ended
                        .last
                        .store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
                    response
                })
                .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
                .service(router.clone()),
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let mut open = table.lock().unwrap_or_else(|p| p.into_inner());
        let id = open.next_id;
        open.next_id += 1;
        let forget = table.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            forget
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open
                .remove(&id);
            drop(permit);
        });
        open.open.insert(
            id,
            Open {
                activity,
                abort: task.abort_handle(),
            },
        );
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            tracing::warn!("connections still open after 30 s; closing them");
        }
    }
}
