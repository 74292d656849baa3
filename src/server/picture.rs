//! Pictures for the status pages, as inline SVG: the dependency graph, and
//! one cascade's members in levels coloured by state with their waits.

use std::collections::HashMap;
use std::fmt::Write;

use super::html::{escape, safe_href};
use crate::cascade::{Member, MemberState};
use crate::graph::DependencyGraph;
use crate::store::{MemberPipeline, StoredCascade};

/// A cascade with more members than this is shown level by level, not as
/// one picture nobody can read.
pub const PICTURE_LIMIT: usize = 150;

/// Projects with at least one edge, in columns by depth; at most `limit`.
pub fn graph_svg(g: &DependencyGraph, limit: usize) -> String {
    let mut depth: HashMap<petgraph::graph::NodeIndex, usize> = HashMap::new();
    let nodes: Vec<_> = g
        .nodes()
        .filter(|n| {
            !g.upstreams(*n).is_empty()
                || !g.dependents(&crate::graph::Target::Project(*n)).is_empty()
        })
        .collect();
    // Longest path from a root, bounded so cycles cannot loop.
    for _ in 0..nodes.len().min(64) {
        let mut changed = false;
        for n in &nodes {
            let d = g
                .upstreams(*n)
                .iter()
                .filter(|(u, _)| u != n)
                .map(|(u, _)| depth.get(u).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0)
                .min(64);
            if depth.get(n) != Some(&d) {
                depth.insert(*n, d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut columns: Vec<Vec<petgraph::graph::NodeIndex>> = Vec::new();
    for n in nodes.iter().take(limit) {
        let d = depth.get(n).copied().unwrap_or(0);
        if columns.len() <= d {
            columns.resize(d + 1, Vec::new());
        }
        columns[d].push(*n);
    }
    let (w, h, gap_x, gap_y) = (220.0, 26.0, 60.0, 12.0);
    let mut pos = HashMap::new();
    for (c, col) in columns.iter_mut().enumerate() {
        col.sort_by(|a, b| g.node(*a).path.cmp(&g.node(*b).path));
        for (r, n) in col.iter().enumerate() {
            pos.insert(
                *n,
                (10.0 + c as f64 * (w + gap_x), 10.0 + r as f64 * (h + gap_y)),
            );
        }
    }
    let width = 20.0 + columns.len() as f64 * (w + gap_x);
    let height = 20.0 + columns.iter().map(Vec::len).max().unwrap_or(0) as f64 * (h + gap_y);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    for (n, (x, y)) in &pos {
        for (u, dep) in g.upstreams(*n) {
            if let Some((ux, uy)) = pos.get(&u) {
                let dash = if dep.pinned {
                    r#" stroke-dasharray="4 3""#
                } else {
                    ""
                };
                let _ = write!(
                    svg,
                    r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#888"{dash}/>"##,
                    ux + w,
                    uy + h / 2.0,
                    x,
                    y + h / 2.0
                );
            }
        }
    }
    for (n, (x, y)) in &pos {
        let node = g.node(*n);
        let fill = if node.archived { "#eee" } else { "#e8f0fe" };
        let shape = format!(
            r##"<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" fill="{fill}" stroke="#4a6fa5"/><text x="{}" y="{}">{}</text>"##,
            x + 6.0,
            y + 17.0,
            escape(&node.path)
        );
        let _ = match safe_href(&node.web_url) {
            Some(href) => write!(svg, r#"<a href="{href}">{shape}</a>"#),
            None => write!(svg, "{shape}"),
        };
    }
    svg.push_str("</svg>");
    svg
}

/// How a member stands, as the pages say it and colour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shown {
    Failed,
    Pruned,
    Running,
    /// Ready, waiting for a free running slot (`--max-running`).
    Queued,
    Waiting,
    Succeeded,
}

impl Shown {
    pub fn of(member: &Member, pipeline: Option<&MemberPipeline>) -> Shown {
        match &member.state {
            MemberState::Waiting => Shown::Waiting,
            MemberState::Triggered => match pipeline {
                Some(p) if p.trigger_state == "queued" => Shown::Queued,
                _ => Shown::Running,
            },
            MemberState::Succeeded => Shown::Succeeded,
            MemberState::Failed { .. } => Shown::Failed,
            MemberState::Pruned { .. } => Shown::Pruned,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Shown::Failed => "failed",
            Shown::Pruned => "not built",
            Shown::Running => "running",
            Shown::Queued => "queued",
            Shown::Waiting => "waiting",
            Shown::Succeeded => "succeeded",
        }
    }

    /// The fill of its box; also the legend's.
    pub fn colour(self) -> &'static str {
        match self {
            Shown::Failed => "#e05252",
            Shown::Pruned => "#f0b44c",
            Shown::Running => "#5b9bf0",
            Shown::Queued => "#b9d4fa",
            Shown::Waiting => "#dddddd",
            Shown::Succeeded => "#5cb85c",
        }
    }

    pub const ALL: [Shown; 6] = [
        Shown::Failed,
        Shown::Pruned,
        Shown::Running,
        Shown::Queued,
        Shown::Waiting,
        Shown::Succeeded,
    ];
}

/// Why a member stands where it does, in words.
pub fn explain(
    member: &Member,
    cascade: &StoredCascade,
    pipeline: Option<&MemberPipeline>,
) -> String {
    let name = |id: &u64| {
        cascade
            .machine
            .members
            .get(id)
            .map(|m| m.project.clone())
            .unwrap_or_else(|| format!("project {id}"))
    };
    match &member.state {
        MemberState::Waiting => {
            let open: Vec<String> = member
                .waits_for
                .iter()
                .filter(|w| {
                    cascade
                        .machine
                        .members
                        .get(w)
                        .is_some_and(|m| m.state != MemberState::Succeeded)
                })
                .map(name)
                .collect();
            format!("waits for {}", open.join(", "))
        }
        MemberState::Triggered => match pipeline {
            Some(p) if p.trigger_state == "queued" => {
                "ready; waits for a free slot (--max-running)".into()
            }
            Some(p) => match (p.pipeline_id, &p.last_hook_at) {
                (Some(id), None) => format!(
                    "pipeline #{id} created; no hook heard from it yet (polled every --reconcile-interval)"
                ),
                (Some(id), Some(_)) => format!("pipeline #{id} running"),
                (None, _) => format!("trigger {}", p.trigger_state),
            },
            None => "running".into(),
        },
        MemberState::Succeeded => "built".into(),
        MemberState::Failed { reason, .. } => reason.clone(),
        MemberState::Pruned { because } => {
            format!("not built: upstream {} did not succeed", name(because))
        }
    }
}

/// The members in columns by depth, the cascade's root on the left, lines
/// from each upstream a member waits for; each box links to its project's
/// page and names its state on hover.
pub fn cascade_svg(
    cascade: &StoredCascade,
    pipelines: &std::collections::BTreeMap<u64, MemberPipeline>,
) -> String {
    let (w, h, gap_x, gap_y) = (200.0, 24.0, 50.0, 8.0);
    let mut columns: Vec<Vec<&Member>> = Vec::new();
    for m in cascade.machine.members.values() {
        if columns.len() <= m.depth {
            columns.resize(m.depth + 1, Vec::new());
        }
        columns[m.depth].push(m);
    }
    let mut pos: HashMap<u64, (f64, f64)> = HashMap::new();
    for (c, col) in columns.iter_mut().enumerate() {
        col.sort_by(|a, b| a.project.cmp(&b.project));
        for (r, m) in col.iter().enumerate() {
            let x = 10.0 + (c + 1) as f64 * (w + gap_x);
            pos.insert(m.project_id, (x, 10.0 + r as f64 * (h + gap_y)));
        }
    }
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let width = 20.0 + (columns.len() + 1) as f64 * (w + gap_x);
    let height = 20.0 + rows as f64 * (h + gap_y);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12" role="img" aria-label="cascade {}">"#,
        cascade.id
    );
    let line = |svg: &mut String, (ux, uy): (f64, f64), (x, y): (f64, f64)| {
        let _ = write!(
            svg,
            r##"<line x1="{}" y1="{}" x2="{x}" y2="{}" stroke="#888"/>"##,
            ux + w,
            uy + h / 2.0,
            y + h / 2.0
        );
    };
    let root = (10.0, 10.0);
    for m in cascade.machine.members.values() {
        let at = pos[&m.project_id];
        if m.depth == 0 {
            line(&mut svg, root, at);
        }
        for wait in &m.waits_for {
            if let Some(up) = pos.get(wait) {
                line(&mut svg, *up, at);
            }
        }
    }
    let _ = write!(
        svg,
        r##"<rect x="{}" y="{}" width="{w}" height="{h}" rx="4" fill="#ffffff" stroke="#333"/><text x="{}" y="{}" font-weight="bold">{}</text>"##,
        root.0,
        root.1,
        root.0 + 6.0,
        root.1 + 16.0,
        escape(&shorten(&cascade.root, 28))
    );
    for m in cascade.machine.members.values() {
        let (x, y) = pos[&m.project_id];
        let pipeline = pipelines.get(&m.project_id);
        let shown = Shown::of(m, pipeline);
        let _ = write!(
            svg,
            r##"<a href="/projects/{}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" fill="{}" stroke="#555" data-state="{}"/><text x="{}" y="{}">{}</text><title>{} — {}: {}</title></a>"##,
            m.project_id,
            shown.colour(),
            shown.word(),
            x + 6.0,
            y + 16.0,
            escape(&shorten(&m.project, 28)),
            escape(&m.project),
            shown.word(),
            escape(&explain(m, cascade, pipeline)),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The legend of the colours.
pub fn legend() -> String {
    let mut html = String::from("<p>");
    for s in Shown::ALL {
        let _ = write!(
            html,
            "<span style=\"display:inline-block;width:1em;height:1em;background:{};border:1px solid #555;vertical-align:middle\"></span> {} &nbsp; ",
            s.colour(),
            s.word()
        );
    }
    html.push_str("</p>");
    html
}

/// At most `max` characters, the end kept (where a path differs).
fn shorten(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let tail: String = text.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}
