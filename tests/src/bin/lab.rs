//! An interactive lab: the same network-namespace site the fault campaign runs
//! (`tests/tests/lab.rs`), kept up for a person to try faults by hand.
//!
//!   sudo target/debug/lab --agents 3 [--cloud-voter]      (tests/lab.sh builds and runs it)
//!
//! Then type commands (`help` lists them); `sitewatch status --socket <path>` works from
//! another terminal for any member. Everything is removed on `quit`, Ctrl-D or Ctrl-C.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use sitewatch_tests::lab::{LabSpec, SiteLab};
use sitewatch_tests::netns::Cut;

#[derive(Parser)]
struct Args {
    /// Agents on their own hosts, 2 to 5.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// The last this many agents are learners.
    #[arg(long, default_value_t = 0)]
    learners: usize,
    /// A second witness on the cloud side (a voter).
    #[arg(long)]
    cloud_voter: bool,
    /// The policy's scale-down-after, in seconds.
    #[arg(long, default_value_t = 60)]
    scale_down_after_s: u64,
}

const HELP: &str = "\
commands (HOST is a member name, or `cloud` for moto's host):
  status                       one line per member: role, leader, term, verdict, capacity
  desired                      the Auto Scaling group's desired capacity (moto)
  power AGENT|all on|battery   the agent's UPS on line or on battery
  cut HOST HOW / heal HOST HOW HOW: switch-port nic silent-drop reject bridge
  one-sided HOST PEER / heal-one-sided HOST
  wan cut|heal                 cut every agent off the witness and the cloud at the bridge
  loss HOST PERCENT            drop that share of what HOST receives
  delay HOST MS JITTER         hold what HOST sends for MS +- JITTER
  kill HOST / start HOST       SIGKILL every process on the host / start its daemon again
  history MEMBER               the member's committed records
  actions                      the exec hooks' journal
  check                        the campaign's invariants, on what happened so far
  quit";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = LabSpec {
        agents: args.agents,
        learners: args.learners,
        cloud_voter: args.cloud_voter,
        scale_down_after: Duration::from_secs(args.scale_down_after_s),
        ..LabSpec::default()
    };
    eprintln!("building the lab ({} agents) ...", spec.agents);
    let Some(lab) = SiteLab::start("lab", spec) else {
        bail!("this machine cannot build the lab (see above)")
    };
    for n in &lab.nodes {
        println!(
            "{:<12} {:<8} {:<15} sitewatch status --socket {}",
            n.spec.name,
            n.spec.role,
            n.spec.host,
            n.socket.display()
        );
    }
    println!("moto: {}   hooks' journal: {}\n{HELP}", lab.moto.endpoint(), lab.journal.display());
    // Ctrl-C: take the lab down (its Drop removes namespaces, daemons and upsds) and leave.
    let lab = Arc::new(Mutex::new(Some(lab)));
    let on_interrupt = lab.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            drop(on_interrupt.lock().map(|mut l| l.take()));
            std::process::exit(130);
        }
    });
    let stdin = std::io::stdin();
    loop {
        print!("lab> ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"quit") {
            break;
        }
        let mut guard = lab.lock().map_err(|_| anyhow::anyhow!("lab lock poisoned"))?;
        let Some(lab) = guard.as_mut() else { break };
        if let Err(e) = run(lab, &words) {
            println!("error: {e:#}");
        }
    }
    drop(lab.lock().map(|mut l| l.take()));
    Ok(())
}

fn cut_of(how: &str) -> anyhow::Result<Cut> {
    Ok(match how {
        "switch-port" => Cut::SwitchPort,
        "nic" => Cut::Nic,
        "silent-drop" => Cut::SilentDrop,
        "reject" => Cut::Reject,
        "bridge" => Cut::Bridge,
        other => bail!("no cut {other:?}: switch-port nic silent-drop reject bridge"),
    })
}

fn host<'a>(lab: &SiteLab, name: &'a str) -> anyhow::Result<&'a str> {
    if name == "cloud" || lab.nodes.iter().any(|n| n.spec.name == name) {
        Ok(name)
    } else {
        bail!("no host {name:?}")
    }
}

fn run(lab: &mut SiteLab, words: &[&str]) -> anyhow::Result<()> {
    let number = |w: &str| w.parse::<u32>().with_context(|| format!("{w:?} is not a number"));
    match words {
        [] => {}
        ["help"] => println!("{HELP}"),
        ["status"] => {
            for n in &lab.nodes {
                match n.status_raw() {
                    Some(s) => println!(
                        "{:<12} {:<9} leader {:<12} term {:<3} {:<10} capacity {}",
                        n.spec.name,
                        s["raft"]["state"].as_str().unwrap_or("?"),
                        s["raft"]["leader_name"].as_str().unwrap_or("-"),
                        s["raft"]["term"],
                        s["site"]["verdict"].as_str().unwrap_or("?"),
                        s["site"]["desired_capacity"]
                    ),
                    None => println!("{:<12} not answering", n.spec.name),
                }
            }
        }
        ["desired"] => println!("{}", lab.desired()),
        ["power", who, state] => {
            let on_battery = match *state {
                "battery" => true,
                "on" => false,
                other => bail!("power {other:?}: on or battery"),
            };
            if *who == "all" {
                lab.all_agents_power(on_battery);
            } else if lab.upsd.contains_key(*who) {
                lab.power(&[who], on_battery);
            } else {
                bail!("{who:?} is not an agent");
            }
        }
        ["cut", h, how] => lab.net.cut(host(lab, h)?, cut_of(how)?),
        ["heal", h, how] => lab.net.heal(host(lab, h)?, cut_of(how)?),
        ["one-sided", h, peer] => lab.net.cut_one_sided(host(lab, h)?, host(lab, peer)?),
        ["heal-one-sided", h] => lab.net.heal_one_sided(host(lab, h)?),
        ["wan", "cut"] => {
            let agents = lab.agents();
            let site: Vec<&str> = agents.iter().map(String::as_str).collect();
            let mut outside = vec!["witness", "cloud"];
            if lab.spec.cloud_voter {
                outside.push("cloud-voter");
            }
            lab.net.cut_between(&site, &outside);
        }
        ["wan", "heal"] => lab.net.heal_between(),
        ["loss", h, percent] => lab.net.loss(host(lab, h)?, number(percent)?),
        ["delay", h, ms, jitter] => {
            let h = host(lab, h)?;
            lab.net.delay(h, number(ms)?, number(jitter)?);
        }
        ["kill", h] => {
            let h = host(lab, h)?;
            lab.kill_host(h);
        }
        ["start", h] => {
            let h = host(lab, h)?;
            lab.start_node(h);
        }
        ["history", h] => {
            let h = host(lab, h)?;
            let history = sitewatch_tests::lab::history(&lab.node(h).socket).context("no answer")?;
            for r in history {
                println!("{r}");
            }
        }
        ["actions"] => {
            for a in lab.actions() {
                println!("{a:?}");
            }
        }
        ["check"] => {
            let violations = lab.evidence().violations();
            if violations.is_empty() {
                println!("every invariant holds");
            } else {
                println!("{}", violations.join("\n"));
            }
        }
        other => bail!("unknown command {other:?}; `help` lists them"),
    }
    Ok(())
}
