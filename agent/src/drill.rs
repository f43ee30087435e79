//! `sitewatch drill`: the monthly failover test, through the quorum. It commits a drill
//! (a simulated site-wide power cut), watches the outage be decided, burst and acted on,
//! ends the drill, and reports how long each step took. Without `--live` every action the
//! drill causes is a dry run, and ending it puts back what was in force before.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use sitewatch_proto::Verdict;
use sitewatch_quorum::status::{ControlReply, Request, StatusReport};

use crate::cli::ask;

const POLL: Duration = Duration::from_millis(200);
/// Proposals and the drill's end must commit within this.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

struct Steps {
    begun: SystemTime,
    lines: Vec<(f64, String)>,
}

impl Steps {
    fn note(&mut self, what: String) {
        let at = self.begun.elapsed().unwrap_or_default().as_secs_f64();
        println!("  +{at:>6.1} s  {what}");
        self.lines.push((at, what));
    }
}

fn status(socket: &Path) -> Option<StatusReport> {
    ask::<StatusReport>(socket, Request::Status).ok()
}

/// Poll the status until `done` gives a value or `limit` passes.
fn wait<T>(socket: &Path, limit: Duration, mut done: impl FnMut(&StatusReport) -> Option<T>) -> Option<T> {
    let begun = SystemTime::now();
    while begun.elapsed().unwrap_or_default() < limit {
        if let Some(v) = status(socket).as_ref().and_then(&mut done) {
            return Some(v);
        }
        sleep(POLL);
    }
    None
}

fn propose(socket: &Path, on: bool, live: bool, by: &str) -> Result<(), String> {
    let reply: ControlReply = ask(socket, Request::Drill { on, live, by: by.to_owned() })?;
    if reply.accepted { Ok(()) } else { Err(reply.message) }
}

pub fn run(socket: &Path, live: bool, timeout: Duration, by: String) -> ExitCode {
    let Some(before) = status(socket) else {
        eprintln!("error: cannot reach the daemon at {}", socket.display());
        return ExitCode::from(1);
    };
    if !before.quorum.quorate {
        eprintln!("error: not quorate: a drill is a committed decision and needs a quorum");
        return ExitCode::from(2);
    }
    if before.site.drill.is_some() {
        eprintln!("error: a drill is already in progress (`sitewatch drill --end` ends it)");
        return ExitCode::from(2);
    }
    let mode = if live {
        "LIVE: the real actuators and notifiers act"
    } else {
        "dry run: actions are only reported"
    };
    println!("drill: a simulated site-wide power cut through the quorum ({mode})");
    println!("  site before: {}, desired capacity {}\n", before.site.verdict, before.site.desired_capacity);
    let mut steps = Steps { begun: SystemTime::now(), lines: Vec::new() };
    if let Err(why) = propose(socket, true, live, &by) {
        eprintln!("error: the drill was not proposed: {why}");
        return ExitCode::from(2);
    }
    if wait(socket, COMMIT_WAIT, |r| r.site.drill.is_some().then_some(())).is_none() {
        eprintln!("error: the drill was proposed but not committed within {} s", COMMIT_WAIT.as_secs());
        return ExitCode::from(2);
    }
    steps.note("drill committed: every agent now counts as on battery".into());

    let decided = wait(socket, timeout, |r| {
        if r.site.verdict == Verdict::Degraded && !steps.lines.iter().any(|(_, l)| l.starts_with("degraded"))
        {
            let armed = r.burst.assessment.as_ref().and_then(|a| a.burst_in_s);
            steps.note(format!(
                "degraded committed ({}){}",
                r.site.reasons.join(", "),
                armed.map_or(String::new(), |s| format!(", down in about {s} s"))
            ));
        }
        (r.site.verdict == Verdict::Down && r.site.desired_capacity > 0).then(|| r.site.clone())
    });
    let mut ok = true;
    match decided {
        Some(site) => {
            steps.note(format!(
                "down committed: desired capacity {} ({})",
                site.desired_capacity,
                site.reasons.join(", ")
            ));
            let token = site.decision;
            let acted = wait(socket, timeout, |r| {
                let all = !r.site.actions.is_empty()
                    && r.site.actions.values().all(|a| Some(a.token) == token)
                    && r.burst.running.is_empty();
                all.then(|| r.site.actions.clone())
            });
            match acted {
                Some(actions) => {
                    for (target, a) in actions {
                        ok &= a.ok;
                        steps.note(format!(
                            "action {target}: {} {}",
                            if a.ok { "done:" } else { "FAILED:" },
                            a.detail
                        ));
                    }
                }
                None => {
                    ok = false;
                    steps.note("the actions did not all finish in time (none configured?)".into());
                }
            }
        }
        None => {
            ok = false;
            steps.note(format!("no burst within {} s: the drill ends without one", timeout.as_secs()));
        }
    }

    if let Err(why) = propose(socket, false, live, &by) {
        eprintln!("error: ending the drill was not proposed: {why}; `sitewatch drill --end` ends it");
        return ExitCode::from(2);
    }
    let ended = wait(socket, COMMIT_WAIT, |r| r.site.drill.is_none().then(|| r.site.clone()));
    match ended {
        Some(site) if !live => steps.note(format!(
            "drill ended: put back {}, desired capacity {} (nothing real moved)",
            site.verdict, site.desired_capacity
        )),
        Some(site) => steps.note(format!(
            "drill ended: site {}, capacity {} stays until scale-down-after of health",
            site.verdict, site.desired_capacity
        )),
        None => {
            eprintln!("error: ending the drill was not committed within {} s", COMMIT_WAIT.as_secs());
            return ExitCode::from(2);
        }
    }
    let mut report = String::from("\nsummary\n");
    let mut last = 0.0;
    for (at, what) in &steps.lines {
        let _ = writeln!(report, "  {:>6.1} s (+{:>5.1} s)  {what}", at, at - last);
        last = *at;
    }
    println!("{report}");
    println!("drill {}", if ok { "PASSED" } else { "FAILED" });
    if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// End a drill left running.
pub fn end(socket: &Path, by: String) -> ExitCode {
    match status(socket) {
        None => {
            eprintln!("error: cannot reach the daemon at {}", socket.display());
            return ExitCode::from(1);
        }
        Some(r) if r.site.drill.is_none() => {
            println!("no drill in progress");
            return ExitCode::SUCCESS;
        }
        Some(_) => {}
    }
    if let Err(why) = propose(socket, false, false, &by) {
        eprintln!("error: ending the drill was not proposed: {why}");
        return ExitCode::from(2);
    }
    match wait(socket, COMMIT_WAIT, |r| r.site.drill.is_none().then(|| r.site.clone())) {
        Some(site) => {
            println!("drill ended: site {}, desired capacity {}", site.verdict, site.desired_capacity);
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("error: ending the drill was not committed within {} s", COMMIT_WAIT.as_secs());
            ExitCode::from(2)
        }
    }
}
