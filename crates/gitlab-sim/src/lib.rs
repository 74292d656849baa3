//! A GitLab REST API v4 simulator: the ground every test, benchmark and demo
//! of gitlab-docker-autodep stands on.
//!
//! It serves the endpoints the tool (or any GitLab client) uses over real
//! HTTP on loopback, authenticates like GitLab, answers with GitLab's JSON
//! shapes and errors, runs pipelines through their states and delivers
//! Pipeline and Push Hooks, and can inject latency, 5xx, 429 and dropped
//! connections at run time. Everything it saw is readable by tests.

#![recursion_limit = "512"]
// Handlers return `Result<Response, Response>`: an error is already the answer.
#![allow(clippy::result_large_err)]

mod api;
mod auth;
mod control;
pub mod entities;
pub mod faults;
mod graphql;
mod hooks;
mod paging;
pub mod project_hooks;
pub mod registry_auth;
pub mod seed;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;

pub use faults::{FaultKind, FaultRule, Faults, RequestRecord};
pub use hooks::HookDelivery;
pub use seed::{Fixture, ProjectSpec, SyntheticSpec};
pub use world::{Pipeline, PipelineBehaviour, PipelineStatus, TokenScope, Webhook};

use world::World;

/// State shared by the HTTP handlers, the pipeline scheduler and the handle.
pub(crate) struct Shared {
    world: Mutex<World>,
    faults: Mutex<faults::ActiveFaults>,
    requests: Mutex<Vec<RequestRecord>>,
    counters: Mutex<faults::Counters>,
    hook_log: Mutex<Vec<HookDelivery>>,
    base_url: OnceLock<String>,
    registry_host: String,
    http: reqwest::Client,
    started: std::time::Instant,
    /// Answers a `HoldAfter` fault is holding or has held: each was
    /// computed before it was counted.
    held: std::sync::atomic::AtomicU64,
    /// Signs the container registry's tokens (`/jwt/auth`).
    token_signer: registry_auth::TokenSigner,
}

impl Shared {
    fn base_url(&self) -> String {
        self.base_url.get().cloned().unwrap_or_default()
    }
}

/// Builds and starts a simulator.
#[derive(Debug, Clone)]
pub struct SimBuilder {
    listen: SocketAddr,
    registry_host: Option<String>,
    fixture: Fixture,
}

impl Default for SimBuilder {
    fn default() -> Self {
        SimBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            registry_host: None,
            fixture: Fixture::default(),
        }
    }
}

impl SimBuilder {
    pub fn new() -> SimBuilder {
        SimBuilder::default()
    }

    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The registry host images live on; default `registry.` + listen IP,
    /// which is what the tool assumes for a GitLab at that address.
    pub fn registry_host(mut self, host: &str) -> Self {
        self.registry_host = Some(host.to_string());
        self
    }

    pub fn registry(&self) -> String {
        self.registry_host
            .clone()
            .or_else(|| self.fixture.registry.clone())
            .unwrap_or_else(|| format!("registry.{}", self.listen.ip()))
    }

    /// A personal access token with the `api` scope.
    pub fn token(self, token: &str) -> Self {
        self.token_with_scope(token, TokenScope::Api)
    }

    pub fn token_with_scope(mut self, token: &str, scope: TokenScope) -> Self {
        self.fixture.tokens.insert(token.to_string(), scope);
        self
    }

    pub fn job_token(mut self, token: &str) -> Self {
        self.fixture.job_tokens.push(token.to_string());
        self
    }

    pub fn webhook(mut self, url: &str, token: Option<&str>) -> Self {
        self.fixture.webhooks.push(Webhook {
            url: url.to_string(),
            token: token.map(str::to_string),
        });
        self
    }

    pub fn project(mut self, spec: ProjectSpec) -> Self {
        self.fixture.projects.push(spec);
        self
    }

    pub fn projects(mut self, specs: impl IntoIterator<Item = ProjectSpec>) -> Self {
        self.fixture.projects.extend(specs);
        self
    }

