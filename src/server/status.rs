//! Health, readiness, Prometheus metrics and a small status page: the
//! dependency graph as a picture, recent events and triggers, the queue.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::graph::DependencyGraph;

/// The status surfaces list private project paths, pipeline URLs and
/// GitLab's error texts. With `--status-token` they need `Authorization:
/// Bearer TOKEN`; without one they are served only on a loopback listener
/// (or `--status-listen`, the operator's choice). Every answer carries a
/// strict Content-Security-Policy.
pub async fn guard(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let denied = match &app.config.status_token {
        Some(token) => {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            (!bool::from(given.as_bytes().ct_eq(token.as_bytes()))).then(|| {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "the status pages need Authorization: Bearer <--status-token>\n",
                )
                    .into_response()
            })
        }
        None if app.config.status_listen.is_none() && !app.config.listen.ip().is_loopback() => Some(
            (
                StatusCode::FORBIDDEN,
                "the status pages are served on loopback only: use --status-listen 127.0.0.1:PORT \
                     or --status-token\n",
            )
                .into_response(),
        ),
        None => None,
    };
    let mut response = match denied {
        Some(r) => r,
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Each cascade: its root, and its members by depth with their states.
fn cascades_html(html: &mut String, cascades: &[crate::store::StoredCascade]) {
    use crate::cascade::MemberState;
    if cascades.is_empty() {
        return;
    }
    html.push_str("<h2>Cascades</h2><table><tr><th>cascade</th><th>started</th><th>why</th><th>state</th><th>members (depth: project state)</th></tr>");
    for c in cascades {
        let mut members: Vec<_> = c.machine.members.values().collect();
        members.sort_by(|a, b| (a.depth, &a.project).cmp(&(b.depth, &b.project)));
        let list: Vec<String> = members
            .iter()
            .map(|m| {
                let state = match &m.state {
                    MemberState::Waiting => "waiting".to_string(),
                    MemberState::Triggered => "running".to_string(),
                    MemberState::Succeeded => "succeeded".to_string(),
                    MemberState::Failed { reason, .. } => format!("failed ({reason})"),
                    MemberState::Pruned { because } => {
                        format!("not built: upstream {because} did not succeed")
                    }
                };
                format!(
                    "{}: {} <span class=\"{}\">{}</span>",
                    m.depth,
                    escape(&m.project),
                    if state == "succeeded" {
                        "done"
                    } else if state.starts_with("failed") || state.starts_with("not built") {
                        "failed"
                    } else {
                        ""
                    },
                    escape(&state)
                )
            })
            .collect();
        let _ = write!(
            html,
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.id,
            escape(&c.created_at),
            escape(&c.reason),
            escape(&c.state),
            list.join("<br>")
        );
    }
    html.push_str("</table>");
}

/// A link target only when it is http(s); anything else (`javascript:`,
/// `data:`) is not rendered as a link.
fn safe_href(url: &str) -> Option<String> {
    let lower = url.trim_start().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then(|| escape(url))
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if app.has_graph() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a background task crashed and is restarting (see the log)\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "graph not loaded yet: the first scan is running\n",
        )
            .into_response()
    }
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let stats = app.gitlab.stats();
    let mut text = app.metrics.render();
    // The client's own counters, whatever recorder is installed.
    let _ = write!(
        text,
        "# TYPE autodep_gitlab_requests_total counter\nautodep_gitlab_requests_total {}\n\
         # TYPE autodep_gitlab_retries_total counter\nautodep_gitlab_retries_total {}\n\
         # TYPE autodep_gitlab_responses_total counter\n\
         autodep_gitlab_responses_total{{class=\"429\"}} {}\n\
         autodep_gitlab_responses_total{{class=\"5xx\"}} {}\n\
         autodep_gitlab_responses_total{{class=\"network_error\"}} {}\n\
         # TYPE autodep_ready gauge\nautodep_ready {}\n",
        stats.requests.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
        stats.rate_limited.load(Ordering::Relaxed),
        stats.server_errors.load(Ordering::Relaxed),
        stats.network_errors.load(Ordering::Relaxed),
        u8::from(app.is_ready()),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

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

/// What the status surfaces show of the store.
struct Snapshot {
    events: Vec<crate::store::StoredEvent>,
    triggers: Vec<crate::store::StoredTrigger>,
    cascades: Vec<crate::store::StoredCascade>,
    /// Pending events, queued triggers, parked events, running cascades.
    depth: (u64, u64, u64, u64),
}

/// Projects the scan skipped for a reason the operator should see (too
/// large, not readable, failed), at most `limit`, with the reason.
fn skipped_projects(view: &super::GraphView, limit: usize) -> Vec<(String, String)> {
    use crate::scan::DockerfileState;
    view.projects
        .values()
        .filter_map(|p| {
            let reason = match &p.dockerfile {
                DockerfileState::TooLarge { limit } => {
                    format!("Dockerfile larger than {limit} bytes (--max-dockerfile-size)")
                }
                DockerfileState::Unreadable { error } => format!("not readable: {error}"),
                DockerfileState::Failed { error } => format!("could not be read: {error}"),
                _ => return None,
            };
            Some((p.project.path.clone(), reason))
        })
        .take(limit)
        .collect()
}

/// Recent events and triggers and the queue depth, read off the runtime.
async fn snapshot(app: &Arc<AppState>, recent: usize) -> Result<Snapshot, Response> {
    let store = app.store.clone();
    let data = tokio::task::spawn_blocking(move || {
        let (events, triggers) = store.queue_depth()?;
        Ok::<_, crate::store::StoreError>(Snapshot {
            events: store.recent_events(recent)?,
            triggers: store.recent_triggers(recent)?,
            cascades: store.recent_cascades(20)?,
            depth: (
                events,
                triggers,
                store.parked_events()?,
                store.running_cascades()?,
            ),
        })
    })
    .await;
    match data {
        Ok(Ok(d)) => Ok(d),
        _ => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the state store\n",
        )
            .into_response()),
    }
}

