//! Project and group webhooks as GitLab keeps them: the hooks API (list, get, create,
//! update, delete; Maintainer and an `api` token needed), which events each
//! hook receives (push events limited by `push_events_branch_filter`), and
//! GitLab 17.11+'s auto-disabling: four failures in a row pause a hook
//! (`alert_status: temporarily_disabled`, `disabled_until`), forty disable
//! it (`disabled`); meanwhile its events are dropped. Also `/version` and
//! `/personal_access_tokens/self`, which a set-up check reads.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::api::{caller_and_project, query_pairs};
use crate::auth::{error, identify, message, require_write, unauthorized, Caller};
use crate::entities::iso;
use crate::world::TokenScope;
use crate::Shared;

/// The event flags a project hook has, in GitLab's names.
pub const EVENT_FLAGS: [&str; 15] = [
    "push_events",
    "tag_push_events",
    "merge_requests_events",
    "repository_update_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "confidential_note_events",
    "pipeline_events",
    "wiki_page_events",
    "deployment_events",
    "feature_flag_events",
    "job_events",
    "releases_events",
    "emoji_events",
];

/// Failures in a row after which GitLab pauses a hook, and disables it.
pub const PAUSE_AFTER: u32 = 4;
pub const DISABLE_AFTER: u32 = 40;

/// Whether a hook delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Executable,
    TemporarilyDisabled,
    Disabled,
}

#[derive(Debug, Clone)]
pub struct ProjectHook {
    pub id: u64,
    /// 0 for a group hook.
    pub project_id: u64,
    /// A group hook: the group's full path, lower case. It receives the
    /// events of every project in the group and its subgroups.
    pub group: Option<String>,
    pub url: String,
    /// Write-only: never shown by the API.
    pub token: Option<String>,
    pub events: std::collections::BTreeMap<&'static str, bool>,
    pub push_events_branch_filter: String,
    pub enable_ssl_verification: bool,
    pub alert_status: AlertStatus,
    pub disabled_until: Option<OffsetDateTime>,
    pub recent_failures: u32,
    pub created_at: OffsetDateTime,
}

impl ProjectHook {
    fn new(id: u64, project_id: u64, url: String) -> ProjectHook {
        let mut events: std::collections::BTreeMap<&'static str, bool> =
            EVENT_FLAGS.iter().map(|f| (*f, false)).collect();
        // GitLab's default for a new hook: push events on.
        events.insert("push_events", true);
        ProjectHook {
            id,
            project_id,
            group: None,
            url,
            token: None,
            events,
            push_events_branch_filter: String::new(),
            enable_ssl_verification: true,
            alert_status: AlertStatus::Executable,
            disabled_until: None,
            recent_failures: 0,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    /// GitLab's hook entity.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "url": self.url,
            "name": "",
            "description": "",
            "created_at": iso(self.created_at),
            "push_events_branch_filter": self.push_events_branch_filter,
            "branch_filter_strategy": "wildcard",
            "enable_ssl_verification": self.enable_ssl_verification,
            "alert_status": self.alert_status,
            "disabled_until": self.disabled_until.map(iso),
            "url_variables": [],
            "custom_webhook_template": null,
            "resource_access_token_events": false,
        });
        for (flag, on) in &self.events {
            v[*flag] = json!(on);
        }
        match &self.group {
            Some(_) => {
                v["group_id"] = json!(self.project_id);
                v["subgroup_events"] = json!(false);
            }
            None => v["project_id"] = json!(self.project_id),
        }
        v
    }

    /// Whether this hook hears the events of a project in this namespace.
    pub fn covers(&self, project_id: u64, namespace: &str) -> bool {
        match &self.group {
            None => self.project_id == project_id,
            Some(g) => {
                let ns = namespace.to_lowercase();
                ns == *g || ns.starts_with(&format!("{g}/"))
            }
        }
    }

    /// Whether this hook receives this event of this branch now.
    pub fn wants(&self, event: &str, branch: Option<&str>, now: OffsetDateTime) -> Delivery {
        let flag = match event {
            "Pipeline Hook" => "pipeline_events",
            "Push Hook" => "push_events",
            _ => return Delivery::NotSubscribed,
        };
        if !self.events.get(flag).copied().unwrap_or(false) {
            return Delivery::NotSubscribed;
        }
        if flag == "push_events" && !self.push_events_branch_filter.is_empty() {
            if let Some(b) = branch {
                if !wildcard(&self.push_events_branch_filter, b) {
                    return Delivery::NotSubscribed;
                }
            }
        }
        match self.alert_status {
            AlertStatus::Disabled => Delivery::Dropped("hook disabled"),
            AlertStatus::TemporarilyDisabled if self.disabled_until.is_some_and(|u| u > now) => {
                Delivery::Dropped("hook temporarily disabled")
            }
            _ => Delivery::Send,
        }
    }

    /// After a delivery: success resets the count; failures pause, then
    /// disable the hook.
    pub fn record(&mut self, ok: bool, now: OffsetDateTime) {
        if ok {
            self.recent_failures = 0;
            self.alert_status = AlertStatus::Executable;
            self.disabled_until = None;
            return;
        }
        self.recent_failures += 1;
        if self.recent_failures >= DISABLE_AFTER {
            self.alert_status = AlertStatus::Disabled;
            self.disabled_until = None;
        } else if self.recent_failures >= PAUSE_AFTER {
            self.alert_status = AlertStatus::TemporarilyDisabled;
            let minutes = 1i64 << (self.recent_failures - PAUSE_AFTER).min(10);
            self.disabled_until = Some(now + time::Duration::minutes(minutes.min(1440)));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Send,
    NotSubscribed,
    Dropped(&'static str),
}

/// GitLab's branch filter with `*` wildcards.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/api/v4/projects/{id}/hooks",
            get(list::<false>).post(create::<false>),
        )
        .route(
            "/api/v4/projects/{id}/hooks/{hook}",
            get(show::<false>)
                .put(update::<false>)
                .delete(remove::<false>),
        )
        .route(
            "/api/v4/groups/{id}/hooks",
            get(list::<true>).post(create::<true>),
        )
        .route(
            "/api/v4/groups/{id}/hooks/{hook}",
            get(show::<true>).put(update::<true>).delete(remove::<true>),
        )
        .route("/api/v4/version", get(version))
        .route("/api/v4/personal_access_tokens/self", get(token_self))
}

