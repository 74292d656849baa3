//! The two-replica deployment examples in `examples/replicas/`, checked as
//! far as this machine allows (no Docker, no Kubernetes): the manifests
//! agree with each other and with the binary's options, the balancer's
//! nginx block passes `nginx -t`, and the Deployment's container — its
//! arguments and environment as Kubernetes would give them, the Secret's
//! values pointing at the simulator and a throwaway PostgreSQL — runs as
//! two replicas that pass their probes, on a read-only root file system.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use gitlab_docker_autodep::store::Database;
use serde_json::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The documents of a multi-document YAML file.
fn documents(path: &str) -> Vec<Value> {
    read(path)
        .split("\n---\n")
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn container(docs: &[Value]) -> &Value {
    &kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_kubernetes_manifests_hang_together() {
    let docs = documents("examples/replicas/kubernetes.yaml");
    let deployment = kind(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"]));
    assert!(selects(&kind(&docs, "Service")["spec"]["selector"]));
    assert!(selects(
        &kind(&docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    ));
    let c = container(&docs);
    let port = &c["ports"][0];
    assert_eq!(
        kind(&docs, "Service")["spec"]["ports"][0]["targetPort"],
        port["name"]
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], port["name"], "{probe}");
    }
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["AUTODEP_PORT"]["value"].as_str(),
        Some(port["containerPort"].to_string().as_str())
    );
    assert_eq!(env["AUTODEP_HOST"]["value"], "0.0.0.0");
    // Every secret the container reads is in the Secret; the database URL
    // is one the binary reads.
    let secret = kind(&docs, "Secret");
    for e in env.values() {
        if let Some(r) = e["valueFrom"].get("secretKeyRef") {
            assert_eq!(r["name"], secret["metadata"]["name"]);
            let key = r["key"].as_str().unwrap();
            assert!(secret["stringData"].get(key).is_some(), "{key} missing");
        }
    }
    let key = env["AUTODEP_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"]
        .as_str()
        .unwrap();
    let url = secret["stringData"][key].as_str().unwrap();
    assert!(matches!(Database::parse(url), Ok(Database::Postgres(_))));
}

#[test]
fn the_compose_file_and_its_balancer_hang_together() {
    let compose: Value = serde_saphyr::from_str(&read("examples/replicas/compose.yaml")).unwrap();
    let services = &compose["services"];
    let (a, b) = (&services["autodep-a"], &services["autodep-b"]);
    assert_eq!(a["command"], b["command"], "the replicas run alike");
    let command: Vec<&str> = a["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(command[0], "server");
    for replica in [a, b] {
        for secret in replica["secrets"].as_array().unwrap() {
            let name = secret.as_str().unwrap();
            assert!(compose["secrets"].get(name).is_some(), "{name}");
            assert!(
                command
                    .iter()
                    .any(|arg| arg.ends_with(&format!("=/run/secrets/{name}"))),
                "{name} is read"
            );
        }
        assert_eq!(
            replica["depends_on"]["postgres"]["condition"],
            "service_healthy"
        );
    }
    // The database URL the README tells to write names the database and
    // user the postgres service creates, on that service.
    let pg = &services["postgres"]["environment"];
    let readme = read("README.md");
    let user = format!("postgres://{}:", pg["POSTGRES_USER"].as_str().unwrap());
    let host = format!("@postgres:5432/{}", pg["POSTGRES_DB"].as_str().unwrap());
    assert!(
        readme
            .lines()
            .any(|l| l.contains(&user) && l.contains(&host) && l.contains("secrets/database_url")),
        "README gives the compose database URL ({user}…{host})"
    );
    // The balancer sends to both replicas, on the port they listen on.
    let site = read("examples/replicas/nginx.conf");
    for name in ["autodep-a", "autodep-b"] {
        assert!(site.contains(&format!("server {name}:14001")), "{name}");
    }
    if !have_tool("nginx") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No Docker network here: the service names are this machine.
    let site = site
        .replace("autodep-a:", "127.0.0.1:")
        .replace("autodep-b:", "127.0.0.2:")
        .replace(
            "listen 14001",
            &format!("listen 127.0.0.1:{}", registry::free_port()),
        );
    if let Err(e) = nginx_accepts(dir.path(), &site) {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployment_runs_as_two_replicas_that_pass_their_probes() {
    let Some(cluster) = common::postgres::cluster() else {
        return;
    };
    let docs = documents("examples/replicas/kubernetes.yaml");
    let c = container(&docs).clone();
    let sim = start(vec![
        image_project("g/base", &[]),
        image_project("g/other", &[]),
        image_project("g/app", &["g/base"]),
    ])
    .await;
    let database = cluster.database();
    // What Kubernetes would put in the environment, with the Secret's
    // values for this machine; loopback, any free port.
    let scratch = tempfile::tempdir().unwrap();
    let no_state = scratch.path().join("never-written");
    let env_for = |pod: &str| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_string();
                let value = if let Some(v) = e["value"].as_str() {
                    v.to_string()
                } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
                    match r["key"].as_str().unwrap() {
                        "gitlab-token" => TOKEN.to_string(),
                        "webhook-token" => "webhook-secret".to_string(),
                        "database-url" => database.clone(),
                        other => panic!("unknown secret key {other}"),
                    }
                } else {
                    pod.to_string()
                };
                (name, value)
            })
            .collect();
        env.retain(|(k, _)| k != "GITLAB_URL" && k != "AUTODEP_HOST" && k != "AUTODEP_PORT");
        env.extend([
            ("GITLAB_URL".into(), sim.url()),
            ("AUTODEP_HOST".into(), "127.0.0.1".into()),
            ("AUTODEP_PORT".into(), "0".into()),
            ("AUTODEP_STATE_DIR".into(), no_state.display().to_string()),
        ]);
        env
    };
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut urls = Vec::new();
    let mut children = Vec::new();
    for pod in ["autodep-0", "autodep-1"] {
        let mut cmd = binary();
        cmd.env_clear()
            .envs(env_for(pod))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
            .await
            .unwrap();
        urls.push(
            line.trim()
                .strip_prefix("listening on ")
                .unwrap()
                .to_string(),
        );
        children.push(child);
    }
    let probe =
        |url: &str, path: &Value| format!("{url}{}", path["httpGet"]["path"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for url in &urls {
        loop {
            let ready = reqwest::get(probe(url, &c["readinessProbe"]))
                .await
                .unwrap();
            if ready.status() == 200 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{url} never ready");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let live = reqwest::get(probe(url, &c["livenessProbe"])).await.unwrap();
        assert_eq!(live.status(), 200);
    }
    // Both replicas under their pod names, one of them leading.
    let server = common::server::Server {
        child: children.remove(0),
        url: urls[0].clone(),
    };
    let s = server
        .wait_until(
            |s| {
                let r = s["replicas"].as_array().cloned().unwrap_or_default();
                r.iter().filter(|r| r["alive"] == true).count() == 2
                    && r.iter().filter(|r| r["leader"] == true).count() == 1
            },
            "two replicas, one leader",
        )
        .await;
    let mut names: Vec<&str> = s["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["autodep-0", "autodep-1"]);
    assert_eq!(s["projects"], 3, "the graph is served");
    // A push reaches one replica; the other serves the new graph too.
    sim.add_webhook(&format!("{}/webhook", urls[0]), Some("webhook-secret"));
    sim.commit_file(
        "g/app",
        "main",
        "Dockerfile",
        &format!("FROM {REG}/g/other:latest\n"),
    )
    .await
    .unwrap();
    let app = project_id(&sim, "g/app").await;
    let other = common::server::Server {
        child: children.remove(0),
        url: urls[1].clone(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let upstreams = other.upstreams(app).await;
        if upstreams == ["g/other"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica still has {upstreams:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let page = reqwest::get(format!("{}/", urls[1]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<h2>Replicas</h2>")
            && page.contains("autodep-0")
            && page.contains("(this one)"),
        "the status page lists the replicas"
    );
    assert_eq!(page.matches("<td>leader: ").count(), 1, "and who leads");
    assert!(
        !no_state.exists(),
        "nothing written to the (read-only) root file system"
    );
}
