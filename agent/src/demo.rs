//! `sitewatch demo`: a newcomer's first command. Starts two agents and a witness on
//! loopback with a CA and certificates made in a temporary directory, and a simulated UPS
//! that speaks NUT's protocol. Shows them elect a leader, fail over and catch up; then
//! the UPS goes on battery: the outage is decided, burst through a dry-run actuator,
//! recovered and scaled down after a shortened grace. Cleans up at the end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use sitewatch_proto::Verdict;
use sitewatch_quorum::config::{Config, Role};
use sitewatch_quorum::status::{self, StatusReport};
use sitewatch_quorum::{daemon, logging};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::simulated_ups::SimulatedUps;
use crate::{cli, observer, pki};

const MEMBERS: [(&str, u64, Role); 3] =
    [("agent-1", 1, Role::Agent), ("agent-2", 2, Role::Agent), ("witness", 3, Role::Witness)];
const WAIT: Duration = Duration::from_secs(20);
/// Shortened from the defaults (60 s and 30 min) so the demo ends within a minute.
const BURST_AFTER_S: u64 = 10;
const SCALE_DOWN_AFTER_S: u64 = 20;

pub fn main() -> ExitCode {
    logging::init("error");
    let runtime = match daemon::daemon_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Member {
    name: &'static str,
    role: Role,
    config: PathBuf,
    socket: PathBuf,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Member {
    fn start(&mut self) -> anyhow::Result<()> {
        let config = Config::load(&self.config)?;
        self.stop = CancellationToken::new();
        let local = match self.role {
            Role::Agent => Some(observer::start(&config, config.timing.observe_interval, self.stop.clone())?),
            Role::Witness => None,
        };
        self.task = Some(tokio::spawn(daemon::run(config, self.role, local, self.stop.clone())));
        Ok(())
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_configs(dir: &Path, ups: &SimulatedUps) -> anyhow::Result<Vec<Member>> {
    let ca = dir.join("ca");
    pki::init_ca(&ca, "demo")?;
    let ports: Vec<u16> = MEMBERS.iter().map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let mut member_list = String::new();
    for ((name, id, role), port) in MEMBERS.iter().zip(&ports) {
        member_list.push_str(&format!(
            "\n[[member]]\nname = \"{name}\"\nid = {id}\naddress = \"127.0.0.1:{port}\"\nrole = \"{role}\"\n"
        ));
    }
    let mut members = Vec::new();
    for ((name, _, role), port) in MEMBERS.iter().zip(&ports) {
        let home = dir.join(name);
        pki::issue(name, &ca, &home, 1)?;
        let socket = home.join("status.sock");
        let text = format!(
            "cluster-id = \"demo\"\nnode = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\ndata-dir = \"{data}\"\n\
             status-socket = \"{sock}\"\n\n[tls]\nca = \"{ca}\"\ncert = \"{home}/{name}.pem\"\nkey = \"{home}/{name}.key\"\n{member_list}",
            data = home.join("data").display(),
            sock = socket.display(),
            ca = ca.join(pki::CA_CERT).display(),
            home = home.display(),
        );
        let mut text = text;
        text.push_str(&format!(
            "\n[policy]\nburst-after = \"{BURST_AFTER_S}s\"\nscale-down-after = \"{SCALE_DOWN_AFTER_S}s\"\n\
             host-lost-after = \"10s\"\n\n[[actuator]]\nkind = \"dry-run\"\nname = \"cloud\"\n"
        ));
        if *role == Role::Agent {
            text.push_str(&format!(
                "\n[[ups]]\nname = \"{}\"\nserver = \"{}\"\npoll-interval = \"500ms\"\n",
                DEMO_UPS,
                ups.server()
            ));
        }
        let config = home.join(format!("{name}.toml"));
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        members.push(Member {
            name,
            role: *role,
            config,
            socket,
            stop: CancellationToken::new(),
            task: None,
        });
    }
    Ok(members)
}

async fn statuses(members: &[Member]) -> Vec<Option<StatusReport>> {
    let mut out = Vec::new();
    for m in members {
        out.push(if m.task.is_some() { status::query(&m.socket).await.ok() } else { None });
    }
    out
}

/// Wait until every running member names the same leader in the same term.
async fn agreed_leader(members: &[Member], not: Option<&str>) -> anyhow::Result<(String, u64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let reports: Vec<StatusReport> = statuses(members).await.into_iter().flatten().collect();
        let running = members.iter().filter(|m| m.task.is_some()).count();
        if reports.len() == running {
            let first = &reports[0].raft;
            if let Some(leader) = &first.leader_name {
                let agreed = reports
                    .iter()
                    .all(|r| r.raft.leader_name.as_ref() == Some(leader) && r.raft.term == first.term);
                if agreed && Some(leader.as_str()) != not {
                    return Ok((leader.clone(), first.term));
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no agreed leader within {} s", WAIT.as_secs());
        }
        sleep(Duration::from_millis(50)).await;
    }
}

const DEMO_UPS: &str = "demo-ups";

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("sitewatch-demo-").tempdir()?;
    println!("== sitewatch demo: two agents and a witness on loopback, one simulated UPS ==");
    println!("   CA, certificates and configs in {}\n", dir.path().display());
    let ups_stop = CancellationToken::new();
    let ups = SimulatedUps::start(DEMO_UPS, ups_stop.clone()).await?;
    let mut members = write_configs(dir.path(), &ups)?;
    let started = Instant::now();
    for m in &mut members {
        m.start()?;
    }
    let (leader, term) = agreed_leader(&members, None).await?;
    println!(
        "1. cold start: `{leader}` elected leader in term {term} after {:.2} s\n",
        started.elapsed().as_secs_f64()
    );
    sleep(Duration::from_millis(1500)).await; // let pings measure RTTs
    let idx = members.iter().position(|m| m.name == leader).context("leader is a member")?;
    print_status(&members[idx]).await;

    println!("2. stopping the leader `{leader}`, as if its host lost power");
    members[idx].stop().await?;
    let lost = Instant::now();
    let (next, next_term) = agreed_leader(&members, Some(&leader)).await?;
    println!("   `{next}` leads in term {next_term}, {:.2} s after the loss\n", lost.elapsed().as_secs_f64());

    println!("3. `{leader}` comes back with its disk and catches up");
    members[idx].start()?;
    let back = Instant::now();
    let deadline = back + WAIT;
    loop {
        let reports: Vec<StatusReport> = statuses(&members).await.into_iter().flatten().collect();
        let leader_commit = reports.iter().find(|r| r.raft.state == "leader").map(|r| r.raft.commit);
        let rejoined = reports.iter().find(|r| r.node.name == leader);
        if let (Some(commit), Some(r)) = (leader_commit, rejoined)
            && r.raft.applied >= commit
            && r.raft.leader_name.is_some()
        {
            {
                println!(
                    "   applied {} of {commit} committed entries, follows `{}`, {:.2} s after restart\n",
                    r.raft.applied,
                    r.raft.leader_name.as_deref().unwrap_or("?"),
                    back.elapsed().as_secs_f64()
                );
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("`{leader}` did not catch up within {} s", WAIT.as_secs());
        }
        sleep(Duration::from_millis(50)).await;
    }
    outage(&members, &ups).await?;
    println!("Done: every step above was decided by the quorum over mutual TLS; cleaning up.");
    for m in &mut members {
        m.stop().await?;
    }
    ups_stop.cancel();
    Ok(())
}

/// The leader's report, once the members agree on one.
async fn leader_report(members: &[Member]) -> Option<StatusReport> {
    statuses(members).await.into_iter().flatten().find(|r| r.raft.state == "leader")
}

/// Wait until the leader's committed site state passes `done`, printing each committed
/// change on the way.
async fn watch_site(
    members: &[Member],
    since: Instant,
    limit: Duration,
    what: &str,
    done: impl Fn(&StatusReport) -> bool,
) -> anyhow::Result<StatusReport> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Some(r) = leader_report(members).await {
            let now = (r.site.verdict, r.site.desired_capacity, r.site.decision);
            if last != Some(now) {
                if last.is_some() {
                    let reasons = if r.site.reasons.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.site.reasons.join(", "))
                    };
                    println!(
                        "   +{:>4.1} s  committed: {}, desired capacity {}{reasons}",
                        since.elapsed().as_secs_f64(),
                        r.site.verdict,
                        r.site.desired_capacity
                    );
                }
                last = Some(now);
            }
            if done(&r) {
                return Ok(r);
            }
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {} s", limit.as_secs());
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The power cut and the recovery, decided and acted on through the dry-run actuator.
async fn outage(members: &[Member], ups: &SimulatedUps) -> anyhow::Result<()> {
    watch_site(members, Instant::now(), WAIT, "both agents heard", |r| {
        r.burst.assessment.as_ref().is_some_and(|a| a.settled && a.verdict == Verdict::Healthy)
    })
    .await?;
    println!(
        "4. the UPS feeding both agents goes on battery (burst-after {BURST_AFTER_S} s, shortened for the demo)"
    );
    ups.on_battery();
    let cut = Instant::now();
    let r = watch_site(members, cut, WAIT, "the outage decided", |r| {
        r.site.verdict == Verdict::Down
            && r.site.actions.get("cloud").is_some_and(|a| Some(a.token) == r.site.decision)
    })
    .await?;
    let action = r.site.actions.get("cloud").map(|a| a.detail.clone()).unwrap_or_default();
    println!("   the leader acted on the committed decision: {action}\n");
    print_status_of(&r);

    println!("5. power comes back; capacity stays for scale-down-after ({SCALE_DOWN_AFTER_S} s, shortened)");
    ups.on_line();
    let back = Instant::now();
    let limit = Duration::from_secs(SCALE_DOWN_AFTER_S) + WAIT;
    let r = watch_site(members, back, limit, "the capacity given back", |r| {
        r.site.verdict == Verdict::Healthy
            && r.site.desired_capacity == 0
            && r.site.actions.get("cloud").is_some_and(|a| Some(a.token) == r.site.decision)
    })
    .await?;
    println!("   scaled down {:.1} s after power returned\n", back.elapsed().as_secs_f64());
    print_status_of(&r);
    Ok(())
}

fn print_status_of(r: &StatusReport) {
    for line in cli::render(r).lines() {
        println!("   {line}");
    }
    println!();
}

async fn print_status(m: &Member) {
    println!("   $ sitewatch status --socket {}", m.socket.display());
    match status::query(&m.socket).await {
        Ok(r) => {
            for line in cli::render(&r).lines() {
                println!("   {line}");
            }
            println!();
        }
        Err(e) => println!("   ({e})\n"),
    }
}
