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

/// Creates a pipeline; if GitLab refuses pipeline variables for this
/// user, tries once more without them rather than dropping the rebuild.
pub async fn create_pipeline(
    gitlab: &GitLab,
    project_id: u64,
    git_ref: &str,
    variables: &[(String, String)],
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
            gitlab.create_pipeline(project_id, git_ref, &[]).await
        }
        other => other,
    }
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
    let pipeline = match create_pipeline(&gitlab, t.project_id, &t.git_ref, &vars).await {
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
                let vars = autodep_variables(&plan.target, &t.upstream, &t.image);
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
