//! `server`: the webhook server's options turned into its configuration
//! (secrets from files, the listen address resolved), then run until
//! SIGTERM.

use std::net::SocketAddr;

use gitlab_docker_autodep::server::{self, ServerConfig};
use gitlab_docker_autodep::store::Database;

use super::{Settings, UsageError, EXIT_OK};
use crate::cli::ServerArgs;

pub async fn serve(s: Settings, args: ServerArgs) -> anyhow::Result<u8> {
    let webhook_token = match (&args.webhook_auth_token, &args.webhook_auth_token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(file)) => Some(first_line(file, "--webhook-auth-token-file")?),
        (None, None) if args.insecure_no_webhook_auth => None,
        (None, None) => {
            return Err(UsageError(
                "no webhook secret: give one with --webhook-auth-token-file FILE (or \
                 AUTODEP_WEBHOOK_TOKEN), the same as the hooks' Secret token in GitLab. \
                 To accept unauthenticated webhooks anyway, pass --insecure-no-webhook-auth"
                    .into(),
            )
            .into())
        }
    };
    if webhook_token.as_deref() == Some("") {
        return Err(UsageError(
            "the webhook secret is empty, which would let anyone in: give a secret with \
             --webhook-auth-token-file FILE, or pass --insecure-no-webhook-auth on purpose"
                .into(),
        )
        .into());
    }
    let listen: SocketAddr = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            UsageError(format!(
                "--host {:?} is not an address or a name this machine can resolve",
                args.host
            ))
        })?;
    let status_token = match &args.status_token_file {
        Some(file) => Some(first_line(file, "--status-token-file")?),
        None => None,
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(server::default_state_dir);
    let config = ServerConfig {
        refresh_interval: args.refresh_interval,
        max_body_bytes: args.max_body_bytes,
        trigger_parallelism: args.trigger_parallelism as usize,
        retry_delay: args.trigger_retry_delay,
        max_event_attempts: args.max_event_attempts,
        match_keyword: s.match_keyword.clone(),
        scan: s.scan.clone(),
        max_connections: args.max_connections as usize,
        max_concurrent_requests: args.max_concurrent_requests as usize,
        header_read_timeout: args.header_read_timeout,
        body_read_timeout: args.body_read_timeout,
        status_listen: args.status_listen,
        status_token,
        retention: args.retention,
        accept_manual: args.accept_manual,
        reconcile_interval: args.reconcile_interval,
        max_running: args.max_running as usize,
        cascade_timeout: args.cascade_timeout,
        watch_external: args.watch_external,
        only_if_digest_changed: args.only_if_digest_changed,
        registry_credentials: s.registry_credentials.clone(),
        platforms: super::watch::platforms(&args.platforms)?,
        database: database(&args)?,
        lease: args.lease.max(std::time::Duration::from_secs(3)),
        advertise: args.advertise.clone(),
        ..ServerConfig::new(listen, webhook_token, state_dir)
    };
    match &config.database {
        Database::Sqlite(None) => {
            tracing::info!(state_dir = %config.state_dir.display(), "state directory")
        }
        other => tracing::info!(database = %other.describe(), "state database"),
    }
    server::run(s.gitlab, s.registry, config).await?;
    Ok(EXIT_OK)
}

/// `--database`, `AUTODEP_DATABASE_URL` or the first line of
/// `--database-file`; SQLite under `--state-dir` when none is given.
fn database(args: &ServerArgs) -> anyhow::Result<Database> {
    let url = match (&args.database, &args.database_file) {
        (Some(url), _) => url.clone(),
        (None, Some(file)) => first_line(file, "--database-file")?,
        (None, None) => return Ok(Database::default()),
    };
    Database::parse(&url).map_err(|e| UsageError(format!("--database: {e}")).into())
}

/// The first line of a secret file, which must not be empty.
pub(super) fn first_line(file: &std::path::Path, option: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| UsageError(format!("cannot read {option} {}: {e}", file.display())))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err(UsageError(format!("{option} {} is empty", file.display())).into());
    }
    Ok(line)
}
