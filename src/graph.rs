//! The image dependency graph: projects as nodes, "is built on" as edges
//! (upstream → downstream), plus the external images each project uses.
//! Built from a scan, read by `rebuild`, `deps`, `graph` and the server;
//! replaced or patched as a whole, never mutated from two places.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::Serialize;

use crate::config::Trigger;
use crate::image::{owner_of, ImageOwner, ImageRef, ProjectIndex, Registry};
use crate::scan::{DockerfileState, Scan, ScannedProject};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectNode {
    pub id: u64,
    pub path: String,
    pub default_branch: Option<String>,
    pub archived: bool,
    pub web_url: String,
    /// `found`, `missing`, `archived`, `empty_repo`, `failed`.
    pub dockerfile: &'static str,
    /// Its `.autodep.yml`'s `trigger:` (never, or with which ref and
    /// variables).
    #[serde(skip_serializing_if = "Trigger::is_default")]
    pub trigger: Trigger,
}

/// Why one project depends on another: the reference in its Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub image: String,
    pub via: String,
    /// The Dockerfile that says so, relative to the repository root.
    pub file: String,
    pub line: usize,
    /// Pinned by digest: shown, never triggered.
    pub pinned: bool,
}

impl Dependency {
    /// `line 3`, or `docker/Dockerfile.alpine line 3` for a file other
    /// than the root `Dockerfile`.
    pub fn place(&self) -> String {
        if self.file == crate::scan::DOCKERFILE_PATH {
            format!("line {}", self.line)
        } else {
            format!("{} line {}", self.file, self.line)
        }
    }
}

/// Something about a project's references worth telling the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub project: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct DependencyGraph {
    graph: DiGraph<ProjectNode, Dependency>,
    by_id: HashMap<u64, NodeIndex>,
    by_path: ProjectIndex<NodeIndex>,
    /// External image name (`docker.io/library/alpine`) → users.
    external: BTreeMap<String, Vec<(NodeIndex, Dependency)>>,
    registry: Registry,
    notes: Vec<Note>,
    /// Images of other registries that a project's `.autodep.yml` says it
    /// produces, by name.
    produced: HashMap<String, NodeIndex>,
}

/// What `rebuild IMAGE` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Project(NodeIndex),
    /// An image of another registry, by name without tag.
    External(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{0}")]
    InvalidImage(String),
    #[error("no project builds {image}: it is on our registry ({registry}) but no project the token can see has the path {path:?}. Check the image name, or that the token can see that project")]
    UnknownProject {
        image: String,
        registry: String,
        path: String,
    },
    #[error("no scanned project is built on {image}{}. Check the name (tags are ignored); `graph` lists every image in use", closest_text(.closest))]
    Unused { image: String, closest: Vec<String> },
}

fn closest_text(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!("; the closest names that are: {}", closest.join(", "))
    }
}

/// Edit distance (insertions, deletions, substitutions), on at most 256
/// characters of each side.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(256).collect();
    let b: Vec<char> = b.chars().take(256).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (prev + cost).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn state_name(state: &DockerfileState) -> &'static str {
    match state {
        DockerfileState::Found { .. } => "found",
        DockerfileState::Missing => "missing",
        DockerfileState::Archived => "archived",
        DockerfileState::EmptyRepo => "empty_repo",
        DockerfileState::Failed { .. } => "failed",
        DockerfileState::TooLarge { .. } => "too_large",
        DockerfileState::Unreadable { .. } => "unreadable",
    }
}

impl DependencyGraph {
    pub fn build(scan: &Scan, registry: &Registry) -> DependencyGraph {
        Self::from_projects(&scan.projects, registry)
    }

