//! Health, readiness, Prometheus metrics and a small status page: the
//! dependency graph as a picture, recent events and triggers, the queue.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::html::{escape, safe_href};
use super::picture::graph_svg;
use super::AppState;

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
             frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
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

/// The newest cascades, each a link to its page, with its members counted
/// by state.
fn cascades_html(html: &mut String, cascades: &[crate::store::StoredCascade]) {
    use super::picture::Shown;
    if cascades.is_empty() {
        return;
    }
    let now = time::OffsetDateTime::now_utc();
    html.push_str("<h2>Cascades</h2><table><tr><th>cascade</th><th>started</th><th>why</th><th>state</th><th>members</th></tr>");
    for c in cascades {
        let mut counts = std::collections::BTreeMap::new();
        for m in c.machine.members.values() {
            *counts.entry(Shown::of(m, None)).or_insert(0usize) += 1;
        }
        let members: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.word()))
            .collect();
        let _ = write!(
            html,
            "<tr><td><a href=\"/cascades/{}\">#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.id,
            c.id,
            super::html::ago(&c.created_at, now),
            escape(&c.reason),
            escape(&c.state),
            members.join(", ")
        );
    }
    html.push_str("</table>");
}

/// The external images watched (`--watch-external`): digest per platform,
/// last check, last change.
async fn watched_html(html: &mut String, app: &Arc<AppState>, now: time::OffsetDateTime) {
    let store = app.store.clone();
    let Ok(Ok(watched)) = tokio::task::spawn_blocking(move || store.watched_digests()).await else {
        return;
    };
    if watched.is_empty() {
        return;
    }
    html.push_str("<h2>Watched images</h2><table><tr><th>image</th><th>platform</th><th>digest</th><th>checked</th><th>changed</th></tr>");
    for w in &watched {
        let short: String = w.digest.chars().take(19).collect();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td title=\"{}\">{}…</td><td>{}</td><td>{}</td></tr>",
            escape(&w.image),
            escape(&w.platform),
            escape(&w.digest),
            escape(&short),
            super::html::ago(&w.checked_at, now),
            w.changed_at
                .as_deref()
                .map(|t| super::html::ago(t, now))
                .unwrap_or_else(|| "never".into()),
        );
    }
    html.push_str("</table>");
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if !app.database_ok() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not answer this replica (see the log); webhooks cannot be stored\n",
        )
            .into_response()
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
    // Pipelines of running cascades from which no hook has come: a silent,
    // paused or disabled webhook shows here before anyone misses a build.
    let store = app.store.clone();
    if let Ok(Ok((waiting, oldest))) = tokio::task::spawn_blocking(move || store.hook_waits()).await
    {
        let age = oldest
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| {
                (time::OffsetDateTime::now_utc() - t)
                    .as_seconds_f64()
                    .max(0.0)
            })
            .unwrap_or(0.0);
        let _ = write!(
            text,
            "# HELP autodep_pipelines_without_hook Pipelines the server created for a running cascade from which no webhook has come yet.
             # TYPE autodep_pipelines_without_hook gauge
autodep_pipelines_without_hook {waiting}
             # HELP autodep_pipeline_hook_wait_seconds How long the oldest of them has waited.
             # TYPE autodep_pipeline_hook_wait_seconds gauge
autodep_pipeline_hook_wait_seconds {age:.0}
"
        );
    }
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

/// The replicas sharing a PostgreSQL database, and who holds which role.
fn replicas_html(html: &mut String, replicas: &[crate::store::ReplicaRow]) {
    if replicas.is_empty() {
        return;
    }
    html.push_str("<h2>Replicas</h2><table><tr><th>replica</th><th>address</th><th>host</th><th>pid</th><th>started</th><th>last heartbeat</th><th>role</th></tr>");
    let now = time::OffsetDateTime::now_utc();
    for r in replicas {
        let role = if r.leader {
            "leader: rescans, reconciliation, retention, digest checks; webhooks and work"
        } else if r.alive {
            "webhooks and work"
        } else {
            "no heartbeat: presumed dead, its work taken over after its lease"
        };
        let _ = write!(
            html,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s ago</td><td>{role}</td></tr>",
            escape(&r.id),
            if r.this { " (this one)" } else { "" },
            escape(&r.address),
            escape(&r.host),
            r.pid,
            super::html::ago(&r.started_at, now),
            r.seen_ms_ago as f64 / 1000.0,
        );
    }
    html.push_str("</table>");
}

