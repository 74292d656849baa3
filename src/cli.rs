//! The command line: options, subcommands and their help text. Parsing
//! only; `main.rs` turns the parsed command into work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_HELP: &str = "\
Exit status:
  0  everything asked for was done (and succeeded, with --wait/--recurse)
  1  a pipeline failed, could not be created, or was not started because an upstream failed
  2  usage or configuration error (bad option, missing --url or token, unreadable file)
  3  GitLab unreachable, or the token was rejected
  4  the scan was incomplete: some projects' Dockerfiles could not be read, so the graph may miss dependents";

#[derive(Debug, Parser)]
#[command(
    name = "gitlab-docker-autodep",
    version,
    about = "Rebuild the Docker images of GitLab projects built FROM an image that changed",
    long_about = "Scans every GitLab project's Dockerfile, builds the image dependency graph, and triggers \
the pipelines of the projects built on a rebuilt image — once from the command line, or continuously \
as a webhook server.",
    after_long_help = EXIT_HELP,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// GitLab base URL, e.g. https://gitlab.example.com (env GITLAB_URL; inside
    /// GitLab CI, CI_SERVER_URL is used when nothing else is given).
    #[arg(long, env = "GITLAB_URL", global = true, value_name = "URL")]
    pub url: Option<String>,

    /// Access token with the api scope (env GITLAB_TOKEN). A token given on the
    /// command line is visible to other users in `ps`: prefer --token-file or the
    /// environment. Inside GitLab CI, CI_JOB_TOKEN is used when nothing else is given.
    #[arg(
        long,
        env = "GITLAB_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Read the access token from this file (first line; e.g. a systemd credential).
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// Registry host whose images create dependencies (default: registry. + the
    /// GitLab host). Repeat for aliases, e.g. the same host with a port.
    #[arg(long = "registry", global = true, value_name = "HOST")]
    pub registries: Vec<String>,

    /// Only scan projects that GitLab's project search matches with KEYWORD.
    #[arg(long = "match", global = true, value_name = "KEYWORD")]
    pub match_keyword: Option<String>,

    /// Which API scans read through: GraphQL lists a page of 100 projects
    /// and reads their Dockerfiles in one request; REST costs one request
    /// per project and file. `auto` uses GraphQL, and REST where GraphQL is
    /// missing, disabled or refuses the query.
    #[arg(long, global = true, value_enum, default_value_t = ApiChoice::Auto)]
    pub api: ApiChoice,

    /// A Dockerfile path read in every project, relative to the repository
    /// root; repeat for more (`--dockerfile Dockerfile --dockerfile
    /// docker/Dockerfile.alpine`). A project depends on the images of all
    /// of them.
    #[arg(
        long = "dockerfile",
        global = true,
        value_name = "PATH",
        default_value = "Dockerfile"
    )]
    pub dockerfiles: Vec<String>,

    /// PEM file with an extra CA certificate, for a GitLab behind a private CA.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// GitLab API requests in flight at once.
    #[arg(long, global = true, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Longest wait for one GitLab answer. A GraphQL page that takes longer
    /// is asked again at half the size.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Retries of a GitLab request after a 5xx, 429 or network error.
    #[arg(long, global = true, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub max_retries: u32,

    /// Largest Dockerfile read (bytes, or with KiB/MiB). A larger one is not
    /// downloaded past the limit; its project is reported and skipped, and the
    /// scan stays complete.
    #[arg(long, global = true, default_value = "1MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_dockerfile_size: usize,

    /// More detail on stderr (-v: why each project was skipped; -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `1048576`, `512KiB`, `1MiB` (also `K`, `KB`, `M`, `MB`: powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: usize = text[..digits]
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write bytes, or a number with KiB or MiB"))?;
    let unit = match text[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        other => return Err(format!("unknown size unit {other:?}: use KiB or MiB")),
    };
    match number.checked_mul(unit) {
        Some(0) | None => Err(format!("{text:?} is not a size between 1 byte and 1 TiB")),
        Some(n) if n > 1 << 40 => Err(format!("{text:?} is not a size between 1 byte and 1 TiB")),
        Some(n) => Ok(n),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiChoice {
    Auto,
    #[value(name = "graphql")]
    GraphQl,
    Rest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Text,
    Json,
    Dot,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trigger the pipelines of the projects built on IMAGE (tag ignored).
    ///
    /// Prints one project path per line. Typically the last step of the CI job
    /// that pushed IMAGE. IMAGE may also be a project path, or an image of another
    /// registry (e.g. alpine) to rebuild everything built on it.
    #[command(after_long_help = EXIT_HELP)]
    Rebuild(RebuildArgs),

    /// Show what a rebuild of IMAGE would trigger, as a tree.
    Deps {
        /// Image (tag ignored), project path, or external image.
        image: String,
        /// Only the projects built directly on IMAGE.
        #[arg(long)]
        first_level: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },

    /// Print the whole dependency graph.
    Graph {
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },

    /// Run the webhook server: GitLab calls /webhook on pipeline and push events.
    Server(Box<ServerArgs>),

    /// Check every external image tag the graph uses (another registry's,
    /// e.g. python:3.12-slim) for a new digest on the platforms you build,
    /// and rebuild what is built on each tag that changed, as `rebuild`
    /// would. The first sighting of a tag is recorded and rebuilds nothing;
    /// a registry that cannot be reached is reported and checked next time.
    #[command(after_long_help = EXIT_HELP)]
    Watch(WatchArgs),

    /// Set up or check the project webhooks the server needs.
    #[command(subcommand)]
    Hooks(HooksCommand),

    /// Check, in order, what the tool needs (GitLab, token, registry,
    /// webhooks, state directory, server) and say how to fix each failure.
    Doctor(DoctorArgs),

    /// Start a simulated GitLab with a few image projects, run the server
    /// against it, rebuild a base image and show the cascade.
    Demo {
        /// Pipeline duration in the simulated GitLab.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        pipeline_duration: Duration,
    },

    /// Exit 0 when a server answers on its /healthz, 1 otherwise (for a
    /// container's HEALTHCHECK: the image has no curl).
    Healthcheck {
        /// The server's health URL (default: http://127.0.0.1:$AUTODEP_PORT/healthz,
        /// port 14001 when unset).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },

    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff).
    Manpage,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// A platform you build for (`os/arch[/variant]`); repeat for more. An
    /// update of another platform's image rebuilds nothing.
    #[arg(
        long = "platform",
        value_name = "PLATFORM",
        default_value = "linux/amd64"
    )]
    pub platforms: Vec<String>,

    /// Where the digests seen are kept (env AUTODEP_STATE_DIR; default as
    /// for `server`). Not the directory of a running server.
    #[arg(long, env = "AUTODEP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Say what changed and what would be rebuilt; trigger nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Rebuild the whole tree below each changed tag, in dependency order.
    #[arg(long)]
    pub recurse: bool,

    /// How often to poll a pipeline's status with --recurse.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Make sure every project in the graph (every project with --all) has
    /// exactly one hook pointing at the server: pipeline events, push events
    /// of the default branch, the secret, TLS verification, nothing else.
    /// Creates what is missing, updates what differs, leaves the rest.
    /// Exit 0 when every hook is in place.
    Sync(HooksSyncArgs),
    /// Every hook pointing at the server as GitLab sees it: missing, wrong,
    /// paused or disabled after failed deliveries. Exit 0 when all are
    /// healthy.
    Status(HooksStatusArgs),
}

