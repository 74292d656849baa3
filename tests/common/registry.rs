//! A real registry for the tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on 127.0.0.1 with a temporary storage
//! directory, and images pushed through its HTTP API: blobs, image
//! manifests, multi-platform indexes.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub struct Registry {
    child: tokio::process::Child,
    _storage: tempfile::TempDir,
    /// `127.0.0.1:PORT`, as image names write it.
    pub host: String,
    http: reqwest::Client,
    /// With token auth: the credentials the pushes get tokens with.
    push_credentials: Option<(String, String)>,
}

/// Token auth as GitLab sets it up: the registry sends clients to GitLab's
/// `/jwt/auth` and trusts the certificate its tokens are signed with.
pub struct TokenAuth {
    pub realm: String,
    pub cert_pem: String,
    /// A token allowed to push, for the test's own uploads.
    pub push_token: String,
}

/// A free port on loopback (bound, then released for the registry).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

impl Registry {
    /// Starts `docker-registry serve` and waits until `/v2/` answers.
    pub async fn start() -> Registry {
        Registry::start_at(free_port(), None).await
    }

    /// Starts it on `port`, with token auth when given.
    pub async fn start_at(port: u16, auth: Option<TokenAuth>) -> Registry {
        let storage = tempfile::tempdir().unwrap();
        let config = storage.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.path().join("data").display()
        );
        let mut push_credentials = None;
        if let Some(auth) = auth {
            let bundle = storage.path().join("token-signer.pem");
            std::fs::write(&bundle, &auth.cert_pem).unwrap();
            text.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: container_registry\n    issuer: gitlab-issuer\n    rootcertbundle: {}\n",
                auth.realm,
                bundle.display()
            ));
            push_credentials = Some(("autodep".to_string(), auth.push_token));
        }
        std::fs::write(&config, text).unwrap();
        let child = tokio::process::Command::new(binary())
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry {
            child,
            _storage: storage,
            host: format!("127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            push_credentials,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = registry.http.get(registry.url("/v2/")).send().await {
                // 401: up, and asking for a token.
                if r.status().is_success() || r.status() == 401 {
                    return registry;
                }
            }
            assert!(Instant::now() < deadline, "the registry did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    /// Sends a request; on a token challenge, gets a token with the push
    /// credentials and sends it again.
    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let again = request.try_clone().expect("a request with a plain body");
        let first = request.send().await.unwrap();
        if first.status() != 401 {
            return first;
        }
        let (user, secret) = self
            .push_credentials
            .clone()
            .expect("the registry asks for a token but no credentials were given");
        let challenge = first.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        let params = gitlab_docker_autodep::registry::parse_challenge(&challenge).unwrap();
        let token: serde_json::Value = self
            .http
            .get(&params["realm"])
            .query(&[
                ("service", params["service"].as_str()),
                ("scope", params["scope"].as_str()),
            ])
            .basic_auth(user, Some(secret))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        again
            .bearer_auth(token["token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
    }

    /// Uploads a blob in one PUT; returns its digest.
    pub async fn blob(&self, name: &str, bytes: &[u8]) -> String {
        let digest = sha(bytes);
        let started = self
            .send(
                self.http
                    .post(self.url(&format!("/v2/{name}/blobs/uploads/"))),
            )
            .await;
        assert_eq!(started.status(), 202, "upload start");
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .send(
                self.http
                    .put(format!("{location}{sep}digest={digest}"))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.to_vec()),
            )
            .await;
        assert_eq!(done.status(), 201, "upload of {digest}");
        digest
    }

    /// Puts a manifest under a tag (or digest); returns its digest.
    pub async fn manifest(&self, name: &str, reference: &str, media: &str, body: &[u8]) -> String {
        let r = self
            .send(
                self.http
                    .put(self.url(&format!("/v2/{name}/manifests/{reference}")))
                    .header("content-type", media)
                    .body(body.to_vec()),
            )
            .await;
        assert_eq!(
            r.status(),
            201,
            "manifest {name}:{reference}: {}",
            r.text().await.unwrap_or_default()
        );
        sha(body)
    }

    /// A single-platform image whose one layer is `content`; returns the
    /// manifest's digest and bytes (not tagged).
    pub async fn image(&self, name: &str, arch: &str, content: &str) -> (String, Vec<u8>) {
        let config = json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}})
            .to_string();
        let config_digest = self.blob(name, config.as_bytes()).await;
        let layer_digest = self.blob(name, content.as_bytes()).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": content.len()}],
        })
        .to_string()
        .into_bytes();
        let digest = self
            .manifest(name, &sha(&manifest), OCI_MANIFEST, &manifest)
            .await;
        (digest, manifest)
    }

    /// Publishes `name:tag` as an index of an amd64 and an arm64 image with
    /// these contents; returns the two platforms' digests.
    pub async fn publish_multi(
        &self,
        name: &str,
        tag: &str,
        amd64: &str,
        arm64: &str,
    ) -> (String, String) {
        let (a, ab) = self.image(name, "amd64", amd64).await;
        let (b, bb) = self.image(name, "arm64", arm64).await;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": a, "size": ab.len(), "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": b, "size": bb.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            ],
        })
        .to_string()
        .into_bytes();
        self.manifest(name, tag, OCI_INDEX, &index).await;
        (a, b)
    }

    /// Publishes `name:tag` as a single amd64 image; returns its digest.
    pub async fn publish(&self, name: &str, tag: &str, content: &str) -> String {
        let (digest, bytes) = self.image(name, "amd64", content).await;
        self.manifest(name, tag, OCI_MANIFEST, &bytes).await;
        digest
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Debian's binary, where `scripts/test` installs it.
pub fn binary() -> PathBuf {
    PathBuf::from("docker-registry")
}