type ApiResult = Result<Response, Response>;

/// Maintainer on the project and an `api` token: what the hooks API needs.
fn maintainer(
    shared: &Shared,
    headers: &HeaderMap,
    raw: &Option<String>,
    id: &str,
    write: bool,
) -> Result<u64, Response> {
    let query = query_pairs(raw);
    let world = shared.world.lock().expect("world lock");
    let (caller, project) = caller_and_project(&world, headers, &query, id, false)?;
    if !caller.authenticated() {
        return Err(unauthorized());
    }
    if write {
        require_write(caller)?;
    }
    if project.guest {
        return Err(message(StatusCode::FORBIDDEN, "403 Forbidden"));
    }
    Ok(project.id)
}

/// Whose hooks a route is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Project(u64),
    /// A group by full path, lower case.
    Group(String),
}

impl Owner {
    fn owns(&self, hook: &ProjectHook) -> bool {
        match self {
            Owner::Project(id) => hook.group.is_none() && hook.project_id == *id,
            Owner::Group(path) => hook.group.as_deref() == Some(path.as_str()),
        }
    }
}

/// A group the caller can manage (an `api` token for writes): by full path
/// or namespace id, as long as some project lives in it.
fn group_owner(
    shared: &Shared,
    headers: &HeaderMap,
    raw: &Option<String>,
    id: &str,
    write: bool,
) -> Result<Owner, Response> {
    let world = shared.world.lock().expect("world lock");
    let caller = identify(&world, headers, &query_pairs(raw), false)?;
    if !caller.authenticated() {
        return Err(unauthorized());
    }
    if write {
        require_write(caller)?;
    }
    let wanted = id.to_lowercase();
    let found = world.projects.values().find_map(|p| {
        let ns = p.namespace_path().to_lowercase();
        if ns == wanted || p.namespace_id.to_string() == wanted {
            Some(ns)
        } else if ns.starts_with(&format!("{wanted}/")) {
            Some(wanted.clone())
        } else {
            None
        }
    });
    match found {
        Some(path) => Ok(Owner::Group(path)),
        None => Err(message(StatusCode::NOT_FOUND, "404 Group Not Found")),
    }
}

