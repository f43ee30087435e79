//! Hosts on one machine: a network namespace per host, all on one bridge that lives in a
//! namespace of its own (/work/shared/recipes/netns-lab.md). Nothing is created in the root
//! namespace and no packet leaves the lab. Faults come from the kernel, not from the code
//! under test: loss through nft, delay and jitter through the project's `nfq-delay`
//! (this kernel has no netem), and the recipe's six ways of cutting a host off.
//!
//! Everything, processes included, is removed on drop, panics included; namespaces left by
//! a killed test process are removed by the next lab.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Every lab namespace starts with this, then the test process's pid.
const PREFIX: &str = "swl";

/// One of the recipe's six ways to cut a host off; each fails differently for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The host's port on the bridge goes down: timeouts.
    SwitchPort,
    /// The host's own NIC goes down: timeouts for the others, ENETUNREACH for the host.
    Nic,
    /// The host drops everything in and out but loopback: timeouts, TCP connects hang.
    SilentDrop,
    /// The host rejects everything: TCP resets and ICMP admin-prohibited, within ms.
    Reject,
    /// The bridge drops the host's frames: timeouts, no rule on the host.
    Bridge,
}

impl Cut {
    pub const ALL: [Cut; 5] = [Cut::SwitchPort, Cut::Nic, Cut::SilentDrop, Cut::Reject, Cut::Bridge];
}

pub struct Host {
    pub name: String,
    pub addr: String,
    /// The host's port on the bridge (interface names are short: `v<n>`).
    port: String,
}

/// The lab: its hosts, the processes started in them, and the faults in force.
pub struct Netns {
    prefix: String,
    pub hosts: Vec<Host>,
    children: Vec<Child>,
}

/// Why this machine cannot build labs, if it cannot.
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("not root: network namespaces need root (CI runs as root)".into());
    }
    for (tool, args) in
        [("ip", &["netns", "list"][..]), ("nft", &["--version"][..]), ("iptables", &["--version"][..])]
    {
        let ok = Command::new(tool).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !ok.is_ok_and(|s| s.success()) {
            return Some(format!(
                "`{tool} {}` does not work here (apt-get install iproute2 nftables iptables)",
                args.join(" ")
            ));
        }
    }
    None
}

/// `None` (having said why on stderr) where the lab cannot be built; a failure instead
/// where CI said it must be (`SITEWATCH_REQUIRE_NETNS`).
pub fn skip_unless_available(test: &str) -> Option<()> {
    let Some(why) = unavailable() else { return Some(()) };
    crate::skip(test, "SITEWATCH_REQUIRE_NETNS", &why);
    None
}