#[derive(Debug, Args)]
pub struct HooksSyncArgs {
    /// The server's webhook URL, e.g. https://autodep.example.com/webhook.
    #[arg(long, value_name = "URL")]
    pub webhook_url: String,

    /// File with the secret the hooks send (the server's
    /// --webhook-auth-token-file).
    #[arg(long, value_name = "FILE")]
    pub webhook_auth_token_file: Option<PathBuf>,

    /// Say what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Delete hooks pointing at URL on projects that no longer need one
    /// (one more request per such project).
    #[arg(long)]
    pub prune: bool,

    /// Every scanned project, not only those with dependencies.
    #[arg(long, conflicts_with = "group")]
    pub all: bool,

    /// One group hook on this group (full path; GitLab Premium, Owner
    /// role) instead of a hook per project. With --prune, the projects'
    /// own hooks pointing at URL are deleted: the group hook replaces them.
    #[arg(long, value_name = "PATH")]
    pub group: Option<String>,

    /// Set the secret on existing hooks too (GitLab never shows a hook's
    /// secret, so without this an existing hook's secret is left as it is).
    #[arg(long)]
    pub update_token: bool,

    /// Print a JSON report instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HooksStatusArgs {
    /// The server's webhook URL.
    #[arg(long, value_name = "URL")]
    pub webhook_url: String,

