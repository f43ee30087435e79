//! A whole site in a network-namespace lab ([`crate::netns`]): agents on hosts of their
//! own, each reading its own real upsd (dummy-ups); a witness host; optionally a
//! cloud-side voter (a second witness); and a cloud host running moto's server as the AWS
//! endpoint. Every voter has two actuators: the Auto Scaling group on moto, and an exec
//! hook that journals every action it runs (node, key, token, capacity, start and end) to
//! one file. That journal, moto's state and every node's committed history are what
//! [`crate::invariants`] checks after a scenario.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::invariants::{ActionRecord, Evidence};
use crate::moto::{self, Moto};
use crate::netns::Netns;
use crate::upsd::{Upsd, UpsdOptions};
use crate::{MemberSpec, Node, make_node, sitewatch, wait_for};

pub const GROUP: &str = "lab-asg";
pub const CLUSTER_ID: &str = "lab";
/// Where every daemon listens, on its own host's address.
const PEER_PORT: u16 = 7000;
/// The name of each agent's UPS on its own upsd.
const UPS: &str = "ups";

/// The lab's shape and its policy (short timers, so scenarios take seconds).
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Agents, 2 to 5, all voters unless `learners` says otherwise.
    pub agents: usize,
    /// The last this many agents are learners (observe, do not vote).
    pub learners: usize,
    pub cloud_voter: bool,
    pub burst_after: Duration,
    pub scale_down_after: Duration,
    pub host_lost_after: Duration,
    pub dark_site_after: Duration,
    pub max_capacity: u32,
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            agents: 2,
            learners: 0,
            cloud_voter: false,
            burst_after: Duration::from_secs(4),
            scale_down_after: Duration::from_secs(12),
            host_lost_after: Duration::from_secs(5),
            dark_site_after: Duration::from_secs(10),
            max_capacity: 5,
        }
    }
}

pub struct SiteLab {
    pub spec: LabSpec,
    pub net: Netns,
    pub nodes: Vec<Node>,
    /// Each agent's own upsd, by agent name.
    pub upsd: BTreeMap<String, Upsd>,
    pub moto: Arc<Moto>,
    /// The exec hooks' journal.
    pub journal: PathBuf,
    /// Hosts killed whole (their upsd too), to bring back with their daemon.
    dead_hosts: std::collections::BTreeSet<String>,
    /// moto's desired capacity, sampled every 100 ms from the start.
    timeline: Arc<Mutex<Vec<(Instant, u32)>>>,
    /// Every committed record any node reported, by log index, sampled every 500 ms.
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    samplers: Vec<thread::JoinHandle<()>>,
    /// Configs, certificates, logs and sockets; removed on drop.
    _dir: tempfile::TempDir,
}

/// What the history sampler gathered: each index's record, and any index two reports disagreed on.
#[derive(Default)]
struct Seen {
    records: BTreeMap<u64, Value>,
    conflicts: Vec<String>,
}

