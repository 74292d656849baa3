//! Carrying out a trigger plan: create pipelines, wait for them when asked,
//! and in `--recurse` mode start each project only after everything it
//! waits for succeeded — independent branches in parallel, a failure
//! stopping only its own subtree.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use serde::Serialize;

use crate::gitlab::{GitLab, GitLabError, Pipeline};
use crate::plan::{PlannedTrigger, Skipped, TriggerPlan};

/// Statuses after which a pipeline will not change by itself. `manual`
/// waits for a person; we do not play jobs, so it counts as stopped.
pub fn is_settled(status: &str) -> bool {
    matches!(
        status,
        "success" | "failed" | "canceled" | "skipped" | "manual"
    )
}

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    pub wait: bool,
    pub recurse: bool,
    /// Pipelines running at once in `--recurse` mode.
    pub max_parallel: usize,
    pub poll_interval: Duration,
    /// Give up waiting for one pipeline after this long.
    pub pipeline_timeout: Duration,
    /// Send `AUTODEP_*` variables with each pipeline.
    pub variables: bool,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            wait: false,
            recurse: false,
            max_parallel: 8,
            poll_interval: Duration::from_secs(10),
            pipeline_timeout: Duration::from_secs(3 * 3600),
            variables: true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TriggerResult {
    pub project: String,
    pub project_id: u64,
    pub pipeline_id: Option<u64>,
    pub web_url: Option<String>,
    /// `created` (not waited for), a pipeline status, `not_triggered` or
    /// `trigger_failed`.
    pub status: String,
    /// Why it was triggered: the upstream project or image, and the reference.
    pub upstream: String,
    pub image: String,
    pub error: Option<String>,
}

impl TriggerResult {
    pub fn is_ok(&self) -> bool {
        matches!(self.status.as_str(), "created" | "success")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub target: String,
    pub dry_run: bool,
    pub results: Vec<TriggerResult>,
    pub skipped: Vec<Skipped>,
    pub cycles: Vec<Vec<String>>,
}

impl RebuildReport {
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(TriggerResult::is_ok)
    }
}

/// The variables a triggered pipeline carries, so its CI can tell why:
/// what was rebuilt, the upstream that made this project stale, and the
/// reference in its Dockerfile.
pub fn autodep_variables(target: &str, upstream: &str, image: &str) -> Vec<(String, String)> {
    vec![
        ("AUTODEP_TRIGGERED".into(), "true".into()),
        ("AUTODEP_TARGET".into(), target.into()),
        ("AUTODEP_UPSTREAM".into(), upstream.into()),
        ("AUTODEP_UPSTREAM_IMAGE".into(), image.into()),
    ]
}

fn result_for(t: &PlannedTrigger, status: &str) -> TriggerResult {
    TriggerResult {
        project: t.project.clone(),
        project_id: t.project_id,
        pipeline_id: None,
        web_url: None,
        status: status.to_string(),
        upstream: t.upstream.clone(),
        image: t.image.clone(),
        error: None,
    }
}

/// The plan as a report, without doing anything.
pub fn dry_run(plan: &TriggerPlan) -> RebuildReport {
    RebuildReport {
        target: plan.target.clone(),
        dry_run: true,
        results: plan
            .triggers
            .iter()
            .map(|t| result_for(t, "planned"))
            .collect(),
        skipped: plan.skipped.clone(),
        cycles: plan.cycles.clone(),
    }
}

/// Marks every pipeline this tool creates with the id of its trigger, so
/// that after an answer lost in transit the pipeline can be found instead
/// of created twice.
pub const TRIGGER_ID_VARIABLE: &str = "AUTODEP_TRIGGER_ID";

/// Creates a pipeline, never blindly twice. After an ambiguous failure (a
/// 5xx, or no answer after the request was sent) it looks for the pipeline
/// the request may have created — on the same ref, updated since `since`,
/// carrying `trigger_id` in [`TRIGGER_ID_VARIABLE`] — and posts again only
/// when there is none. `look_first` looks before the first post too (a
/// server restarted after it posted and before it recorded the answer).
/// If the project forbids pipeline variables, the pipeline is created
/// without them, and then any pipeline created since on that ref by the
/// API counts as ours.
pub async fn create_pipeline(
    gitlab: &GitLab,
    project_id: u64,
    git_ref: &str,
    variables: &[(String, String)],
    trigger_id: &str,
    since: time::OffsetDateTime,
    look_first: bool,
) -> Result<Pipeline, GitLabError> {
    let mut marked = variables.to_vec();
    if !marked.is_empty() {
        marked.push((TRIGGER_ID_VARIABLE.into(), trigger_id.into()));
    }
    let attempts = gitlab.attempts();
    let mut look = look_first;
    for attempt in 1..=attempts {
        if look {
            let marker = (!marked.is_empty()).then_some(trigger_id);
            if let Some(p) = find_created(gitlab, project_id, git_ref, since, marker).await? {
                tracing::info!(
                    project_id,
                    pipeline = p.id,
                    "found the pipeline an earlier attempt created"
                );
                return Ok(p);
            }
        }
        match post_pipeline(gitlab, project_id, git_ref, &mut marked).await {
            Err(e) if e.is_ambiguous() && attempt < attempts => {
                tracing::warn!(
                    project_id,
                    "creating a pipeline may have failed ({e}); looking before trying again"
                );
                look = true;
                tokio::time::sleep(gitlab.retry_delay(attempt)).await;
            }
            other => return other,
        }
    }
    unreachable!("the last attempt returns")
}

