//! The one module that talks HTTP to GitLab: a thin typed client with
//! timeouts, bounded concurrency, retries with backoff on 5xx and network
//! errors, `Retry-After` on 429, and errors that say what to do. The
//! transport is here; `rest.rs` has the endpoints, `wire.rs` GitLab's JSON
//! as the tool reads it, `error.rs` what can go wrong.

mod admin;
mod error;
mod graphql;
mod rest;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

pub use admin::{Hook, HookOwner, RegistryRepository, TokenInfo};
use error::error_message;
pub use error::GitLabError;
pub use graphql::{Blob, GraphQlPage, GraphQlProject};
pub use wire::{FileContent, Pipeline, Project};

/// Path segments: everything but RFC 3986 unreserved characters is encoded,
/// so `group/proj` becomes `group%2Fproj` as GitLab requires.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// How the tool authenticates.
#[derive(Clone)]
pub enum Credential {
    /// Personal, project or group access token (`PRIVATE-TOKEN`).
    Token(String),
    /// `CI_JOB_TOKEN` of the running job: reads allowed files, and triggers
    /// pipelines through the trigger API as multi-project pipelines.
    JobToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(…)"),
            Credential::JobToken(_) => f.write_str("JobToken(…)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// GitLab's base URL, e.g. `https://gitlab.example.com` (a path prefix
    /// such as `/gitlab` is kept).
    pub url: reqwest::Url,
    pub credential: Credential,
    /// Extra CA certificate (PEM) for a private CA.
    pub ca_cert: Option<Vec<u8>>,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub timeout: Duration,
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// First backoff; doubles each retry, with jitter.
    pub backoff: Duration,
    /// Longest wait this client accepts from `Retry-After`.
    pub max_retry_after: Duration,
    /// Largest API answer read; a longer one is an error, not read further.
    pub max_response_bytes: usize,
    /// Largest repository file read (a Dockerfile); a longer one is
    /// reported as [`GitLabError::TooLarge`] without being downloaded.
    pub max_file_bytes: usize,
}

impl ClientConfig {
    pub fn new(url: reqwest::Url, credential: Credential) -> ClientConfig {
        ClientConfig {
            url,
            credential,
            ca_cert: None,
            concurrency: 16,
            timeout: Duration::from_secs(30),
            attempts: 6,
            backoff: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(120),
            max_response_bytes: 64 << 20,
            max_file_bytes: 1 << 20,
        }
    }
}

/// Request counts, for reports, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct ApiStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub server_errors: AtomicU64,
    pub network_errors: AtomicU64,
}

/// Follows a redirect only within GitLab's own origin (scheme, host and
/// port of `--url`): the token goes nowhere else, and never over plain
/// http when `--url` is https. Otherwise the 3xx is returned as it is, and
/// [`GitLab::send`] reports where GitLab pointed.
fn same_origin_redirects(base: &reqwest::Url) -> reqwest::redirect::Policy {
    let origin = base.origin();
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("more than 10 redirects")
        } else if attempt.url().origin() == origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// An error with its causes, `a: b: c`, so that a TLS or DNS failure says
/// what really went wrong.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Reads a body of at most `limit` bytes (invalid UTF-8 replaced); `None`
/// when it is longer, without reading past the limit.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<String>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }))
}

#[derive(Clone)]
pub struct GitLab {
    http: reqwest::Client,
    api: String,
    credential: Credential,
    limiter: Arc<Semaphore>,
    config: Arc<ClientConfig>,
    stats: Arc<ApiStats>,
    /// Sent as `X-Gitlab-Event-UUID` so GitLab's webhook recursion
    /// detection sees the chain of events.
    event_uuid: Option<String>,
}

/// Where GraphQL queries go, below `/api`.
const GRAPHQL_PATH: &str = "/graphql";

impl GitLab {
    pub fn new(config: ClientConfig) -> Result<GitLab, GitLabError> {
        let mut builder = reqwest::Client::builder()
            .redirect(same_origin_redirects(&config.url))
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(config.concurrency.max(1))
            .user_agent(concat!("gitlab-docker-autodep/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_cert {
            let cert =
                reqwest::Certificate::from_pem(pem).map_err(|e| GitLabError::Unreachable {
                    url: config.url.to_string(),
                    detail: format!("the --ca-cert file is not a PEM certificate ({e})"),
                })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| GitLabError::Unreachable {
            url: config.url.to_string(),
            detail: e.to_string(),
        })?;
        let api = format!("{}/api/v4", config.url.as_str().trim_end_matches('/'));
        Ok(GitLab {
            http,
            api,
            credential: config.credential.clone(),
            limiter: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config: Arc::new(config),
            stats: Arc::default(),
            event_uuid: None,
        })
    }

    /// The same client, sending `X-Gitlab-Event-UUID` with every request.
    pub fn with_event_uuid(&self, uuid: Option<String>) -> GitLab {
        GitLab {
            event_uuid: uuid,
            ..self.clone()
        }
    }

    pub fn stats(&self) -> &ApiStats {
        &self.stats
    }

    /// Attempts per request, the first included.
    pub fn attempts(&self) -> u32 {
        self.config.attempts.max(1)
    }

    /// The pause before attempt `attempt + 1` when GitLab said nothing.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        self.retry_wait(attempt, &HeaderMap::new())
    }

    pub fn base_url(&self) -> &reqwest::Url {
        &self.config.url
    }