    pub fn from_projects(projects: &[ScannedProject], registry: &Registry) -> DependencyGraph {
        let mut g = DependencyGraph {
            graph: DiGraph::new(),
            by_id: HashMap::new(),
            by_path: ProjectIndex::default(),
            external: BTreeMap::new(),
            registry: registry.clone(),
            notes: Vec::new(),
            produced: HashMap::new(),
        };
        for p in projects {
            let node = g.graph.add_node(ProjectNode {
                id: p.project.id,
                path: p.project.path.clone(),
                default_branch: p.project.default_branch.clone(),
                archived: p.project.archived,
                web_url: p.project.web_url.clone(),
                dockerfile: state_name(&p.dockerfile),
                trigger: p
                    .config
                    .as_ref()
                    .map(|c| c.trigger.clone())
                    .unwrap_or_default(),
            });
            g.by_id.insert(p.project.id, node);
            g.by_path.insert(&p.project.path, node);
        }
        for p in projects {
            if let Some(error) = &p.config_error {
                g.note(&p.project.path, error.clone());
            }
            for image in p.config.iter().flat_map(|c| &c.images) {
                g.produced.insert(image.clone(), g.by_id[&p.project.id]);
            }
        }
        for p in projects {
            g.add_edges_of(p);
            g.add_declared(p);
        }
        g
    }

    /// Adds the edges of one project's Dockerfile.
    fn add_edges_of(&mut self, p: &ScannedProject) {
        let node = self.by_id[&p.project.id];
        let path = &p.project.path;
        let images = match &p.dockerfile {
            DockerfileState::Found { images, .. } => images,
            DockerfileState::Failed { error } => {
                self.note(path, format!("Dockerfile could not be read: {error}"));
                return;
            }
            DockerfileState::TooLarge { limit } => {
                self.note(
                    path,
                    format!(
                        "Dockerfile larger than {limit} bytes (--max-dockerfile-size); skipped"
                    ),
                );
                return;
            }
            DockerfileState::Unreadable { error } => {
                self.note(
                    path,
                    format!("Dockerfile not readable with this token; skipped: {error}"),
                );
                return;
            }
            _ => return,
        };
        for image in images {
            if image.unresolved {
                self.note(path, format!("line {}: {:?} : the image name depends on a variable without a value; cannot tell which image it is", image.line, image.reference));
                continue;
            }
            let dep = Dependency {
                image: image.reference.clone(),
                via: image.via.clone(),
                file: image.file.clone(),
                line: image.line,
                pinned: false,
            };
            self.add_reference(node, path, dep);
        }
    }

    /// The dependencies a project's `.autodep.yml` declares: a project
    /// path, or an image as a `FROM` would name it.
    fn add_declared(&mut self, p: &ScannedProject) {
        let node = self.by_id[&p.project.id];
        for (reference, line) in p.config.iter().flat_map(|c| &c.depends_on) {
            let dep = Dependency {
                image: reference.clone(),
                via: "depends_on".into(),
                file: crate::config::CONFIG_FILE.into(),
                line: *line,
                pinned: false,
            };
            match self.node_by_path(reference.trim_matches('/')) {
                Some(up) if up != node => {
                    self.graph.update_edge(up, node, dep);
                }
                Some(_) => {}
                None => self.add_reference(node, &p.project.path, dep),
            }
        }
    }

