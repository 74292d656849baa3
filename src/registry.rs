//! What an image tag points at now: a client for the OCI distribution API,
//! on the existing HTTP stack (reqwest). `HEAD /v2/<name>/manifests/<tag>`
//! with the four manifest media types, `Docker-Content-Digest` (a `GET`
//! and a sha256 of the body when the header is missing); the bearer-token
//! flow of the `WWW-Authenticate` challenge (anonymous, or with
//! credentials for a host, e.g. GitLab's registry with the GitLab token);
//! and for a multi-platform index, the digest of each platform asked for,
//! so an update of another architecture changes nothing.
//!
//! Not `oci-client`: it would bring its own TLS and auth stack beside
//! reqwest's for four requests; the flow below is the whole of what a
//! digest check needs.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::image::ImageRef;

pub const INDEX_OCI: &str = "application/vnd.oci.image.index.v1+json";
pub const INDEX_DOCKER: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MANIFEST_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest read.
const MAX_MANIFEST: usize = 4 << 20;

/// `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Option<Platform> {
        let mut parts = text.trim().split('/');
        let os = parts.next().filter(|s| !s.is_empty())?.to_string();
        let architecture = parts.next().filter(|s| !s.is_empty())?.to_string();
        let variant = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
        parts.next().is_none().then_some(Platform {
            os,
            architecture,
            variant,
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach the registry {host}: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("the registry {host} refused access to {image} ({status}); give credentials for it, or check the name")]
    Denied {
        host: String,
        image: String,
        status: u16,
    },
    #[error("{image}:{tag} does not exist on {host}")]
    NotFound {
        host: String,
        image: String,
        tag: String,
    },
    #[error("the registry {host} asks to wait (429){}", retry_after.map(|s| format!(", {s} s")).unwrap_or_default())]
    RateLimited {
        host: String,
        retry_after: Option<u64>,
    },
    #[error("the registry {host} answered {status} for {image}")]
    Status {
        host: String,
        image: String,
        status: u16,
    },
    #[error("{image} has no manifest for {platform}")]
    NoPlatform { image: String, platform: String },
    #[error("the registry {host} sent what the distribution API does not describe: {detail}")]
    Decode { host: String, detail: String },
}

/// Where a registry host is reached: loopback over plain HTTP (as Docker
/// treats `localhost` and `127.0.0.0/8` as insecure registries), others
/// over HTTPS; Docker Hub at its API host.
pub fn base_url(host: &str) -> String {
    let plain =
        host.starts_with("localhost") || host.starts_with("127.") || host.starts_with("[::1]");
    let api_host = if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    };
    format!("{}://{api_host}", if plain { "http" } else { "https" })
}

/// The parameters of a `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
/// challenge.
pub fn parse_challenge(header: &str) -> Option<HashMap<String, String>> {
    let rest = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut out = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        out.insert(key.trim().to_lowercase(), value);
    }
    out.contains_key("realm").then_some(out)
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<WirePlatform>,
}

#[derive(Deserialize)]
struct WirePlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// The digest for `platform` in an index: the exact variant when asked,
/// else the first entry of that os and architecture.
pub fn select_platform(index_json: &[u8], platform: &Platform) -> Option<String> {
    let index: Index = serde_json::from_slice(index_json).ok()?;
    let fits = |p: &WirePlatform| p.os == platform.os && p.architecture == platform.architecture;
    index
        .manifests
        .iter()
        .filter(|m| m.platform.as_ref().is_some_and(fits))
        .find(|m| {
            platform.variant.is_none()
                || m.platform.as_ref().and_then(|p| p.variant.as_ref()) == platform.variant.as_ref()
        })
        .map(|m| m.digest.clone())
}

/// Credentials for one registry host (user and password or token).
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, secret: <hidden> }}",
            self.user
        )
    }
}

