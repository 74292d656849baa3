//! `hooks sync` and `hooks status`: the projects that need a webhook (from
//! the scan's graph), handed to `hooks::sync`, or their hooks read and
//! judged; one line per change or problem, a summary, an exit status.

use futures_util::StreamExt;
use gitlab_docker_autodep::gitlab::HookOwner;
use gitlab_docker_autodep::graph::{DependencyGraph, Target};
use gitlab_docker_autodep::hooks::{self, Action, HookSite, HookTarget};
use gitlab_docker_autodep::printable::one_line;

use super::{print, scan_and_build, server::first_line, settings, EXIT_OK, EXIT_PIPELINE_FAILED};
use crate::cli::{GlobalOptions, HooksStatusArgs, HooksSyncArgs};

/// Projects that need a hook (in the graph with an edge, or every one with
/// `all`), and the others. Archived projects and those without a
/// repository are neither.
fn split(graph: &DependencyGraph, all: bool) -> (Vec<HookSite>, Vec<HookSite>) {
    let (mut needed, mut unneeded) = (Vec::new(), Vec::new());
    for n in graph.nodes() {
        let node = graph.node(n);
        // Archived projects build nothing; an empty one has no branch yet.
        if node.archived || node.dockerfile == "empty_repo" {
            continue;
        }
        let branch = node.default_branch.clone().unwrap_or_default();
        let p = HookSite {
            owner: HookOwner::Project(node.id),
            path: node.path.clone(),
            branch_filter: branch,
        };
        let linked =
            !graph.upstreams(n).is_empty() || !graph.dependents(&Target::Project(n)).is_empty();
        if all || linked {
            needed.push(p);
        } else {
            unneeded.push(p);
        }
    }
    (needed, unneeded)
}

