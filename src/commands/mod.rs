//! What each subcommand does: settings from options, scan, plan, execute,
//! print. Errors carry what to do next; `exit_code_for` maps them.

mod demo;
mod doctor;
mod hooks;
mod server;
mod watch;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::CommandFactory;
use gitlab_docker_autodep::gitlab::{ClientConfig, Credential, GitLab, GitLabError};
use gitlab_docker_autodep::graph::DependencyGraph;
use gitlab_docker_autodep::image::Registry;
use gitlab_docker_autodep::printable::one_line;
use gitlab_docker_autodep::rebuild::{self, RebuildOptions, RebuildReport};
use gitlab_docker_autodep::registry::Credentials;
use gitlab_docker_autodep::scan::{self, Api, DockerfileState, Progress, Scan, ScanOptions};

use crate::cli::{ApiChoice, Cli, Command, GlobalOptions, GraphFormat, HooksCommand, RebuildArgs};

pub const EXIT_OK: u8 = 0;
pub const EXIT_PIPELINE_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_GITLAB: u8 = 3;
pub const EXIT_INCOMPLETE: u8 = 4;

/// A mistake in options or configuration (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return EXIT_USAGE;
        }
        if let Some(gitlab_docker_autodep::store::StoreError::Locked { .. }) = cause.downcast_ref()
        {
            return EXIT_USAGE;
        }
        // A pipeline that fails or cannot be created is a result (exit 1),
        // never an error; any GitLab error that stops a command is 3.
        if cause.downcast_ref::<GitLabError>().is_some() {
            return EXIT_GITLAB;
        }
    }
    EXIT_PIPELINE_FAILED
}

/// Everything a command needs to talk to GitLab.
pub struct Settings {
    pub gitlab: GitLab,
    pub registry: Registry,
    pub match_keyword: Option<String>,
    pub scan: ScanOptions,
    /// For GitLab's own registry: the GitLab token, as `docker login` takes it.
    pub registry_credentials: HashMap<String, Credentials>,
}

pub fn settings(g: &GlobalOptions) -> anyhow::Result<Settings> {
    let url_text = g
        .url
        .clone()
        .or_else(|| {
            std::env::var("CI_SERVER_URL")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .ok_or_else(|| {
            UsageError(
                "no GitLab URL: pass --url https://gitlab.example.com or set GITLAB_URL".into(),
            )
        })?;
    let parsed = reqwest::Url::parse(&url_text).ok();
    if parsed
        .as_ref()
        .is_some_and(|u| !u.username().is_empty() || u.password().is_some())
        || url_text
            .split("://")
            .nth(1)
            .is_some_and(|rest| rest.split('/').next().unwrap_or("").contains('@'))
    {
        bail!(UsageError(
            "--url holds credentials (user:password@host): they would end up in logs, errors and \
             the state database. Give the URL without them and the token with --token-file FILE \
             (or GITLAB_TOKEN)"
                .into()
        ));
    }
    let url = parsed
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| UsageError(format!("--url {url_text:?} is not an http(s) URL; write it like https://gitlab.example.com")))?;
    let credential = if let Some(token) = g.token.clone().filter(|t| !t.is_empty()) {
        Credential::Token(token)
    } else if let Some(file) = &g.token_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| UsageError(format!("cannot read --token-file {}: {e}", file.display())))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            bail!(UsageError(format!(
                "--token-file {} is empty; put the access token on its first line",
                file.display()
            )));
        }
        Credential::Token(token)
    } else if let Some(job) = std::env::var("CI_JOB_TOKEN").ok().filter(|t| !t.is_empty()) {
        Credential::JobToken(job)
    } else {
        bail!(UsageError("no access token: pass --token-file FILE, set GITLAB_TOKEN, or run inside GitLab CI (CI_JOB_TOKEN)".into()));
    };
    // Inside GitLab CI the job knows its registry (often `host:5050`).
    let ci_registry = std::env::var("CI_REGISTRY")
        .ok()
        .filter(|r| !r.trim().is_empty());
    let registry = if let (true, Some(ci)) = (g.registries.is_empty(), &ci_registry) {
        Registry::new([ci.as_str()])
            .ok_or_else(|| UsageError(format!("CI_REGISTRY={ci:?} is not a host name")))?
    } else if g.registries.is_empty() {
        Registry::default_for_gitlab_host(url.host_str().unwrap_or_default())
    } else {
        Registry::new(&g.registries)
            .ok_or_else(|| UsageError("--registry needs a host name".into()))?
    };
    let (user, secret) = match &credential {
        Credential::Token(t) => ("gitlab-docker-autodep", t.clone()),
        Credential::JobToken(t) => ("gitlab-ci-token", t.clone()),
    };
    let registry_credentials = registry
        .hosts()
        .iter()
        .map(|h| {
            let c = Credentials {
                user: user.to_string(),
                secret: secret.clone(),
            };
            (h.clone(), c)
        })
        .collect();
    let mut config = ClientConfig::new(url, credential);
    config.concurrency = g.concurrency as usize;
    config.attempts = g.max_retries + 1;
    config.timeout = g.request_timeout;
    config.max_file_bytes = g.max_dockerfile_size;
    if let Some(path) = &g.ca_cert {
        config.ca_cert =
            Some(std::fs::read(path).map_err(|e| {
                UsageError(format!("cannot read --ca-cert {}: {e}", path.display()))
            })?);
    }
    let gitlab = GitLab::new(config).map_err(|e| UsageError(e.to_string()))?;
    let scan = scan_options(g, &registry)?;
    Ok(Settings {
        gitlab,
        registry,
        match_keyword: g.match_keyword.clone(),
        scan,
        registry_credentials,
    })
}

