//! A harness for end-to-end tests: a cluster of real `sitewatch-agent` and
//! `sitewatch-witness` processes on loopback, bootstrapped with the real `sitewatch ca` and
//! `sitewatch cert` commands, observed through the real `sitewatch status --json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod footprint;
pub mod invariants;
pub mod lab;
pub mod moto;
pub mod netns;
pub mod receiver;
pub mod relay;
pub mod stats;
pub mod upsd;

/// The directory holding the workspace's binaries: `target/<profile>` for a test
/// (which runs from `target/<profile>/deps`) or for a bench binary beside them.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    if dir.ends_with("deps") { dir.parent().expect("target directory").to_owned() } else { dir.to_owned() }
}

/// Build the daemons and the CLI once per test process, so a test never runs a stale
/// binary (`cargo test -p sitewatch-tests` alone would not rebuild them).
fn ensure_built() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let Some(cargo) = std::env::var_os("CARGO") else { return };
        let mut cmd = Command::new(cargo);
        // Drop what cargo set for this test crate: ring's build script reruns when
        // CARGO_MANIFEST_DIR changes, which would rebuild half the tree on every run.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            let per_crate = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
                "CARGO_BIN_",
                "CARGO_TARGET_TMPDIR",
            ];
            if per_crate.iter().any(|p| k.starts_with(p)) || k == "OUT_DIR" {
                cmd.env_remove(&key);
            }
        }
        // --workspace: the same feature set as `cargo test --workspace`, so nothing is rebuilt.
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        if bin_dir().ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
    });
}

pub fn bin(name: &str) -> PathBuf {
    ensure_built();
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing: build it with `cargo build --workspace --bins`", path.display());
    path
}

/// Run `sitewatch ARGS` to completion.
pub fn sitewatch(args: &[&str]) -> Output {
    Command::new(bin("sitewatch")).args(args).output().expect("run sitewatch")
}

/// Whether this process runs with an effective uid of 0 (namespaces and NUT need it).
pub fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    euid == Some("0")
}

/// A free loopback port for a daemon to listen on, below the kernel's ephemeral range and
/// never the same twice in one process. Port 0 would give one from that range, and between
/// choosing it and the daemon binding it any outgoing connection may take it: in a cluster
/// of 30 nodes dialling each other as they start, one of them met "Address already in use".
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral: u16 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = rand::random_range(10_000.min(ephemeral / 2)..ephemeral);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// Poll `f` every 50 ms until it returns Some, or panic after `limit` saying `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        sleep(Duration::from_millis(50));
    }
}

/// A piece a test needs is missing here: fail where CI said it must be present (the
/// environment variable `require` is set), else say SKIPPED loudly and let the test pass.
pub fn skip(test: &str, require: &str, why: &str) {
    assert!(std::env::var_os(require).is_none(), "{require} is set but {why}");
    // Through the stderr handle, not eprintln!, which the test harness captures.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("\n*** SKIPPED: {test}: {why} ***\n\n").as_bytes(),
    );
}

/// One request on a daemon's status socket (the CLI's wire format: length-prefixed JSON);
/// `None` when it does not answer within 2 s.
pub fn ask_socket(socket: &Path, request: &[u8]) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(&(request.len() as u32).to_be_bytes()).ok()?;
    s.write_all(request).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

#[derive(Clone)]
pub struct MemberSpec {
    pub name: String,
    pub id: u64,
    pub role: &'static str,
    pub voter: bool,
    /// The address it listens on: loopback, or its host's in a network-namespace lab.
    pub host: String,
    pub port: u16,
}

/// One member's files and, while it runs, its process.
pub struct Node {
    pub spec: MemberSpec,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The network namespace it runs in (a lab host), if any.
    pub netns: Option<String>,
    child: Option<Child>,
}