/// The same facts as the page, for scripts and tests.
pub async fn json(State(app): State<Arc<AppState>>) -> Response {
    let Snapshot {
        events,
        triggers,
        cascades,
        depth: (pending, queued, parked, running),
    } = match snapshot(&app, 100).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let view = app.graph();
    let skipped: Vec<_> = skipped_projects(&view, 100)
        .into_iter()
        .map(|(project, reason)| serde_json::json!({"project": project, "reason": reason}))
        .collect();
    axum::Json(serde_json::json!({
        "ready": app.is_ready(),
        "projects": view.graph.project_count(),
        "dependencies": view.graph.edge_count(),
        "queue": {"pending_events": pending, "queued_triggers": queued, "parked_events": parked, "running_cascades": running},
        "cascades": cascades,
        "skipped": skipped,
        "events": events,
        "triggers": triggers,
    }))
    .into_response()
}

pub async fn page(State(app): State<Arc<AppState>>) -> Response {
    let view = app.graph();
    let Snapshot {
        events,
        triggers,
        cascades,
        depth: (pending, queued, parked, running),
    } = match snapshot(&app, 30).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    // Rendering a large graph is CPU work: off the async runtime.
    let rendered = {
        let view = view.clone();
        tokio::task::spawn_blocking(move || {
            (graph_svg(&view.graph, 400), skipped_projects(&view, 100))
        })
        .await
    };
    let Ok((svg, skipped)) = rendered else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot render the graph\n",
        )
            .into_response();
    };
    let mut html = String::from("<!doctype html><meta charset=utf-8><title>gitlab-docker-autodep</title>\
        <style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}\
        .failed{color:#b00}.done{color:#070}</style><h1>gitlab-docker-autodep</h1>");
    let _ = write!(
        html,
        "<p>{} · {} projects, {} dependencies · graph built {} · up {}s · queue: {pending} event(s), {queued} trigger(s), {parked} parked event(s) · {running} running cascade(s)</p>",
        if app.is_ready() { "ready" } else { "<b>not ready</b> (first scan running)" },
        view.graph.project_count(),
        view.graph.edge_count(),
        view.built_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        app.started.elapsed().as_secs(),
    );
    html.push_str("<h2>Dependency graph</h2><div style=\"overflow:auto\">");
    html.push_str(&svg);
    html.push_str("</div>");
    if !skipped.is_empty() {
        html.push_str("<h2>Skipped projects</h2><ul>");
        for (project, reason) in &skipped {
            let _ = write!(html, "<li>{} — {}</li>", escape(project), escape(reason));
        }
        html.push_str("</ul>");
    }
    cascades_html(&mut html, &cascades);
    html.push_str("<h2>Recent triggers</h2><table><tr><th>updated</th><th>project</th><th>state</th><th>pipeline</th><th>upstream</th><th>error</th></tr>");
    for t in &triggers {
        let pipeline = match (t.web_url.as_deref().and_then(safe_href), t.pipeline_id) {
            (Some(href), Some(id)) => format!("<a href=\"{href}\">#{id}</a>"),
            (None, Some(id)) => format!("#{id}"),
            _ => "-".into(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{pipeline}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.updated_at),
            escape(&t.project_path),
            escape(&t.state),
            escape(&t.state),
            escape(&t.upstream),
            escape(t.error.as_deref().unwrap_or(""))
        );
    }
    html.push_str("</table><h2>Recent events</h2><table><tr><th>received</th><th>kind</th><th>project</th><th>what</th><th>state</th><th>outcome</th></tr>");
    for e in &events {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&e.received_at),
            escape(&e.kind),
            escape(&e.project_path),
            escape(&e.detail),
            escape(&e.state),
            escape(e.outcome.as_deref().unwrap_or(""))
        );
    }
    html.push_str("</table><h2>Recently ignored</h2><ul>");
    for (at, reason) in app
        .ignored
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .rev()
    {
        let _ = write!(html, "<li>{} — {}</li>", escape(at), escape(reason));
    }
    html.push_str("</ul>");
    Html(html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_links_are_rendered() {
        assert_eq!(
            safe_href("https://gitlab/x?a=1&b=2"),
            Some("https://gitlab/x?a=1&amp;b=2".into())
        );
        assert_eq!(safe_href("HTTP://gitlab/x"), Some("HTTP://gitlab/x".into()));
        for bad in [
            "javascript:alert(1)",
            " data:text/html,x",
            "vbscript:x",
            "//evil/x",
            "",
        ] {
            assert_eq!(safe_href(bad), None, "{bad}");
        }
    }
}
