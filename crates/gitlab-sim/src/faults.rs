//! Fault injection (latency, 5xx, 429, dropped connections), switchable at
//! run time, and the request log and counters every test can read. Both live
//! in one middleware so that what a client saw is what the log says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Shared;

/// Which API a request belongs to, for fault rules and counters.
pub fn endpoint_of(method: &str, path: &str) -> &'static str {
    let p = path.strip_prefix("/api/v4").unwrap_or(path);
    if path.starts_with("/-/sim") {
        return "control";
    }
    if path == "/api/graphql" {
        return "graphql";
    }
    let segments: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (_, ["projects"]) => "projects",
        (_, ["projects", _]) => "project",
        (_, ["projects", _, "repository", "files", _, "raw"]) => "file_raw",
        (_, ["projects", _, "repository", "files", _]) => "file",
        (_, ["projects", _, "repository", "tree"]) => "tree",
        ("POST", ["projects", _, "pipeline"]) => "pipeline_create",
        ("POST", ["projects", _, "trigger", "pipeline"]) => "pipeline_trigger",
        (_, ["projects", _, "pipelines", ..]) => "pipelines",
        (_, ["projects", _, "registry", ..]) => "registry",
        (_, ["projects", _, "hooks", ..]) => "hooks",
        _ => "other",
    }
}

/// What to do to matching requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this 5xx status and GitLab's error body.
    Error { status: u16 },
    /// Rack::Attack throttle: 429, `Retry later`, `Retry-After` and RateLimit-*.
    RateLimit { retry_after_secs: u64 },
    /// Send the headers, then break the connection mid-body.
    Drop,
    /// Let the request take effect (a pipeline is created), then answer
    /// with this 5xx: the answer is lost, the work is done.
    ErrorAfter { status: u16 },
    /// Let the request take effect, then break the connection mid-body.
    DropAfter,
    /// Answer as usual but hold the answer this long after the handler
    /// ran: the client learns, late, what was true when it asked (a read
    /// that races a later write).
    HoldAfter { hold_ms: u64 },
}

/// One fault rule. Applies to requests whose endpoint matches (`*` = all)
/// and whose path contains `path_contains` (when set),
/// with probability `fraction`, at most `count` times, within `for_ms`
/// milliseconds of being set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default = "any_endpoint")]
    pub endpoint: String,
    /// Only requests whose path contains this.
    #[serde(default)]
    pub path_contains: Option<String>,
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(default = "always")]
    pub fraction: f64,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub for_ms: Option<u64>,
}

impl FaultRule {
    /// A rule that always fires on `endpoint` (`*` = all), without limit.
    pub fn new(endpoint: &str, kind: FaultKind) -> FaultRule {
        FaultRule {
            endpoint: endpoint.to_string(),
            path_contains: None,
            kind,
            fraction: 1.0,
            count: None,
            for_ms: None,
        }
    }

    /// Fires on this share of matching requests only.
    pub fn fraction(mut self, fraction: f64) -> Self {
        self.fraction = fraction;
        self
    }

    /// Fires at most `count` times.
    pub fn count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }

    /// Only on requests whose path contains `part`.
    pub fn path_contains(mut self, part: &str) -> Self {
        self.path_contains = Some(part.to_string());
        self
    }
}

fn any_endpoint() -> String {
    "*".into()
}

fn always() -> f64 {
    1.0
}

/// The whole fault configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Added to every API request: uniformly between the two, milliseconds.
    #[serde(default)]
    pub latency_ms: Option<(u64, u64)>,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

#[derive(Debug)]
pub(crate) struct ActiveFaults {
    pub config: Faults,
    pub set_at: Instant,
    pub fired: Vec<u64>,
}

impl Default for ActiveFaults {
    fn default() -> Self {
        ActiveFaults {
            config: Faults::default(),
            set_at: Instant::now(),
            fired: Vec::new(),
        }
    }
}

impl ActiveFaults {
    pub fn set(&mut self, config: Faults) {
        self.fired = vec![0; config.rules.len()];
        self.config = config;
        self.set_at = Instant::now();
    }

