//! The status pages past the front page: one cascade (`/cascades/ID`), the
//! project finder (`/projects?q=TEXT`) and one project (`/projects/ID`),
//! each also as JSON with `?format=json`. They stay usable at thousands of
//! projects: a big cascade is shown level by level with its unfinished
//! members first, and a project's page shows only its own neighbourhood.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::html::{ago, escape, page_start, safe_href};
use super::picture::{cascade_svg, explain, legend, Shown, PICTURE_LIMIT};
use super::AppState;
use crate::config::{ProjectConfig, Trigger};
use crate::graph::{Dependency, Target};
use crate::scan::DockerfileState;
use crate::store::{MemberPipeline, StoreError, StoredCascade};

/// Rows of a members table; the rest are counted.
const TABLE_LIMIT: usize = 500;
/// Results of a project search.
const FIND_LIMIT: usize = 100;

#[derive(Debug, Deserialize, Default)]
pub struct Format {
    format: Option<String>,
}

impl Format {
    fn json(&self) -> bool {
        self.format.as_deref() == Some("json")
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct Find {
    #[serde(default)]
    q: String,
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, format!("{what}\n")).into_response()
}

fn store_failed() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot read the state store\n",
    )
        .into_response()
}

async fn read<T: Send + 'static>(
    app: &Arc<AppState>,
    f: impl FnOnce(&crate::store::Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(store_failed()),
    }
}

/// One cascade: where it stands and why.
pub async fn cascade(
    State(app): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(format): Query<Format>,
) -> Response {
    let found = read(&app, move |s| {
        Ok(match s.cascade(id)? {
            Some(c) => Some((s.cascade_pipelines(id)?, c)),
            None => None,
        })
    })
    .await;
    let (pipelines, cascade) = match found {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(format!("no cascade {id} (it may be past --retention)")),
        Err(r) => return r,
    };
    if format.json() {
        let rows = member_rows(&cascade, &pipelines);
        return axum::Json(json!({
            "id": cascade.id,
            "root": cascade.root,
            "reason": cascade.reason,
            "state": cascade.state,
            "created_at": cascade.created_at,
            "updated_at": cascade.updated_at,
            "members": rows.iter().map(|r| json!({
                "project_id": r.member.project_id,
                "project": r.member.project,
                "depth": r.member.depth,
                "state": r.shown.word(),
                "why": r.why,
                "waits_for": r.member.waits_for,
                "pipeline": r.pipeline,
            })).collect::<Vec<_>>(),
        }))
        .into_response();
    }
    Html(cascade_html(
        &cascade,
        &pipelines,
        time::OffsetDateTime::now_utc(),
    ))
    .into_response()
}

/// A cascade's page: the picture when it is small enough to read, else
/// its levels; then its members, those needing a look first.
pub fn cascade_html(
    cascade: &StoredCascade,
    pipelines: &BTreeMap<u64, MemberPipeline>,
    now: time::OffsetDateTime,
) -> String {
    let rows = member_rows(cascade, pipelines);
    let mut html = page_start(&format!("Cascade #{}", cascade.id));
    let _ = write!(
        html,
        "<p>{} · {} · started {} · last change {}</p>",
        escape(&cascade.reason),
        escape(&cascade.state),
        ago(&cascade.created_at, now),
        ago(&cascade.updated_at, now),
    );
    html.push_str(&counts_line(&rows));
    html.push_str(&legend());
    if rows.len() <= PICTURE_LIMIT {
        html.push_str("<div style=\"overflow:auto\">");
        html.push_str(&cascade_svg(cascade, pipelines));
        html.push_str("</div>");
    } else {
        levels_table(&mut html, &rows);
    }
    members_table(&mut html, &rows, now);
    html
}

/// One member as the pages show it.
struct Row<'a> {
    member: &'a crate::cascade::Member,
    shown: Shown,
    why: String,
    pipeline: Option<&'a MemberPipeline>,
}

