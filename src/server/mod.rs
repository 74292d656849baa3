//! The webhook server: GitLab calls `/webhook`; a successful pipeline on a
//! project's default branch starts a cascade over everything built on it,
//! which the hooks of the pipelines we create advance, each project once,
//! after all its upstreams.
//!
//! Handlers only validate, persist and enqueue; the worker talks to GitLab.
//! The graph is loaded from the store at start (serving at once), rescanned
//! every refresh interval, and patched by push events in between.
//!
//! On PostgreSQL any number of replicas share one database: each accepts
//! webhooks and claims work; the leader (an advisory lock) alone rescans,
//! reconciles, sweeps and checks digests; a replica whose graph another
//! one changed reloads it from the database when told (`NOTIFY`).

mod cascades;
mod html;
mod listener;
mod picture;
mod status;
mod tasks;
mod views;
mod watcher;
pub mod webhook;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{watch, Notify};
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::gitlab::GitLab;
use crate::graph::DependencyGraph;
use crate::image::Registry;
use crate::scan::{self, ScannedProject};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub webhook_token: Option<String>,
    pub state_dir: PathBuf,
    pub refresh_interval: Duration,
    pub max_body_bytes: usize,
    /// Pipelines created at once by the worker.
    pub trigger_parallelism: usize,
    /// First delay before retrying a trigger GitLab did not accept; doubles
    /// per attempt up to ten minutes.
    pub retry_delay: Duration,
    /// Attempts at one event before it is parked.
    pub max_event_attempts: u32,
    pub match_keyword: Option<String>,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Webhook requests handled at once; more wait for a slot.
    pub max_concurrent_requests: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Serve `/`, `/status.json` and `/metrics` here instead of on `listen`.
    pub status_listen: Option<SocketAddr>,
    /// A bearer token the status surfaces require.
    pub status_token: Option<String>,
    /// Finished events and triggers older than this are deleted.
    pub retention: Duration,
    /// A `manual` pipeline counts as a success in a cascade.
    pub accept_manual: bool,
    /// A cascade's pipeline whose hook has not come after this is polled.
    pub reconcile_interval: Duration,
    /// Pipelines started by the server that may run at once, across all
    /// cascades; the rest wait, shallowest first.
    pub max_running: usize,
    /// A cascade still running after this is closed, with the reason.
    pub cascade_timeout: Duration,
    /// How scans read (API, Dockerfile paths, size cap); its search and
    /// registry host come from `match_keyword` and the registry.
    pub scan: scan::ScanOptions,
    /// Check external images for a new digest this often.
    pub watch_external: Option<Duration>,
    /// The platforms built for: an update of another changes nothing.
    pub platforms: Vec<crate::registry::Platform>,
    /// An outside success starts a cascade only when an image tag others
    /// build on got a new digest.
    pub only_if_digest_changed: bool,
    /// Credentials per registry host (GitLab's: the GitLab token).
    pub registry_credentials: std::collections::HashMap<String, crate::registry::Credentials>,
    /// Where state is kept: SQLite under `state_dir` unless told otherwise.
    pub database: crate::store::Database,
    /// How long a replica's claim on work lasts without its heartbeat.
    pub lease: Duration,
    /// How the other replicas may reach this one (shown on the status
    /// page); the listen address when not given.
    pub advertise: Option<String>,
}

impl ServerConfig {
    /// Defaults for everything but where to listen, the secret and the state.
    pub fn new(listen: SocketAddr, webhook_token: Option<String>, state_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            webhook_token,
            state_dir,
            refresh_interval: Duration::from_secs(3600),
            max_body_bytes: 4 * 1024 * 1024,
            trigger_parallelism: 8,
            retry_delay: Duration::from_secs(5),
            max_event_attempts: 8,
            match_keyword: None,
            max_connections: 512,
            max_concurrent_requests: 64,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            status_listen: None,
            status_token: None,
            retention: Duration::from_secs(30 * 86_400),
            accept_manual: false,
            reconcile_interval: Duration::from_secs(60),
            max_running: 20,
            cascade_timeout: Duration::from_secs(24 * 3600),
            scan: scan::ScanOptions::new(""),
            watch_external: None,
            platforms: vec![crate::registry::Platform::parse("linux/amd64").expect("a platform")],
            only_if_digest_changed: false,
            registry_credentials: Default::default(),
            database: Default::default(),
            lease: crate::store::DEFAULT_LEASE,
            advertise: None,
        }
    }
}

