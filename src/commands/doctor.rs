//! `doctor`: what the tool needs, checked in order — GitLab and its
//! version, the token's scopes and expiry, the registry host against the
//! one GitLab reports, the webhooks, the state directory, the server — each
//! failure with what to do. Exit 0 only when nothing failed.

use std::path::Path;

use gitlab_docker_autodep::gitlab::GitLab;
use gitlab_docker_autodep::image::Registry;
use gitlab_docker_autodep::printable::one_line;

use super::{settings, EXIT_OK, EXIT_PIPELINE_FAILED};
use crate::cli::{DoctorArgs, GlobalOptions};

/// One check's verdict.
enum Verdict {
    Ok(String),
    /// Works, but will not for long or not everywhere.
    Warn(String),
    Fail {
        what: String,
        fix: String,
    },
    Skipped(String),
}

fn fail(what: impl Into<String>, fix: impl Into<String>) -> Verdict {
    Verdict::Fail {
        what: what.into(),
        fix: fix.into(),
    }
}

fn report(name: &str, v: &Verdict) -> bool {
    match v {
        Verdict::Ok(text) => println!("ok    {name}: {}", one_line(text)),
        Verdict::Warn(text) => println!("warn  {name}: {}", one_line(text)),
        Verdict::Skipped(text) => println!("skip  {name}: {}", one_line(text)),
        Verdict::Fail { what, fix } => {
            println!("FAIL  {name}: {}", one_line(what));
            println!("      fix: {}", one_line(fix));
            return false;
        }
    }
    true
}

pub async fn run(g: &GlobalOptions, args: DoctorArgs) -> anyhow::Result<u8> {
    let s = settings(g)?;
    let mut ok = true;
    let reachable = match s.gitlab.version().await {
        Ok(v) => report(
            "GitLab",
            &Verdict::Ok(format!("{v} at {}", s.gitlab.base_url())),
        ),
        Err(e) => report(
            "GitLab",
            &fail(
                e.to_string(),
                "check --url (GITLAB_URL) and that this machine reaches it",
            ),
        ),
    };
    ok &= reachable;
    if reachable {
        ok &= report("token", &token(&s.gitlab).await);
        ok &= report("GraphQL", &graphql(&s.gitlab).await);
        ok &= report("registry", &registry(&s.gitlab, &s.registry).await);
        if let Some(url) = &args.webhook_url {
            ok &= report("webhooks", &webhooks(g, url).await);
        }
    }
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(gitlab_docker_autodep::server::default_state_dir);
    ok &= report("state directory", &state_dir(&dir));
    if let Some(url) = &args.webhook_url {
        ok &= report("server", &server(url).await);
    }
    println!(
        "{}",
        if ok {
            "doctor: everything checked works"
        } else {
            "doctor: something failed; see FAIL above"
        }
    );
    Ok(if ok { EXIT_OK } else { EXIT_PIPELINE_FAILED })
}

async fn token(gitlab: &GitLab) -> Verdict {
    let info = match gitlab.token_info().await {
        Ok(i) => i,
        Err(e) => {
            return Verdict::Warn(format!(
                "cannot read the token's own record ({e}); a CI job token or an old GitLab has none"
            ))
        }
    };
    if !info.active {
        return fail(
            format!("token {:?} is not active (revoked or expired)", info.name),
            "create a new token with the api scope",
        );
    }
    if !info.scopes.iter().any(|s| s == "api") {
        return fail(
            format!(
                "token {:?} has the scopes [{}]: graph and deps work, but rebuild, server and hooks sync need api",
                info.name,
                info.scopes.join(", ")
            ),
            "create a token with the api scope (Maintainer on the projects, for hooks sync)",
        );
    }
    let days = info.expires_at.as_deref().and_then(days_left);
    match days {
        Some(d) if d < 0 => fail(
            "the token has expired",
            "create a new token with the api scope",
        ),
        Some(d) if d <= 14 => Verdict::Warn(format!(
            "token {:?} (api) expires in {d} day(s): renew it before then",
            info.name
        )),
        Some(d) => Verdict::Ok(format!("{:?} with api, expires in {d} days", info.name)),
        None => Verdict::Ok(format!("{:?} with api, no expiry", info.name)),
    }
}

