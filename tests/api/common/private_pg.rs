//! A private PostgreSQL cluster for fault tests: its own data directory and port, so a test can
//! stop and start it while a service runs, without touching the shared server. The binaries come
//! from `pg_config --bindir`; as root they run as the `postgres` user (they refuse to run as root).
//! Dropping it stops the cluster (immediate mode) and removes its directory.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePg {
    bindir: PathBuf,
    /// Parent directory: `data/` (the cluster), `sock/` (its Unix socket), `log`.
    dir: tempfile::TempDir,
    pub port: u16,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

impl PrivatePg {
    /// `initdb` a new cluster (trust auth, superuser `postgres`) and start it on a free port.
    pub fn start() -> Self {
        let out = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("pg_config (PostgreSQL server packages) is needed");
        let bindir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(bindir.join("initdb").exists(), "no initdb in {}", bindir.display());
        let dir = tempfile::Builder::new().prefix("paygate-pg-").tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("sock")).expect("socket dir");
        if is_root() {
            let status = Command::new("chown").arg("-R").arg("postgres:").arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown -R postgres {}", dir.path().display());
        }
        let pg = Self { bindir, port: super::free_port(), dir };
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of the cluster's binaries (as `postgres` when we are root); panics on failure
    /// with its output.
    fn run(&self, binary: &str, args: &[&str]) {
        let program = self.bindir.join(binary);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| panic!("{binary}: {e}"));
        assert!(
            out.status.success(),
            "{binary} {args:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A URL for database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the cluster (`fast`: open connections are terminated, as in a real restart).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the (stopped) cluster on the same port and waits until it accepts connections.
    pub fn start_again(&self) {
        let sock = self.dir.path().join("sock").display().to_string();
        let opts =
            format!("-p {} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60", self.port);
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "-t", "60", "start"]);
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let program = self.bindir.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(args).output()
        } else {
            Command::new(&program).args(args).output()
        };
        // The TempDir removes the directory.
    }
}
