//! A real PostgreSQL server for the ledger tests (Debian's `postgresql`): `initdb` into a
//! temporary folder (as the `postgres` user when the tests run as root), `pg_ctl start` on a
//! loopback port, a fresh database per test. One server per test run ([`shared`]), stopped
//! when the test process exits (a watchdog) and swept at the next start if it was left over;
//! a test that stops the database mid-run starts its own ([`PgServer::start`], stopped on drop).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{free_port, wait_for, wait_listening};

/// The folder holding `initdb`, `pg_ctl` and `psql`: `PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`, else `PATH` (empty path).
pub fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_default()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command of the PostgreSQL tools, as the `postgres` user when running as root (initdb and
/// the server refuse root).
fn pg_command(tool: &str) -> Command {
    let path = pg_bin().join(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

const PREFIX: &str = "adr-pg-";

/// A PostgreSQL server in its own temporary folder.
pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
    databases: AtomicUsize,
}

impl PgServer {
    /// `initdb` and start a server on a free loopback port (trust authentication).
    pub fn start(name: &str) -> PgServer {
        sweep_leftovers();
        let dir = std::env::temp_dir().join(format!(
            "{PREFIX}{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot chown {} to postgres", dir.display());
        }
        let data = dir.join("data");
        let out = pg_command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "initdb ({}): {e}; install Debian's postgresql or set PG_BIN",
                    pg_bin().display()
                )
            });
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PgServer {
            dir,
            port: free_port(),
            databases: AtomicUsize::new(0),
        };
        server.start_again();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the (stopped) server again on its port.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let out = pg_command("pg_ctl")
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.join("server.log"))
            .arg("-D")
            .arg(self.data())
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("pg_ctl: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        assert!(
            wait_listening(([127, 0, 0, 1], self.port).into(), Duration::from_secs(30)),
            "PostgreSQL does not listen on {}",
            self.port
        );
    }

    /// Stops the server (fast: open connections are cut, as a crash or failover would).
    pub fn stop(&self) {
        stop_data_dir(&self.data());
    }

    /// A fresh, empty database: its URL.
    pub fn database(&self, name: &str) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let db = format!("{name}_{n}");
        let sql = format!("CREATE DATABASE {db}");
        let ok = wait_for(Duration::from_secs(30), || {
            self.psql("postgres", &sql).is_ok()
        });
        assert!(
            ok,
            "cannot create database {db}: {:?}",
            self.psql("postgres", &sql)
        );
        self.url(&db)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one SQL statement; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stop_data_dir(data: &Path) {
    let _ = pg_command("pg_ctl")
        .args(["-m", "fast", "-w", "-t", "30", "-D"])
        .arg(data)
        .arg("stop")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Stops servers of earlier test runs whose process is gone (a run killed before its
/// watchdog could stop them).
fn sweep_leftovers() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            // adr-pg-NAME-PID-PORT: the owner's pid is the second number from the end.
            let mut parts = rest.rsplit('-');
            let _port = parts.next();
            let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            stop_data_dir(&entry.path().join("data"));
            let _ = std::fs::remove_dir_all(entry.path());
        }
    });
}

/// The test run's PostgreSQL server, started once; a watchdog stops it when this test
/// process exits.
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = PgServer::start("shared");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}",
            pid = std::process::id(),
            stop = stop_script(&server.data()),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        server
    })
}

fn stop_script(data: &Path) -> String {
    let pg_ctl = pg_bin().join("pg_ctl");
    let stop = format!(
        "{} -m immediate -D {} stop",
        pg_ctl.display(),
        data.display()
    );
    let folder = data
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if is_root() {
        format!("runuser -u postgres -- {stop}; rm -rf {folder}")
    } else {
        format!("{stop}; rm -rf {folder}")
    }
}