    /// Every scanned project, not only those with dependencies.
    #[arg(long, conflicts_with = "group")]
    pub all: bool,

    /// Check the group hook of this group instead of project hooks.
    #[arg(long, value_name = "PATH")]
    pub group: Option<String>,

    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The server's webhook URL: its hooks and its /healthz are checked.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,

    /// The server's state directory, checked for being writable (env
    /// AUTODEP_STATE_DIR; default as for `server`).
    #[arg(long, env = "AUTODEP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The image that was rebuilt, e.g. registry.example.com/group/base:1.2.
    pub image: String,

    /// Print the plan; trigger nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Wait for the triggered pipelines and report each result.
    #[arg(long)]
    pub wait: bool,

    /// Walk the whole tree: each project starts only after every affected
    /// upstream project's pipeline succeeded (implies --wait).
    #[arg(long)]
    pub recurse: bool,

    /// Print a JSON report instead of lines.
    #[arg(long)]
    pub json: bool,

    /// Pipelines running at once with --recurse.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_parallel: u16,

    /// How often to poll a pipeline's status.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Give up waiting for one pipeline after this long.
    #[arg(long, default_value = "3h", value_parser = humantime::parse_duration)]
    pub pipeline_timeout: Duration,

    /// Do not send AUTODEP_* variables with the pipelines.
    #[arg(long)]
    pub no_variables: bool,

    /// Trigger only if IMAGE's digest changed since the last check on a
    /// platform you build for (the tags others build on, or the tag given);
    /// the digests seen are kept in --state-dir. A first check rebuilds.
    #[arg(long)]
    pub if_changed: bool,