pub async fn sync(g: &GlobalOptions, args: HooksSyncArgs) -> anyhow::Result<u8> {
    let s = settings(g)?;
    let token = match &args.webhook_auth_token_file {
        Some(file) => Some(first_line(file, "--webhook-auth-token-file")?),
        None => None,
    };
    if token.is_none() && !args.dry_run {
        eprintln!(
            "warning: no --webhook-auth-token-file: new hooks get no secret, and the server \
             refuses their deliveries unless it runs with --insecure-no-webhook-auth"
        );
    }
    let target = HookTarget {
        url: args.webhook_url.clone(),
        token,
        rewrite_token: args.update_token,
    };
    let (needed, unneeded) = match &args.group {
        Some(group) if !args.prune => (vec![group_site(group)], Vec::new()),
        Some(group) => {
            let (_, graph) = scan_and_build(&s, g.quiet).await?;
            (vec![group_site(group)], split(&graph, true).0)
        }
        None => {
            let (_, graph) = scan_and_build(&s, g.quiet).await?;
            let (needed, unneeded) = split(&graph, args.all);
            (needed, if args.prune { unneeded } else { Vec::new() })
        }
    };
    let outcomes = hooks::sync(
        &s.gitlab,
        &target,
        needed,
        unneeded,
        args.dry_run,
        usize::from(g.concurrency).min(8),
    )
    .await;
    let count = |a: Action| outcomes.iter().filter(|o| o.action == a).count();
    let changes = count(Action::Created) + count(Action::Updated) + count(Action::Deleted);
    let problems = count(Action::Skipped) + count(Action::Failed);
    if args.json {
        let report = serde_json::json!({
            "dry_run": args.dry_run,
            "created": count(Action::Created),
            "updated": count(Action::Updated),
            "deleted": count(Action::Deleted),
            "in_place": count(Action::InPlace),
            "skipped": count(Action::Skipped),
            "failed": count(Action::Failed),
            "projects": outcomes,
        });
        print(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        let mut out = String::new();
        let would = if args.dry_run { "would be " } else { "" };
        for o in &outcomes {
            let hook = o.hook_id.map(|id| format!(" #{id}")).unwrap_or_default();
            let project = one_line(&o.project);
            let detail = one_line(&o.detail);
            let line = match o.action {
                Action::InPlace => continue,
                Action::Created => format!("{project}: hook{hook} {would}created ({detail})"),
                Action::Updated => format!("{project}: hook{hook} {would}updated ({detail})"),
                Action::Deleted => format!("{project}: hook{hook} {would}deleted ({detail})"),
                Action::Skipped => format!("{project}: skipped: {detail}"),
                Action::Failed => format!("{project}: failed: {detail}"),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&format!(
            "hooks: {} created, {} updated, {} deleted, {} in place, {} skipped, {} failed{}\n",
            count(Action::Created),
            count(Action::Updated),
            count(Action::Deleted),
            count(Action::InPlace),
            count(Action::Skipped),
            count(Action::Failed),
            match (args.dry_run, changes) {
                (_, 0) => "; nothing to change",
                (true, _) => "; dry run: nothing was changed",
                _ => "",
            }
        ));
        print(&out)?;
    }
    let done = problems == 0 && !(args.dry_run && changes > 0);
    Ok(if done { EXIT_OK } else { EXIT_PIPELINE_FAILED })
}

/// One project's hook as GitLab sees it.
#[derive(Debug, serde::Serialize)]
struct HookHealth {
    project: String,
    hook_id: Option<u64>,
    /// `ok`, `missing`, `incomplete`, `paused`, `disabled`, `unknown`.
    state: &'static str,
    detail: String,
}

/// A group's hook: every branch (the server ignores pushes to branches
/// other than a project's default).
fn group_site(group: &str) -> HookSite {
    HookSite {
        owner: HookOwner::Group(group.to_string()),
        path: group.to_string(),
        branch_filter: String::new(),
    }
}

/// Each needed project's hook (or the group's), judged.
async fn judge_all(g: &GlobalOptions, args: &HooksStatusArgs) -> anyhow::Result<Vec<HookHealth>> {
    let s = settings(g)?;
    let needed = match &args.group {
        Some(group) => vec![group_site(group)],
        None => {
            let (_, graph) = scan_and_build(&s, g.quiet).await?;
            split(&graph, args.all).0
        }
    };
    let gitlab = &s.gitlab;
    let url = args.webhook_url.as_str();
    let mut report: Vec<HookHealth> = futures_util::stream::iter(needed.iter())
        .map(|p| health(gitlab, url, p))
        .buffer_unordered(8)
        .collect()
        .await;
    report.sort_by(|a, b| a.project.cmp(&b.project));
    Ok(report)
}

/// For `doctor`: how many hooks are healthy, and a line for each other.
pub async fn check(
    g: &GlobalOptions,
    args: &HooksStatusArgs,
) -> anyhow::Result<(usize, Vec<String>)> {
    let report = judge_all(g, args).await?;
    let bad: Vec<String> = report
        .iter()
        .filter(|h| h.state != "ok")
        .map(|h| format!("{} {}", h.project, h.state))
        .collect();
    Ok((report.len() - bad.len(), bad))
}

pub async fn status(g: &GlobalOptions, args: HooksStatusArgs) -> anyhow::Result<u8> {
    let report = judge_all(g, &args).await?;
    let bad: Vec<&HookHealth> = report.iter().filter(|h| h.state != "ok").collect();
    if args.json {
        print(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        let mut out = String::new();
        for h in &bad {
            let hook = h.hook_id.map(|id| format!(" #{id}")).unwrap_or_default();
            out.push_str(&format!(
                "{}: hook{hook} {}: {}\n",
                one_line(&h.project),
                h.state,
                one_line(&h.detail)
            ));
        }
        out.push_str(&format!(
            "hooks: {} healthy, {} not ({} projects checked){}\n",
            report.len() - bad.len(),
            bad.len(),
            report.len(),
            if bad.is_empty() {
                ""
            } else {
                "; `hooks sync` creates and repairs missing and incomplete hooks. A paused or \
                 disabled hook comes back after a delivery succeeds: fix what made deliveries \
                 fail (is the server reachable from GitLab? the secret right?), then press Test \
                 in the hook's settings"
            }
        ));
        print(&out)?;
    }
    Ok(if bad.is_empty() {
        EXIT_OK
    } else {
        EXIT_PIPELINE_FAILED
    })
}

async fn health(
    gitlab: &gitlab_docker_autodep::gitlab::GitLab,
    url: &str,
    p: &HookSite,
) -> HookHealth {
    let judged = |hook_id, state, detail: String| HookHealth {
        project: p.path.clone(),
        hook_id,
        state,
        detail,
    };
    let list = match gitlab.hooks(&p.owner).await {
        Ok(list) => list,
        Err(e) => return judged(None, "unknown", e.to_string()),
    };
    let (needed, duplicates) = hooks::plan_project(&list, url, &p.branch_filter, false);
    let hook_id = match &needed {
        hooks::Needed::Create => {
            return judged(None, "missing", "no hook points at the server".into())
        }
        hooks::Needed::Update { hook_id, what } => {
            return judged(
                Some(*hook_id),
                "incomplete",
                format!("differs in {}", what.join(", ")),
            )
        }
        hooks::Needed::InPlace { hook_id } => *hook_id,
    };
    let hook = list
        .iter()
        .find(|h| h.id == hook_id)
        .expect("planned from the list");
    match hook.alert_status.as_deref() {
        Some("temporarily_disabled") => judged(
            Some(hook_id),
            "paused",
            format!(
                "GitLab paused it after failed deliveries, until {}; events meanwhile are dropped",
                hook.disabled_until.as_deref().unwrap_or("unknown")
            ),
        ),
        Some("disabled") => judged(
            Some(hook_id),
            "disabled",
            "GitLab disabled it after repeated failed deliveries; no events are sent".into(),
        ),
        _ if !duplicates.is_empty() => judged(
            Some(hook_id),
            "incomplete",
            format!(
                "{} more hook(s) point at the server: each event arrives twice",
                duplicates.len()
            ),
        ),
        _ => judged(Some(hook_id), "ok", String::new()),
    }
}