    /// One reference of a project: an edge from the project that builds
    /// it, or a use of an external image.
    fn add_reference(&mut self, node: NodeIndex, path: &str, dep: Dependency) {
        let parsed = match ImageRef::parse(&dep.image) {
            Ok(r) => r,
            Err(e) => {
                self.note(path, format!("{}: {e}", dep.place()));
                return;
            }
        };
        let dep = Dependency {
            pinned: parsed.is_pinned(),
            ..dep
        };
        let owner = match self.produced.get(&parsed.name()) {
            Some(project) => ImageOwner::Project {
                project: *project,
                pinned: dep.pinned,
            },
            None => owner_of(&parsed, &self.registry, &self.by_path),
        };
        match owner {
            ImageOwner::Project { project, .. } if project == node => {
                self.note(
                    path,
                    format!(
                        "{}: builds on its own image {}; not a dependency",
                        dep.place(),
                        dep.image
                    ),
                );
            }
            ImageOwner::Project { project, .. } => {
                if dep.pinned {
                    self.note(
                        path,
                        format!(
                            "{}: {} is pinned by digest; a rebuild of its project cannot change it",
                            dep.place(),
                            dep.image
                        ),
                    );
                }
                match self.graph.find_edge(project, node) {
                    // One edge per pair; a triggerable reference wins over a pinned one.
                    Some(e) if self.graph[e].pinned && !dep.pinned => self.graph[e] = dep,
                    Some(_) => {}
                    None => {
                        self.graph.add_edge(project, node, dep);
                    }
                }
            }
            ImageOwner::UnknownProject => {
                // Kept by name: `rebuild` can still find its users when
                // the owning project is outside the scan (`--match`).
                self.note(
                    path,
                    format!(
                        "{}: {} is on our registry but no scanned project owns it",
                        dep.place(),
                        dep.image
                    ),
                );
                self.external
                    .entry(parsed.name())
                    .or_default()
                    .push((node, dep));
            }
            ImageOwner::External => {
                self.external
                    .entry(parsed.name())
                    .or_default()
                    .push((node, dep));
            }
        }
    }

    fn note(&mut self, project: &str, message: String) {
        self.notes.push(Note {
            project: project.to_string(),
            message,
        });
    }

    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn project_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    pub fn node(&self, n: NodeIndex) -> &ProjectNode {
        &self.graph[n]
    }

    pub fn node_by_id(&self, id: u64) -> Option<NodeIndex> {
        self.by_id.get(&id).copied()
    }

    pub fn node_by_path(&self, path: &str) -> Option<NodeIndex> {
        self.by_path
            .resolve(&path.to_lowercase())
            .copied()
            .filter(|n| self.graph[*n].path.eq_ignore_ascii_case(path))
    }

    /// Resolves what `rebuild IMAGE` names: an image of our registry (tag
    /// ignored), a project path, or an external image.
    pub fn target(&self, image: &str) -> Result<Target, TargetError> {
        if let Some(node) = self.node_by_path(image.trim_matches('/')) {
            return Ok(Target::Project(node));
        }
        let parsed =
            ImageRef::parse(image).map_err(|e| TargetError::InvalidImage(e.to_string()))?;
        if let Some(project) = self.produced.get(&parsed.name()) {
            return Ok(Target::Project(*project));
        }
        match owner_of(&parsed, &self.registry, &self.by_path) {
            ImageOwner::Project { project, .. } => Ok(Target::Project(project)),
            ImageOwner::UnknownProject => {
                let name = parsed.name();
                if self.external_users(&name).next().is_some() {
                    Ok(Target::External(name))
                } else {
                    Err(TargetError::UnknownProject {
                        image: image.to_string(),
                        registry: parsed.registry.clone(),
                        path: parsed.path.clone(),
                    })
                }
            }
            ImageOwner::External => {
                let name = parsed.name();
                if self.external_users(&name).next().is_some() {
                    Ok(Target::External(name))
                } else {
                    Err(TargetError::Unused {
                        closest: self.closest_names(&name),
                        image: name,
                    })
                }
            }
        }
    }

    /// Up to three images in use (external, or a project's) whose names are
    /// closest to `name`, for "did you mean".
    fn closest_names(&self, name: &str) -> Vec<String> {
        let projects = self
            .graph
            .node_indices()
            .filter(|n| {
                self.graph
                    .edges_directed(*n, Direction::Outgoing)
                    .next()
                    .is_some()
            })
            .map(|n| {
                format!(
                    "{}/{}",
                    self.registry.primary(),
                    self.graph[n].path.to_lowercase()
                )
            });
        let mut scored: Vec<(usize, String)> = self
            .external
            .keys()
            .cloned()
            .chain(projects)
            .map(|candidate| (edit_distance(name, &candidate), candidate))
            .filter(|(d, _)| *d <= 3.max(name.len() / 4))
            .collect();
        scored.sort();
        scored.into_iter().take(3).map(|(_, c)| c).collect()
    }