fn project_owner(
    shared: &Shared,
    headers: &HeaderMap,
    raw: &Option<String>,
    id: &str,
    write: bool,
) -> Result<Owner, Response> {
    maintainer(shared, headers, raw, id, write).map(Owner::Project)
}

/// Whose hooks a route names: `GROUP` routes are `/groups/:id/hooks`.
fn owner<const GROUP: bool>(
    shared: &Shared,
    headers: &HeaderMap,
    raw: &Option<String>,
    id: &str,
    write: bool,
) -> Result<Owner, Response> {
    if GROUP {
        group_owner(shared, headers, raw, id, write)
    } else {
        project_owner(shared, headers, raw, id, write)
    }
}

async fn list<const GROUP: bool>(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    list_of(
        &shared,
        owner::<GROUP>(&shared, &headers, &raw, &id, false)?,
    )
}

async fn show<const GROUP: bool>(
    State(shared): State<Arc<Shared>>,
    Path((id, hook)): Path<(String, u64)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let owner = owner::<GROUP>(&shared, &headers, &raw, &id, false)?;
    show_of(&shared, owner, hook)
}

async fn create<const GROUP: bool>(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult {
    let owner = owner::<GROUP>(&shared, &headers, &raw, &id, true)?;
    create_for(&shared, owner, &body)
}

async fn update<const GROUP: bool>(
    State(shared): State<Arc<Shared>>,
    Path((id, hook_id)): Path<(String, u64)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult {
    let owner = owner::<GROUP>(&shared, &headers, &raw, &id, true)?;
    update_for(&shared, owner, hook_id, &body)
}

async fn remove<const GROUP: bool>(
    State(shared): State<Arc<Shared>>,
    Path((id, hook_id)): Path<(String, u64)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let owner = owner::<GROUP>(&shared, &headers, &raw, &id, true)?;
    remove_of(&shared, owner, hook_id)
}

fn list_of(shared: &Shared, owner: Owner) -> ApiResult {
    let world = shared.world.lock().expect("world lock");
    let hooks: Vec<Value> = world
        .project_hooks
        .values()
        .filter(|h| owner.owns(h))
        .map(ProjectHook::to_json)
        .collect();
    Ok(Json(hooks).into_response())
}

fn hook_not_found() -> Response {
    message(StatusCode::NOT_FOUND, "404 Not found")
}

fn show_of(shared: &Shared, owner: Owner, hook: u64) -> ApiResult {
    let world = shared.world.lock().expect("world lock");
    match world.project_hooks.get(&hook) {
        Some(h) if owner.owns(h) => Ok(Json(h.to_json()).into_response()),
        _ => Err(hook_not_found()),
    }
}

/// Applies the fields of a create or update body, GitLab's validation
/// first: `url` must be an http(s) URL.
fn apply(hook: &mut ProjectHook, body: &Value) -> Result<(), Response> {
    if let Some(url) = body.get("url") {
        let url = url.as_str().unwrap_or("");
        let valid = reqwest::Url::parse(url)
            .ok()
            .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !valid {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": {"url": ["is blocked: Only allowed schemes are http, https"]}}),
            ));
        }
        hook.url = url.to_string();
    }
    if let Some(token) = body.get("token").and_then(Value::as_str) {
        hook.token = (!token.is_empty()).then(|| token.to_string());
    }
    let flag = |v: &Value| v.as_bool().or_else(|| v.as_str().map(|s| s == "true"));
    for name in EVENT_FLAGS {
        if let Some(on) = body.get(name).and_then(flag) {
            hook.events.insert(name, on);
        }
    }
    if let Some(on) = body.get("enable_ssl_verification").and_then(flag) {
        hook.enable_ssl_verification = on;
    }
    if let Some(filter) = body
        .get("push_events_branch_filter")
        .and_then(Value::as_str)
    {
        hook.push_events_branch_filter = filter.to_string();
    }
    Ok(())
}

fn json_body(body: &Bytes) -> Result<Value, Response> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            json!({"error": "The provided content-type 'application/json' is not supported or the body is not valid JSON."}),
        )
    })
}

