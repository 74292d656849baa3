//! GitLab's JSON shapes, as the real API and webhooks send them (compared
//! key by key with `tests/fixtures/gitlab` in the tests).

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::world::{FileBlob, Pipeline, PipelineStatus, Project};

const ISO: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const HOOK_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

/// `2022-09-21T01:05:07.200Z`, as the REST API writes times.
pub fn iso(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(ISO)
        .unwrap_or_default()
}

/// `2016-08-12 15:23:28 UTC`, as pipeline webhooks write times.
pub fn hook_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(HOOK_TIME)
        .unwrap_or_default()
}

fn title_case(path: &str) -> String {
    let mut out = String::new();
    for (i, word) in path.split(['-', '_']).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

fn name_with_namespace(p: &Project) -> String {
    p.path_with_namespace
        .split('/')
        .map(title_case)
        .collect::<Vec<_>>()
        .join(" / ")
}

fn visibility_level(v: &str) -> u64 {
    match v {
        "public" => 20,
        "internal" => 10,
        _ => 0,
    }
}

/// The host of the base URL, without scheme or port (for SSH URLs).
fn host_of(base: &str) -> &str {
    let host_port = base.split("://").nth(1).unwrap_or(base);
    host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
}

fn namespace(p: &Project, base: &str) -> Value {
    let full = p.namespace_path();
    let path = full.rsplit('/').next().unwrap_or(full);
    let parent = full.rfind('/').map(|_| p.namespace_id + 1);
    json!({
        "id": p.namespace_id,
        "name": title_case(path),
        "path": path,
        "kind": if full.contains('/') || !full.starts_with('~') { "group" } else { "user" },
        "full_path": full,
        "parent_id": parent,
        "avatar_url": format!("{base}/uploads/-/system/group/avatar/{}/avatar.png", p.namespace_id),
        "web_url": format!("{base}/groups/{full}"),
    })
}

/// `BasicProjectDetails`: what `simple=true` and anonymous callers get.
pub fn project_simple(p: &Project, base: &str) -> Value {
    let web = format!("{base}/{}", p.path_with_namespace);
    json!({
        "id": p.id,
        "description": "",
        "name": title_case(p.path()),
        "name_with_namespace": name_with_namespace(p),
        "path": p.path(),
        "path_with_namespace": p.path_with_namespace,
        "created_at": iso(p.created_at),
        "default_branch": p.default_branch,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": format!("git@{}:{}.git", host_of(base), p.path_with_namespace),
        "http_url_to_repo": format!("{web}.git"),
        "web_url": web,
        "readme_url": format!("{web}/-/blob/{}/README.md", p.default_branch),
        "forks_count": 0,
        "avatar_url": format!("{base}/uploads/-/system/project/avatar/{}/avatar.png", p.id),
        "star_count": 0,
        "last_activity_at": iso(p.last_activity_at),
        "namespace": namespace(p, base),
    })
}

/// The full project entity of `GET /projects` and `GET /projects/:id`.
pub fn project_full(p: &Project, base: &str, registry_host: &str) -> Value {
    let mut v = project_simple(p, base);
    let api = format!("{base}/api/v4/projects/{}", p.id);
    let extra = json!({
        "description_html": "",
        "updated_at": iso(p.last_activity_at),
        "visibility": p.visibility,
        "owner": {"id": 1, "name": "Administrator", "created_at": iso(p.created_at)},
        "container_registry_image_prefix": format!("{registry_host}/{}", p.path_with_namespace.to_lowercase()),
        "_links": {
            "self": api,
            "issues": format!("{api}/issues"),
            "merge_requests": format!("{api}/merge_requests"),
            "repo_branches": format!("{api}/repository/branches"),
            "labels": format!("{api}/labels"),
            "events": format!("{api}/events"),
            "members": format!("{api}/members"),
            "cluster_agents": format!("{api}/cluster_agents"),
        },
        "packages_enabled": true,
        "package_registry_access_level": "enabled",
        "empty_repo": p.empty_repo(),
        "archived": p.archived,
        "resolve_outdated_diff_discussions": false,
        "container_expiration_policy": {
            "cadence": "1d", "enabled": false, "keep_n": 10, "older_than": "90d",
            "name_regex": ".*", "name_regex_keep": null,
            "next_run_at": iso(p.created_at + time::Duration::days(1)),
        },
        "issues_enabled": true,
        "merge_requests_enabled": true,
        "wiki_enabled": true,
        "jobs_enabled": true,
        "snippets_enabled": true,
        "container_registry_enabled": true,
        "service_desk_enabled": false,
        "can_create_merge_request_in": true,
        "issues_access_level": "enabled",
        "repository_access_level": "enabled",
        "merge_requests_access_level": "enabled",
        "forking_access_level": "enabled",
        "wiki_access_level": "enabled",
        "builds_access_level": "enabled",
        "snippets_access_level": "enabled",
        "pages_access_level": "private",
        "analytics_access_level": "enabled",
        "container_registry_access_level": "enabled",
        "security_and_compliance_access_level": "private",
        "emails_disabled": false,
        "emails_enabled": true,
        "shared_runners_enabled": true,
        "group_runners_enabled": true,
        "lfs_enabled": true,
        "creator_id": 1,
        "import_url": null,
        "import_type": null,
        "import_status": "none",
        "import_error": null,
        "open_issues_count": 0,
        "ci_default_git_depth": 20,
        "ci_forward_deployment_enabled": true,
        "ci_forward_deployment_rollback_allowed": true,
        "ci_allow_fork_pipelines_to_run_in_parent_project": true,
        "ci_id_token_sub_claim_components": ["project_path", "ref_type", "ref"],
        "ci_job_token_scope_enabled": false,
        "ci_separated_caches": true,
        "ci_restrict_pipeline_cancellation_role": "developer",
        "ci_pipeline_variables_minimum_override_role": "developer",
        "ci_push_repository_for_job_token_allowed": false,
        "ci_display_pipeline_variables": false,
        "protect_merge_request_pipelines": true,
        "public_jobs": true,
        "build_timeout": 3600,
        "auto_cancel_pending_pipelines": "enabled",
        "ci_config_path": "",
        "shared_with_groups": [],
        "only_allow_merge_if_pipeline_succeeds": false,
        "allow_merge_on_skipped_pipeline": false,
        "allow_pipeline_trigger_approve_deployment": false,
        "restrict_user_defined_variables": p.pipeline_variables_forbidden,
        "request_access_enabled": true,
        "only_allow_merge_if_all_discussions_are_resolved": false,
        "remove_source_branch_after_merge": true,
        "printing_merge_request_link_enabled": true,
        "printing_merge_requests_link_enabled": true,
        "merge_method": "merge",
        "squash_option": "default_off",
        "enforce_auth_checks_on_uploads": true,
        "suggestion_commit_message": null,
        "merge_commit_template": null,
        "mr_default_title_template": null,
        "squash_commit_template": null,
        "issue_branch_template": "%{id}-%{title}",
        "auto_devops_enabled": false,
        "auto_devops_deploy_strategy": "continuous",
        "autoclose_referenced_issues": true,
        "keep_latest_artifact": true,
        "runner_token_expiration_interval": null,
        "external_authorization_classification_label": "",
        "requirements_enabled": false,
        "requirements_access_level": "enabled",
        "security_and_compliance_enabled": false,
        "secret_push_protection_enabled": false,
        "compliance_frameworks": [],
        "warn_about_potentially_unwanted_characters": true,
        "repository_storage": "default",
        "service_desk_address": null,
        "permissions": {
            "project_access": {"access_level": 40, "notification_level": 3},
            "group_access": null,
        },
    });
    merge(&mut v, extra);
    v
}

fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        t.extend(e);
    }
}