/// One POST; drops the variables (and clears `variables`) when the
/// project forbids them.
async fn post_pipeline(
    gitlab: &GitLab,
    project_id: u64,
    git_ref: &str,
    variables: &mut Vec<(String, String)>,
) -> Result<Pipeline, GitLabError> {
    match gitlab.create_pipeline(project_id, git_ref, variables).await {
        Err(
            GitLabError::Status {
                status: 400,
                message,
                ..
            }
            | GitLabError::Forbidden { message, .. },
        ) if !variables.is_empty() && message.contains("variables") => {
            tracing::warn!(project_id, %message, "GitLab refused the AUTODEP_* variables; triggering without them");
            variables.clear();
            gitlab.create_pipeline(project_id, git_ref, &[]).await
        }
        other => other,
    }
}

/// The pipeline an earlier attempt created: carrying `marker`, or (without
/// one) the newest one the API created on that ref since `since`.
async fn find_created(
    gitlab: &GitLab,
    project_id: u64,
    git_ref: &str,
    since: time::OffsetDateTime,
    marker: Option<&str>,
) -> Result<Option<Pipeline>, GitLabError> {
    for p in gitlab.recent_pipelines(project_id, git_ref, since).await? {
        let ours = match marker {
            Some(id) => gitlab
                .pipeline_variables(project_id, p.id)
                .await?
                .iter()
                .any(|(k, v)| k == TRIGGER_ID_VARIABLE && v == id),
            None => matches!(p.source.as_str(), "api" | "trigger" | "pipeline"),
        };
        if ours {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Polls until the pipeline settles or the timeout passes.
async fn wait_for(
    gitlab: &GitLab,
    mut pipeline: Pipeline,
    opts: &RebuildOptions,
) -> Result<Pipeline, GitLabError> {
    let started = Instant::now();
    while !is_settled(&pipeline.status) {
        if started.elapsed() > opts.pipeline_timeout {
            pipeline.status = "timeout".into();
            return Ok(pipeline);
        }
        tokio::time::sleep(opts.poll_interval).await;
        let web_url = pipeline.web_url.clone();
        pipeline = gitlab.pipeline(pipeline.project_id, pipeline.id).await?;
        if pipeline.web_url.is_empty() {
            pipeline.web_url = web_url;
        }
    }
    Ok(pipeline)
}

/// Triggers one project, and waits for its pipeline when `wait`.
async fn run_one(
    gitlab: GitLab,
    t: PlannedTrigger,
    opts: RebuildOptions,
    wait: bool,
    variables: Vec<(String, String)>,
) -> TriggerResult {
    let mut result = result_for(&t, "trigger_failed");
    let vars = if opts.variables {
        variables
    } else {
        Vec::new()
    };
    // Our clock and GitLab's may differ: look back further than needed.
    let since = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let trigger_id = uuid::Uuid::new_v4().to_string();
    let created = create_pipeline(
        &gitlab,
        t.project_id,
        &t.git_ref,
        &vars,
        &trigger_id,
        since,
        false,
    )
    .await;
    let pipeline = match created {
        Ok(p) => p,
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    tracing::info!(project = %t.project, pipeline = pipeline.id, "pipeline created");
    result.pipeline_id = Some(pipeline.id);
    result.web_url = Some(pipeline.web_url.clone());
    result.status = "created".into();
    if !wait {
        return result;
    }
    match wait_for(&gitlab, pipeline, &opts).await {
        Ok(p) => {
            tracing::info!(project = %t.project, pipeline = p.id, status = %p.status, "pipeline settled");
            result.status = p.status;
        }
        Err(e) => {
            result.status = "unknown".into();
            result.error = Some(format!("lost track of the pipeline: {e}"));
        }
    }
    result
}

/// Executes the plan. Never fails as a whole: each project's outcome is
/// in the report.
pub async fn execute(gitlab: &GitLab, plan: &TriggerPlan, opts: &RebuildOptions) -> RebuildReport {
    let wait = opts.wait || opts.recurse;
    let by_node: HashMap<NodeIndex, &PlannedTrigger> =
        plan.triggers.iter().map(|t| (t.node, t)).collect();
    let mut outcome: HashMap<NodeIndex, TriggerResult> = HashMap::new();
    let mut running = tokio::task::JoinSet::new();
    let mut started: std::collections::HashSet<NodeIndex> = Default::default();
    let limit = if opts.recurse {
        opts.max_parallel.max(1)
    } else {
        usize::MAX
    };
    loop {
        // Block what cannot run any more; start what is ready.
        for t in &plan.triggers {
            if started.contains(&t.node) || outcome.contains_key(&t.node) {
                continue;
            }
            if let Some(failed) = t
                .waits_for
                .iter()
                .find(|u| outcome.get(u).is_some_and(|r| !r.is_ok()))
            {
                let mut r = result_for(t, "not_triggered");
                r.error = Some(format!(
                    "upstream {} did not succeed",
                    by_node[failed].project
                ));
                outcome.insert(t.node, r);
                continue;
            }
            let ready = t
                .waits_for
                .iter()
                .all(|u| outcome.get(u).is_some_and(TriggerResult::is_ok));
            if ready && running.len() < limit {
                started.insert(t.node);
                let (gitlab, t2, o) = (gitlab.clone(), t.clone(), opts.clone());
                let mut vars = autodep_variables(&plan.target, &t.upstream, &t.image);
                vars.extend(t.variables.iter().cloned());
                running.spawn(async move { (t2.node, run_one(gitlab, t2, o, wait, vars).await) });
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (node, result) = joined.expect("trigger task does not panic");
        outcome.insert(node, result);
    }
    RebuildReport {
        target: plan.target.clone(),
        dry_run: false,
        results: plan
            .triggers
            .iter()
            .map(|t| {
                outcome
                    .remove(&t.node)
                    .unwrap_or_else(|| result_for(t, "not_triggered"))
            })
            .collect(),
        skipped: plan.skipped.clone(),
        cycles: plan.cycles.clone(),
    }
}
