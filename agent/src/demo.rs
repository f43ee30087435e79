//! `sitewatch demo`: a newcomer's first command. Starts two agents and a witness on
//! loopback with a CA and certificates made in a temporary directory, shows them elect a
//! leader, stops the leader to show a failover, brings it back to show it catch up, and
//! cleans up.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use sitewatch_quorum::config::{Config, Role};
use sitewatch_quorum::status::{self, StatusReport};
use sitewatch_quorum::{daemon, logging};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::{cli, observer, pki};

const MEMBERS: [(&str, u64, Role); 3] =
    [("agent-1", 1, Role::Agent), ("agent-2", 2, Role::Agent), ("witness", 3, Role::Witness)];
const WAIT: Duration = Duration::from_secs(20);

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

fn write_configs(dir: &Path) -> anyhow::Result<Vec<Member>> {
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

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("sitewatch-demo-").tempdir()?;
    println!("== sitewatch demo: two agents and a witness on loopback ==");
    println!("   CA, certificates and configs in {}\n", dir.path().display());
    let mut members = write_configs(dir.path())?;
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
    print_status(&members[idx]).await;
    println!("Done: every step above was decided by the quorum over mutual TLS; cleaning up.");
    for m in &mut members {
        m.stop().await?;
    }
    Ok(())
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