impl SiteLab {
    /// Build, configure and start the lab, and wait until every voter judges the site
    /// healthy. `None` (having said why) where this machine cannot build labs.
    pub fn start(test: &str, spec: LabSpec) -> Option<SiteLab> {
        assert!((2..=5).contains(&spec.agents), "2 to 5 agents");
        if let Some(why) = crate::upsd::unavailable(false) {
            crate::skip(test, "SITEWATCH_REQUIRE_NUT", &why);
            return None;
        }
        if let Err(why) = moto::moto_server() {
            crate::skip(test, "SITEWATCH_REQUIRE_MOTO", &why);
            return None;
        }
        let agents: Vec<String> = (1..=spec.agents).map(|i| format!("agent-{i}")).collect();
        let mut hosts: Vec<&str> = agents.iter().map(String::as_str).collect();
        hosts.push("witness");
        if spec.cloud_voter {
            hosts.push("cloud-voter");
        }
        hosts.push("cloud");
        let net = Netns::new(test, &hosts)?;

        let moto =
            Moto::launch_in(Some(net.ns("cloud")), net.addr("cloud")).expect("moto_server starts in the lab");
        moto.create_group(GROUP, 0, spec.max_capacity);
        let dir = tempfile::Builder::new().prefix("sitewatch-lab-").tempdir().expect("tempdir");
        let journal = dir.path().join("actions.journal");
        let hook = dir.path().join("journal-hook.sh");
        // Every action, before and after it is done; `<journal>.stall-<node>` makes that
        // node's hook hang (an action in flight when its host dies).
        std::fs::write(
            &hook,
            "#!/bin/sh\ncat >/dev/null\n\
             line() { echo \"$1 $2 $BURST_IDEMPOTENCY_KEY $BURST_TERM $BURST_INDEX $BURST_DESIRED_CAPACITY \
             $BURST_VERDICT $BURST_UNILATERAL $(date +%s%3N)\" >> \"$3\"; }\n\
             line start \"$1\" \"$2\"\n\
             if [ -e \"$2.stall-$1\" ]; then sleep 600; fi\n\
             line done \"$1\" \"$2\"\n",
        )
        .expect("hook");
        crate::upsd::run(std::process::Command::new("chmod").arg("755").arg(&hook));

        let ca = dir.path().join("ca");
        let out =
            sitewatch(&["ca", "init", "--dir", ca.to_str().expect("utf-8"), "--cluster-id", CLUSTER_ID]);
        assert!(out.status.success(), "ca init: {}", String::from_utf8_lossy(&out.stderr));
        let mut specs = Vec::new();
        for (i, name) in agents.iter().enumerate() {
            let voter = i < spec.agents - spec.learners;
            specs.push(member(&net, name, specs.len(), "agent", voter));
        }
        specs.push(member(&net, "witness", specs.len(), "witness", true));
        if spec.cloud_voter {
            specs.push(member(&net, "cloud-voter", specs.len(), "witness", true));
        }
        let policy = format!(
            "\n[policy]\nburst-after = \"{}ms\"\nscale-down-after = \"{}ms\"\nhost-lost-after = \"{}ms\"\n\
             dark-site-after = \"{}ms\"\n[policy.capacity]\nmax = {}\n",
            spec.burst_after.as_millis(),
            spec.scale_down_after.as_millis(),
            spec.host_lost_after.as_millis(),
            spec.dark_site_after.as_millis(),
            spec.max_capacity,
        );
        let mut nodes = Vec::new();
        let mut upsds = BTreeMap::new();
        for s in &specs {
            let mut node = make_node(dir.path(), &ca, s, &specs, CLUSTER_ID);
            node.netns = Some(net.ns(&s.name));
            // Pings every 250 ms: the link windows (60 pings) then cover 15 s instead of a
            // minute, so a healed link counts as good again within a scenario's time.
            let mut extra = format!("{policy}\n[timing]\nping-interval = \"250ms\"\n");
            extra.push_str(&format!(
                "\n[[actuator]]\nkind = \"aws-asg\"\nname = \"cloud\"\nregion = \"{region}\"\ngroup = \"{GROUP}\"\n\
                 endpoint = \"{endpoint}\"\naccess-key-id = \"{key}\"\nsecret-access-key-env = \"LAB_AWS_SECRET\"\n\
                 \n[[actuator]]\nkind = \"exec\"\nname = \"journal\"\ncommand = [\"{hook}\", \"{name}\", \"{journal}\"]\n",
                region = moto::REGION,
                endpoint = moto.endpoint(),
                key = moto::ANY_KEY_ID,
                hook = hook.display(),
                name = s.name,
                journal = journal.display(),
            ));
            if s.role == "agent" {
                let upsd = Upsd::launch_in(&[UPS], UpsdOptions::default(), Some(net.ns(&s.name)));
                // The cloud host stands for "the internet": with the witness unreachable
                // too, its loss is what tells a cut-off site from a lost witness.
                extra.push_str(&format!(
                    "\n[[ups]]\nname = \"{UPS}\"\nserver = \"{}\"\npoll-interval = \"500ms\"\n\
                     \n[[probe]]\nname = \"internet\"\ntarget = \"{}:{}\"\nkind = \"tcp\"\n\
                     interval = \"200ms\"\ntimeout = \"1s\"\nwindow = 20\n",
                    upsd.server(),
                    net.addr("cloud"),
                    moto.port(),
                ));
                upsds.insert(s.name.clone(), upsd);
            }
            node.append_config(&extra);
            nodes.push(node);
        }
        let mut lab = SiteLab {
            spec,
            net,
            nodes,
            upsd: upsds,
            moto: Arc::new(moto),
            journal,
            dead_hosts: Default::default(),
            timeline: Arc::default(),
            seen: Arc::default(),
            stop: Arc::default(),
            samplers: Vec::new(),
            _dir: dir,
        };
        for name in lab.names() {
            lab.start_node(&name);
        }
        lab.start_samplers();
        lab.wait_leader(Duration::from_secs(20));
        lab.wait_settled(Duration::from_secs(30), "healthy");
        Some(lab)
    }