    pub fn describe(&self, target: &Target) -> String {
        match target {
            Target::Project(n) => self.graph[*n].path.clone(),
            Target::External(name) => name.clone(),
        }
    }

    /// Projects built directly on `target`, with the reference that says so.
    pub fn dependents(&self, target: &Target) -> Vec<(NodeIndex, Dependency)> {
        match target {
            Target::Project(n) => self
                .graph
                .edges_directed(*n, Direction::Outgoing)
                .map(|e| (e.target(), e.weight().clone()))
                .collect(),
            Target::External(name) => {
                let mut seen = HashSet::new();
                self.external_users(name)
                    .filter(|(n, d)| !d.pinned && seen.insert(*n))
                    .cloned()
                    .collect()
            }
        }
    }

    /// Users of an image by name, or of images below it (`name/slim`).
    fn external_users<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a (NodeIndex, Dependency)> + 'a {
        let below = format!("{name}/");
        self.external
            .range(name.to_string()..)
            .take_while(move |(k, _)| *k == name || k.starts_with(&below))
            .flat_map(|(_, users)| users.iter())
    }

    /// Projects a project builds on (our registry only).
    pub fn upstreams(&self, n: NodeIndex) -> Vec<(NodeIndex, &Dependency)> {
        self.graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.source(), e.weight()))
            .collect()
    }

    pub(crate) fn graph(&self) -> &DiGraph<ProjectNode, Dependency> {
        &self.graph
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.node_indices()
    }

    /// Every cycle (strongly connected set of projects), as paths.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        petgraph::algo::tarjan_scc(&self.graph)
            .into_iter()
            .filter(|scc| scc.len() > 1)
            .map(|scc| {
                let mut paths: Vec<String> =
                    scc.iter().map(|n| self.graph[*n].path.clone()).collect();
                paths.sort();
                paths
            })
            .collect()
    }

    pub fn external_images(&self) -> &BTreeMap<String, Vec<(NodeIndex, Dependency)>> {
        &self.external
    }

    /// Which projects to trigger, and in what order, when `target` was rebuilt.
    pub fn plan(&self, target: &Target, recurse: bool) -> crate::plan::TriggerPlan {
        crate::plan::plan(self, target, recurse)
    }

    /// The plan of an external image's tag: only the projects whose
    /// reference names that tag (`latest` when none is written) start it.
    pub fn plan_for_tag(&self, name: &str, tag: &str, recurse: bool) -> crate::plan::TriggerPlan {
        let target = Target::External(name.to_string());
        crate::plan::plan_where(self, &target, recurse, &|d| {
            tag_of(d).is_some_and(|(n, t)| n == name && t == tag)
        })
    }

    /// The image tags of a project that others build on (as their
    /// references name them, `latest` when no tag is written).
    pub fn produced_tags(&self, n: NodeIndex) -> std::collections::BTreeSet<(String, String)> {
        self.graph
            .edges_directed(n, Direction::Outgoing)
            .filter_map(|e| tag_of(e.weight()))
            .collect()
    }

    /// Every external image tag in use and not pinned: `(name, tag)`.
    pub fn external_tags(&self) -> std::collections::BTreeSet<(String, String)> {
        self.external
            .values()
            .flatten()
            .filter_map(|(_, d)| tag_of(d))
            .collect()
    }
}

/// The `(name, tag)` a reference names (`latest` when no tag is
/// written); `None` when it is pinned by digest or not an image.
fn tag_of(d: &Dependency) -> Option<(String, String)> {
    let r = ImageRef::parse(&d.image).ok().filter(|r| !r.is_pinned())?;
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    Some((r.name(), tag))
}

