//! The one module that talks HTTP to GitLab: a thin typed client with
//! timeouts, bounded concurrency, retries with backoff on 5xx and network
//! errors, `Retry-After` on 429, and errors that say what to do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

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

#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    #[error("GitLab rejected the token ({status}: {message}). Check --token, --token-file or GITLAB_TOKEN; the token needs the `api` scope to trigger pipelines (`read_api` is enough for `deps` and `graph`)")]
    Unauthorized { status: u16, message: String },
    #[error("GitLab refused {method} {path} ({status}: {message}); the token's user needs at least the Developer role on that project")]
    Forbidden {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("not found on GitLab: {path} ({message})")]
    NotFound { path: String, message: String },
    #[error("GitLab answered {status} to {method} {path}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach GitLab at {url}: {detail}. Check --url and the network; for a private CA pass --ca-cert")]
    Unreachable { url: String, detail: String },
    #[error("GitLab's answer to {path} was not what the API documents: {detail}")]
    Decode { path: String, detail: String },
    #[error("no answer to {path} after the request was sent ({detail}); it may have taken effect")]
    NoAnswer { path: String, detail: String },
    #[error("{path} is larger than {limit} bytes; not read")]
    TooLarge { path: String, limit: usize },
    #[error("GitLab redirected {path} ({status}) to {to:?}, outside {}; not followed, so the token is not sent there. Check --url (scheme, host and port)", "the --url origin")]
    Redirected {
        path: String,
        status: u16,
        to: String,
    },
}

impl GitLabError {
    /// The token or the connection is wrong: nothing else will work either.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            GitLabError::Unauthorized { .. }
                | GitLabError::Unreachable { .. }
                | GitLabError::Redirected { .. }
        )
    }

    /// The request may or may not have taken effect (a 5xx, or no answer
    /// after it was sent): look before repeating it.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            GitLabError::NoAnswer { .. } => true,
            GitLabError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            GitLabError::Unauthorized { status, .. }
            | GitLabError::Forbidden { status, .. }
            | GitLabError::Status { status, .. } => Some(*status),
            GitLabError::NotFound { .. } => Some(404),
            _ => None,
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

/// A project as the tool needs it (unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: u64,
    pub path_with_namespace: String,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub empty_repo: bool,
    #[serde(default)]
    pub web_url: String,
}

/// GitLab's strings as we keep them: control characters escaped (a
/// hostile or broken answer cannot forge a log line or an output line) and
/// at most 4 KiB.
fn clean(text: &mut String) {
    if text.len() > 4096 || text.chars().any(char::is_control) {
        let mut cleaned = crate::printable::one_line(text).into_owned();
        if cleaned.len() > 4096 {
            let mut end = 4096;
            while !cleaned.is_char_boundary(end) {
                end -= 1;
            }
            cleaned.truncate(end);
        }
        *text = cleaned;
    }
}

impl Project {
    fn cleaned(mut self) -> Project {
        clean(&mut self.path_with_namespace);
        clean(&mut self.web_url);
        if let Some(branch) = &mut self.default_branch {
            clean(branch);
        }
        self
    }
}

impl Pipeline {
    fn cleaned(mut self) -> Pipeline {
        clean(&mut self.status);
        clean(&mut self.git_ref);
        clean(&mut self.web_url);
        clean(&mut self.source);
        self
    }
}

/// A pipeline as the tool needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: u64,
    pub project_id: u64,
    pub status: String,
    #[serde(rename = "ref", default)]
    pub git_ref: String,
    #[serde(default)]
    pub web_url: String,
    /// `push`, `api`, `trigger`, `pipeline`, `web`, …
    #[serde(default)]
    pub source: String,
}

/// A file's text and the blob id that identifies that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    pub text: String,
    pub blob_id: Option<String>,
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

/// Offset pagination is used up to this page (GitLab's own limit is 10,000
/// projects for counted pages; 100 per page).
const OFFSET_PAGES: usize = 100;
/// At most this many keyset pages (10 million projects).
const MAX_KEYSET_PAGES: usize = 100_000;

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

/// GitLab's error bodies: `{"message": …}` or `{"error": …}`, where
/// `message` may be a string or a hash of arrays.
fn error_message(body: &str) -> String {
    let mut message = raw_error_message(body);
    clean(&mut message);
    message
}