    /// Every member's name, agents first.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.spec.name.clone()).collect()
    }

    pub fn agents(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.spec.role == "agent").map(|n| n.spec.name.clone()).collect()
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.spec.name == name).unwrap_or_else(|| panic!("no member {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.spec.name == name).unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Start the member's daemon on its host (and its upsd, if the host died with it).
    pub fn start_node(&mut self, name: &str) {
        if self.dead_hosts.remove(name)
            && let Some(upsd) = self.upsd.get(name)
        {
            upsd.start_upsd();
        }
        self.node_mut(name).start_with_env(&[("LAB_AWS_SECRET", moto::ANY_SECRET)]);
    }

    /// The host dies: SIGKILL to every process on it (the daemon, a hook it runs, its upsd).
    pub fn kill_host(&mut self, name: &str) {
        self.net.kill_host(name);
        self.dead_hosts.insert(name.to_owned());
        self.node_mut(name).kill9();
    }

    /// The daemon alone is killed with SIGKILL.
    pub fn kill_daemon(&mut self, name: &str) {
        self.node_mut(name).kill9();
    }

    /// Put `agents`' UPSes on battery (`true`) or back on line.
    pub fn power(&self, agents: &[&str], on_battery: bool) {
        for agent in agents {
            let (status, charge) = if on_battery { ("OB DISCHRG", 90) } else { ("OL CHRG", 90) };
            self.upsd[*agent].write_status(UPS, status, charge);
        }
    }

    pub fn all_agents_power(&self, on_battery: bool) {
        let agents = self.agents();
        let refs: Vec<&str> = agents.iter().map(String::as_str).collect();
        self.power(&refs, on_battery);
    }

    pub fn desired(&self) -> u32 {
        self.moto.desired_capacity(GROUP)
    }

    /// The leader every running member names, in one term.
    pub fn agreed_leader(&self) -> Option<(String, u64)> {
        let running: Vec<String> =
            self.nodes.iter().filter(|n| n.is_running()).map(|n| n.spec.name.clone()).collect();
        self.agreed_leader_of(&running.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The leader these members name, in one term.
    pub fn agreed_leader_of(&self, members: &[&str]) -> Option<(String, u64)> {
        let mut agreed: Option<(String, u64)> = None;
        for n in members.iter().map(|m| self.node(m)) {
            let s = n.status_raw()?;
            let leader = (s["raft"]["leader_name"].as_str()?.to_owned(), s["raft"]["term"].as_u64()?);
            match &agreed {
                None => agreed = Some(leader),
                Some(a) if *a == leader => {}
                Some(_) => return None,
            }
        }
        agreed
    }

    /// The leader a majority of the voters name in one term. A member cut off from it
    /// (a one-sided cut) may name none; naming another in the same term would be two
    /// leaders in a term, which fails the test at once.
    pub fn quorum_leader(&self) -> Option<(String, u64)> {
        let voters = self.nodes.iter().filter(|n| n.spec.voter).count();
        let mut named: BTreeMap<(String, u64), usize> = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let Some(s) = n.status_raw() else { continue };
            let (Some(leader), Some(term)) = (s["raft"]["leader_name"].as_str(), s["raft"]["term"].as_u64())
            else {
                continue;
            };
            *named.entry((leader.to_owned(), term)).or_default() += usize::from(n.spec.voter);
        }
        for (a, term_a) in named.keys() {
            for (b, term_b) in named.keys() {
                assert!(!(term_a == term_b && a != b), "two leaders in term {term_a}: {a} and {b}");
            }
        }
        named.into_iter().find(|(_, count)| *count > voters / 2).map(|(leader, _)| leader)
    }

    pub fn wait_quorum_leader(&self, limit: Duration) -> (String, u64) {
        wait_for(limit, "a leader named by a majority of the voters", || self.quorum_leader())
    }

    pub fn wait_leader(&self, limit: Duration) -> (String, u64) {
        wait_for(limit, "an agreed leader", || self.agreed_leader())
    }

    /// Wait until every running voter has heard every agent and judges `verdict`.
    pub fn wait_settled(&self, limit: Duration, verdict: &str) {
        wait_for(limit, &format!("every running voter to judge the site {verdict}"), || {
            for n in self.nodes.iter().filter(|n| n.spec.voter && n.is_running()) {
                let a = &n.status_raw()?["burst"]["assessment"];
                (a["settled"].as_bool()? && a["verdict"] == verdict).then_some(())?;
            }
            Some(())
        });
    }

    /// Wait until `member` has applied a committed decision with this verdict and capacity.
    pub fn wait_committed(&self, member: &str, limit: Duration, verdict: &str, capacity: u32) -> Value {
        wait_for(limit, &format!("{member} to commit {verdict} with capacity {capacity}"), || {
            let s = self.node(member).status_raw()?;
            (s["site"]["verdict"] == verdict && s["site"]["desired_capacity"] == capacity).then_some(s)
        })
    }

    /// Wait until moto's group wants `capacity`.
    pub fn wait_desired(&self, limit: Duration, capacity: u32) {
        wait_for(limit, &format!("the group's desired capacity to become {capacity}"), || {
            (self.desired() == capacity).then_some(())
        });
    }

    /// Wait until every running member has applied all that any of them knows committed.
    pub fn wait_caught_up(&self, limit: Duration) {
        wait_for(limit, "every running member to apply the last commit", || {
            let raft: Vec<Value> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| Some(n.status_raw()?["raft"].clone()))
                .collect::<Option<_>>()?;
            let commit = raft.iter().filter_map(|r| r["commit"].as_u64()).max()?;
            raft.iter().all(|r| r["applied"].as_u64() == Some(commit)).then_some(())
        });
    }

    /// The exec hooks' journal so far.
    pub fn actions(&self) -> Vec<ActionRecord> {
        let text = std::fs::read_to_string(&self.journal).unwrap_or_default();
        text.lines()
            .map(|l| ActionRecord::parse(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}")))
            .collect()
    }

    /// Make `member`'s exec hook hang before it finishes (until its host dies).
    pub fn stall_hook(&self, member: &str) {
        std::fs::write(self.journal.with_extension(format!("journal.stall-{member}")), "")
            .expect("stall file");
    }

    /// moto's desired capacity as sampled so far: (time, capacity) at each change.
    pub fn timeline(&self) -> Vec<(Instant, u32)> {
        self.timeline.lock().expect("timeline").clone()
    }

    /// What the invariants need: every running node's committed history now, what the
    /// sampler saw committed along the way, the hooks' journal and moto's final state.
    pub fn evidence(&self) -> Evidence {
        let roles: BTreeMap<String, String> =
            self.nodes.iter().map(|n| (n.spec.name.clone(), n.spec.role.to_owned())).collect();
        let histories = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| {
                let h = history(&n.socket).unwrap_or_else(|| panic!("{} answers history", n.spec.name));
                (n.spec.name.clone(), h)
            })
            .collect();
        let seen = self.seen.lock().expect("seen");
        Evidence {
            histories,
            seen: seen.records.clone(),
            seen_conflicts: seen.conflicts.clone(),
            actions: self.actions(),
            roles,
            scale_down_after: self.spec.scale_down_after,
        }
    }

    /// Check every invariant; panic with all violations and the logs' tails if any.
    pub fn assert_invariants(&self) {
        self.wait_caught_up(Duration::from_secs(20));
        // The cloud ends up with what the quorum committed: an action that failed is
        // retried (every 30 s) until it is done.
        if let Some((leader, _)) = self.quorum_leader() {
            let status = self.node(&leader).status_raw().expect("the leader answers");
            let committed = status["site"]["desired_capacity"].as_u64().expect("capacity") as u32;
            wait_for(
                Duration::from_secs(45),
                &format!("moto to hold the committed capacity {committed}"),
                || (self.desired() == committed).then_some(()),
            );
        }
        let evidence = self.evidence();
        let violations = evidence.violations();
        if !violations.is_empty() {
            let mut logs = String::new();
            for n in &self.nodes {
                let l = n.logs();
                let tail: Vec<&str> = l.lines().rev().take(25).collect();
                logs.push_str(&format!(
                    "--- {} (last lines)\n{}\n",
                    n.spec.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            panic!("invariants violated:\n  {}\n\nevidence: {evidence:#?}\n{logs}", violations.join("\n  "));
        }
    }

    fn start_samplers(&mut self) {
        let (moto, timeline, stop) = (self.moto.clone(), self.timeline.clone(), self.stop.clone());
        self.samplers.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(d) = moto.try_desired_capacity(GROUP) {
                    let mut t = timeline.lock().expect("timeline");
                    if t.last().is_none_or(|(_, last)| *last != d) {
                        t.push((Instant::now(), d));
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        }));
        let sockets: Vec<(String, PathBuf)> =
            self.nodes.iter().map(|n| (n.spec.name.clone(), n.socket.clone())).collect();
        let (seen, stop) = (self.seen.clone(), self.stop.clone());
        self.samplers.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (name, socket) in &sockets {
                    let Some(records) = history(socket) else { continue };
                    let mut seen = seen.lock().expect("seen");
                    for r in records {
                        let index = r["token"]["index"].as_u64().expect("index");
                        match seen.records.get(&index) {
                            Some(known) if *known != r => {
                                let conflict = format!("index {index}: {name} reported {r} after {known}");
                                seen.conflicts.push(conflict);
                            }
                            Some(_) => {}
                            None => {
                                seen.records.insert(index, r);
                            }
                        }
                    }
                }
                thread::sleep(Duration::from_millis(500));
            }
        }));
    }
}

impl Drop for SiteLab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.samplers.drain(..) {
            let _ = s.join();
        }
        for n in &mut self.nodes {
            n.kill9();
        }
    }
}

fn member(net: &Netns, name: &str, index: usize, role: &'static str, voter: bool) -> MemberSpec {
    MemberSpec {
        name: name.to_owned(),
        id: index as u64 + 1,
        role,
        voter,
        host: net.addr(name).to_owned(),
        port: PEER_PORT,
    }
}

/// A node's committed records, oldest first, asked straight on its status socket.
pub fn history(socket: &std::path::Path) -> Option<Vec<Value>> {
    let reply = crate::ask_socket(socket, br#"{"query":"history"}"#)?;
    reply["records"].as_array().cloned()
}
