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
}

/// A free port on loopback (bound, then released for the registry).
fn free_port() -> u16 {
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
        let storage = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
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
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = registry.http.get(registry.url("/v2/")).send().await {
                if r.status().is_success() {
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

    /// Uploads a blob in one PUT; returns its digest.
    pub async fn blob(&self, name: &str, bytes: &[u8]) -> String {
        let digest = sha(bytes);
        let started = self
            .http
            .post(self.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202, "upload start");
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .http
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "upload of {digest}");
        digest
    }

    /// Puts a manifest under a tag (or digest); returns its digest.
    pub async fn manifest(&self, name: &str, reference: &str, media: &str, body: &[u8]) -> String {
        let r = self
            .http
            .put(self.url(&format!("/v2/{name}/manifests/{reference}")))
            .header("content-type", media)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
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