    pub fn fixture(mut self, fixture: Fixture) -> Self {
        if fixture.registry.is_some() {
            self.registry_host = fixture.registry.clone();
        }
        self.fixture.tokens.extend(fixture.tokens);
        self.fixture.job_tokens.extend(fixture.job_tokens);
        self.fixture.webhooks.extend(fixture.webhooks);
        self.fixture.projects.extend(fixture.projects);
        self
    }

    /// Binds, seeds and serves in the background of the current runtime.
    pub async fn start(self) -> anyhow::Result<Simulator> {
        let registry_host = self.registry();
        let mut world = World::default();
        let now = time::OffsetDateTime::now_utc();
        for spec in &self.fixture.projects {
            let id = world
                .add_project(
                    &spec.path,
                    &spec.default_branch,
                    spec.all_branches(),
                    spec.archived,
                    &spec.visibility,
                    spec.registry_images(),
                    spec.pipeline.clone(),
                    now,
                )
                .map_err(anyhow::Error::msg)?;
            let project = world.projects.get_mut(&id).expect("just added");
            project.guest = spec.guest;
            project.pipeline_variables_forbidden = spec.forbid_pipeline_variables;
        }
        world.tokens = self.fixture.tokens.into_iter().collect();
        world.job_tokens = self.fixture.job_tokens;
        world.webhooks = self.fixture.webhooks;
        world.token_days_left = 365;
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            faults: Mutex::default(),
            requests: Mutex::default(),
            counters: Mutex::default(),
            hook_log: Mutex::default(),
            base_url: OnceLock::new(),
            registry_host,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(16)
                .build()
                .context("cannot build the webhook HTTP client")?,
            started: std::time::Instant::now(),
            held: Default::default(),
            token_signer: registry_auth::TokenSigner::new()?,
        });
        let _ = shared.base_url.set(format!("http://{addr}"));
        let app = Router::new()
            .merge(api::routes())
            .merge(project_hooks::routes())
            .merge(graphql::routes())
            .merge(registry_auth::routes())
            .merge(control::routes())
            .fallback(api::not_found)
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                faults::middleware,
            ))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Simulator {
            shared,
            addr,
            stop: Some(stop),
            server,
        })
    }
}

/// A running simulator. Dropping it stops the server.
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

impl Simulator {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.shared.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn registry_host(&self) -> &str {
        &self.shared.registry_host
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().expect("log lock").clone()
    }

    pub fn clear_requests(&self) {
        self.shared.requests.lock().expect("log lock").clear();
        self.shared.counters.lock().expect("counters lock").clear();
    }

