//! A trigger plan: which projects to rebuild after a target image changed,
//! what each one waits for, and what is left out and why. Pure: computed
//! from the graph alone, so `--dry-run`, `deps` and the real run agree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::graph::NodeIndex;
use serde::Serialize;

use crate::config::Trigger;
use crate::graph::{reachable, Dependency, DependencyGraph, Target};

#[derive(Debug, Clone, Serialize)]
pub struct PlannedTrigger {
    #[serde(skip)]
    pub node: NodeIndex,
    pub project: String,
    pub project_id: u64,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub web_url: String,
    /// 0 for projects built directly on the target.
    pub depth: usize,
    /// Projects of this plan whose pipelines must succeed first.
    #[serde(skip)]
    pub waits_for: Vec<NodeIndex>,
    #[serde(rename = "waits_for")]
    pub waits_for_paths: Vec<String>,
    /// The project or external image that makes this one stale.
    pub upstream: String,
    /// The reference in this project's Dockerfile.
    pub image: String,
    /// Where it says so: `FROM` (or `depends_on`), file and line.
    pub via: String,
    pub file: String,
    pub line: usize,
    /// Variables its `.autodep.yml` adds to its pipelines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub project: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TriggerPlan {
    pub target: String,
    pub recurse: bool,
    /// In an order where every project comes after what it waits for.
    pub triggers: Vec<PlannedTrigger>,
    pub skipped: Vec<Skipped>,
    pub cycles: Vec<Vec<String>>,
}

pub(crate) fn plan(g: &DependencyGraph, target: &Target, recurse: bool) -> TriggerPlan {
    plan_where(g, target, recurse, &|_| true)
}

