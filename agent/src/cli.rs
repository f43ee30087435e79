//! The `sitewatch` command: bootstrap the CA, check a config, read a daemon's status,
//! run the demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use sitewatch_proto::Command as ProtoCommand;
use sitewatch_proto::Verdict;
use sitewatch_proto::ups::{Power, UpsState};
use sitewatch_quorum::config::{Config, Role};
use sitewatch_quorum::status::{self, ControlReply, History, Request, StatusReport};
use sitewatch_quorum::tls::TlsIdentity;

use crate::pki;

pub const DEFAULT_SOCKET: &str = "/run/sitewatch/sitewatch.sock";

#[derive(Parser)]
#[command(name = "sitewatch", version, about = "Operate a sitewatch cluster")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file (and the TLS files it names) as the daemon would.
    CheckConfig { path: PathBuf },
    /// The cluster's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Member certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Show the local daemon's view: quorum, leader, peers, verdict.
    Status {
        /// The daemon's status socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the full report as JSON (with a schema_version).
        #[arg(long)]
        json: bool,
        /// Redraw every 2 s until interrupted.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// A monitoring-plugin check (Nagios, Icinga, Sensu): one line, and exit 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The committed decisions this node holds, oldest first.
    History {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Maintenance mode: hold freezes the burst capacity, release lets it move again.
    Burst {
        #[command(subcommand)]
        command: BurstCommand,
    },
    /// The failover drill: simulate a site-wide power cut through the quorum, watch the
    /// outage be decided and acted on, end it, and report how long each step took.
    Drill {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Call the real actuators and notifiers (default: dry runs that touch nothing).
        #[arg(long)]
        live: bool,
        /// Give up waiting for the burst after this long.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// End a drill left running (an interrupted `sitewatch drill`); it also ends on
        /// its own after 15 minutes, or at once when the site is really down.
        #[arg(long)]
        end: bool,
        #[arg(long)]
        by: Option<String>,
    },
    /// Start a local demo cluster on loopback, with no config needed.
    Demo,
}

#[derive(Subcommand)]
enum BurstCommand {
    /// Freeze the desired capacity (committed through the quorum).
    Hold {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Who holds, for the history (default: $SUDO_USER or $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Let the capacity follow the verdict again.
    Release {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a new CA: DIR/ca.pem goes to every member, DIR/ca.key stays off them.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Named in the CA's subject, to tell clusters apart.
        #[arg(long, default_value = "sitewatch")]
        cluster_id: String,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue NAME.pem and NAME.key for member NAME, signed by the CA in --ca.
    Issue {
        name: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 1825)]
        days: i64,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { path } => check_config(&path),
        Command::Ca { command: CaCommand::Init { dir, cluster_id } } => {
            report(pki::init_ca(&dir, &cluster_id).map(|p| {
                println!(
                    "CA written: {} (give it to every member) and {} (keep it safe, off the members)",
                    p.display(),
                    dir.join(pki::CA_KEY).display()
                );
            }))
        }
        Command::Cert { command: CertCommand::Issue { name, ca, out, days } } => {
            report(pki::issue(&name, &ca, &out, days).map(|(cert, key)| {
                println!("certificate for `{name}`: {} and {}", cert.display(), key.display());
            }))
        }
        Command::Status { socket, json, watch: false } => status(&socket, json),
        Command::Status { socket, watch: true, .. } => loop {
            // Clear the screen and home the cursor, as watch(1) does.
            print!("\x1b[2J\x1b[H");
            let code = status(&socket, false);
            println!("\n(every 2 s; exit {code:?} now; Ctrl-C to stop)");
            std::thread::sleep(std::time::Duration::from_secs(2));
        },
        Command::Check { socket } => check(&socket),
        Command::History { socket, json } => history(&socket, json),
        Command::Burst { command: BurstCommand::Hold { socket, by } } => hold(&socket, true, by),
        Command::Burst { command: BurstCommand::Release { socket, by } } => hold(&socket, false, by),
        Command::Drill { socket, end: true, by, .. } => crate::drill::end(&socket, operator(by)),
        Command::Drill { socket, live, timeout, by, end: false } => {
            crate::drill::run(&socket, live, timeout, operator(by))
        }
        Command::Demo => crate::demo::main(),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let me = config.me();
    if let Err(e) = TlsIdentity::load(&config.tls, &me.name) {
        eprintln!("error: {}: [tls]: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let voters = config.members.iter().filter(|m| m.voter).count();
    println!(
        "ok: {}: cluster `{}`, node `{}` ({}), {} members ({voters} voters), members digest {:016x}",
        path.display(),
        config.cluster_id,
        me.name,
        me.role,
        config.members.len(),
        config.members_digest()
    );
    ExitCode::SUCCESS
}

pub fn ask<T: serde::de::DeserializeOwned + Unpin>(socket: &Path, request: Request) -> Result<T, String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(status::ask(socket, request)).map_err(|e| e.to_string())
}

/// Monitoring-plugin output: the state word, a summary, and perfdata after the bar.
fn check(socket: &Path) -> ExitCode {
    let report: StatusReport = match ask(socket, Request::Status) {
        Ok(r) => r,
        Err(e) => {
            println!("SITEWATCH UNKNOWN - {e}");
            return ExitCode::from(3);
        }
    };
    let (code, word) = check_state(&report);
    let s = &report.site;
    let leader = report.raft.leader_name.as_deref().unwrap_or("none");
    let reasons = if s.reasons.is_empty() { String::new() } else { format!(" ({})", s.reasons.join(", ")) };
    println!(
        "SITEWATCH {word} - site {}{reasons}, {}, leader {leader}, voters {}/{} | desired_capacity={} voters_reachable={};;;0;{} term={}",
        s.verdict,
        if report.quorum.quorate { "quorate" } else { "NOT QUORATE" },
        report.quorum.voters_reachable,
        report.quorum.voters,
        s.desired_capacity,
        report.quorum.voters_reachable,
        report.quorum.voters,
        report.raft.term,
    );
    ExitCode::from(code)
}

/// OK when quorate and healthy; CRITICAL when not quorate or down; WARNING otherwise
/// (degraded, recovering, held, or a voter unreachable).
pub fn check_state(r: &StatusReport) -> (u8, &'static str) {
    if !r.quorum.quorate || r.site.verdict == Verdict::Down {
        (2, "CRITICAL")
    } else if r.site.verdict != Verdict::Healthy || r.site.hold || r.quorum.voters_reachable < r.quorum.voters
    {
        (1, "WARNING")
    } else {
        (0, "OK")
    }
}

/// Ask the daemon and print its answer as pretty JSON or through `render`; `None`
/// (after saying why on stderr) when it cannot be reached or printed.
fn show<T: serde::de::DeserializeOwned + serde::Serialize + Unpin>(
    socket: &Path,
    request: Request,
    json: bool,
    render: impl Fn(&T) -> String,
) -> Option<T> {
    let answer: T = ask(socket, request).map_err(|e| eprintln!("error: {e}")).ok()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer).map_err(|e| eprintln!("error: {e}")).ok()?);
    } else {
        print!("{}", render(&answer));
    }
    Some(answer)
}

fn history(socket: &Path, json: bool) -> ExitCode {
    match show(socket, Request::History, json, render_history) {
        Some(_) => ExitCode::SUCCESS,
        None => ExitCode::from(1),
    }
}

/// One line per committed decision: where, when, what changed, why.
pub fn render_history(h: &History) -> String {
    use std::fmt::Write;
    let mut out =
        format!("{:>5} {:>7}  {:<20} {:<42} {}\n", "TERM", "INDEX", "TIME (UTC)", "CHANGE", "REASONS");
    let (mut verdict, mut capacity) = (Verdict::Healthy, 0);
    for rec in &h.records {
        let (at, change, why) = match &rec.command {
            ProtoCommand::Decision(d) => {
                let change =
                    format!("{verdict} -> {}, capacity {capacity} -> {}", d.verdict, d.desired_capacity);
                (verdict, capacity) = (d.verdict, d.desired_capacity);
                (d.decided_at_ms, change, d.reasons.join(", "))
            }
            ProtoCommand::Hold { on, by, at_ms } => {
                (*at_ms, if *on { "hold (maintenance)".into() } else { "release".into() }, format!("by {by}"))
            }
            ProtoCommand::Unilateral { desired_capacity, by, at_ms } => {
                let change = format!("{verdict} -> down, capacity {capacity} -> {desired_capacity}");
                if *desired_capacity > capacity {
                    (verdict, capacity) = (Verdict::Down, *desired_capacity);
                }
                (*at_ms, change, format!("dark-site-unilateral by {by}"))
            }
            ProtoCommand::ActionResult(_) => continue,
            ProtoCommand::Drill { on, live, by, at_ms } => {
                let what = match (on, live) {
                    (true, true) => "drill started (live)",
                    (true, false) => "drill started (dry run)",
                    (false, _) => "drill ended",
                };
                (*at_ms, what.to_string(), format!("by {by}"))
            }
        };
        let _ =
            writeln!(out, "{:>5} {:>7}  {:<20} {change:<42} {why}", rec.token.term, rec.token.index, utc(at));
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` for a UNIX time in ms.
fn utc(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64).map_or_else(
        |_| "-".into(),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        },
    )
}

/// Who asks, for the history: `--by`, else the invoking user.
fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "operator".into())
}

fn hold(socket: &Path, on: bool, by: Option<String>) -> ExitCode {
    let by = operator(by);
    let reply: ControlReply = match ask(socket, Request::Hold { on, by }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if !reply.accepted {
        eprintln!("error: {}", reply.message);
        return ExitCode::from(2);
    }
    // Proposed is not committed: wait until this node has applied it.
    let deadline = std::time::Duration::from_secs(10);
    let begun = std::time::SystemTime::now();
    while begun.elapsed().unwrap_or_default() < deadline {
        if let Ok(r) = ask::<StatusReport>(socket, Request::Status)
            && r.site.hold == on
        {
            println!(
                "{} (committed; capacity {})",
                if on { "held" } else { "released" },
                r.site.desired_capacity
            );
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("error: proposed, but not committed within {} s (is the cluster quorate?)", deadline.as_secs());
    ExitCode::from(2)
}

fn status(socket: &Path, json: bool) -> ExitCode {
    let Some(report) = show::<StatusReport>(socket, Request::Status, json, render) else {
        return ExitCode::from(1);
    };
    if report.quorum.quorate && report.site.verdict != Verdict::Down {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// The burst timers, this node's own judgement when it differs, and the actions.
fn render_burst(out: &mut String, r: &StatusReport) {
    use std::fmt::Write;
    let b = &r.burst;
    if let Some(a) = &b.assessment {
        let mut timers = Vec::new();
        if let Some(s) = a.burst_in_s {
            timers.push(format!("armed: down in {}", short_duration(s)));
        }
        if let Some(s) = a.scale_down_in_s {
            timers.push(format!("recovering: capacity goes back in {}", short_duration(s)));
        }
        if a.spend_level > 0 {
            timers.push(format!("spend at {} % of the monthly limit", a.spend_level));
        }
        if a.verdict != r.site.verdict || a.desired_capacity != r.site.desired_capacity {
            timers.push(format!("this node judges {} / capacity {}", a.verdict, a.desired_capacity));
        }
        if !timers.is_empty() {
            let _ = writeln!(out, "burst    {}", timers.join("; "));
        }
    }
    if let Some(c) = b.unilateral_capacity {
        let _ = writeln!(
            out,
            "burst    DARK SITE: this witness raised capacity to {c} on its own (scale-up only)"
        );
    }
    for (target, token) in &b.running {
        let _ = writeln!(out, "action   {target}: running for term {} index {}", token.term, token.index);
    }
    for (target, result) in &r.site.actions {
        let current = r.site.decision == Some(result.token);
        let _ = writeln!(
            out,
            "action   {target}: {} for term {} index {}{}: {}",
            if result.ok { "done" } else { "FAILED" },
            result.token.term,
            result.token.index,
            if current { "" } else { " (an older decision)" },
            result.detail
        );
    }
}

/// What an operator should look at, worst first.
pub fn warnings(r: &StatusReport) -> Vec<String> {
    let mut w = Vec::new();
    if !r.quorum.quorate {
        w.push("no quorum: nothing can be decided; this is this node's own view".to_string());
    }
    for p in r.peers.iter().filter(|p| !p.connected) {
        w.push(format!("{} {} unreachable", if p.voter { "voter" } else { "learner" }, p.name));
    }
    if let Some(d) = &r.site.drill {
        w.push(format!(
            "a failover drill is in progress ({}, by {})",
            if d.live { "live" } else { "dry run" },
            d.by
        ));
    }
    if r.site.hold {
        w.push("burst capacity held (maintenance): `sitewatch burst release` lets it move".to_string());
    }
    for (target, a) in r.site.actions.iter().filter(|(_, a)| !a.ok && Some(a.token) == r.site.decision) {
        w.push(format!("action {target} failed: {}", a.detail));
    }
    if r.site.spend_level >= 80 {
        w.push(format!("burst spend at {} % of the monthly limit", r.site.spend_level));
    }
    if let Some(o) = &r.observation {
        for u in o.ups.iter().filter(|u| !matches!(u.state, UpsState::Data(_))) {
            w.push(format!("UPS {}: {}", u.name, u.state));
        }
        for p in o.probes.iter().filter(|p| p.summary.reach == 0 && p.summary.sent > 0) {
            w.push(format!("probe {} ({}) gets no answers", p.name, p.target));
        }
    }
    if let Some(c) = r.burst.unilateral_capacity {
        w.push(format!("dark site: this witness raised capacity to {c} on its own"));
    }
    w
}

/// On a witness: its clients (the agents) and when each last sent its observation,
/// like corosync-qnetd-tool -l.
fn render_clients(out: &mut String, r: &StatusReport) {
    use std::fmt::Write;
    let _ = writeln!(out, "\n{:<16} {:<12} {:>18}", "CLIENT", "STATE", "LAST OBSERVATION");
    for p in r.peers.iter().filter(|p| p.role == Role::Agent) {
        let heard = r.burst.heard.iter().find(|h| h.name == p.name).and_then(|h| h.age_ms);
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:>18}",
            p.name,
            if p.connected { "connected" } else { "unreachable" },
            heard.map_or("never".to_string(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0))
        );
    }
}

/// The human view, one screen: who we are, the verdict, the quorum, the peers.
pub fn render(r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let n = &r.node;
    let _ = writeln!(
        out,
        "node     {} ({}{}), cluster {}",
        n.name,
        n.role,
        if n.voter { ", voter" } else { ", learner" },
        r.cluster_id
    );
    let s = &r.site;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let decided = s.decision.map_or("never decided".to_string(), |t| {
        let age = now_ms.saturating_sub(s.decided_at_ms) / 1000;
        format!("decided {} ago at term {} index {}", short_duration(age), t.term, t.index)
    });
    let _ = writeln!(
        out,
        "verdict  {}, desired capacity {}{} ({decided})",
        s.verdict,
        s.desired_capacity,
        if s.hold { ", HELD (maintenance)" } else { "" }
    );
    if !s.reasons.is_empty() {
        let _ = writeln!(out, "reasons  {}", s.reasons.join(", "));
    }
    if let Some(d) = &s.drill {
        let _ = writeln!(
            out,
            "DRILL    in progress ({}), started by {}: a simulated site-wide power cut",
            if d.live { "LIVE: real actuators" } else { "dry run" },
            d.by
        );
    }
    render_burst(&mut out, r);
    let warnings = warnings(r);
    if !warnings.is_empty() {
        let _ = writeln!(out, "WARNINGS");
        for w in &warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    let q = &r.quorum;
    let leader = r.raft.leader_name.clone().unwrap_or_else(|| "none".into());
    let _ = writeln!(
        out,
        "quorum   {}, leader {leader}, term {}, voters reachable {}/{}",
        if q.quorate { "quorate" } else { "NOT QUORATE" },
        r.raft.term,
        q.voters_reachable,
        q.voters
    );
    let _ = writeln!(out, "raft     {}, commit {}, applied {}", r.raft.state, r.raft.commit, r.raft.applied);
    if let Some(o) = &r.observation {
        let h = &o.host;
        let down = h.going_down.as_ref().map_or(String::new(), |g| format!(", GOING DOWN ({g:?})"));
        let _ = writeln!(
            out,
            "host     up {}, load {:.2} {:.2} {:.2}, memory {} of {} MiB free{down}",
            short_duration(h.uptime_s),
            h.load[0],
            h.load[1],
            h.load[2],
            h.memory_available_kib / 1024,
            h.memory_total_kib / 1024
        );
        if o.ups.is_empty() {
            let _ = writeln!(out, "power    no [[ups]] configured");
        } else {
            let _ = writeln!(out, "power    {}", power_word(o.power));
        }
        for u in &o.ups {
            let age = o.clock_ms.saturating_sub(u.observed_at_ms) as f64 / 1000.0;
            let what = match &u.state {
                UpsState::Data(d) => {
                    let mut parts = vec![d.status.to_string()];
                    if let Some(c) = d.battery_charge {
                        parts.push(format!("charge {c:.0}%"));
                    }
                    if let Some(r) = d.battery_runtime_s {
                        parts.push(format!("runtime {}", short_duration(r)));
                    }
                    if let Some(l) = d.load {
                        parts.push(format!("load {l:.0}%"));
                    }
                    parts.join(", ")
                }
                other => other.to_string().to_uppercase(),
            };
            let _ = writeln!(out, "ups      {:<12} {what} (read {age:.1} s ago)", u.name);
        }
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<8} {:<7} {:<12} {:>9} {:>9} {:>9} {:>6} {:>5} {:>13}",
        "PEER", "ROLE", "VOTER", "STATE", "RTT MED", "RTT P95", "JITTER", "LOSS", "REACH", "LAST CONTACT"
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    for p in &r.peers {
        let loss = p.link.loss.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
        let contact =
            p.last_contact_ms.map_or("never".to_string(), |v| format!("{:.1} s ago", v as f64 / 1000.0));
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<7} {:<12} {:>9} {:>9} {:>9} {:>6} {:>5o} {:>13}",
            p.name,
            p.role.to_string(),
            if p.voter { "yes" } else { "no" },
            if p.connected { "connected" } else { "unreachable" },
            ms(p.link.rtt_median_ms),
            ms(p.link.rtt_p95_ms),
            ms(p.link.jitter_ms),
            loss,
            // Octal, as ntpq shows it: 377 = the last eight pings answered.
            p.link.reach,
            contact
        );
    }
    let probes = r.observation.as_ref().map_or(&[][..], |o| &o.probes[..]);
    if !probes.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<16} {:<24} {:<13} {:>9} {:>9} {:>6} {:>5}",
            "PROBE", "TARGET", "METHOD", "MEDIAN", "P95", "LOSS", "REACH"
        );
    }
    for p in probes {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let s = &p.summary;
        let loss = s.loss.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<13} {:>9} {:>9} {:>6} {:>5o}",
            p.name,
            p.target,
            p.method.to_string(),
            ms(s.rtt_median_ms),
            ms(s.rtt_p95_ms),
            loss,
            s.reach
        );
        if let Some(why) = &p.last_error {
            let _ = writeln!(out, "{:<16} last error: {why}", "");
        }
    }
    if r.node.role == Role::Witness {
        render_clients(&mut out, r);
    }
    out
}

fn short_duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn power_word(p: Power) -> &'static str {
    match p {
        Power::Line => "on line",
        Power::Battery => "ON BATTERY",
        Power::Unknown => "unknown (no fresh reading from a UPS feeding this host)",
    }
}