    /// One request with retries. `path` is below `/api/v4`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        limit: usize,
    ) -> Result<(HeaderMap, String), GitLabError> {
        let url = format!("{}{path}", self.api);
        // A POST creates something (a pipeline, a hook): not idempotent.
        let idempotent = method != Method::POST;
        self.send_to(&url, method, path, query, body, limit, idempotent)
            .await
    }

    /// A GraphQL query: a POST that only reads, so retried like a GET
    /// (but for a timeout).
    async fn post_graphql(
        &self,
        body: &serde_json::Value,
        limit: usize,
    ) -> Result<String, GitLabError> {
        let url = format!("{}/graphql", self.api.trim_end_matches("/v4"));
        let (_, text) = self
            .send_to(
                &url,
                Method::POST,
                GRAPHQL_PATH,
                &[],
                Some(body),
                limit,
                true,
            )
            .await?;
        Ok(text)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_to(
        &self,
        url: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        limit: usize,
        idempotent: bool,
    ) -> Result<(HeaderMap, String), GitLabError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = self
                .limiter
                .acquire()
                .await
                .expect("semaphore never closed");
            let mut request = self.http.request(method.clone(), url).query(query);
            request = match &self.credential {
                Credential::Token(t) => request.header("PRIVATE-TOKEN", t),
                Credential::JobToken(t) => request.header("JOB-TOKEN", t),
            };
            if let Some(uuid) = &self.event_uuid {
                request = request.header("X-Gitlab-Event-UUID", uuid);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match read_body(response, limit).await {
                        Ok(Some(text)) => Ok((status, headers, text)),
                        Ok(None) => {
                            drop(permit);
                            return Err(GitLabError::TooLarge {
                                path: path.to_string(),
                                limit,
                            });
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            drop(permit);
            let last = attempt >= self.config.attempts;
            match outcome {
                Ok((status, headers, text)) if status.is_success() => return Ok((headers, text)),
                Ok((status, headers, _)) if status.is_redirection() => {
                    let to = headers
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("nowhere")
                        .chars()
                        .take(200)
                        .collect();
                    return Err(GitLabError::Redirected {
                        path: path.to_string(),
                        status: status.as_u16(),
                        to,
                    });
                }
                Ok((status, headers, text)) => {
                    // A POST that got a 5xx may have taken effect: the
                    // caller decides (it looks before it posts again).
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && idempotent);
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    } else if status.is_server_error() {
                        self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if retryable && !last {
                        let wait = self.retry_wait(attempt, &headers);
                        tracing::debug!(%status, path, ?wait, attempt, "GitLab asked us to retry");
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(self.status_error(&method, path, status, &text));
                }
                Err(e) => {
                    self.stats.network_errors.fetch_add(1, Ordering::Relaxed);
                    // A GraphQL page that times out is too big for GitLab
                    // to answer in time: asking the same again only waits
                    // again; the scan asks for a smaller page instead.
                    let graphql_timeout = path == GRAPHQL_PATH && e.is_timeout();
                    if (!idempotent && !e.is_connect()) || graphql_timeout {
                        return Err(GitLabError::NoAnswer {
                            path: path.to_string(),
                            detail: with_causes(&e),
                        });
                    }
                    if !last {
                        let wait = self.retry_wait(attempt, &HeaderMap::new());
                        tracing::debug!(error = %e, path, ?wait, attempt, "network error; retrying");
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(GitLabError::Unreachable {
                        url: self.config.url.to_string(),
                        detail: format!("{} (after {attempt} attempts)", with_causes(&e)),
                    });
                }
            }
        }
    }

    /// `Retry-After`, else `RateLimit-Reset`, else exponential backoff
    /// with jitter; never longer than `max_retry_after`.
    fn retry_wait(&self, attempt: u32, headers: &HeaderMap) -> Duration {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let told = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .or_else(|| {
                let reset = header("ratelimit-reset")?.trim().parse::<i64>().ok()?;
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                Some(Duration::from_secs(reset.saturating_sub(now).max(0) as u64))
            });
        let wait = match told {
            Some(d) => d,
            None => {
                let base = self
                    .config
                    .backoff
                    .saturating_mul(1 << (attempt - 1).min(10))
                    .min(Duration::from_secs(30));
                let jitter = rand::rng().random_range(0.5..1.5);
                base.mul_f64(jitter)
            }
        };
        wait.min(self.config.max_retry_after)
    }

    fn status_error(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        body: &str,
    ) -> GitLabError {
        let message = error_message(body);
        let method = method.to_string();
        let path = path.to_string();
        match status.as_u16() {
            401 => GitLabError::Unauthorized {
                status: 401,
                message,
            },
            403 if message.contains("insufficient_scope") => GitLabError::Unauthorized {
                status: 403,
                message,
            },
            403 => GitLabError::Forbidden {
                method,
                path,
                status: 403,
                message,
            },
            404 => GitLabError::NotFound { path, message },
            s => GitLabError::Status {
                method,
                path,
                status: s,
                message,
            },
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(HeaderMap, T), GitLabError> {
        let (headers, text) = self
            .send(
                Method::GET,
                path,
                query,
                None,
                self.config.max_response_bytes,
            )
            .await?;
        let value = serde_json::from_str(&text).map_err(|e| GitLabError::Decode {
            path: path.to_string(),
            detail: e.to_string(),
        })?;
        Ok((headers, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("Group/Sub/My.Proj"), "Group%2FSub%2FMy.Proj");
        assert_eq!(encode_segment("docker/Dockerfile"), "docker%2FDockerfile");
    }
}