/// The graph and the scan it was built from, replaced as a whole.
pub struct GraphView {
    pub projects: BTreeMap<u64, ScannedProject>,
    pub graph: DependencyGraph,
    pub built_at: time::OffsetDateTime,
}

impl GraphView {
    fn new(projects: BTreeMap<u64, ScannedProject>, registry: &Registry) -> GraphView {
        let list: Vec<ScannedProject> = projects.values().cloned().collect();
        GraphView {
            graph: DependencyGraph::from_projects(&list, registry),
            projects,
            built_at: time::OffsetDateTime::now_utc(),
        }
    }
}

pub struct AppState {
    pub store: Store,
    pub gitlab: GitLab,
    pub registry: Registry,
    /// Reads image digests (`--watch-external`, `--only-if-digest-changed`).
    pub registry_client: crate::registry::RegistryClient,
    pub config: ServerConfig,
    pub webhook_token: Option<String>,
    graph: RwLock<Arc<GraphView>>,
    /// Held while a new graph is made from the current one (a push patch,
    /// a finished rescan), so neither overwrites the other.
    graph_writer: Mutex<()>,
    /// Full rescans finished since start.
    rescans: std::sync::atomic::AtomicU64,
    ready: AtomicBool,
    /// Supervised tasks (worker, refresher) that are down, restarting.
    tasks_down: AtomicUsize,
    accept_queue: webhook::AcceptQueue,
    /// Wakes the worker when an event was accepted.
    wake: Notify,
    ignored: Mutex<VecDeque<(String, String)>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    started: Instant,
    /// Whether this replica leads (always, with SQLite) and reaches the
    /// database, as its heartbeat last found.
    replica: crate::store::ReplicaFlags,
}

impl AppState {
    pub fn graph(&self) -> Arc<GraphView> {
        self.graph.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_graph(&self, view: GraphView) {
        metrics::gauge!("autodep_graph_projects").set(view.graph.project_count() as f64);
        metrics::gauge!("autodep_graph_edges").set(view.graph.edge_count() as f64);
        *self.graph.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        self.ready.store(true, Ordering::SeqCst);
    }

    /// A graph is loaded, no supervised task is down and the database
    /// answers.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self.tasks_down.load(Ordering::SeqCst) == 0
            && self.database_ok()
    }

    /// Whether this replica holds the leader's role.
    pub fn is_leader(&self) -> bool {
        self.replica.leader.load(Ordering::SeqCst)
    }

    /// The database answered this replica's last heartbeat.
    pub fn database_ok(&self) -> bool {
        self.replica.database_ok.load(Ordering::SeqCst)
    }

