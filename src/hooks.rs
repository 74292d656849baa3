//! Webhooks set up from the command line: for each project, exactly one
//! project hook pointing at the server, with pipeline events, push events
//! of the default branch, TLS verification and nothing else. The decision
//! per project is a pure function of the hooks GitLab lists
//! ([`plan_project`]); [`sync`] carries it out, project by project, and a
//! project it may not manage (403: the token is not Maintainer there) is
//! reported and skipped.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;

use crate::gitlab::{GitLab, GitLabError, Hook, HookOwner};

/// Every event flag of a project hook that this tool turns off.
const OTHER_EVENTS: [&str; 13] = [
    "tag_push_events",
    "merge_requests_events",
    "repository_update_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "confidential_note_events",
    "wiki_page_events",
    "deployment_events",
    "feature_flag_events",
    "job_events",
    "releases_events",
    "emoji_events",
];

/// Where hooks point and with which secret.
#[derive(Debug, Clone)]
pub struct HookTarget {
    pub url: String,
    pub token: Option<String>,
    /// Set the secret on hooks that exist already (GitLab never shows a
    /// hook's secret, so a run cannot tell whether it is right).
    pub rewrite_token: bool,
}

/// Where one hook must be: a project (push events of its default branch)
/// or a group (push events of every branch: the server ignores those not
/// on a project's default branch).
#[derive(Debug, Clone)]
pub struct HookSite {
    pub owner: HookOwner,
    /// The project's or group's full path.
    pub path: String,
    /// `push_events_branch_filter`: the default branch, or empty.
    pub branch_filter: String,
}

/// What one project needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needed {
    Create,
    Update { hook_id: u64, what: Vec<String> },
    InPlace { hook_id: u64 },
}

/// The hooks of a project pointing at `url`: ours is the first; the others
/// are duplicates to delete (a second hook would deliver every event
/// twice).
pub fn plan_project(
    hooks: &[Hook],
    url: &str,
    branch: &str,
    rewrite_token: bool,
) -> (Needed, Vec<u64>) {
    let mut ours = hooks.iter().filter(|h| same_url(&h.url, url));
    let Some(first) = ours.next() else {
        return (Needed::Create, Vec::new());
    };
    let duplicates = ours.map(|h| h.id).collect();
    let mut what = differences(first, branch);
    if rewrite_token {
        what.push("token".into());
    }
    let needed = if what.is_empty() {
        Needed::InPlace { hook_id: first.id }
    } else {
        Needed::Update {
            hook_id: first.id,
            what,
        }
    };
    (needed, duplicates)
}

/// URLs equal but for a trailing slash.
pub fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// What differs from the hook this tool wants.
fn differences(h: &Hook, branch: &str) -> Vec<String> {
    let mut what = Vec::new();
    if !h.pipeline_events {
        what.push("pipeline_events".to_string());
    }
    if !h.push_events {
        what.push("push_events".to_string());
    }
    if h.push_events_branch_filter.as_deref().unwrap_or("") != branch {
        what.push("push_events_branch_filter".to_string());
    }
    if !h.enable_ssl_verification {
        what.push("enable_ssl_verification".to_string());
    }
    what.extend(h.other_events_on());
    what
}

/// The fields sent to create or update a hook.
pub fn hook_fields(target: &HookTarget, branch: &str, with_token: bool) -> serde_json::Value {
    let mut fields = serde_json::json!({
        "url": target.url,
        "pipeline_events": true,
        "push_events": true,
        "push_events_branch_filter": branch,
        "enable_ssl_verification": true,
    });
    for flag in OTHER_EVENTS {
        fields[flag] = serde_json::Value::Bool(false);
    }
    if let (true, Some(token)) = (with_token, &target.token) {
        fields["token"] = serde_json::Value::String(token.clone());
    }
    fields
}

/// What a run did (or, dry, would do) to one project.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    InPlace,
    /// A duplicate, or (with prune) a hook of a project that needs none.
    Deleted,
    /// The token may not manage this project's hooks.
    Skipped,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub project: String,
    pub action: Action,
    pub hook_id: Option<u64>,
    /// What changed, or why it was skipped or failed.
    pub detail: String,
}

/// Brings each project's hook in line (or, with `dry_run`, says what it
/// would do); with `prune`, deletes the hooks pointing at the URL on
/// `unneeded` projects. At most `parallel` projects at once.
pub async fn sync(
    gitlab: &GitLab,
    target: &HookTarget,
    needed: Vec<HookSite>,
    unneeded: Vec<HookSite>,
    dry_run: bool,
    parallel: usize,
) -> Vec<Outcome> {
    let target = Arc::new(target.clone());
    let work = needed
        .into_iter()
        .map(|p| (p, true))
        .chain(unneeded.into_iter().map(|p| (p, false)));
    let mut outcomes: Vec<Outcome> = futures_util::stream::iter(work)
        .map(|(p, wanted)| {
            let target = target.clone();
            async move {
                match sync_project(gitlab, &target, &p, wanted, dry_run).await {
                    Ok(list) => list,
                    Err(e) => vec![failure(&p, e)],
                }
            }
        })
        .buffer_unordered(parallel.max(1))
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    outcomes.sort_by(|a, b| a.project.cmp(&b.project));
    outcomes
}