/// The client: one HTTP stack, bearer tokens cached per host and scope.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    credentials: HashMap<String, Credentials>,
    tokens: std::sync::Arc<std::sync::Mutex<HashMap<(String, String), String>>>,
    /// Hosts that asked to wait (429 with `Retry-After`, or
    /// `RateLimit-Remaining: 0`), until when: not asked before.
    blocked: std::sync::Arc<std::sync::Mutex<HashMap<String, std::time::Instant>>>,
}

/// How long a host that said "no requests left" without saying until
/// when is left alone.
const QUIET_AFTER_LIMIT: Duration = Duration::from_secs(60);

/// What a tag points at for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The platform's own manifest digest (the tag's digest when it is not
    /// an index).
    pub digest: String,
}

impl RegistryClient {
    pub fn new(credentials: HashMap<String, Credentials>) -> RegistryClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("gitlab-docker-autodep/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is compiled in");
        RegistryClient {
            http,
            credentials,
            tokens: Default::default(),
            blocked: Default::default(),
        }
    }

    /// The digest `image` (with its tag, `latest` when none) has now for
    /// each of `platforms`.
    pub async fn digests(
        &self,
        image: &ImageRef,
        platforms: &[Platform],
    ) -> Result<Vec<(Platform, Seen)>, RegistryError> {
        let tag = image.tag.clone().unwrap_or_else(|| "latest".into());
        let (headers, body) = self.manifest(image, &tag, Method::HEAD).await?;
        let media = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let top = match header_digest(&headers) {
            Some(d) => d,
            None => {
                let (_, body) = self.manifest(image, &tag, Method::GET).await?;
                format!("sha256:{:x}", Sha256::digest(&body))
            }
        };
        drop(body);
        if media != INDEX_OCI && media != INDEX_DOCKER {
            return Ok(platforms
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        Seen {
                            digest: top.clone(),
                        },
                    )
                })
                .collect());
        }
        let (_, index) = self.manifest(image, &tag, Method::GET).await?;
        platforms
            .iter()
            .map(|p| match select_platform(&index, p) {
                Some(digest) => Ok((p.clone(), Seen { digest })),
                None => Err(RegistryError::NoPlatform {
                    image: image.name(),
                    platform: p.to_string(),
                }),
            })
            .collect()
    }

    /// One manifest request, through the token flow when challenged.
    async fn manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        method: Method,
    ) -> Result<(HeaderMap, Vec<u8>), RegistryError> {
        let host = image.registry.clone();
        if let Some(wait) = self.blocked_for(&host) {
            return Err(RegistryError::RateLimited {
                host,
                retry_after: Some(wait.as_secs().max(1)),
            });
        }
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            base_url(&host),
            image.path
        );
        let accept = [INDEX_OCI, INDEX_DOCKER, MANIFEST_OCI, MANIFEST_DOCKER].join(", ");
        let scope = format!("repository:{}:pull", image.path);
        let mut token = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(host.clone(), scope.clone()))
            .cloned();
        for attempt in 0..2 {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(ACCEPT, &accept);
            if let Some(t) = &token {
                request = request.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let response = request
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable {
                    host: host.clone(),
                    detail: e.to_string(),
                })?;
            let status = response.status();
            let headers = response.headers().clone();
            match status {
                s if s.is_success() => {
                    // Docker Hub's `RateLimit-Remaining: 0;w=21600`: the
                    // next request would be refused; leave the host alone.
                    let exhausted = headers
                        .get("ratelimit-remaining")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(';').next())
                        .is_some_and(|n| n.trim() == "0");
                    if exhausted {
                        self.block(&host, QUIET_AFTER_LIMIT);
                    }
                    let body = read_capped(response, &host).await?;
                    return Ok((headers, body));
                }
                StatusCode::UNAUTHORIZED if attempt == 0 => {
                    let challenge = headers
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge)
                        .ok_or_else(|| RegistryError::Denied {
                            host: host.clone(),
                            image: image.name(),
                            status: 401,
                        })?;
                    let fresh = self.token(&host, &challenge, &scope).await?;
                    self.tokens
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((host.clone(), scope.clone()), fresh.clone());
                    token = Some(fresh);
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(RegistryError::Denied {
                        host,
                        image: image.name(),
                        status: status.as_u16(),
                    })
                }
                StatusCode::NOT_FOUND => {
                    return Err(RegistryError::NotFound {
                        host,
                        image: image.name(),
                        tag: reference.to_string(),
                    })
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let retry_after: Option<u64> = headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok());
                    let wait = retry_after.map_or(QUIET_AFTER_LIMIT, Duration::from_secs);
                    self.block(&host, wait.min(Duration::from_secs(6 * 3600)));
                    return Err(RegistryError::RateLimited { host, retry_after });
                }
                other => {
                    return Err(RegistryError::Status {
                        host,
                        image: image.name(),
                        status: other.as_u16(),
                    })
                }
            }
        }
        Err(RegistryError::Denied {
            host,
            image: image.name(),
            status: 401,
        })
    }

    fn block(&self, host: &str, wait: Duration) {
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), std::time::Instant::now() + wait);
    }

    /// How long `host` still asked to be left alone.
    fn blocked_for(&self, host: &str) -> Option<Duration> {
        let until = *self
            .blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)?;
        until.checked_duration_since(std::time::Instant::now())
    }

    /// A bearer token from the challenge's realm: anonymous, or with this
    /// host's credentials.
    async fn token(
        &self,
        host: &str,
        challenge: &HashMap<String, String>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let realm = &challenge["realm"];
        let mut query = vec![(
            "scope",
            challenge.get("scope").map_or(scope, |s| s.as_str()),
        )];
        if let Some(service) = challenge.get("service") {
            query.push(("service", service.as_str()));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(c) = self.credentials.get(host) {
            request = request.basic_auth(&c.user, Some(&c.secret));
        }
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                host: host.to_string(),
                detail: format!("token service {realm}: {e}"),
            })?;
        if !response.status().is_success() {
            return Err(RegistryError::Denied {
                host: host.to_string(),
                image: scope.to_string(),
                status: response.status().as_u16(),
            });
        }
        let body = read_capped(response, host).await?;
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| RegistryError::Decode {
            host: host.to_string(),
            detail: format!("token: {e}"),
        })?;
        answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| RegistryError::Decode {
                host: host.to_string(),
                detail: "a token answer without a token".into(),
            })
    }
}