    /// A graph is loaded (the refresher's own test: it must not wait on
    /// itself being up).
    fn has_graph(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn remember_ignored(&self, reason: &str) {
        let mut q = self.ignored.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= 50 {
            q.pop_front();
        }
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let reason = crate::printable::one_line(reason);
        let reason: String = reason.chars().take(300).collect();
        q.push_back((now, reason));
    }

    /// Replaces one project's entry (after a push) and rebuilds the graph,
    /// unless the graph holds a newer read of it. Blocking.
    pub fn patch_project(&self, project: ScannedProject) {
        let _writer = self.graph_writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.graph();
        if let Some(known) = current.projects.get(&project.project.id) {
            if !project.is_newer_than(known) {
                return;
            }
        }
        let mut projects = current.projects.clone();
        projects.insert(project.project.id, project);
        self.set_graph(GraphView::new(projects, &self.registry));
    }

    /// Replaces the graph with the stored one: another replica changed it.
    /// Blocking.
    fn reload_graph(&self) {
        let _writer = self.graph_writer.lock().unwrap_or_else(|p| p.into_inner());
        match self.store.load_projects() {
            Ok(Some(projects)) => {
                let map = projects.into_iter().map(|p| (p.project.id, p)).collect();
                self.set_graph(GraphView::new(map, &self.registry));
                metrics::counter!("autodep_graph_reloads_total").increment(1);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot reload the graph another replica changed: {e}"),
        }
    }

    /// Lays a finished rescan over the graph (newer reads win). Blocking.
    fn apply_scan(&self, scanned: Vec<ScannedProject>, started_at: i64) {
        let _writer = self.graph_writer.lock().unwrap_or_else(|p| p.into_inner());
        let merged = scan::merge_scan(&self.graph().projects, scanned, started_at);
        self.set_graph(GraphView::new(merged, &self.registry));
    }

    /// Whether a change to this file of this project can change the graph.
    pub fn watches(&self, project_id: u64, path: &str) -> bool {
        if path == crate::config::CONFIG_FILE {
            return true;
        }
        let view = self.graph();
        let own = view
            .projects
            .get(&project_id)
            .and_then(|p| p.config.as_ref());
        scan::dockerfiles_of(own, &self.config.scan)
            .iter()
            .any(|d| d == path)
    }

    /// How this server scans.
    pub fn scan_options(&self) -> scan::ScanOptions {
        let mut opts = self.config.scan.clone();
        opts.search = self.config.match_keyword.clone();
        opts.registry_host = self.registry.primary().to_string();
        opts
    }

    /// A full scan; keeps the old graph when it fails.
    pub async fn refresh(self: &Arc<Self>) -> anyhow::Result<()> {
        let started = Instant::now();
        let started_at = scan::now_millis();
        let scan = scan::scan(
            &self.gitlab,
            &self.scan_options(),
            Arc::new(scan::NoProgress),
        )
        .await
        .context("full rescan failed")?;
        metrics::gauge!("autodep_scan_duration_seconds").set(started.elapsed().as_secs_f64());
        let store = self.store.clone();
        let projects = scan.projects.clone();
        tokio::task::spawn_blocking(move || store.save_projects(&projects, started_at)).await??;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_scan(scan.projects, started_at)).await?;
        self.rescans.fetch_add(1, Ordering::SeqCst);
        metrics::counter!("autodep_rescans_total").increment(1);
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            requests = scan.requests,
            "graph rescanned"
        );
        Ok(())
    }
}

/// Where state lives when `--state-dir` is not given.
pub fn default_state_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("STATE_DIRECTORY") {
        return dir;
    }
    if let Some(dir) = env("XDG_STATE_HOME") {
        return dir.join("gitlab-docker-autodep");
    }
    match env("HOME") {
        Some(home) => home.join(".local/state/gitlab-docker-autodep"),
        None => PathBuf::from("gitlab-docker-autodep-state"),
    }
}

/// `/webhook` and the health checks, plus the status surfaces unless they
/// have a listener of their own.
pub fn router(app: Arc<AppState>) -> Router {
    let webhook = post(webhook::handle).layer(GlobalConcurrencyLimitLayer::new(
        app.config.max_concurrent_requests.max(1),
    ));
    let router = Router::new()
        .route("/webhook", webhook)
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz));
    let router = if app.config.status_listen.is_none() {
        router.merge(status_router(app.clone()))
    } else {
        router
    };
    router.with_state(app)
}

/// `/`, `/status.json`, `/metrics` and the pages of `views`: project paths, pipeline URLs and GitLab's
/// error texts, so guarded (see [`status::guard`]).
fn status_router(app: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/metrics", get(status::metrics))
        .route("/", get(status::page))
        .route("/status.json", get(status::json))
        .route("/cascades/{id}", get(views::cascade))
        .route("/projects", get(views::find))
        .route("/projects/{id}", get(views::project))
        .layer(axum::middleware::from_fn_with_state(app, status::guard))
}

/// A running server, for tests and the demo.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub app: Arc<AppState>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight triggers finish, and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.done.await?
    }
}