/// One page of one project: what every scan's page asks.
async fn graphql(gitlab: &GitLab) -> Verdict {
    let paths = [gitlab_docker_autodep::scan::DOCKERFILE_PATH.to_string()];
    match gitlab.graphql_projects(1, None, &paths, None, None).await {
        Ok(page) => Verdict::Ok(match page.complexity {
            Some((score, limit)) => format!(
                "available: scans read 100 projects per request (a one-project page costs {score} of {limit})"
            ),
            None => "available: scans read 100 projects per request".into(),
        }),
        Err(e) => Verdict::Warn(format!(
            "not usable ({e}); scans fall back to REST, one request per project and file"
        )),
    }
}

fn days_left(date: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let expires = time::Date::parse(date, &format).ok()?;
    Some((expires - time::OffsetDateTime::now_utc().date()).whole_days())
}

/// The registry host GitLab reports for a few projects' repositories.
async fn registry(gitlab: &GitLab, registry: &Registry) -> Verdict {
    let projects = match gitlab.first_projects(20).await {
        Ok(p) => p,
        Err(e) => return Verdict::Warn(format!("cannot list projects: {e}")),
    };
    for p in projects.iter().filter(|p| !p.archived) {
        let Ok(repos) = gitlab.registry_repositories(p.id).await else {
            continue;
        };
        let Some(repo) = repos.first() else { continue };
        let host = repo.location.split('/').next().unwrap_or("");
        if registry.contains(host) {
            return Verdict::Ok(format!(
                "images are matched on {}; GitLab reports {} for {}",
                registry.primary(),
                repo.location,
                p.path_with_namespace
            ));
        }
        return fail(
            format!(
                "GitLab's registry is {host} (it reports {} for {}), but images are matched on {}: \
                 no FROM of a GitLab image would make a dependency",
                repo.location,
                p.path_with_namespace,
                registry.hosts().join(", ")
            ),
            format!("pass --registry {host} (or set CI_REGISTRY={host})"),
        );
    }
    Verdict::Skipped("none of the first 20 projects has registry images to compare".into())
}

async fn webhooks(g: &GlobalOptions, url: &str) -> Verdict {
    let args = crate::cli::HooksStatusArgs {
        webhook_url: url.to_string(),
        all: false,
        group: None,
        json: false,
    };
    match super::hooks::check(g, &args).await {
        Ok((healthy, bad)) if bad.is_empty() => {
            Verdict::Ok(format!("{healthy} project hook(s) point at {url}, all healthy"))
        }
        Ok((healthy, bad)) => fail(
            format!(
                "{} of {} hooks are not in order: {}",
                bad.len(),
                healthy + bad.len(),
                bad.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
            ),
            format!(
                "run `hooks sync --webhook-url {url}` for missing or incomplete hooks; a paused or \
                 disabled hook comes back once a delivery succeeds (fix the cause, then Test it in GitLab)"
            ),
        ),
        Err(e) => Verdict::Warn(format!("cannot check the hooks: {e:#}")),
    }
}

fn state_dir(dir: &Path) -> Verdict {
    let probe = dir.join(".doctor-probe");
    let writable = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"probe"))
        .and_then(|_| std::fs::remove_file(&probe));
    match writable {
        Ok(()) => Verdict::Ok(format!("{} is writable", dir.display())),
        Err(e) => fail(
            format!("{} is not writable: {e}", dir.display()),
            "create it for the server's user, or pass --state-dir (AUTODEP_STATE_DIR)",
        ),
    }
}

/// The server's `/healthz` next to its webhook URL.
async fn server(webhook_url: &str) -> Verdict {
    let Ok(url) = reqwest::Url::parse(webhook_url) else {
        return fail(
            format!("{webhook_url:?} is not a URL"),
            "give --webhook-url as http(s)://HOST[:PORT]/webhook",
        );
    };
    let Ok(health) = url.join("healthz") else {
        return fail(
            "cannot derive /healthz",
            "give --webhook-url as http(s)://HOST/webhook",
        );
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build();
    match client.map(|c| c.get(health.clone())) {
        Ok(r) => match r.send().await {
            Ok(resp) if resp.status().is_success() => Verdict::Ok(format!("{health} answers")),
            Ok(resp) => fail(
                format!("{health} answered {}", resp.status()),
                "check that this URL reaches gitlab-docker-autodep server (a proxy in front?)",
            ),
            Err(e) => fail(
                format!("{health} does not answer: {e}"),
                "start the server, or check that GitLab can reach this URL",
            ),
        },
        Err(e) => fail(e.to_string(), "check the TLS set-up"),
    }
}