/// Projects reachable over triggerable edges, with their breadth-first
/// distance from `start` (0). Archived projects are reached but not crossed.
pub(crate) fn reachable(
    g: &DependencyGraph,
    start: &[NodeIndex],
    stop: Option<NodeIndex>,
) -> BTreeMap<NodeIndex, usize> {
    let mut seen: BTreeMap<NodeIndex, usize> = BTreeMap::new();
    let mut queue: VecDeque<(NodeIndex, usize)> = start.iter().map(|n| (*n, 0)).collect();
    while let Some((n, d)) = queue.pop_front() {
        if Some(n) == stop || seen.contains_key(&n) {
            continue;
        }
        seen.insert(n, d);
        // Never rebuilt: nothing below it is made stale through it.
        if g.graph[n].archived || g.graph[n].trigger == Trigger::Never {
            continue;
        }
        for e in g.graph.edges_directed(n, Direction::Outgoing) {
            if !e.weight().pinned {
                queue.push_back((e.target(), d + 1));
            }
        }
    }
    seen
}

/// Renderings for `graph --format`.
impl DependencyGraph {
    /// One line per dependency: `downstream <- upstream (reference, line N)`.
    pub fn to_text(&self) -> String {
        let mut lines = Vec::new();
        for n in self.graph.node_indices() {
            let node = &self.graph[n];
            let mut ups: Vec<String> = self
                .upstreams(n)
                .into_iter()
                .map(|(u, d)| {
                    let pinned = if d.pinned { ", pinned" } else { "" };
                    format!(
                        "{} <- {} ({} {}, {}{pinned})",
                        node.path,
                        self.graph[u].path,
                        d.via,
                        d.image,
                        d.place()
                    )
                })
                .collect();
            ups.sort();
            lines.extend(ups);
        }
        for (image, users) in &self.external {
            let mut paths: Vec<&str> = users
                .iter()
                .map(|(n, _)| self.graph[*n].path.as_str())
                .collect();
            paths.sort();
            paths.dedup();
            for p in paths {
                lines.push(format!("{p} <- {image} (external)"));
            }
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let projects: Vec<_> = self.graph.node_weights().collect();
        let edges: Vec<_> = self
            .graph
            .edge_references()
            .map(|e| {
                serde_json::json!({
                    "upstream": self.graph[e.source()].path,
                    "downstream": self.graph[e.target()].path,
                    "image": e.weight().image,
                    "via": e.weight().via,
                    "file": e.weight().file,
                    "line": e.weight().line,
                    "pinned": e.weight().pinned,
                })
            })
            .collect();
        let external: BTreeMap<&String, Vec<&str>> = self
            .external
            .iter()
            .map(|(image, users)| {
                (
                    image,
                    users
                        .iter()
                        .map(|(n, _)| self.graph[*n].path.as_str())
                        .collect(),
                )
            })
            .collect();
        serde_json::json!({
            "registry": self.registry.hosts(),
            "projects": projects,
            "edges": edges,
            "external": external,
            "cycles": self.cycles(),
            "notes": self.notes,
        })
    }

    /// Graphviz DOT: projects with a Dockerfile, dashed edges for pinned refs.
    pub fn to_dot(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::from("digraph images {\n  rankdir=LR;\n  node [shape=box];\n");
        for n in self.graph.node_indices() {
            let node = &self.graph[n];
            let connected = self.graph.neighbors_undirected(n).next().is_some();
            if !connected && node.dockerfile != "found" {
                continue;
            }
            let style = if node.archived { ", style=dashed" } else { "" };
            out.push_str(&format!(
                "  {} [label={}{style}];\n",
                n.index(),
                quote(&node.path)
            ));
        }
        for e in self.graph.edge_references() {
            let style = if e.weight().pinned {
                " [style=dashed]"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {} -> {}{style};\n",
                e.source().index(),
                e.target().index()
            ));
        }
        out.push_str("}\n");
        out
    }
}