    /// Where --if-changed keeps the digests seen (env AUTODEP_STATE_DIR).
    #[arg(
        long,
        env = "AUTODEP_STATE_DIR",
        value_name = "DIR",
        requires = "if_changed"
    )]
    pub state_dir: Option<PathBuf>,

    /// A platform you build for, with --if-changed; repeat for more.
    #[arg(
        long = "platform",
        value_name = "PLATFORM",
        default_value = "linux/amd64"
    )]
    pub platforms: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (env AUTODEP_HOST; the container image sets
    /// 0.0.0.0). Put a TLS reverse proxy in front for anything but loopback.
    #[arg(long, env = "AUTODEP_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (env AUTODEP_PORT).
    #[arg(long, env = "AUTODEP_PORT", default_value_t = 14001)]
    pub port: u16,

    /// Secret GitLab sends as X-Gitlab-Token (env AUTODEP_WEBHOOK_TOKEN).
    #[arg(
        long,
        env = "AUTODEP_WEBHOOK_TOKEN",
        hide_env_values = true,
        conflicts_with = "webhook_auth_token_file"
    )]
    pub webhook_auth_token: Option<String>,

    /// Read the webhook secret from this file.
    #[arg(long, value_name = "FILE")]
    pub webhook_auth_token_file: Option<PathBuf>,

    /// Accept webhooks without a secret: anyone who reaches the server can
    /// make it trigger pipelines. Warned about at every start.
    #[arg(long, conflicts_with_all = ["webhook_auth_token", "webhook_auth_token_file"])]
    pub insecure_no_webhook_auth: bool,

    /// Directory for the state database (env AUTODEP_STATE_DIR; default:
    /// $STATE_DIRECTORY, else $XDG_STATE_HOME/gitlab-docker-autodep, else
    /// ~/.local/state/gitlab-docker-autodep).
    #[arg(long, env = "AUTODEP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Where state is kept: sqlite://PATH (default: state.sqlite3 under
    /// --state-dir, one server) or postgres://USER:PASSWORD@HOST:PORT/DB
    /// (any number of replicas share it). Prefer the env
    /// AUTODEP_DATABASE_URL or --database-file to keep a password out of
    /// `ps`.
    #[arg(
        long,
        env = "AUTODEP_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,

    /// A file whose first line is the --database URL (a mounted secret).
    #[arg(long, value_name = "FILE", conflicts_with = "database")]
    pub database_file: Option<PathBuf>,

    /// With PostgreSQL: how long a replica's claim on an event or a trigger
    /// lasts after its last heartbeat (every second); the work of a replica
    /// that died is taken over after this.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,

    /// How this replica is named on the status page (default: its listen
    /// address), e.g. the pod's name and IP.
    #[arg(long, env = "AUTODEP_ADVERTISE", value_name = "NAME")]
    pub advertise: Option<String>,

    /// Full rescan interval.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,

    /// Largest webhook body accepted (GitLab's pipeline hooks with many jobs
    /// reach hundreds of KiB).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Pipelines created at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub trigger_parallelism: u16,

    /// First delay before retrying a trigger GitLab did not accept (doubles
    /// per attempt, at most 10 minutes). Triggers are retried until GitLab
    /// accepts or refuses them for good.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub trigger_retry_delay: Duration,

    /// Attempts at processing one event (an error or a crash while planning
    /// it) before it is parked as failed; retried with the same backoff as
    /// triggers. Parked events show on the status page and in metrics.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_event_attempts: u32,

    /// Connections open at once; a further one is closed at once.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,

    /// Webhook requests handled at once; more wait for a slot.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_concurrent_requests: u32,

    /// A request's headers must arrive within this time (slow clients are cut off).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// A request's body must arrive within this time.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,

    /// Serve the status pages (/, /status.json, /metrics) on this address
    /// instead of the main one, e.g. 127.0.0.1:14002. Without it they are
    /// served on the main address only when that is loopback, or with
    /// --status-token.
    #[arg(long, value_name = "ADDR")]
    pub status_listen: Option<std::net::SocketAddr>,

    /// Pipelines started by the server that may run at once, across all
    /// cascades; the others wait their turn, shallowest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_running: u32,

    /// A cascade still running after this is closed (its reason says so).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub cascade_timeout: Duration,

    /// A cascade's pipeline whose hook has not come after this is polled
    /// through the API: a lost, paused or dropped hook delays a cascade but
    /// does not stop it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,

    /// In a cascade, a pipeline that stops at a manual job counts as a
    /// success (by default its dependents are not built).
    #[arg(long)]
    pub accept_manual: bool,

    /// Finished events and triggers older than this are deleted (hourly).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// Require `Authorization: Bearer TOKEN` for the status pages (read from
    /// this file, first line).
    #[arg(long, value_name = "FILE")]
    pub status_token_file: Option<PathBuf>,

    /// Check the external images of the graph (another registry's, e.g.
    /// python:3.12-slim) for a new digest this often, and rebuild what is
    /// built on a tag that changed, as one cascade. Off by default.
    #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
    pub watch_external: Option<Duration>,

    /// A platform you build for (`os/arch[/variant]`); repeat for more.
    /// An update of another platform's image rebuilds nothing.
    #[arg(
        long = "platform",
        value_name = "PLATFORM",
        default_value = "linux/amd64"
    )]
    pub platforms: Vec<String>,

    /// When a project's pipeline succeeds, start a cascade only if an image
    /// tag others build on got a new digest on a platform you build for
    /// (a pipeline that only ran tests, or rebuilt identical layers, then
    /// rebuilds nothing; said in the event's outcome).
    #[arg(long)]
    pub only_if_digest_changed: bool,
}