pub fn user() -> Value {
    json!({
        "id": 1,
        "username": "root",
        "name": "Administrator",
        "state": "active",
        "avatar_url": "https://www.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=80&d=identicon",
        "web_url": "http://127.0.0.1/root",
    })
}

fn detailed_status(p: &Pipeline, project: &str) -> Value {
    let status = p.status.as_str();
    let text = match p.status {
        PipelineStatus::Success => "passed",
        PipelineStatus::Failed => "failed",
        other => other.as_str(),
    };
    json!({
        "icon": format!("status_{status}"),
        "text": text,
        "label": text,
        "group": status,
        "tooltip": text,
        "has_details": true,
        "details_path": format!("/{project}/-/pipelines/{}", p.id),
        "illustration": null,
        "favicon": format!("/assets/ci_favicons/favicon_status_{status}.png"),
    })
}

fn seconds_between(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) => json!((b - a).whole_seconds()),
        _ => Value::Null,
    }
}

/// The Pipeline entity (create, trigger, get).
pub fn pipeline(p: &Pipeline, base: &str) -> Value {
    json!({
        "id": p.id,
        "iid": p.iid,
        "project_id": p.project_id,
        "name": null,
        "sha": p.sha,
        "ref": p.git_ref,
        "status": p.status.as_str(),
        "source": p.source,
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
        "web_url": format!("{base}/{}/-/pipelines/{}", p.project_path, p.id),
        "before_sha": "0".repeat(40),
        "tag": false,
        "yaml_errors": null,
        "user": user(),
        "started_at": p.started_at.map(iso),
        "finished_at": p.finished_at.map(iso),
        "committed_at": null,
        "duration": seconds_between(p.started_at, p.finished_at),
        "queued_duration": seconds_between(Some(p.created_at), p.started_at),
        "coverage": null,
        "detailed_status": detailed_status(p, &p.project_path),
    })
}

