//! A throwaway PostgreSQL cluster for the tests: Debian's `postgresql`
//! binaries, `initdb` into a temporary directory as an unprivileged user
//! (the `postgres` account when the tests run as root: PostgreSQL refuses
//! to run as root), listening on 127.0.0.1 on a free port. One cluster per
//! test binary; each test takes a database of its own. The cluster is
//! stopped and its directory removed when the test binary exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub struct Cluster {
    pub port: u16,
    /// The CA that signed the server's certificate (TLS is on when
    /// `openssl` is installed).
    pub ca: Option<PathBuf>,
    bin: PathBuf,
    dir: PathBuf,
    /// The account the server runs as, when the tests run as root.
    user: Option<String>,
}

/// Where Debian puts the server's programs (the newest version), or the
/// `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().or_else(|| {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths).find(|d| d.join("initdb").is_file())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn start() -> Cluster {
        let bin = bin_dir().expect("initdb");
        let base = std::env::temp_dir().join(format!(
            "autodep-pg-{}-{}",
            std::process::id(),
            super::registry::free_port()
        ));
        let dir = base.join("data");
        std::fs::create_dir_all(&base).unwrap();
        let user = is_root().then(|| "postgres".to_string());
        if let Some(user) = &user {
            let ok = Command::new("chown")
                .args([user.as_str(), base.to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown {user} {}", base.display());
        }
        let port = super::registry::free_port();
        let ca = certificates(&base, user.as_deref());
        let cluster = Cluster {
            port,
            ca: ca.then(|| base.join("ca.pem")),
            bin,
            dir: dir.clone(),
            user,
        };
        let out = cluster
            .command("initdb")
            .args(["-D", dir.to_str().unwrap()])
            .args(["-U", "autodep", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        );
        if ca {
            options += &format!(
                " -c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
                base.display()
            );
        }
        let out = cluster
            .command("pg_ctl")
            .args([
                "-D",
                dir.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
            ])
            .args(["-l", dir.join("log").to_str().unwrap(), "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        cluster.stop_when_gone(&base);
        cluster
    }

    /// A watcher outlives this process by a moment: when the test binary
    /// exits, it stops the cluster and removes its directory.
    fn stop_when_gone(&self, base: &Path) {
        let pg_ctl = self.bin.join("pg_ctl");
        let as_user = match &self.user {
            Some(u) => format!("runuser -u {u} -- "),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {as_user}{pg_ctl} -D {dir} stop -m immediate >/dev/null 2>&1; rm -rf {base}",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            dir = self.dir.display(),
            base = base.display(),
        );
        // Meant to outlive this process: never waited for.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the cluster's watcher");
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("t{}", NEXT.fetch_add(1, Ordering::SeqCst));
        let admin = self.url("postgres");
        let create = format!("CREATE DATABASE {name}");
        // The synchronous client must not run on an async runtime's thread.
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            c.batch_execute(&create).unwrap();
        })
        .join()
        .unwrap();
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://autodep@127.0.0.1:{}/{database}", self.port)
    }
}

/// A CA and a certificate it signed for 127.0.0.1, in `dir`, the key
/// readable by the server's account only; false when `openssl` is missing.
fn certificates(dir: &Path, user: Option<&str>) -> bool {
    if !super::have_tool("openssl") {
        return false;
    }
    let run = |args: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && openssl {args}", dir.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args}");
    };
    run("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=autodep-test-ca");
    run("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1");
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext");
    let key = dir.join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if let Some(user) = user {
        for file in ["server.key", "server.pem"] {
            let ok = Command::new("chown")
                .arg(user)
                .arg(dir.join(file))
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
    }
    true
}

/// The cluster of this test binary, started on first use; `None` (the
/// test says it was skipped) when PostgreSQL is not installed — a failure
/// with `CI=true`.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if bin_dir().is_none() {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL (initdb) is required when CI=true"
                );
                eprintln!("skipped: PostgreSQL is not installed (Debian's postgresql)");
                return None;
            }
            Some(Cluster::start())
        })
        .as_ref()
}