/// Members, the ones needing a look first: failed, not built, running,
/// queued, waiting, built; then by level and path.
fn member_rows<'a>(
    cascade: &'a StoredCascade,
    pipelines: &'a BTreeMap<u64, MemberPipeline>,
) -> Vec<Row<'a>> {
    let mut rows: Vec<Row> = cascade
        .machine
        .members
        .values()
        .map(|m| {
            let pipeline = pipelines.get(&m.project_id);
            Row {
                member: m,
                shown: Shown::of(m, pipeline),
                why: explain(m, cascade, pipeline),
                pipeline,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.shown, a.member.depth, &a.member.project).cmp(&(
            b.shown,
            b.member.depth,
            &b.member.project,
        ))
    });
    rows
}

fn counts_line(rows: &[Row]) -> String {
    let parts: Vec<String> = Shown::ALL
        .iter()
        .filter_map(|s| {
            let n = rows.iter().filter(|r| r.shown == *s).count();
            (n > 0).then(|| format!("{n} {}", s.word()))
        })
        .collect();
    format!("<p>{} members: {}</p>", rows.len(), parts.join(", "))
}

/// For a cascade too big to draw: each level's members by state.
fn levels_table(html: &mut String, rows: &[Row]) {
    let depth = rows.iter().map(|r| r.member.depth).max().unwrap_or(0);
    html.push_str("<h2>Levels</h2><table><tr><th>level</th>");
    for s in Shown::ALL {
        let _ = write!(html, "<th>{}</th>", s.word());
    }
    html.push_str("</tr>");
    for level in 0..=depth {
        let _ = write!(html, "<tr><td>{level}</td>");
        for s in Shown::ALL {
            let n = rows
                .iter()
                .filter(|r| r.member.depth == level && r.shown == s)
                .count();
            let _ = write!(html, "<td>{n}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

fn members_table(html: &mut String, rows: &[Row], now: time::OffsetDateTime) {
    html.push_str("<h2>Members</h2><table><tr><th>level</th><th>project</th><th>state</th><th>why</th><th>pipeline</th><th>since</th></tr>");
    for r in rows.iter().take(TABLE_LIMIT) {
        let pipeline = r.pipeline.map(pipeline_link).unwrap_or_default();
        let since = r.pipeline.map(|p| since(p, now)).unwrap_or_default();
        let _ = write!(
            html,
            "<tr><td>{}</td><td><a href=\"/projects/{}\">{}</a></td><td><span style=\"color:{}\">■</span> {}</td><td>{}</td><td>{pipeline}</td><td>{since}</td></tr>",
            r.member.depth,
            r.member.project_id,
            escape(&r.member.project),
            r.shown.colour(),
            r.shown.word(),
            escape(&r.why),
        );
    }
    html.push_str("</table>");
    if rows.len() > TABLE_LIMIT {
        let _ = write!(
            html,
            "<p>and {} more members: find a project to see it.</p>",
            rows.len() - TABLE_LIMIT
        );
    }
}

/// Since when a member's pipeline stands as it does: its last hook, else
/// its creation (waiting on a hook), else the trigger's last change.
fn since(p: &MemberPipeline, now: time::OffsetDateTime) -> String {
    match (&p.last_hook_at, &p.fired_at) {
        (Some(at), _) => format!("last hook {}", ago(at, now)),
        (None, Some(at)) => format!("<b>no hook since</b> {}", ago(at, now)),
        (None, None) => ago(&p.updated_at, now),
    }
}

fn pipeline_link(p: &MemberPipeline) -> String {
    match (p.web_url.as_deref().and_then(safe_href), p.pipeline_id) {
        (Some(href), Some(id)) => format!("<a href=\"{href}\">#{id}</a>"),
        (None, Some(id)) => format!("#{id}"),
        _ => String::new(),
    }
}

/// Projects whose path contains the text (any case).
pub async fn find(State(app): State<Arc<AppState>>, Query(find): Query<Find>) -> Response {
    let view = app.graph();
    let g = &view.graph;
    let needle = find.q.trim().to_lowercase();
    let matches: Vec<_> = g
        .nodes()
        .filter(|n| g.node(*n).path.to_lowercase().contains(&needle))
        .take(FIND_LIMIT + 1)
        .collect();
    let mut html = page_start(&format!("Projects matching “{}”", find.q.trim()));
    if matches.is_empty() {
        html.push_str("<p>No project in the graph matches.</p>");
    }
    html.push_str("<ul>");
    for n in matches.iter().take(FIND_LIMIT) {
        let node = g.node(*n);
        let _ = write!(
            html,
            "<li><a href=\"/projects/{}\">{}</a> — built on {}, {} built on it</li>",
            node.id,
            escape(&node.path),
            g.upstreams(*n).len(),
            g.dependents(&Target::Project(*n)).len(),
        );
    }
    html.push_str("</ul>");
    if matches.len() > FIND_LIMIT {
        let _ = write!(
            html,
            "<p>Only the first {FIND_LIMIT} are listed: say more.</p>"
        );
    }
    Html(html).into_response()
}

/// One project: what it is built on, what is built on it, its cascades.
pub async fn project(
    State(app): State<Arc<AppState>>,
    Path(id): Path<u64>,
    Query(format): Query<Format>,
) -> Response {
    let view = app.graph();
    let g = &view.graph;
    let Some(n) = g.node_by_id(id) else {
        return not_found(format!("no project {id} in the graph"));
    };
    let node = g.node(n);
    let images: Vec<_> = match view.projects.get(&id).map(|p| &p.dockerfile) {
        Some(DockerfileState::Found { images, .. }) => images.clone(),
        _ => Vec::new(),
    };
    let link = |(pid, path, d): &(u64, String, Dependency)| {
        json!({"project_id": pid, "project": path, "image": d.image, "via": d.via,
               "file": d.file, "line": d.line, "declared": d.via == "depends_on"})
    };
    let upstreams: Vec<(u64, String, Dependency)> = g
        .upstreams(n)
        .into_iter()
        .map(|(u, d)| (g.node(u).id, g.node(u).path.clone(), d.clone()))
        .collect();
    let downstreams: Vec<(u64, String, Dependency)> = g
        .dependents(&Target::Project(n))
        .into_iter()
        .map(|(d, dep)| (g.node(d).id, g.node(d).path.clone(), dep))
        .collect();
    let scanned = view.projects.get(&id);
    let config = scanned.and_then(|p| p.config.clone());
    let config_error = scanned.and_then(|p| p.config_error.clone());
    let cascades = match read(&app, move |s| s.cascades_of(id, 20)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if format.json() {
        return axum::Json(json!({
            "project_id": id,
            "project": node.path,
            "dockerfile": node.dockerfile,
            "images": images,
            "upstreams": upstreams.iter().map(link).collect::<Vec<_>>(),
            "downstreams": downstreams.iter().map(link).collect::<Vec<_>>(),
            "config": config,
            "config_error": config_error,
            "cascades": cascades.iter().map(|c| c.id).collect::<Vec<_>>(),
        }))
        .into_response();
    }
    let now = time::OffsetDateTime::now_utc();
    let mut html = page_start(&node.path);
    let gitlab = safe_href(&node.web_url)
        .map(|h| format!(" · <a href=\"{h}\">on GitLab</a>"))
        .unwrap_or_default();
    let _ = write!(html, "<p>Dockerfile: {}{gitlab}</p>", node.dockerfile);
    config_html(&mut html, config.as_ref(), config_error.as_deref());
    html.push_str("<h2>Its Dockerfile names</h2><ul>");
    for i in &images {
        let _ = write!(
            html,
            "<li>line {}: {} {}</li>",
            i.line,
            escape(&i.via),
            escape(&i.reference)
        );
    }
    html.push_str("</ul>");
    for (title, list) in [("Built on", &upstreams), ("Built on it", &downstreams)] {
        let _ = write!(html, "<h2>{title}</h2><ul>");
        for (pid, path, d) in list.iter() {
            let how = if d.via == "depends_on" {
                format!("declared in {}", d.place())
            } else {
                format!("{} {}, {}", d.via, d.image, d.place())
            };
            let _ = write!(
                html,
                "<li><a href=\"/projects/{pid}\">{}</a> ({})</li>",
                escape(path),
                escape(&how)
            );
        }
        if list.is_empty() {
            html.push_str("<li>none</li>");
        }
        html.push_str("</ul>");
    }
    project_cascades(&mut html, id, &cascades, now);
    Html(html).into_response()
}

/// What the project's `.autodep.yml` changes, or why it is not used.
fn config_html(html: &mut String, config: Option<&ProjectConfig>, error: Option<&str>) {
    if let Some(e) = error {
        let _ = write!(html, "<p class=\"failed\">{}</p>", escape(e));
    }
    let Some(c) = config else { return };
    let mut said = Vec::new();
    if let Some(files) = &c.dockerfiles {
        said.push(format!("its Dockerfiles: {}", files.join(", ")));
    }
    if !c.images.is_empty() {
        said.push(format!("it also produces {}", c.images.join(", ")));
    }
    match &c.trigger {
        Trigger::Never => said.push("never triggered (trigger: false)".into()),
        Trigger::With { git_ref, variables } => said.push(format!(
            "triggered on {} with {}",
            git_ref.as_deref().unwrap_or("its default branch"),
            variables.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        Trigger::Default => {}
    }
    if !c.depends_on.is_empty() {
        said.push(format!(
            "{} declared dependencies (marked below)",
            c.depends_on.len()
        ));
    }
    if !said.is_empty() {
        let _ = write!(html, "<p>.autodep.yml: {}</p>", escape(&said.join("; ")));
    }
}

fn project_cascades(
    html: &mut String,
    id: u64,
    cascades: &[StoredCascade],
    now: time::OffsetDateTime,
) {
    html.push_str("<h2>Its cascades</h2><table><tr><th>cascade</th><th>started</th><th>why</th><th>here</th></tr>");
    for c in cascades {
        let Some(m) = c.machine.members.get(&id) else {
            continue;
        };
        let shown = Shown::of(m, None);
        let _ = write!(
            html,
            "<tr><td><a href=\"/cascades/{}\">#{}</a></td><td>{}</td><td>{}</td><td>{}: {}</td></tr>",
            c.id,
            c.id,
            ago(&c.created_at, now),
            escape(&c.reason),
            shown.word(),
            escape(&explain(m, c, None))
        );
    }
    html.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::{Cascade, Member, MemberState};

    /// A cascade over `n` projects in levels of 100, the first one failed.
    fn big(n: u64) -> StoredCascade {
        let members = (1..=n)
            .map(|id| {
                let depth = ((id - 1) / 100) as usize;
                let state = match id {
                    1 => MemberState::Failed {
                        outcome: None,
                        reason: "pipeline failed".into(),
                    },
                    _ if depth == 0 => MemberState::Succeeded,
                    _ => MemberState::Waiting,
                };
                let member = Member {
                    project_id: id,
                    project: format!("group/project-{id}"),
                    git_ref: "main".into(),
                    upstream: "base".into(),
                    image: "base".into(),
                    waits_for: if depth == 0 {
                        Default::default()
                    } else {
                        [id - 100].into_iter().collect()
                    },
                    depth,
                    state,
                };
                (id, member)
            })
            .collect();
        StoredCascade {
            id: 7,
            root: "group/base".into(),
            reason: "pipeline 1 of group/base succeeded".into(),
            state: "running".into(),
            created_at: "2026-11-30T12:00:00Z".into(),
            updated_at: "2026-11-30T12:02:00Z".into(),
            machine: Cascade::new(members, false),
        }
    }

    #[test]
    fn a_small_cascade_is_a_picture_and_a_big_one_stays_readable() {
        let now = time::macros::datetime!(2026-11-30 12:05:00 UTC);
        let small = cascade_html(&big(30), &BTreeMap::new(), now);
        assert!(small.contains("<svg"), "a small cascade is drawn");
        assert!(small.contains("started <time datetime=\"2026-11-30T12:00:00Z\" title=\"2026-11-30T12:00:00Z\">5 min ago</time>"));
        assert_eq!(small.matches("data-state=").count(), 30);

        let html = cascade_html(&big(2000), &BTreeMap::new(), now);
        assert!(!html.contains("<svg"), "2,000 boxes are not drawn");
        assert!(html.contains("<h2>Levels</h2>"));
        assert_eq!(
            html.matches("<td><a href=\"/projects/").count(),
            TABLE_LIMIT
        );
        assert!(html.contains("and 1500 more members"));
        // What needs a look comes first: the failed member, then the
        // waiting ones, the built ones last.
        let failed = html.find("group/project-1<").unwrap();
        let waiting = html.find("group/project-101<").unwrap();
        assert!(failed < waiting);
        assert!(html.len() < 400 * 1024, "{} bytes", html.len());
    }
}
