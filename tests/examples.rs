//! The deployment examples in `examples/` and the `Dockerfile` work: the CI
//! snippet and the cron line run against the simulator, the systemd unit
//! passes `systemd-analyze verify`, the nginx block passes `nginx -t`
//! (`scripts/test` installs nginx when it can, and says so when it cannot), and the tool's own
//! Dockerfile reads as its author meant.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use gitlab_docker_autodep::dockerfile::{extract, BuildArgs};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_tools_own_dockerfile() {
    let text = read("Dockerfile");
    let images: Vec<(String, bool)> = extract(&text, &BuildArgs::new())
        .images
        .into_iter()
        .map(|i| (i.reference, i.unresolved))
        .collect();
    assert_eq!(
        images,
        [
            ("rust:1.95-alpine".to_string(), false),
            ("alpine:3.22".to_string(), false),
            ("alpine:3.22".to_string(), false)
        ]
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        for source in line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            assert!(
                repo(source).exists(),
                "Dockerfile copies {source}, which does not exist"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ci_component_and_its_include_rebuild_dependents() {
    let sim = start(vec![
        image_project("platform/base", &[]),
        image_project("platform/python", &["platform/base"]),
        image_project("apps/api", &["platform/python"]),
    ])
    .await;
    let component = read("templates/rebuild-dependents.yml");
    let (spec, job) = component
        .split_once("\n---\n")
        .expect("spec, then the job, as the CI/CD catalog expects");
    assert!(spec.contains("spec:\n  inputs:\n"), "{spec}");
    // Every input the job uses is declared, with a default.
    let used: Vec<&str> = job
        .split("$[[ inputs.")
        .skip(1)
        .map(|rest| rest.split(" ]]").next().unwrap())
        .collect();
    assert!(used.contains(&"target") && used.contains(&"options"));
    for input in &used {
        let declared = format!("\n    {input}:\n");
        assert!(spec.contains(&declared), "input {input} is not declared");
        let body = spec.split(&declared).nth(1).unwrap();
        assert!(
            body.lines()
                .take_while(|l| l.starts_with("      "))
                .any(|l| l.trim_start().starts_with("default:")),
            "{input} has no default"
        );
    }
    // The include in examples/ passes inputs the component declares.
    let include = read("examples/gitlab-ci/rebuild-dependents.yml");
    assert!(include.contains("/rebuild-dependents@"), "{include}");
    let options = include
        .lines()
        .find_map(|l| l.trim().strip_prefix("options: "))
        .expect("the include sets options");
    // The job's script with the include's inputs, run as GitLab would.
    let line = job
        .lines()
        .find(|l| l.contains("gitlab-docker-autodep rebuild"))
        .expect("a rebuild line")
        .trim()
        .trim_start_matches("- ")
        .replace("$[[ inputs.options ]]", options)
        .replace(
            "\"$[[ inputs.target ]]\"",
            &format!("{REG}/platform/base:0a1b2c3d"),
        );
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let url = sim.url();
    let out = autodep_env(&[("CI_SERVER_URL", &url), ("GITLAB_TOKEN", TOKEN)], &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(triggered(&sim), ["apps/api", "platform/python"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cron_line_recurses() {
    let sim = start(vec![
        image_project("platform/base", &[]),
        image_project("platform/python", &["platform/base"]),
        image_project("apps/api", &["platform/python"]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let cron = read("examples/cron.example");
    let line = cron
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a cron line");
    let command = line
        .split("root")
        .nth(1)
        .unwrap()
        .split("2>&1")
        .next()
        .unwrap();
    let mut words = command.split_whitespace();
    let env = words.next().unwrap();
    assert!(env.starts_with("GITLAB_URL="));
    assert_eq!(words.next(), Some("/usr/local/bin/gitlab-docker-autodep"));
    let args: Vec<String> = words
        .map(|w| match w {
            "/etc/gitlab-docker-autodep/gitlab-token" => token.to_str().unwrap().to_string(),
            "registry.example.com/platform/base" => format!("{REG}/platform/base"),
            other => other.to_string(),
        })
        .chain(["--poll-interval".to_string(), "20ms".to_string()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = autodep_env(&[("GITLAB_URL", &sim.url())], &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(triggered(&sim), ["apps/api", "platform/python"]);
}

#[test]
fn the_systemd_unit_verifies() {
    if !have_tool("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("gitlab-docker-autodep.service");
    let text = read("examples/systemd/gitlab-docker-autodep.service").replace(
        "/usr/local/bin/gitlab-docker-autodep",
        env!("CARGO_BIN_EXE_gitlab-docker-autodep"),
    );
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("gitlab-docker-autodep.service:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_nginx_block_passes_nginx_t() {
    if !have_tool("nginx") || !have_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=autodep.example.com",
        ])
        .arg("-keyout")
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .output()
        .expect("openssl is installed");
    assert!(cert.status.success());
    let site = read("examples/nginx/gitlab-docker-autodep.conf")
        .replace(
            "/etc/ssl/certs/autodep.example.com.pem",
            d.join("cert.pem").to_str().unwrap(),
        )
        .replace(
            "/etc/ssl/private/autodep.example.com.key",
            d.join("key.pem").to_str().unwrap(),
        );
    if let Err(e) = nginx_accepts(d, &site) {
        panic!("{e}");
    }
}

#[test]
fn completions_and_man_page_are_generated() {
    let bin = env!("CARGO_BIN_EXE_gitlab-docker-autodep");
    let bash = Command::new(bin)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    let text = String::from_utf8_lossy(&bash.stdout);
    assert!(
        text.contains("gitlab-docker-autodep") && text.contains("--recurse"),
        "{text}"
    );
    let man = Command::new(bin).arg("manpage").output().unwrap();
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.starts_with(".ie") || text.contains(".TH"), "{text}");
    assert!(text.contains("rebuild"));
}

/// The instructions of one stage of the tool's Dockerfile, continuation
/// lines joined.
fn stage(text: &str, name: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let mut lines = joined.lines().map(str::trim);
    lines
        .by_ref()
        .find(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {name}")))
        .unwrap_or_else(|| panic!("no stage {name}"));
    lines
        .take_while(|l| !l.starts_with("FROM "))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn env_of(stage: &[String]) -> Vec<(String, String)> {
    stage
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What can be checked of the container images without a Docker daemon:
/// both final stages run as a non-root user that owns the state volume,
/// listen on 0.0.0.0 and have a HEALTHCHECK; the default image has a shell
/// and no ENTRYPOINT (a GitLab CI job image); and the binary, run with the
/// image's environment, serves on 0.0.0.0 and passes the HEALTHCHECK command,
/// which fails once the server is gone.
#[tokio::test(flavor = "multi_thread")]
async fn the_container_images_run_as_operators_expect() {
    let text = read("Dockerfile");
    let build = stage(&text, "build");
    let last_from = text.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert_eq!(last_from, "FROM alpine:3.22 AS alpine", "the default image");
    for name in ["minimal", "alpine"] {
        let s = stage(&text, name);
        let user = s.iter().find_map(|l| l.strip_prefix("USER ")).unwrap();
        assert!(
            !user.starts_with('0') && !user.starts_with("root"),
            "{name}: USER {user}"
        );
        let uid = user.split(':').next().unwrap();
        assert!(
            build.iter().any(|l| l.contains(&format!("chown -R {uid}:"))
                && l.contains("/var/lib/gitlab-docker-autodep")),
            "the state directory is owned by {uid}"
        );
        let env = env_of(&s);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("AUTODEP_HOST"), Some("0.0.0.0"), "{name}");
        assert_eq!(
            get("AUTODEP_STATE_DIR"),
            Some("/var/lib/gitlab-docker-autodep")
        );
        assert!(s
            .iter()
            .any(|l| l == "VOLUME [\"/var/lib/gitlab-docker-autodep\"]"));
        assert!(
            s.iter()
                .any(|l| l.starts_with("HEALTHCHECK") && l.contains("healthcheck")),
            "{name} has a HEALTHCHECK"
        );
    }
    assert!(
        !stage(&text, "alpine")
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT")),
        "a CI job image must not have an ENTRYPOINT"
    );

    // The binary with the image's environment (state in a temporary
    // directory instead of the volume, any free port).
    let sim = start(vec![image_project("g/base", &[])]).await;
    let state = tempfile::tempdir().unwrap();
    let env = env_of(&stage(&text, "alpine"));
    let mut cmd = binary();
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AUTODEP_PORT", "0")
        .env("AUTODEP_STATE_DIR", state.path())
        .env("GITLAB_URL", sim.url())
        .env("GITLAB_TOKEN", TOKEN)
        .env("AUTODEP_WEBHOOK_TOKEN", "secret")
        .arg("server")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut server = cmd.spawn().unwrap();
    let mut out = tokio::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on http://0.0.0.0:")
        .unwrap_or_else(|| panic!("not on 0.0.0.0: {line}"));
    let health = |port: String| async move {
        binary()
            .arg("healthcheck")
            .env("AUTODEP_PORT", port)
            .output()
            .await
            .unwrap()
            .status
            .code()
    };
    assert_eq!(health(port.to_string()).await, Some(0));
    server.kill().await.unwrap();
    server.wait().await.unwrap();
    assert_eq!(health(port.to_string()).await, Some(1));
}