/// The plan of `target` starting only from the projects whose reference
/// to it `first` accepts (a tag of an external image, say).
pub(crate) fn plan_where(
    g: &DependencyGraph,
    target: &Target,
    recurse: bool,
    first: &dyn Fn(&crate::graph::Dependency) -> bool,
) -> TriggerPlan {
    let target_node = match target {
        Target::Project(n) => Some(*n),
        Target::External(_) => None,
    };
    let mut direct = g.dependents(target);
    direct.retain(|(_, d)| first(d));
    let mut skipped: BTreeMap<String, String> = BTreeMap::new();
    let mut start = Vec::new();
    for (n, dep) in &direct {
        if dep.pinned {
            skipped.insert(
                g.node(*n).path.clone(),
                format!("pinned by digest ({})", dep.image),
            );
        } else {
            start.push(*n);
        }
    }
    let distance = if recurse {
        reachable(g, &start, target_node)
    } else {
        start
            .iter()
            .copied()
            .filter(|n| Some(*n) != target_node)
            .map(|n| (n, 0))
            .collect()
    };
    let mut members: BTreeSet<NodeIndex> = distance.keys().copied().collect();
    members.retain(|n| {
        let node = g.node(*n);
        let reason = if node.archived {
            Some("archived: never triggered")
        } else if node.trigger == Trigger::Never {
            Some("trigger: false in its .autodep.yml: never triggered")
        } else if node.default_branch.is_none() || node.dockerfile == "empty_repo" {
            Some("empty repository: nothing to build")
        } else {
            None
        };
        if let Some(r) = reason {
            skipped.insert(node.path.clone(), r.to_string());
        }
        reason.is_none()
    });
    for n in &members {
        skipped.remove(&g.node(*n).path);
    }

    // Strongly connected sets (cycles): inside one, a project waits only for
    // projects the walk reached earlier, which cuts every cycle once.
    let mut scc_of: HashMap<NodeIndex, usize> = HashMap::new();
    let mut cycles = Vec::new();
    let sccs = petgraph::algo::tarjan_scc(g.graph());
    for (i, scc) in sccs.iter().enumerate() {
        for n in scc {
            scc_of.insert(*n, i);
        }
        let touches = scc
            .iter()
            .any(|n| members.contains(n) || Some(*n) == target_node);
        if scc.len() > 1 && touches {
            let mut paths: Vec<String> = scc.iter().map(|n| g.node(*n).path.clone()).collect();
            paths.sort();
            cycles.push(paths);
        }
    }

    let direct_dep: HashMap<NodeIndex, Dependency> =
        direct.iter().map(|(n, d)| (*n, d.clone())).collect();
    let mut waits: HashMap<NodeIndex, Vec<NodeIndex>> = HashMap::new();
    for n in &members {
        let mut w: Vec<NodeIndex> = if recurse {
            g.upstreams(*n)
                .into_iter()
                .filter(|(u, d)| !d.pinned && members.contains(u))
                .filter(|(u, _)| scc_of[u] != scc_of[n] || distance[u] < distance[n])
                .map(|(u, _)| u)
                .collect()
        } else {
            Vec::new()
        };
        w.sort_by(|a, b| g.node(*a).path.cmp(&g.node(*b).path));
        w.dedup();
        waits.insert(*n, w);
    }

    // Kahn's order with depths; ties broken by path for stable output.
    let mut depth: HashMap<NodeIndex, usize> = HashMap::new();
    let mut order = Vec::new();
    let mut remaining: BTreeSet<NodeIndex> = members.clone();
    while !remaining.is_empty() {
        let mut ready: Vec<NodeIndex> = remaining
            .iter()
            .copied()
            .filter(|n| waits[n].iter().all(|u| depth.contains_key(u)))
            .collect();
        if ready.is_empty() {
            // Unreachable by construction (cycles are cut above); never loop.
            ready = remaining.iter().copied().collect();
        }
        for n in &ready {
            let d = waits[n]
                .iter()
                .map(|u| depth.get(u).map_or(0, |d| d + 1))
                .max()
                .unwrap_or(0);
            depth.insert(*n, d);
            remaining.remove(n);
        }
        order.extend(ready);
    }
    order.sort_by(|a, b| {
        depth[a]
            .cmp(&depth[b])
            .then_with(|| g.node(*a).path.cmp(&g.node(*b).path))
    });

    let triggers = order
        .into_iter()
        .map(|n| {
            let node = g.node(n);
            let (upstream, dep) = match direct_dep.get(&n) {
                Some(dep) => (g.describe(target), Some(dep.clone())),
                None => {
                    let up = g
                        .upstreams(n)
                        .into_iter()
                        .find(|(u, d)| !d.pinned && members.contains(u))
                        .map(|(u, d)| (g.node(u).path.clone(), Some(d.clone())));
                    up.unwrap_or_else(|| (g.describe(target), None))
                }
            };
            let dep = dep.unwrap_or_else(|| Dependency {
                image: String::new(),
                via: String::new(),
                file: String::new(),
                line: 0,
                pinned: false,
            });
            let image = dep.image.clone();
            let (git_ref, variables) = match &node.trigger {
                Trigger::With { git_ref, variables } => (
                    git_ref.clone(),
                    variables
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                _ => (None, Vec::new()),
            };
            PlannedTrigger {
                node: n,
                project: node.path.clone(),
                project_id: node.id,
                git_ref: git_ref
                    .or_else(|| node.default_branch.clone())
                    .unwrap_or_default(),
                variables,
                web_url: node.web_url.clone(),
                depth: depth[&n],
                waits_for_paths: waits[&n].iter().map(|u| g.node(*u).path.clone()).collect(),
                waits_for: waits[&n].clone(),
                upstream,
                image,
                via: dep.via,
                file: dep.file,
                line: dep.line,
            }
        })
        .collect();
    TriggerPlan {
        target: g.describe(target),
        recurse,
        triggers,
        skipped: skipped
            .into_iter()
            .map(|(project, reason)| Skipped { project, reason })
            .collect(),
        cycles,
    }
}

impl TriggerPlan {
    /// A tree: each project under the first project it waits for (or the
    /// target), one per line.
    pub fn render_tree(&self) -> String {
        let mut children: BTreeMap<Option<NodeIndex>, Vec<&PlannedTrigger>> = BTreeMap::new();
        for t in &self.triggers {
            children
                .entry(t.waits_for.first().copied())
                .or_default()
                .push(t);
        }
        let mut out = format!("{}\n", self.target);
        fn walk(
            out: &mut String,
            children: &BTreeMap<Option<NodeIndex>, Vec<&PlannedTrigger>>,
            parent: Option<NodeIndex>,
            prefix: &str,
        ) {
            let Some(kids) = children.get(&parent) else {
                return;
            };
            for (i, t) in kids.iter().enumerate() {
                let last = i + 1 == kids.len();
                let also = if t.waits_for_paths.len() > 1 {
                    format!(" (also after {})", t.waits_for_paths[1..].join(", "))
                } else {
                    String::new()
                };
                // Where it comes from, when not the root Dockerfile's FROM.
                let place = if t.via == "depends_on" {
                    format!(" (declared in {} line {})", t.file, t.line)
                } else if !t.file.is_empty() && t.file != crate::scan::DOCKERFILE_PATH {
                    format!(" ({} line {})", t.file, t.line)
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "{prefix}{}{}{place}{also}\n",
                    if last { "└── " } else { "├── " },
                    t.project
                ));
                let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
                walk(out, children, Some(t.node), &deeper);
            }
        }
        walk(&mut out, &children, None, "");
        for s in &self.skipped {
            out.push_str(&format!("skipped {}: {}\n", s.project, s.reason));
        }
        for c in &self.cycles {
            out.push_str(&format!(
                "cycle: {} (each project is triggered at most once)\n",
                c.join(" ⇄ ")
            ));
        }
        out
    }
}