/// `GET …/repository/files/:path` body.
pub fn file(path: &str, reference: &str, commit: &str, blob: &FileBlob) -> Value {
    json!({
        "file_name": path.rsplit('/').next().unwrap_or(path),
        "file_path": path,
        "size": blob.content.len(),
        "encoding": "base64",
        "content": base64::engine::general_purpose::STANDARD.encode(&blob.content),
        "content_sha256": content_sha256(&blob.content),
        "ref": reference,
        "blob_id": blob.blob_id,
        "commit_id": commit,
        "last_commit_id": blob.last_commit_id,
        "execute_filemode": false,
    })
}

pub fn content_sha256(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn registry_repository(p: &Project, index: usize, name: &str, registry_host: &str) -> Value {
    let mut path = p.path_with_namespace.to_lowercase();
    if !name.is_empty() {
        path = format!("{path}/{name}");
    }
    json!({
        "id": p.id * 100 + index as u64,
        "name": name,
        "path": path,
        "project_id": p.id,
        "location": format!("{registry_host}/{path}"),
        "created_at": iso(p.created_at),
        "cleanup_policy_started_at": null,
        "status": null,
    })
}

fn hook_project(p: &Project, base: &str) -> Value {
    let web = format!("{base}/{}", p.path_with_namespace);
    json!({
        "id": p.id,
        "name": title_case(p.path()),
        "description": "",
        "web_url": web,
        "avatar_url": null,
        "git_ssh_url": format!("git@{}:{}.git", host_of(base), p.path_with_namespace),
        "git_http_url": format!("{web}.git"),
        "namespace": title_case(p.namespace_path().rsplit('/').next().unwrap_or("")),
        "visibility_level": visibility_level(&p.visibility),
        "path_with_namespace": p.path_with_namespace,
        "default_branch": p.default_branch,
        "ci_config_path": "",
        "homepage": web,
        "url": format!("git@{}:{}.git", host_of(base), p.path_with_namespace),
        "ssh_url": format!("git@{}:{}.git", host_of(base), p.path_with_namespace),
        "http_url": format!("{web}.git"),
    })
}

fn hook_user() -> Value {
    json!({
        "id": 1,
        "name": "Administrator",
        "username": "root",
        "avatar_url": "https://www.gravatar.com/avatar/e32bd13e2add097461cb96824b7a829c?s=80&d=identicon",
        "email": "admin@example.com",
    })
}

/// A Pipeline Hook body.
pub fn pipeline_hook(
    p: &Pipeline,
    project: &Project,
    upstream: Option<&Project>,
    base: &str,
) -> Value {
    let web = format!("{base}/{}", project.path_with_namespace);
    let source_pipeline = upstream.map(|u| {
        json!({
            "project": {"id": u.id, "web_url": format!("{base}/{}", u.path_with_namespace), "path_with_namespace": u.path_with_namespace},
            "pipeline_id": 0,
            "job_id": 0,
        })
    });
    let mut body = json!({
        "object_kind": "pipeline",
        "object_attributes": {
            "id": p.id,
            "iid": p.iid,
            "name": null,
            "ref": p.git_ref,
            "tag": false,
            "sha": p.sha,
            "before_sha": "0".repeat(40),
            "source": p.source,
            "status": p.status.as_str(),
            "detailed_status": detailed_status(p, &project.path_with_namespace)["text"],
            "stages": ["build"],
            "created_at": hook_time(p.created_at),
            "finished_at": p.finished_at.map(hook_time),
            "duration": seconds_between(p.started_at, p.finished_at),
            "queued_duration": seconds_between(Some(p.created_at), p.started_at),
            "protected_ref": true,
            "variables": p.variables.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
            "url": format!("{web}/-/pipelines/{}", p.id),
        },
        "merge_request": null,
        "user": hook_user(),
        "project": hook_project(project, base),
        "commit": {
            "id": p.sha,
            "message": "Update Dockerfile\n",
            "title": "Update Dockerfile",
            "timestamp": iso(p.created_at),
            "url": format!("{web}/-/commit/{}", p.sha),
            "author": {"name": "Administrator", "email": "admin@example.com"},
        },
        "builds": [{
            "id": p.id * 10,
            "stage": "build",
            "name": "docker-build",
            "status": p.status.as_str(),
            "created_at": hook_time(p.created_at),
            "started_at": p.started_at.map(hook_time),
            "finished_at": p.finished_at.map(hook_time),
            "duration": seconds_between(p.started_at, p.finished_at),
            "queued_duration": seconds_between(Some(p.created_at), p.started_at),
            "failure_reason": if p.status == PipelineStatus::Failed { json!("script_failure") } else { Value::Null },
            "when": "on_success",
            "manual": false,
            "allow_failure": false,
            "user": hook_user(),
            "runner": null,
            "artifacts_file": {"filename": null, "size": null},
            "environment": null,
        }],
    });
    if let Some(sp) = source_pipeline {
        body["source_pipeline"] = sp;
    }
    body
}

/// A Push Hook body for one commit touching one file.
#[allow(clippy::too_many_arguments)]
pub fn push_hook(
    project: &Project,
    branch: &str,
    before: &str,
    after: &str,
    path: &str,
    added: bool,
    now: OffsetDateTime,
    base: &str,
) -> Value {
    let web = format!("{base}/{}", project.path_with_namespace);
    let (added_files, modified): (Vec<&str>, Vec<&str>) = if added {
        (vec![path], vec![])
    } else {
        (vec![], vec![path])
    };
    let project_json = hook_project(project, base);
    json!({
        "object_kind": "push",
        "event_name": "push",
        "before": before,
        "after": after,
        "ref": format!("refs/heads/{branch}"),
        "ref_protected": branch == project.default_branch,
        "checkout_sha": after,
        "message": null,
        "user_id": 1,
        "user_name": "Administrator",
        "user_username": "root",
        "user_email": "",
        "user_avatar": "https://www.gravatar.com/avatar/e32bd13e2add097461cb96824b7a829c?s=80&d=identicon",
        "project_id": project.id,
        "project": project_json,
        "commits": [{
            "id": after,
            "message": format!("Update {path}\n"),
            "title": format!("Update {path}"),
            "timestamp": iso(now),
            "url": format!("{web}/-/commit/{after}"),
            "author": {"name": "Administrator", "email": "admin@example.com"},
            "added": added_files,
            "modified": modified,
            "removed": [],
        }],
        "total_commits_count": 1,
        "push_options": {},
        "repository": {
            "name": title_case(project.path()),
            "url": format!("git@{}:{}.git", host_of(base), project.path_with_namespace),
            "description": "",
            "homepage": web,
            "git_http_url": format!("{web}.git"),
            "git_ssh_url": format!("git@{}:{}.git", host_of(base), project.path_with_namespace),
            "visibility_level": visibility_level(&project.visibility),
        },
    })
}