/// What the status surfaces show of the store.
struct Snapshot {
    events: Vec<crate::store::StoredEvent>,
    triggers: Vec<crate::store::StoredTrigger>,
    cascades: Vec<crate::store::StoredCascade>,
    /// Pending events, queued triggers, parked events, running cascades.
    depth: (u64, u64, u64, u64),
    /// The replicas sharing the database (none with SQLite).
    replicas: Vec<crate::store::ReplicaRow>,
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
        // The counts before the lists: the work only moves forward, so a
        // cascade that the count no longer sees running is listed as
        // finished too (read the other way round, a step committed in
        // between showed "0 running" beside a running cascade).
        let (events, triggers) = store.queue_depth()?;
        let depth = (
            events,
            triggers,
            store.parked_events()?,
            store.running_cascades()?,
        );
        Ok::<_, crate::store::StoreError>(Snapshot {
            depth,
            events: store.recent_events(recent)?,
            triggers: store.recent_triggers(recent)?,
            cascades: store.recent_cascades(20)?,
            replicas: store.replicas()?,
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
        replicas,
    } = match snapshot(&app, 100).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let view = app.graph();
    let skipped: Vec<_> = skipped_projects(&view, 100)
        .into_iter()
        .map(|(project, reason)| serde_json::json!({"project": project, "reason": reason}))
        .collect();
    let store = app.store.clone();
    let watched = tokio::task::spawn_blocking(move || store.watched_digests())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "ready": app.is_ready(),
        "projects": view.graph.project_count(),
        "dependencies": view.graph.edge_count(),
        "rescans": app.rescans.load(Ordering::SeqCst),
        "replica": {"id": app.store.replica_id(), "leader": app.is_leader()},
        "replicas": replicas,
        "queue": {"pending_events": pending, "queued_triggers": queued, "parked_events": parked, "running_cascades": running},
        "cascades": cascades,
        "watched": watched,
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
        replicas,
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
    let now = time::OffsetDateTime::now_utc();
    let store = app.store.clone();
    let hook_waits = tokio::task::spawn_blocking(move || store.hook_waits())
        .await
        .ok()
        .and_then(Result::ok);
    let mut html = super::html::page_start("gitlab-docker-autodep");
    let _ = write!(
        html,
        "<p>{} · {} projects, {} dependencies · graph built {} · up {} · queue: {pending} event(s), {queued} trigger(s), {parked} parked event(s) · {running} running cascade(s)</p>",
        if app.is_ready() { "ready" } else { "<b>not ready</b> (first scan running)" },
        view.graph.project_count(),
        view.graph.edge_count(),
        super::html::ago(&view.built_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(), now),
        super::html::ago_words(app.started.elapsed().as_secs() as i64).replace(" ago", ""),
    );
    if let Some((n @ 1.., Some(oldest))) = &hook_waits {
        let _ = write!(
            html,
            "<p class=\"failed\">{n} pipeline(s) of running cascades have sent no webhook yet, the oldest created {}: \
             if this grows, check the hooks (<code>hooks status</code>): GitLab pauses a hook after failed deliveries \
             and drops its events. They are polled every --reconcile-interval meanwhile.</p>",
            super::html::ago(oldest, now)
        );
    }
    replicas_html(&mut html, &replicas);
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
    watched_html(&mut html, &app, now).await;
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
            super::html::ago(&t.updated_at, now),
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
            super::html::ago(&e.received_at, now),
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
        let _ = write!(
            html,
            "<li>{} — {}</li>",
            super::html::ago(at, now),
            escape(reason)
        );
    }
    html.push_str("</ul>");
    Html(html).into_response()
}