    /// Requests by `"endpoint status"`, e.g. `"file 200"`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.shared.counters.lock().expect("counters lock").clone()
    }

    /// Every pipeline ever created, oldest first.
    pub fn pipelines(&self) -> Vec<Pipeline> {
        let world = self.shared.world.lock().expect("world lock");
        world.pipelines.values().cloned().collect()
    }

    pub fn hook_deliveries(&self) -> Vec<HookDelivery> {
        self.shared.hook_log.lock().expect("hook log lock").clone()
    }

    /// The certificate a registry must trust (`auth.token.rootcertbundle`)
    /// to accept the tokens of this simulator's `/jwt/auth`.
    pub fn registry_token_cert_pem(&self) -> &str {
        &self.shared.token_signer.cert_pem
    }

    /// How many answers a `HoldAfter` fault has computed and held back.
    pub fn answers_held(&self) -> u64 {
        self.shared.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.lock().expect("faults lock").set(faults);
    }

    pub fn add_webhook(&self, url: &str, token: Option<&str>) {
        self.shared
            .world
            .lock()
            .expect("world lock")
            .webhooks
            .push(Webhook {
                url: url.to_string(),
                token: token.map(str::to_string),
            });
    }

    /// Drops (or, with `false`, delivers again) every hook event of a
    /// project, as GitLab does while its hook is paused or disabled; dropped
    /// deliveries are logged with the error `dropped: hook paused`.
    pub fn pause_hooks(&self, project: &str, paused: bool) {
        let mut world = self.shared.world.lock().expect("world lock");
        if paused {
            world.paused_hooks.insert(project.to_string());
        } else {
            world.paused_hooks.remove(project);
        }
    }

    /// The project's hooks as the hooks API shows them.
    pub fn project_hooks(&self, project: &str) -> Vec<serde_json::Value> {
        let world = self.shared.world.lock().expect("world lock");
        let Some(id) = world.project_by_path(project).map(|p| p.id) else {
            return Vec::new();
        };
        world
            .project_hooks
            .values()
            .filter(|h| h.group.is_none() && h.project_id == id)
            .map(project_hooks::ProjectHook::to_json)
            .collect()
    }

    /// Sets the alert status of every hook of a project, as GitLab does
    /// after failed deliveries (`temporarily_disabled` for an hour).
    pub fn set_hook_alert(&self, project: &str, status: project_hooks::AlertStatus) {
        let mut world = self.shared.world.lock().expect("world lock");
        let Some(id) = world.project_by_path(project).map(|p| p.id) else {
            return;
        };
        let until = (status == project_hooks::AlertStatus::TemporarilyDisabled)
            .then(|| time::OffsetDateTime::now_utc() + time::Duration::hours(1));
        for h in world
            .project_hooks
            .values_mut()
            .filter(|h| h.project_id == id)
        {
            h.alert_status = status;
            h.disabled_until = until;
        }
    }

    /// The group hooks of a group (full path) as the API shows them.
    pub fn group_hooks(&self, group: &str) -> Vec<serde_json::Value> {
        let world = self.shared.world.lock().expect("world lock");
        let group = group.to_lowercase();
        world
            .project_hooks
            .values()
            .filter(|h| h.group.as_deref() == Some(group.as_str()))
            .map(project_hooks::ProjectHook::to_json)
            .collect()
    }

    /// Days until the tokens expire (`/personal_access_tokens/self`).
    pub fn set_token_days_left(&self, days: i64) {
        self.shared
            .world
            .lock()
            .expect("world lock")
            .token_days_left = days;
    }

    pub fn trigger_token(&self, project: &str) -> Option<String> {
        let world = self.shared.world.lock().expect("world lock");
        world
            .project_by_path(project)
            .map(|p| p.trigger_token.clone())
    }

    pub fn set_pipeline_behaviour(
        &self,
        project: &str,
        behaviour: PipelineBehaviour,
    ) -> anyhow::Result<()> {
        let mut world = self.shared.world.lock().expect("world lock");
        let id = world
            .project_by_path(project)
            .map(|p| p.id)
            .with_context(|| format!("no project {project}"))?;
        if let Some(p) = world.projects.get_mut(&id) {
            p.pipeline = behaviour;
        }
        Ok(())
    }

    /// Commits a file, then delivers the Push Hook to every webhook.
    pub async fn commit_file(
        &self,
        project: &str,
        branch: &str,
        path: &str,
        content: &str,
    ) -> anyhow::Result<()> {
        control::commit_and_push(&self.shared, project, branch, path, content)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// Creates a pipeline as a push would (source `push`), scheduled like any other.
    pub fn run_pipeline(&self, project: &str) -> anyhow::Result<u64> {
        let mut world = self.shared.world.lock().expect("world lock");
        let p = world
            .project_by_path(project)
            .with_context(|| format!("no project {project}"))?;
        let (id, branch) = (p.id, p.default_branch.clone());
        let pipeline = world.create_pipeline(
            id,
            &branch,
            "push",
            Vec::new(),
            None,
            time::OffsetDateTime::now_utc(),
        );
        hooks::schedule(self.shared.clone(), pipeline.id);
        Ok(pipeline.id)
    }

    /// Sends a logged delivery again, as GitLab's "Resend request" does:
    /// same body and `Idempotency-Key`, fresh `X-Gitlab-Webhook-UUID`.
    pub async fn resend(&self, delivery: &HookDelivery) -> HookDelivery {
        hooks::send(&self.shared, delivery.clone()).await
    }

    /// Waits until every pipeline has settled, or `timeout` passes.
    /// Returns whether they all settled.
    pub async fn wait_pipelines_settled(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let settled = self.pipelines().iter().all(|p| p.status.is_settled());
            if settled {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
