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
async fn the_gitlab_ci_snippet_rebuilds_dependents() {
    let sim = start(vec![
        image_project("platform/base", &[]),
        image_project("apps/api", &["platform/base"]),
    ])
    .await;
    let snippet = read("examples/gitlab-ci/rebuild-dependents.yml");
    let line = snippet
        .lines()
        .find(|l| l.contains("gitlab-docker-autodep rebuild"))
        .expect("a rebuild line");
    let command = line.trim().trim_start_matches("- ").replace(
        "\"$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA\"",
        &format!("{REG}/platform/base:0a1b2c3d"),
    );
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = autodep_env(
        &[("CI_SERVER_URL", &sim.url()), ("GITLAB_TOKEN", TOKEN)],
        &args,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out), ["apps/api"]);
    assert_eq!(triggered(&sim), ["apps/api"]);
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
    std::fs::write(d.join("site.conf"), site).unwrap();
    let main = format!(
        "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  include {0}/site.conf;\n}}\n",
        d.display()
    );
    std::fs::write(d.join("nginx.conf"), main).unwrap();
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .arg("-p")
        .arg(d)
        .output()
        .expect("nginx is installed (scripts/test installs nginx-light when missing)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