/// Opens the store, loads the graph, binds, and starts serving and working.
pub async fn start(
    gitlab: GitLab,
    registry: Registry,
    config: ServerConfig,
) -> anyhow::Result<RunningServer> {
    let (store, writer_store) = {
        let (db, dir, lease) = (
            config.database.clone(),
            config.state_dir.clone(),
            config.lease,
        );
        tokio::task::spawn_blocking(move || {
            let store = Store::connect(&db, &dir, lease)?;
            let writer = store.own_connection()?;
            Ok::<_, crate::store::StoreError>((store, writer))
        })
        .await??
    };
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // Only the first server in a process owns the global recorder (tests and
    // the demo may start more); the others still render their own handle.
    let _ = metrics::set_global_recorder(recorder);
    let app = Arc::new(AppState {
        accept_queue: webhook::spawn_writer(writer_store),
        store: store.clone(),
        gitlab,
        webhook_token: config.webhook_token.clone(),
        graph: RwLock::new(Arc::new(GraphView::new(BTreeMap::new(), &registry))),
        graph_writer: Mutex::new(()),
        rescans: Default::default(),
        registry_client: crate::registry::RegistryClient::new(config.registry_credentials.clone()),
        registry,
        ready: AtomicBool::new(false),
        tasks_down: AtomicUsize::new(0),
        wake: Notify::new(),
        ignored: Mutex::default(),
        metrics: handle,
        started: Instant::now(),
        replica: Default::default(),
        config,
    });
    if let Some(projects) = tokio::task::spawn_blocking(move || store.load_projects()).await?? {
        let count = projects.len();
        let map = projects.into_iter().map(|p| (p.project.id, p)).collect();
        app.set_graph(GraphView::new(map, &app.registry));
        tracing::info!(projects = count, "graph loaded from the state store");
    }
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another server running there?",
                app.config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let advertise = app.config.advertise.clone().unwrap_or(addr.to_string());
    let mut replica = app.store.start_replica(&advertise, app.replica.clone());
    if let Some(notices) = replica.notices.take() {
        tokio::spawn(tasks::hear_replicas(app.clone(), notices));
    }

    let refresher = tokio::spawn(tasks::supervise(
        "refresher",
        app.clone(),
        stopped.clone(),
        tasks::refresh_loop,
    ));
    let worker = tokio::spawn(tasks::supervise(
        "worker",
        app.clone(),
        stopped.clone(),
        worker::run,
    ));
    let watcher = tokio::spawn(tasks::supervise(
        "watcher",
        app.clone(),
        stopped.clone(),
        watcher::run,
    ));
    let limits = listener::Limits {
        max_connections: app.config.max_connections,
        header_read_timeout: app.config.header_read_timeout,
        body_read_timeout: app.config.body_read_timeout,
    };
    let status_server = match app.config.status_listen {
        Some(at) => {
            let status_listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on --status-listen {at}"))?;
            tracing::info!(addr = %status_listener.local_addr()?, "status pages listening");
            let routes = status_router(app.clone()).with_state(app.clone());
            Some(tokio::spawn(listener::serve(
                status_listener,
                routes,
                limits,
                stopped.clone(),
            )))
        }
        None => None,
    };
    let server_app = router(app.clone());
    let server_stop = stopped.clone();
    let done = tokio::spawn(async move {
        listener::serve(listener, server_app, limits, server_stop).await;
        if let Some(status) = status_server {
            let _ = status.await;
        }
        refresher.abort();
        watcher.abort();
        worker.await.context("the worker failed")?;
        // Leases and the leader's role handed back for the others.
        tokio::task::spawn_blocking(move || replica.stop()).await?;
        Ok(())
    });
    if app.config.webhook_token.is_none() {
        tracing::warn!(
            "--insecure-no-webhook-auth: webhooks are not authenticated; anyone who can reach {addr} can make us trigger pipelines"
        );
    }
    tracing::info!(%addr, "webhook server listening");
    println!("listening on http://{addr}");
    Ok(RunningServer {
        addr,
        app,
        stop,
        done,
    })
}

/// Serves until SIGTERM or Ctrl-C, then drains in-flight work and returns.
pub async fn run(gitlab: GitLab, registry: Registry, config: ServerConfig) -> anyhow::Result<()> {
    let server = start(gitlab, registry, config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight triggers");
    server.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