impl Netns {
    /// Build the lab for `test`: hosts 10.77.0.1, .2, ... in the order given. `None`
    /// (having said why) where this machine cannot.
    pub fn new(test: &str, hosts: &[&str]) -> Option<Netns> {
        skip_unless_available(test)?;
        remove_stale_labs();
        let lab = Netns {
            prefix: format!("{PREFIX}{}-{test}", std::process::id()),
            hosts: hosts
                .iter()
                .enumerate()
                .map(|(i, name)| Host {
                    name: name.to_string(),
                    addr: format!("10.77.0.{}", i + 1),
                    port: format!("v{}", i + 1),
                })
                .collect(),
            children: Vec::new(),
        };
        let br = lab.bridge();
        run(&["ip", "netns", "add", &br]);
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        for host in &lab.hosts {
            let ns = format!("{}-{}", lab.prefix, host.name);
            run(&["ip", "netns", "add", &ns]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            run(&[
                "ip", "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &host.port,
                "netns", &br,
            ]);
            run(&["ip", "-n", &br, "link", "set", &host.port, "master", "br0"]);
            run(&["ip", "-n", &br, "link", "set", &host.port, "up"]);
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", host.addr), "dev", "eth0"]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        Some(lab)
    }

    fn bridge(&self) -> String {
        format!("{}-br", self.prefix)
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{}", self.prefix, self.host(host).name)
    }

    pub fn addr(&self, host: &str) -> &str {
        &self.host(host).addr
    }

    /// `program` to run inside `host`'s namespace.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(Some(&self.ns(host)), program)
    }

    /// Run a command inside `host`'s namespace; it must succeed.
    pub fn exec(&self, host: &str, args: &[&str]) {
        let ns = self.ns(host);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        run(&full);
    }

    /// Load an nft ruleset in `host` (or in the bridge's namespace for `"br"`).
    pub fn nft(&self, host: &str, ruleset: &str) {
        let ns = if host == "br" { self.bridge() } else { self.ns(host) };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run nft");
        Write::write_all(child.stdin.as_mut().expect("stdin"), ruleset.as_bytes()).expect("write ruleset");
        drop(child.stdin.take());
        assert!(child.wait().expect("nft").success(), "nft refused:\n{ruleset}");
    }

    /// Remove an nft table if it is there.
    fn drop_table(&self, host: &str, family_and_name: &str) {
        let ns = if host == "br" { self.bridge() } else { self.ns(host) };
        let mut args = vec!["ip", "netns", "exec", &ns, "nft", "delete", "table"];
        args.extend(family_and_name.split(' '));
        let _ = Command::new(args[0]).args(&args[1..]).stderr(Stdio::null()).status();
    }

    /// Let unprivileged ICMP echo sockets work in `host` (a new namespace says `1 0`).
    pub fn allow_ping_sockets(&self, host: &str) {
        self.exec(host, &["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]);
    }

    /// Start one of the workspace's binaries in `host`; its stdout lines arrive on the
    /// channel with the time each was read.
    pub fn spawn_lines(
        &mut self,
        host: &str,
        binary: &str,
        args: &[&str],
    ) -> mpsc::Receiver<(Instant, String)> {
        let mut child = self
            .command(host, crate::bin(binary))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        self.children.push(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Start a binary in `host` and wait for `ready` on its stdout.
    pub fn spawn_ready(&mut self, host: &str, binary: &str, args: &[&str], ready: &str) {
        let lines = self.spawn_lines(host, binary, args);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((_, line)) if line.contains(ready) => break,
                Ok(_) => {}
                Err(_) => panic!("{binary} in {host} did not print `{ready}` in time"),
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        thread::spawn(move || for _ in lines {});
    }

    /// Cut `host` off the one way given.
    pub fn cut(&self, host: &str, how: Cut) {
        let port = &self.host(host).port;
        match how {
            Cut::SwitchPort => run(&["ip", "-n", &self.bridge(), "link", "set", port, "down"]),
            Cut::Nic => run(&["ip", "-n", &self.ns(host), "link", "set", "eth0", "down"]),
            Cut::SilentDrop => self.nft(
                host,
                "table inet cut {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    \
                 iifname \"lo\" accept\n  }\n  chain output {\n    type filter hook output priority 0; policy drop;\n    \
                 oifname \"lo\" accept\n  }\n}\n",
            ),
            Cut::Reject => self.nft(
                host,
                "table inet cut {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    \
                 iifname \"lo\" accept\n    meta l4proto tcp reject with tcp reset\n    \
                 reject with icmp type admin-prohibited\n  }\n}\n",
            ),
            Cut::Bridge => self.nft(
                "br",
                &format!(
                    "table bridge cut_{port} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
                     iifname \"{port}\" drop\n    oifname \"{port}\" drop\n  }}\n}}\n"
                ),
            ),
        }
    }

    /// Undo [`Netns::cut`].
    pub fn heal(&self, host: &str, how: Cut) {
        let port = &self.host(host).port;
        match how {
            Cut::SwitchPort => run(&["ip", "-n", &self.bridge(), "link", "set", port, "up"]),
            Cut::Nic => run(&["ip", "-n", &self.ns(host), "link", "set", "eth0", "up"]),
            Cut::SilentDrop | Cut::Reject => self.drop_table(host, "inet cut"),
            Cut::Bridge => self.drop_table("br", &format!("bridge cut_{port}")),
        }
    }

    /// The one-sided cut: `host` drops what comes from `peer` (so neither reaches the other
    /// over TCP) while every other host still reaches both.
    pub fn cut_one_sided(&self, host: &str, peer: &str) {
        self.nft(
            host,
            &format!(
                "table inet one_sided {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
                 ip saddr {} drop\n  }}\n}}\n",
                self.addr(peer)
            ),
        );
    }

    pub fn heal_one_sided(&self, host: &str) {
        self.drop_table(host, "inet one_sided");
    }

    /// Cut every path between the two groups of hosts at the bridge (a WAN cut between
    /// the site and the outside), leaving each group's own paths alone.
    pub fn cut_between(&self, site: &[&str], outside: &[&str]) {
        let ports = |hosts: &[&str]| {
            hosts.iter().map(|h| format!("\"{}\"", self.host(h).port)).collect::<Vec<_>>().join(", ")
        };
        let (a, b) = (ports(site), ports(outside));
        self.nft(
            "br",
            &format!(
                "table bridge wan {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
                 iifname {{ {a} }} oifname {{ {b} }} drop\n    iifname {{ {b} }} oifname {{ {a} }} drop\n  }}\n}}\n"
            ),
        );
    }

    pub fn heal_between(&self) {
        self.drop_table("br", "bridge wan");
    }

    /// Drop `percent` of the IPv4 packets entering `host`.
    pub fn loss(&self, host: &str, percent: u32) {
        self.nft(
            host,
            &format!(
                "table netdev loss {{\n  chain ingress {{\n    type filter hook ingress device \"eth0\" priority 0; policy accept;\n    \
                 meta protocol ip numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
            ),
        );
    }

    /// Hold every IPv4 packet `host` sends for `delay_ms` ± `jitter_ms` (nfq-delay on a
    /// queue of the host's own, alive until the lab drops).
    pub fn delay(&mut self, host: &str, delay_ms: u32, jitter_ms: u32) {
        let queue = self.hosts.iter().position(|h| h.name == host).expect("host") + 1;
        let queue = queue.to_string();
        self.exec(
            host,
            &[
                "iptables",
                "-A",
                "OUTPUT",
                "-o",
                "eth0",
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ],
        );
        let args =
            ["--queue", &queue, "--delay-ms", &delay_ms.to_string(), "--jitter-ms", &jitter_ms.to_string()];
        self.spawn_ready(host, "nfq-delay", &args, &format!("nfq-delay: queue {queue}"));
    }

    /// Every process running in `host`'s namespace, killed with SIGKILL: the host dies.
    pub fn kill_host(&self, host: &str) -> Vec<u32> {
        let out = Command::new("ip").args(["netns", "pids", &self.ns(host)]).output().expect("ip netns pids");
        let pids: Vec<u32> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect();
        for pid in &pids {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        pids
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in &self.hosts {
            self.kill_host(&host.name);
        }
        let mut names: Vec<String> = self.hosts.iter().map(|h| self.ns(&h.name)).collect();
        names.push(self.bridge());
        for ns in names {
            let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
        }
    }
}

/// `program` to run inside namespace `ns`, or here without one. `ip netns exec` execs the
/// program in place: the child's pid is the program's.
pub fn command_in(ns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A TCP connection made from inside namespace `ns`, for the test process itself to
/// reach a server in a lab: a socket keeps the namespace it was made in, so a short-lived
/// thread enters the namespace, connects and hands the stream back.
pub fn connect_in(ns: &str, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let path = format!("/run/netns/{ns}");
    thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path)?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            TcpStream::connect_timeout(&addr, timeout)
        })
        .join()
        .expect("connect thread")
    })
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Namespaces (and their processes) left by a test process killed before its Drop ran.
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