fn raw_error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        let text = body.trim();
        return if text.is_empty() {
            "no details".into()
        } else {
            text.chars().take(200).collect()
        };
    };
    let pick = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    let main = value
        .get("message")
        .and_then(pick)
        .or_else(|| value.get("error").and_then(pick))
        .unwrap_or_else(|| value.to_string());
    match value.get("error_description").and_then(|d| d.as_str()) {
        Some(d) => format!("{main}: {d}"),
        None => main,
    }
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
        // Only pipeline creation is a POST here, and it is not idempotent.
        let idempotent = method != Method::POST;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = self
                .limiter
                .acquire()
                .await
                .expect("semaphore never closed");
            let mut request = self.http.request(method.clone(), &url).query(query);
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
                    if !idempotent && !e.is_connect() {
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

    /// Every project the token can see (`search` narrows it like GitLab's
    /// project search), sent page by page to `pages` as pages arrive, so
    /// callers can start on the first page while later ones load. Pages are
    /// fetched in parallel when GitLab reports the total; past offset
    /// pagination's limits, keyset pagination. A project created while
    /// paging may arrive twice: callers de-duplicate by id.
    pub async fn list_projects_paged(
        &self,
        search: Option<&str>,
        pages: tokio::sync::mpsc::UnboundedSender<Vec<Project>>,
    ) -> Result<(), GitLabError> {
        const PER_PAGE: usize = 100;
        let mut query: Vec<(&'static str, String)> = vec![
            ("order_by", "id".into()),
            ("sort", "asc".into()),
            ("per_page", PER_PAGE.to_string()),
        ];
        if let Some(s) = search {
            query.push(("search", s.to_string()));
        }
        let (headers, first): (_, Vec<Project>) = self.get_json("/projects", &query).await?;
        let first: Vec<Project> = first.into_iter().map(Project::cleaned).collect();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let total_pages = header("x-total-pages").and_then(|v| v.parse::<usize>().ok());
        let has_next = header("x-next-page").is_some_and(|v| !v.is_empty());
        let mut last = first.iter().map(|p| p.id).max().unwrap_or(0);
        let _ = pages.send(first);
        if !has_next {
            return Ok(());
        }
        // GitLab counts pages only up to 10,000 projects; a larger or absurd
        // `X-Total-Pages` (a broken or hostile answer) is not believed.
        match total_pages.filter(|t| (2..=OFFSET_PAGES).contains(t)) {
            Some(total) => {
                // Pages in flight are bounded by the client's concurrency.
                let mut tasks = tokio::task::JoinSet::new();
                let mut next = 2;
                loop {
                    while next <= total && tasks.len() < self.config.concurrency.max(1) {
                        let client = self.clone();
                        let mut q = query.clone();
                        q.push(("page", next.to_string()));
                        tasks.spawn(async move {
                            client
                                .get_json::<Vec<Project>>("/projects", &q)
                                .await
                                .map(|(_, p)| p.into_iter().map(Project::cleaned).collect())
                        });
                        next += 1;
                    }
                    let Some(result) = tasks.join_next().await else {
                        break;
                    };
                    let page = result.map_err(|e| GitLabError::Decode {
                        path: "/projects".into(),
                        detail: format!("a page could not be read: {e}"),
                    })??;
                    let _ = pages.send(page);
                }
            }
            None => {
                // Keyset from the last id seen: no offset ceiling, no count.
                // Every page must move forward, and there is a ceiling.
                for _ in 0..MAX_KEYSET_PAGES {
                    let mut q = query.clone();
                    q.push(("pagination", "keyset".into()));
                    q.push(("id_after", last.to_string()));
                    let (_, page): (_, Vec<Project>) = self.get_json("/projects", &q).await?;
                    let page: Vec<Project> = page.into_iter().map(Project::cleaned).collect();
                    let Some(max) = page.iter().map(|p| p.id).max() else {
                        return Ok(());
                    };
                    if max <= last {
                        return Err(GitLabError::Decode {
                            path: "/projects".into(),
                            detail: format!(
                                "keyset pagination made no progress (a page after id {last} ended at id {max})"
                            ),
                        });
                    }
                    let full = page.len() >= PER_PAGE;
                    let _ = pages.send(page);
                    last = max;
                    if !full {
                        return Ok(());
                    }
                }
                return Err(GitLabError::Decode {
                    path: "/projects".into(),
                    detail: format!(
                        "more than {MAX_KEYSET_PAGES} pages of projects; narrow the scan with --match"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Every project the token can see, sorted by id, without duplicates.
    pub async fn list_projects(&self, search: Option<&str>) -> Result<Vec<Project>, GitLabError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        self.list_projects_paged(search, tx).await?;
        let mut projects = Vec::new();
        while let Ok(page) = rx.try_recv() {
            projects.extend(page);
        }
        projects.sort_by_key(|p| p.id);
        projects.dedup_by_key(|p| p.id);
        Ok(projects)
    }

    pub async fn project(&self, id_or_path: &str) -> Result<Project, GitLabError> {
        let path = format!("/projects/{}", encode_segment(id_or_path));
        Ok(self.get_json::<Project>(&path, &[]).await?.1.cleaned())
    }

    /// A file's text on a ref; `None` when the ref or the file does not exist.
    pub async fn file(
        &self,
        project_id: u64,
        file_path: &str,
        git_ref: &str,
    ) -> Result<Option<FileContent>, GitLabError> {
        let path = format!(
            "/projects/{project_id}/repository/files/{}/raw",
            encode_segment(file_path)
        );
        match self
            .send(
                Method::GET,
                &path,
                &[("ref", git_ref.to_string())],
                None,
                self.config.max_file_bytes,
            )
            .await
        {
            Ok((headers, text)) => Ok(Some(FileContent {
                text,
                blob_id: headers
                    .get("x-gitlab-blob-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            })),
            Err(GitLabError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a pipeline on `git_ref`. With a job token this goes through
    /// the trigger API, which makes it a multi-project (downstream) pipeline.
    pub async fn create_pipeline(
        &self,
        project_id: u64,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Pipeline, GitLabError> {
        let (path, body) = match &self.credential {
            Credential::Token(_) => (
                format!("/projects/{project_id}/pipeline"),
                serde_json::json!({
                    "ref": git_ref,
                    "variables": variables.iter().map(|(k, v)| serde_json::json!({"key": k, "value": v})).collect::<Vec<_>>(),
                }),
            ),
            Credential::JobToken(token) => (
                format!("/projects/{project_id}/trigger/pipeline"),
                serde_json::json!({
                    "token": token,
                    "ref": git_ref,
                    "variables": variables
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect::<serde_json::Map<_, _>>(),
                }),
            ),
        };
        let body = match body {
            serde_json::Value::Object(mut map) if variables.is_empty() => {
                map.remove("variables");
                serde_json::Value::Object(map)
            }
            other => other,
        };
        let (_, text) = self
            .send(
                Method::POST,
                &path,
                &[],
                Some(&body),
                self.config.max_response_bytes,
            )
            .await?;
        serde_json::from_str::<Pipeline>(&text)
            .map(Pipeline::cleaned)
            .map_err(|e| GitLabError::Decode {
                path,
                detail: e.to_string(),
            })
    }

    /// Pipelines of a project on `git_ref` updated after `since`, newest
    /// first (one page of 20).
    pub async fn recent_pipelines(
        &self,
        project_id: u64,
        git_ref: &str,
        since: time::OffsetDateTime,
    ) -> Result<Vec<Pipeline>, GitLabError> {
        let path = format!("/projects/{project_id}/pipelines");
        let since = since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let query = [
            ("ref", git_ref.to_string()),
            ("updated_after", since),
            ("order_by", "id".to_string()),
            ("sort", "desc".to_string()),
            ("per_page", "20".to_string()),
        ];
        let (_, list) = self.get_json::<Vec<Pipeline>>(&path, &query).await?;
        Ok(list.into_iter().map(Pipeline::cleaned).collect())
    }

    /// The variables a pipeline was created with.
    pub async fn pipeline_variables(
        &self,
        project_id: u64,
        pipeline_id: u64,
    ) -> Result<Vec<(String, String)>, GitLabError> {
        #[derive(Deserialize)]
        struct Variable {
            key: String,
            #[serde(default)]
            value: String,
        }
        let path = format!("/projects/{project_id}/pipelines/{pipeline_id}/variables");
        let (_, list) = self.get_json::<Vec<Variable>>(&path, &[]).await?;
        Ok(list.into_iter().map(|v| (v.key, v.value)).collect())
    }

    pub async fn pipeline(
        &self,
        project_id: u64,
        pipeline_id: u64,
    ) -> Result<Pipeline, GitLabError> {
        let path = format!("/projects/{project_id}/pipelines/{pipeline_id}");
        Ok(self.get_json::<Pipeline>(&path, &[]).await?.1.cleaned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_from_both_body_shapes() {
        assert_eq!(
            error_message(r#"{"message":"404 Project Not Found"}"#),
            "404 Project Not Found"
        );
        assert_eq!(
            error_message(r#"{"error":"ref is missing"}"#),
            "ref is missing"
        );
        assert_eq!(
            error_message(r#"{"message":{"base":["Reference not found"]}}"#),
            r#"{"base":["Reference not found"]}"#
        );
        assert_eq!(
            error_message(
                r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges"}"#
            ),
            "insufficient_scope: The request requires higher privileges"
        );
        assert_eq!(error_message("Retry later\n"), "Retry later");
        assert_eq!(error_message(""), "no details");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("Group/Sub/My.Proj"), "Group%2FSub%2FMy.Proj");
        assert_eq!(encode_segment("docker/Dockerfile"), "docker%2FDockerfile");
    }
}
