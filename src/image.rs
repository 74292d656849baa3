//! Image names: parsing references, recognising our GitLab registry, and
//! mapping an image to the project that builds it. Pure: no I/O.
//!
//! Parsing follows the containers ecosystem's reference grammar (`oci-spec`),
//! so `host:5000/a/b:tag@sha256:…` splits the way Docker splits it and
//! `alpine` means `docker.io/library/alpine`.

use std::collections::HashMap;

use oci_spec::distribution::Reference;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, lower-case, with a port when one was written
    /// (`docker.io` when none was).
    pub registry: String,
    /// Repository path below the registry, lower-case (`group/proj/slim`).
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not a valid image reference: {reason}")]
pub struct ImageRefError {
    pub reference: String,
    pub reason: String,
}

impl ImageRef {
    /// Parses a reference. Capitals in the repository path are tolerated and
    /// lower-cased (GitLab shows project paths with capitals; the registry
    /// stores them lower-case).
    pub fn parse(text: &str) -> Result<ImageRef, ImageRefError> {
        let text = text.trim();
        let error = |reason: String| ImageRefError {
            reference: text.to_string(),
            reason,
        };
        let parsed = match Reference::try_from(text) {
            Ok(r) => r,
            Err(first) => Reference::try_from(lowercase_name(text).as_str())
                .map_err(|_| error(first.to_string()))?,
        };
        // `Reference` inserts `latest` when neither tag nor digest is given;
        // keep what was written.
        let written_tag = tag_of(text).map(str::to_string);
        Ok(ImageRef {
            registry: normalise_host(parsed.registry()),
            path: parsed.repository().to_lowercase(),
            tag: written_tag,
            digest: parsed.digest().map(str::to_string),
        })
    }

    /// Pinned by digest: rebuilding its project cannot change what it names.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// `registry/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }
}

/// Splits `name[:tag][@digest]` and returns the tag as written.
fn tag_of(text: &str) -> Option<&str> {
    let name_tag = text.split('@').next().unwrap_or(text);
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    name_tag[last_slash..]
        .find(':')
        .map(|i| &name_tag[last_slash + i + 1..])
}

/// Lower-cases the repository name, leaving tag and digest alone.
fn lowercase_name(text: &str) -> String {
    let (name_tag, digest) = match text.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (text, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].find(':') {
        Some(i) => name_tag.split_at(last_slash + i),
        None => (name_tag, ""),
    };
    let mut out = name.to_lowercase();
    out.push_str(tag);
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    out
}

/// Lower-cases a host and drops an explicit default HTTPS port, so
/// `Registry.Example.com:443` and `registry.example.com` compare equal.
pub fn normalise_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('/').to_lowercase();
    match host.strip_suffix(":443") {
        Some(bare) => bare.to_string(),
        None => host,
    }
}

/// The registry (and its aliases) whose images create dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    hosts: Vec<String>,
}

impl Registry {
    /// The first host is the primary one (used for `CI_REGISTRY`).
    pub fn new<S: AsRef<str>>(hosts: impl IntoIterator<Item = S>) -> Option<Registry> {
        let mut unique: Vec<String> = Vec::new();
        for host in hosts {
            let host = normalise_host(strip_scheme(host.as_ref()));
            if !host.is_empty() && !unique.contains(&host) {
                unique.push(host);
            }
        }
        (!unique.is_empty()).then_some(Registry { hosts: unique })
    }

    /// `registry.` + the GitLab URL's host (the port is not carried over:
    /// the registry is a different service).
    pub fn default_for_gitlab_host(gitlab_host: &str) -> Registry {
        Registry {
            hosts: vec![format!("registry.{}", gitlab_host.to_lowercase())],
        }
    }

    pub fn primary(&self) -> &str {
        &self.hosts[0]
    }

    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    pub fn contains(&self, host: &str) -> bool {
        let host = normalise_host(host);
        self.hosts.contains(&host)
    }
}

fn strip_scheme(host: &str) -> &str {
    host.trim_start_matches("https://")
        .trim_start_matches("http://")
}

/// Finds the project that builds an image: the longest project path
/// (compared lower-case) that is a prefix of the image path at a `/`.
#[derive(Debug, Clone)]
pub struct ProjectIndex<T> {
    by_path: HashMap<String, T>,
}

impl<T> Default for ProjectIndex<T> {
    fn default() -> Self {
        ProjectIndex {
            by_path: HashMap::new(),
        }
    }
}

impl<T> ProjectIndex<T> {
    pub fn insert(&mut self, path_with_namespace: &str, value: T) {
        self.by_path
            .insert(path_with_namespace.to_lowercase(), value);
    }

    pub fn remove(&mut self, path_with_namespace: &str) {
        self.by_path.remove(&path_with_namespace.to_lowercase());
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// The project owning `image_path` (already lower-case, no registry).
    pub fn resolve(&self, image_path: &str) -> Option<&T> {
        let mut candidate = image_path;
        loop {
            if let Some(v) = self.by_path.get(candidate) {
                return Some(v);
            }
            candidate = &candidate[..candidate.rfind('/')?];
        }
    }
}

/// Where an image reference points, from the point of view of one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOwner<T> {
    /// Built by a project of ours.
    Project { project: T, pinned: bool },
    /// On our registry, but no known project owns that path.
    UnknownProject,
    /// Another registry: not ours to rebuild.
    External,
}

/// Classifies a reference against our registry and the known projects.
pub fn owner_of<T: Clone>(
    image: &ImageRef,
    registry: &Registry,
    projects: &ProjectIndex<T>,
) -> ImageOwner<T> {
    if !registry.contains(&image.registry) {
        return ImageOwner::External;
    }
    match projects.resolve(&image.path) {
        Some(project) => ImageOwner::Project {
            project: project.clone(),
            pinned: image.is_pinned(),
        },
        None => ImageOwner::UnknownProject,
    }
}

#[cfg(test)]
mod tests;