fn create_for(shared: &Shared, owner: Owner, body: &Bytes) -> ApiResult {
    let body = json_body(body)?;
    if body.get("url").is_none() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            json!({"error": "url is missing"}),
        ));
    }
    let mut world = shared.world.lock().expect("world lock");
    world.next_hook_id += 1;
    let mut hook = match &owner {
        Owner::Project(id) => ProjectHook::new(world.next_hook_id, *id, String::new()),
        Owner::Group(path) => {
            let mut h = ProjectHook::new(world.next_hook_id, 0, String::new());
            h.group = Some(path.clone());
            h
        }
    };
    apply(&mut hook, &body)?;
    let json = hook.to_json();
    world.project_hooks.insert(hook.id, hook);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

fn update_for(shared: &Shared, owner: Owner, hook_id: u64, body: &Bytes) -> ApiResult {
    let body = json_body(body)?;
    let mut world = shared.world.lock().expect("world lock");
    let Some(hook) = world
        .project_hooks
        .get_mut(&hook_id)
        .filter(|h| owner.owns(h))
    else {
        return Err(hook_not_found());
    };
    let mut changed = hook.clone();
    apply(&mut changed, &body)?;
    *hook = changed;
    Ok(Json(hook.to_json()).into_response())
}

fn remove_of(shared: &Shared, owner: Owner, hook_id: u64) -> ApiResult {
    let mut world = shared.world.lock().expect("world lock");
    match world.project_hooks.get(&hook_id) {
        Some(h) if owner.owns(h) => {
            world.project_hooks.remove(&hook_id);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(hook_not_found()),
    }
}

async fn version(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let world = shared.world.lock().expect("world lock");
    if !identify(&world, &headers, &query_pairs(&raw), false)?.authenticated() {
        return Err(unauthorized());
    }
    Ok(Json(json!({
        "version": "18.6.0-ee",
        "revision": "5b5e4ee1a3b",
        "kas": {"enabled": false, "externalUrl": null, "externalK8sProxyUrl": null, "version": null},
        "enterprise": true,
    }))
    .into_response())
}

async fn token_self(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let world = shared.world.lock().expect("world lock");
    let scopes = match identify(&world, &headers, &query_pairs(&raw), false)? {
        Caller::User(TokenScope::ReadApi) => json!(["read_api"]),
        Caller::User(_) => json!(["api"]),
        _ => return Err(unauthorized()),
    };
    let now = OffsetDateTime::now_utc();
    let expires = (now + time::Duration::days(world.token_days_left)).date();
    Ok(Json(json!({
        "id": 1,
        "name": "gitlab-docker-autodep",
        "revoked": false,
        "created_at": iso(now - time::Duration::days(30)),
        "description": "",
        "scopes": scopes,
        "user_id": 1,
        "last_used_at": iso(now),
        "active": true,
        "expires_at": expires.to_string(),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_filters_match_as_gitlab_s_wildcards() {
        assert!(wildcard("main", "main"));
        assert!(!wildcard("main", "main2"));
        assert!(wildcard("release/*", "release/1.2"));
        assert!(!wildcard("release/*", "feature/x"));
        assert!(wildcard("*-stable", "16-stable"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
    }

    #[test]
    fn four_failures_pause_a_hook_and_forty_disable_it() {
        let now = OffsetDateTime::now_utc();
        let mut hook = ProjectHook::new(1, 1, "http://x/webhook".into());
        hook.events.insert("pipeline_events", true);
        for _ in 0..3 {
            hook.record(false, now);
        }
        assert_eq!(hook.wants("Pipeline Hook", None, now), Delivery::Send);
        hook.record(false, now);
        assert_eq!(hook.alert_status, AlertStatus::TemporarilyDisabled);
        assert!(matches!(
            hook.wants("Pipeline Hook", None, now),
            Delivery::Dropped(_)
        ));
        // Once disabled_until has passed, it is tried again.
        let later = now + time::Duration::minutes(5);
        assert_eq!(hook.wants("Pipeline Hook", None, later), Delivery::Send);
        for _ in 4..40 {
            hook.record(false, now);
        }
        assert_eq!(hook.alert_status, AlertStatus::Disabled);
        assert!(matches!(
            hook.wants("Pipeline Hook", None, later),
            Delivery::Dropped(_)
        ));
        hook.record(true, now);
        assert_eq!(hook.alert_status, AlertStatus::Executable);
    }
}