fn header_digest(headers: &HeaderMap) -> Option<String> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|d| d.starts_with("sha256:") && d.len() == 71)
        .map(str::to_string)
}

async fn read_capped(
    mut response: reqwest::Response,
    host: &str,
) -> Result<Vec<u8>, RegistryError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| RegistryError::Unreachable {
            host: host.to_string(),
            detail: e.to_string(),
        })?
    {
        if body.len() + chunk.len() > MAX_MANIFEST {
            return Err(RegistryError::Decode {
                host: host.to_string(),
                detail: format!("an answer over {MAX_MANIFEST} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_as_distribution_writes_them() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "https://auth.docker.io/token");
        assert_eq!(c["service"], "registry.docker.io");
        assert_eq!(c["scope"], "repository:library/alpine:pull");
        assert!(parse_challenge("Basic realm=\"x\"").is_none());
        assert!(parse_challenge("Bearer service=x").is_none());
    }

    #[test]
    fn a_platform_is_picked_out_of_an_index() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"digest":"sha256:aa","platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:bb","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:cc","platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        let p = |t| Platform::parse(t).unwrap();
        assert_eq!(
            select_platform(index, &p("linux/amd64")).as_deref(),
            Some("sha256:aa")
        );
        assert_eq!(
            select_platform(index, &p("linux/arm64")).as_deref(),
            Some("sha256:bb")
        );
        assert_eq!(
            select_platform(index, &p("linux/arm64/v8")).as_deref(),
            Some("sha256:bb")
        );
        assert_eq!(select_platform(index, &p("linux/s390x")), None);
        assert_eq!(Platform::parse("linux"), None);
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
    }

    #[test]
    fn loopback_registries_are_plain_http_and_docker_hub_its_api_host() {
        assert_eq!(base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(base_url("ghcr.io"), "https://ghcr.io");
    }
}