/// How scans read, from the global options.
fn scan_options(g: &GlobalOptions, registry: &Registry) -> anyhow::Result<ScanOptions> {
    let mut dockerfiles: Vec<String> = Vec::new();
    for path in &g.dockerfiles {
        let clean = path.trim().trim_start_matches("./").trim_start_matches('/');
        if clean.is_empty() || clean.split('/').any(|part| part == ".." || part.is_empty()) {
            bail!(UsageError(format!(
                "--dockerfile {path:?} is not a path inside a repository: write it relative to the root, e.g. docker/Dockerfile"
            )));
        }
        if !dockerfiles.iter().any(|d| d == clean) {
            dockerfiles.push(clean.to_string());
        }
    }
    // With .autodep.yml, one more path per project is read in the same query.
    if dockerfiles.len() >= scan::MAX_PATHS {
        bail!(UsageError(format!(
            "{} --dockerfile paths: at most {} fit in one scan query; list a project's own paths in its .autodep.yml instead",
            dockerfiles.len(),
            scan::MAX_PATHS - 1
        )));
    }
    let mut opts = ScanOptions::new(registry.primary());
    opts.search = g.match_keyword.clone();
    opts.dockerfiles = dockerfiles;
    opts.max_file_bytes = g.max_dockerfile_size;
    opts.api = match g.api {
        ApiChoice::Auto => Api::Auto,
        ApiChoice::GraphQl => Api::GraphQl,
        ApiChoice::Rest => Api::Rest,
    };
    Ok(opts)
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn listed(&self, projects: usize) {
        self.0.set_length(projects as u64);
        self.0.set_message("reading Dockerfiles");
    }
    fn fetched(&self) {
        self.0.inc(1);
    }
}

/// Scans with a progress bar when stderr is a terminal, and logs why each
/// project was skipped (`-v`).
pub async fn scan_and_build(s: &Settings, quiet: bool) -> anyhow::Result<(Scan, DependencyGraph)> {
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() && !quiet {
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{elapsed}]")
                .expect("valid template"),
        );
        bar.set_message("listing projects");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Arc::new(Bar(bar))
    } else {
        Arc::new(scan::NoProgress)
    };
    let scan = scan::scan(&s.gitlab, &s.scan, progress)
        .await
        .context("scan failed")?;
    for p in &scan.projects {
        let path = &p.project.path;
        let branch = p.project.default_branch.as_deref().unwrap_or("HEAD");
        match &p.dockerfile {
            DockerfileState::Missing => {
                tracing::info!("{path}: no Dockerfile on {branch}; skipped")
            }
            DockerfileState::Archived => tracing::info!("{path}: archived; skipped"),
            DockerfileState::EmptyRepo => tracing::info!("{path}: empty repository; skipped"),
            DockerfileState::Failed { error } => {
                tracing::warn!("{path}: Dockerfile could not be read: {error}")
            }
            DockerfileState::TooLarge { limit } => tracing::warn!(
                "{path}: Dockerfile larger than {limit} bytes (--max-dockerfile-size); skipped"
            ),
            DockerfileState::Unreadable { error } => {
                tracing::warn!("{path}: Dockerfile not readable with this token; skipped: {error}")
            }
            DockerfileState::Found { .. } => {}
        }
    }
    let graph = DependencyGraph::build(&scan, &s.registry);
    for note in graph.notes() {
        tracing::info!("{}: {}", note.project, note.message);
    }
    for cycle in graph.cycles() {
        tracing::warn!(
            "dependency cycle: {} (each project is triggered at most once)",
            cycle.join(" ⇄ ")
        );
    }
    tracing::info!(
        projects = scan.projects.len(),
        requests = scan.requests,
        seconds = scan.elapsed.as_secs_f64(),
        "scan finished"
    );
    Ok((scan, graph))
}