impl Node {
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Start with extra environment variables (e.g. systemd's NOTIFY_SOCKET).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "{} is already running", self.spec.name);
        let binary = if self.spec.role == "witness" { "sitewatch-witness" } else { "sitewatch-agent" };
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = netns::command_in(self.netns.as_deref(), bin(binary))
            .arg("--config")
            .arg(&self.config)
            .env("SITEWATCH_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as systemd stops a service; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let status = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        c.wait().expect("wait for the daemon")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `sitewatch status --json` against this node; None when it does not answer.
    pub fn status(&self) -> Option<Value> {
        let sock = self.socket.to_str().expect("utf-8 path");
        let out = sitewatch(&["status", "--json", "--socket", sock]);
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The status straight from the socket, without spawning the CLI: for polling
    /// tightly in benchmarks and labs.
    pub fn status_raw(&self) -> Option<Value> {
        ask_socket(&self.socket, br#"{"query":"status"}"#)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Add TOML (e.g. `[[ups]]` tables) to the end of this node's config.
    pub fn append_config(&self, text: &str) {
        let mut config = fs::read_to_string(&self.config).expect("read config");
        config.push_str(text);
        fs::write(&self.config, config).expect("write config");
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// When (seconds since the UNIX epoch, from its log's microsecond stamp) this node
    /// applied the committed decision at `index`.
    pub fn decision_applied_at(&self, index: u64) -> Option<f64> {
        let needle = format!("index={index} ");
        self.logs()
            .lines()
            .filter(|l| l.contains("committed decision applied") && l.contains(&needle))
            .find_map(|l| parse_stamp(l.split_whitespace().next()?))
    }
}

/// Seconds since the UNIX epoch of an RFC 3339 UTC stamp as the daemons' logs write it
/// (`2026-11-23T17:22:46.123456Z`).
pub fn parse_stamp(s: &str) -> Option<f64> {
    let at = humantime::parse_rfc3339(s).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}

/// Seconds since the UNIX epoch, now (wall clock: comparable with log stamps and with
/// other processes' stamps on this machine).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Two agents and a witness, bootstrapped but not started.
    pub fn three() -> Cluster {
        Cluster::new(&[("agent-1", "agent", true), ("agent-2", "agent", true), ("witness", "witness", true)])
    }

    pub fn new(members: &[(&str, &'static str, bool)]) -> Cluster {
        let dir = tempfile::Builder::new().prefix("sitewatch-e2e-").tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        let out = sitewatch(&["ca", "init", "--dir", ca.to_str().expect("utf-8"), "--cluster-id", "e2e"]);
        assert!(out.status.success(), "ca init: {}", String::from_utf8_lossy(&out.stderr));
        let specs: Vec<MemberSpec> = members
            .iter()
            .enumerate()
            .map(|(i, (name, role, voter))| MemberSpec {
                name: name.to_string(),
                id: i as u64 + 1,
                role,
                voter: *voter,
                host: "127.0.0.1".into(),
                port: free_port(),
            })
            .collect();
        let nodes = specs.iter().map(|s| make_node(dir.path(), &ca, s, &specs, "e2e")).collect();
        Cluster { dir, ca, nodes }
    }

    pub fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    pub fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.spec.name == name).expect("member name")
    }

    /// The leader every running node agrees on, with its term (asked through the CLI).
    pub fn agreed_leader(&self) -> Option<(String, u64)> {
        self.agreed_leader_by(Node::status)
    }

    /// The same, asked straight on the sockets.
    pub fn agreed_leader_raw(&self) -> Option<(String, u64)> {
        self.agreed_leader_by(Node::status_raw)
    }

    fn agreed_leader_by(&self, status: impl Fn(&Node) -> Option<Value>) -> Option<(String, u64)> {
        let mut agreed: Option<(String, u64)> = None;
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let s = status(n)?;
            let leader = s["raft"]["leader_name"].as_str()?.to_string();
            let term = s["raft"]["term"].as_u64()?;
            match &agreed {
                None => agreed = Some((leader, term)),
                Some(a) if *a == (leader.clone(), term) => {}
                Some(_) => return None,
            }
        }
        agreed
    }

    pub fn wait_leader(&self, limit: Duration) -> (String, u64) {
        wait_for(limit, "an agreed leader", || self.agreed_leader())
    }
}

/// Issue the member's certificate and write its config, as an operator would.
pub fn make_node(root: &Path, ca: &Path, me: &MemberSpec, all: &[MemberSpec], cluster_id: &str) -> Node {
    let dir = root.join(&me.name);
    let out = sitewatch(&[
        "cert",
        "issue",
        &me.name,
        "--ca",
        ca.to_str().expect("utf-8"),
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "cert issue: {}", String::from_utf8_lossy(&out.stderr));
    let socket = dir.join("status.sock");
    let mut text = format!(
        "cluster-id = \"{cluster_id}\"\nnode = \"{name}\"\nlisten = \"{host}:{port}\"\n\
         data-dir = \"{data}\"\nstatus-socket = \"{sock}\"\n\n[tls]\nca = \"{ca}\"\n\
         cert = \"{dir}/{name}.pem\"\nkey = \"{dir}/{name}.key\"\n",
        name = me.name,
        host = me.host,
        port = me.port,
        data = dir.join("data").display(),
        sock = socket.display(),
        ca = ca.join("ca.pem").display(),
        dir = dir.display(),
    );
    for m in all {
        text.push_str(&format!(
            "\n[[member]]\nname = \"{}\"\nid = {}\naddress = \"{}:{}\"\nrole = \"{}\"\nvoter = {}\n",
            m.name, m.id, m.host, m.port, m.role, m.voter
        ));
    }
    let config = dir.join("config.toml");
    fs::write(&config, text).expect("write config");
    let log = dir.join("daemon.log");
    Node { spec: me.clone(), dir, config, socket, log, netns: None, child: None }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_stamp_is_seconds_since_the_epoch() {
        let at = super::parse_stamp("2026-11-23T17:22:46.123456Z").expect("a stamp");
        assert!((at - 1_795_454_566.123456).abs() < 1e-6, "{at}");
        assert_eq!(super::parse_stamp("INFO"), None);
    }
}
