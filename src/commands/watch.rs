//! `watch`: the external image tags of the graph checked against the
//! digests seen last (kept in the state directory), and a rebuild of what
//! is built on each tag that changed.

use gitlab_docker_autodep::printable::one_line;
use gitlab_docker_autodep::rebuild::{self, RebuildOptions};
use gitlab_docker_autodep::registry::{Platform, RegistryClient};
use gitlab_docker_autodep::store::Store;
use gitlab_docker_autodep::watch::{self, Outcome};

use super::{
    print, render_report, scan_and_build, settings, UsageError, EXIT_OK, EXIT_PIPELINE_FAILED,
};
use crate::cli::{GlobalOptions, WatchArgs};

/// `--platform` values, each `os/arch[/variant]`.
pub fn platforms(list: &[String]) -> anyhow::Result<Vec<Platform>> {
    let mut platforms = Vec::new();
    for text in list {
        platforms.push(Platform::parse(text).ok_or_else(|| {
            UsageError(format!(
                "--platform {text:?} is not os/arch[/variant], e.g. linux/amd64"
            ))
        })?);
    }
    Ok(platforms)
}

pub async fn run(g: &GlobalOptions, args: WatchArgs) -> anyhow::Result<u8> {
    let platforms = platforms(&args.platforms)?;
    let s = settings(g)?;
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(gitlab_docker_autodep::server::default_state_dir);
    let store = Store::open(&dir)?;
    let (_, graph) = scan_and_build(&s, g.quiet).await?;
    let client = RegistryClient::new(s.registry_credentials.clone());
    let tags = graph.external_tags();
    let seen = watch::observe(&client, &store, &tags, &platforms).await?;
    let mut out = String::new();
    for o in &seen {
        let image = one_line(&o.image()).into_owned();
        match &o.outcome {
            Outcome::First { digest } => out.push_str(&format!(
                "first seen: {image} ({}) {digest}; nothing rebuilt\n",
                o.platform
            )),
            Outcome::Same { .. } => tracing::info!("{image} ({}) unchanged", o.platform),
            Outcome::Changed { from, to } => out.push_str(&format!(
                "digest of {image} ({}) changed from {from} to {to}\n",
                o.platform
            )),
            Outcome::Unchecked { error } => eprintln!(
                "cannot check {image}: {}; checked again on the next run",
                one_line(error)
            ),
        }
    }
    print(&out)?;
    let mut all_ok = true;
    for (name, tag) in watch::changed(&seen) {
        let plan = graph.plan_for_tag(&name, &tag, args.recurse);
        let report = if args.dry_run {
            rebuild::dry_run(&plan)
        } else {
            let opts = RebuildOptions {
                wait: args.recurse,
                recurse: args.recurse,
                max_parallel: 8,
                poll_interval: args.poll_interval,
                pipeline_timeout: std::time::Duration::from_secs(3 * 3600),
                variables: true,
            };
            rebuild::execute(&s.gitlab, &plan, &opts).await
        };
        all_ok &= report.all_ok() || report.dry_run;
        print(&render_report(&report, false, args.recurse)?)?;
    }
    // Remembered once acted on: a run stopped before this sees the change
    // again rather than losing it.
    if !args.dry_run {
        watch::remember(&store, &seen)?;
    }
    Ok(if all_ok {
        EXIT_OK
    } else {
        EXIT_PIPELINE_FAILED
    })
}