/// Lists the projects that could not be read; the exit status that says so.
fn report_incomplete(scan: &Scan) -> u8 {
    let failures: Vec<_> = scan.failures().collect();
    if failures.is_empty() {
        return EXIT_OK;
    }
    eprintln!(
        "warning: {} project(s) could not be read; their dependents may be missing:",
        failures.len()
    );
    for (path, error) in failures {
        eprintln!("  {}: {}", one_line(path), one_line(error));
    }
    EXIT_INCOMPLETE
}

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let quiet = cli.global.quiet;
    match cli.command {
        Command::Rebuild(args) => rebuild_command(&cli.global, args).await,
        Command::Deps {
            image,
            first_level,
            json,
        } => {
            let s = settings(&cli.global)?;
            let (scan, graph) = scan_and_build(&s, quiet).await?;
            let target = graph
                .target(&image)
                .map_err(|e| UsageError(e.to_string()))?;
            let plan = graph.plan(&target, !first_level);
            let out = if json {
                serde_json::to_string_pretty(&plan)? + "\n"
            } else {
                plan.render_tree()
            };
            print(&out)?;
            Ok(report_incomplete(&scan))
        }
        Command::Graph { format } => {
            let s = settings(&cli.global)?;
            let (scan, graph) = scan_and_build(&s, quiet).await?;
            let out = match format {
                GraphFormat::Text => graph.to_text(),
                GraphFormat::Json => serde_json::to_string_pretty(&graph.to_json())? + "\n",
                GraphFormat::Dot => graph.to_dot(),
            };
            print(&out)?;
            Ok(report_incomplete(&scan))
        }
        Command::Server(args) => {
            let s = settings(&cli.global)?;
            server::serve(s, *args).await
        }
        Command::Watch(args) => watch::run(&cli.global, args).await,
        Command::Hooks(HooksCommand::Sync(args)) => hooks::sync(&cli.global, args).await,
        Command::Hooks(HooksCommand::Status(args)) => hooks::status(&cli.global, args).await,
        Command::Doctor(args) => doctor::run(&cli.global, args).await,
        Command::Demo { pipeline_duration } => demo::run(pipeline_duration).await,
        Command::Healthcheck { url } => Ok(healthcheck(url).await),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(
                shell,
                &mut cmd,
                "gitlab-docker-autodep",
                &mut std::io::stdout(),
            );
            Ok(EXIT_OK)
        }
        Command::Manpage => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(EXIT_OK)
        }
    }
}