    fn pick(&mut self, endpoint: &str, path: &str) -> (Option<Duration>, Option<FaultKind>) {
        let mut rng = rand::rng();
        let latency = self
            .config
            .latency_ms
            .map(|(lo, hi)| Duration::from_millis(rng.random_range(lo..=hi.max(lo))));
        let elapsed = self.set_at.elapsed();
        for (i, rule) in self.config.rules.iter().enumerate() {
            if rule.endpoint != "*" && rule.endpoint != endpoint {
                continue;
            }
            if rule
                .path_contains
                .as_ref()
                .is_some_and(|p| !path.contains(p.as_str()))
            {
                continue;
            }
            if rule
                .for_ms
                .is_some_and(|ms| elapsed > Duration::from_millis(ms))
            {
                continue;
            }
            if rule.count.is_some_and(|c| self.fired[i] >= c) {
                continue;
            }
            if rng.random_bool(rule.fraction.clamp(0.0, 1.0)) {
                self.fired[i] += 1;
                return (latency, Some(rule.kind.clone()));
            }
        }
        (latency, None)
    }
}

/// One request as the simulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub endpoint: &'static str,
    pub status: u16,
    pub elapsed_ms: f64,
    /// When it arrived, in milliseconds since the simulator started.
    pub at_ms: f64,
    /// `X-Gitlab-Event-UUID` the client sent, if any.
    pub event_uuid: Option<String>,
    pub fault: Option<String>,
}

const MAX_LOG: usize = 1_000_000;

pub(crate) async fn middleware(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let endpoint = endpoint_of(&method, &path);
    let event_uuid = request
        .headers()
        .get("x-gitlab-event-uuid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The simulator's own endpoints are neither faulted nor logged.
    if endpoint == "control" {
        return next.run(request).await;
    }
    let (latency, fault) = shared
        .faults
        .lock()
        .expect("faults lock")
        .pick(endpoint, &path);
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    let fault_name = fault.as_ref().map(|f| format!("{f:?}"));
    let response = match fault {
        Some(FaultKind::Error { status }) => server_error(status),
        Some(FaultKind::RateLimit { retry_after_secs }) => rate_limited(retry_after_secs),
        Some(FaultKind::Drop) => dropped(),
        Some(FaultKind::ErrorAfter { status }) => {
            let _ = next.run(request).await;
            server_error(status)
        }
        Some(FaultKind::DropAfter) => {
            let _ = next.run(request).await;
            dropped()
        }
        Some(FaultKind::HoldAfter { hold_ms }) => {
            let response = next.run(request).await;
            shared
                .held
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(hold_ms)).await;
            response
        }
        None => next.run(request).await,
    };
    let record = RequestRecord {
        method,
        path,
        query,
        endpoint,
        status: response.status().as_u16(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        at_ms: started.duration_since(shared.started).as_secs_f64() * 1000.0,
        event_uuid,
        fault: fault_name,
    };
    {
        let mut log = shared.requests.lock().expect("log lock");
        if log.len() < MAX_LOG {
            log.push(record);
        }
    }
    *shared
        .counters
        .lock()
        .expect("counters lock")
        .entry(format!("{endpoint} {}", response.status().as_u16()))
        .or_insert(0) += 1;
    response
}

fn server_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

/// Rack::Attack's throttle answer (see `GITLAB_API.md` §8).
fn rate_limited(retry_after: u64) -> Response {
    let now = time::OffsetDateTime::now_utc();
    let reset = now + time::Duration::seconds(retry_after as i64);
    let mut response = (StatusCode::TOO_MANY_REQUESTS, "Retry later\n").into_response();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("content-type", "text/plain".into());
    set("ratelimit-name", "throttle_authenticated_api".into());
    set("ratelimit-limit", "2000".into());
    set("ratelimit-observed", "2001".into());
    set("ratelimit-remaining", "0".into());
    set("ratelimit-reset", reset.unix_timestamp().to_string());
    set(
        "ratelimit-resettime",
        reset
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default(),
    );
    set("retry-after", retry_after.to_string());
    response
}

/// Headers go out, then the body fails: the client sees a broken connection.
fn dropped() -> Response {
    let stream = futures_stream_error();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("content-length", "1000")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn futures_stream_error(
) -> impl futures_core::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    struct Broken(bool);
    impl futures_core::Stream for Broken {
        type Item = Result<axum::body::Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.0 {
                return std::task::Poll::Ready(None);
            }
            self.0 = true;
            std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated dropped connection",
            ))))
        }
    }
    Broken(false)
}

pub(crate) type Counters = BTreeMap<String, u64>;