fn failure(p: &HookSite, e: GitLabError) -> Outcome {
    let (action, detail) = match (e, &p.owner) {
        (GitLabError::Forbidden { .. }, HookOwner::Project(_)) => (
            Action::Skipped,
            "the token may not manage this project's hooks (403): it needs the Maintainer role here".to_string(),
        ),
        (GitLabError::Forbidden { .. }, HookOwner::Group(_)) => (
            Action::Skipped,
            "the token may not manage this group's hooks (403): it needs the Owner role, and group hooks need GitLab Premium".to_string(),
        ),
        (other, _) => (Action::Failed, other.to_string()),
    };
    Outcome {
        project: p.path.clone(),
        action,
        hook_id: None,
        detail,
    }
}

async fn sync_project(
    gitlab: &GitLab,
    target: &HookTarget,
    p: &HookSite,
    wanted: bool,
    dry_run: bool,
) -> Result<Vec<Outcome>, GitLabError> {
    let hooks = gitlab.hooks(&p.owner).await?;
    let outcome = |action, hook_id, detail: String| Outcome {
        project: p.path.clone(),
        action,
        hook_id,
        detail,
    };
    let mut out = Vec::new();
    let (needed, mut delete) =
        plan_project(&hooks, &target.url, &p.branch_filter, target.rewrite_token);
    if !wanted {
        delete = hooks
            .iter()
            .filter(|h| same_url(&h.url, &target.url))
            .map(|h| h.id)
            .collect();
    } else {
        out.push(match needed {
            Needed::InPlace { hook_id } => outcome(Action::InPlace, Some(hook_id), String::new()),
            Needed::Create => {
                let id = if dry_run {
                    None
                } else {
                    let fields = hook_fields(target, &p.branch_filter, true);
                    Some(gitlab.save_hook(&p.owner, None, &fields).await?.id)
                };
                outcome(Action::Created, id, "pipeline and push events".into())
            }
            Needed::Update { hook_id, what } => {
                if !dry_run {
                    let with_token = what.iter().any(|w| w == "token");
                    let fields = hook_fields(target, &p.branch_filter, with_token);
                    gitlab.save_hook(&p.owner, Some(hook_id), &fields).await?;
                }
                outcome(Action::Updated, Some(hook_id), what.join(", "))
            }
        });
    }
    for id in delete {
        if !dry_run {
            gitlab.delete_hook(&p.owner, id).await?;
        }
        let why = if wanted {
            "a second hook to the same URL"
        } else {
            "the project needs no hook (--prune)"
        };
        out.push(outcome(Action::Deleted, Some(id), why.into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: u64, url: &str) -> Hook {
        Hook {
            id,
            url: url.into(),
            push_events: true,
            pipeline_events: true,
            push_events_branch_filter: Some("main".into()),
            enable_ssl_verification: true,
            alert_status: Some("executable".into()),
            disabled_until: None,
            other: Default::default(),
        }
    }

    const URL: &str = "https://autodep.example.com/webhook";

    #[test]
    fn a_project_needs_exactly_one_hook_as_wanted() {
        assert_eq!(
            plan_project(&[], URL, "main", false),
            (Needed::Create, vec![])
        );
        let other = hook(1, "https://chat.example.com/hook");
        assert_eq!(
            plan_project(std::slice::from_ref(&other), URL, "main", false).0,
            Needed::Create
        );
        let ours = hook(2, &format!("{URL}/"));
        assert_eq!(
            plan_project(&[other, ours.clone()], URL, "main", false),
            (Needed::InPlace { hook_id: 2 }, vec![])
        );
        assert_eq!(
            plan_project(&[ours.clone(), hook(3, URL)], URL, "main", false).1,
            vec![3],
            "a duplicate is deleted"
        );
        let mut off = ours.clone();
        off.pipeline_events = false;
        off.push_events_branch_filter = None;
        off.other
            .insert("job_events".into(), serde_json::json!(true));
        assert_eq!(
            plan_project(&[off], URL, "main", false).0,
            Needed::Update {
                hook_id: 2,
                what: vec![
                    "pipeline_events".into(),
                    "push_events_branch_filter".into(),
                    "job_events".into()
                ]
            }
        );
        assert_eq!(
            plan_project(&[ours], URL, "main", true).0,
            Needed::Update {
                hook_id: 2,
                what: vec!["token".into()]
            }
        );
    }
}