/// GET the server's `/healthz` with a short timeout: 0 when it answers 200.
async fn healthcheck(url: Option<String>) -> u8 {
    let url = url.unwrap_or_else(|| {
        let port = std::env::var("AUTODEP_PORT").unwrap_or_else(|_| "14001".into());
        format!("http://127.0.0.1:{port}/healthz")
    });
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build();
    match client.map(|c| c.get(&url)) {
        Ok(request) => match request.send().await {
            Ok(r) if r.status().is_success() => EXIT_OK,
            Ok(r) => {
                eprintln!("{url} answered {}", r.status());
                1
            }
            Err(e) => {
                eprintln!("{url}: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("cannot make an HTTP client: {e}");
            1
        }
    }
}

/// Writes our own multi-line output; control characters inside it (from
/// GitLab's data or a Dockerfile) are escaped, newlines kept.
fn print(text: &str) -> anyhow::Result<()> {
    let text = gitlab_docker_autodep::printable::escape_controls(text, true);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn rebuild_command(global: &GlobalOptions, args: RebuildArgs) -> anyhow::Result<u8> {
    let s = settings(global)?;
    let (scan, graph) = scan_and_build(&s, global.quiet).await?;
    let target = graph
        .target(&args.image)
        .map_err(|e| UsageError(e.to_string()))?;
    let check = if args.if_changed {
        match digest_check(&s.registry_credentials, &args, &graph, &target).await? {
            DigestCheck::Unchanged(why) => {
                eprintln!(
                    "{}: {why}; nothing rebuilt (--if-changed)",
                    one_line(&args.image)
                );
                return Ok(report_incomplete(&scan));
            }
            DigestCheck::Go(check) => Some(check),
        }
    } else {
        None
    };
    let plan = graph.plan(&target, args.recurse);
    for skipped in &plan.skipped {
        tracing::info!("{}: {}; not triggered", skipped.project, skipped.reason);
    }
    let report = if args.dry_run {
        rebuild::dry_run(&plan)
    } else {
        let opts = RebuildOptions {
            wait: args.wait,
            recurse: args.recurse,
            max_parallel: args.max_parallel as usize,
            poll_interval: args.poll_interval,
            pipeline_timeout: args.pipeline_timeout,
            variables: !args.no_variables,
        };
        rebuild::execute(&s.gitlab, &plan, &opts).await
    };
    print(&render_report(
        &report,
        args.json,
        args.wait || args.recurse,
    )?)?;
    for r in report
        .results
        .iter()
        .filter(|r| !r.is_ok() && !report.dry_run)
    {
        let why = one_line(r.error.as_deref().unwrap_or(""));
        eprintln!(
            "{}: {}{}{why}",
            one_line(&r.project),
            r.status,
            if why.is_empty() { "" } else { ": " }
        );
    }
    if let (Some((store, seen)), false) = (check, args.dry_run) {
        gitlab_docker_autodep::watch::remember(&store, &seen)?;
    }
    let scan_status = report_incomplete(&scan);
    Ok(if !report.all_ok() && !report.dry_run {
        EXIT_PIPELINE_FAILED
    } else {
        scan_status
    })
}

enum DigestCheck {
    Unchanged(String),
    /// Go on; remember these once triggered.
    Go(
        (
            gitlab_docker_autodep::store::Store,
            Vec<gitlab_docker_autodep::watch::Observation>,
        ),
    ),
}

/// `rebuild --if-changed`: the digests of the target's image tags (those
/// others build on, or the one given) against those seen last.
async fn digest_check(
    credentials: &HashMap<String, Credentials>,
    args: &RebuildArgs,
    graph: &DependencyGraph,
    target: &gitlab_docker_autodep::graph::Target,
) -> anyhow::Result<DigestCheck> {
    use gitlab_docker_autodep::graph::Target;
    let platforms = watch::platforms(&args.platforms)?;
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(gitlab_docker_autodep::server::default_state_dir);
    let store = gitlab_docker_autodep::store::Store::open(&dir)?;
    let given = gitlab_docker_autodep::image::ImageRef::parse(&args.image)
        .ok()
        .and_then(|r| r.tag);
    let mut tags = match target {
        Target::Project(n) => graph.produced_tags(*n),
        Target::External(name) => graph
            .external_tags()
            .into_iter()
            .filter(|(n, _)| n == name)
            .collect(),
    };
    if let Some(tag) = given {
        tags.retain(|(_, t)| *t == tag);
    }
    let client = gitlab_docker_autodep::registry::RegistryClient::new(credentials.clone());
    let seen = gitlab_docker_autodep::watch::observe(&client, &store, &tags, &platforms).await?;
    Ok(
        match gitlab_docker_autodep::watch::reason_to_rebuild(&seen) {
            None => DigestCheck::Unchanged(gitlab_docker_autodep::watch::unchanged(&seen)),
            Some(why) => {
                tracing::info!("rebuilding: {why}");
                DigestCheck::Go((store, seen))
            }
        },
    )
}

/// Lines (`path`, or `path status url` when waited for) or JSON.
fn render_report(report: &RebuildReport, json: bool, waited: bool) -> anyhow::Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(report)? + "\n");
    }
    let mut out = String::new();
    for r in &report.results {
        if waited && !report.dry_run {
            out.push_str(&format!(
                "{}\t{}\t{}\n",
                one_line(&r.project),
                r.status,
                one_line(r.web_url.as_deref().unwrap_or("-"))
            ));
        } else {
            out.push_str(&format!("{}\n", one_line(&r.project)));
        }
    }
    Ok(out)
}
