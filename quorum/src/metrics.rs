//! Prometheus metrics on a localhost address (`metrics-listen`), in the text exposition
//! format, rendered from the same report the status socket serves.
//!
//! The metrics are a view of one report taken at scrape time, so they are rendered
//! straight from it: a registry of live metric objects (prometheus-client) would only
//! copy the same numbers once more. The HTTP side answers `GET /metrics` and nothing
//! else, with a bound on clients and a deadline on each.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use sitewatch_proto::Verdict;
use sitewatch_proto::ups::{Power, StatusFlag, UpsState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::clients::{Limits, serve_bounded};
use crate::status::StatusReport;

const MAX_CLIENTS: usize = 8;
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

struct Out {
    text: String,
    described: Vec<&'static str>,
}

impl Out {
    fn metric(&mut self, name: &'static str, kind: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        if !self.described.contains(&name) {
            self.described.push(name);
            let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        let _ = write!(self.text, "{name}");
        if !labels.is_empty() {
            let body: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.text, "{{{}}}", body.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The report in the text exposition format.
pub fn render(r: &StatusReport) -> String {
    let mut o = Out { text: String::new(), described: Vec::new() };
    let q = &r.quorum;
    o.metric(
        "sitewatch_has_leader",
        "gauge",
        "1 when a leader is known: the cluster can commit.",
        &[],
        flag(q.quorate),
    );
    o.metric("sitewatch_is_leader", "gauge", "1 when this node leads.", &[], flag(r.raft.state == "leader"));
    o.metric(
        "sitewatch_leader_changes_total",
        "counter",
        "Leadership changes this node saw.",
        &[],
        r.raft.leader_changes as f64,
    );
    o.metric("sitewatch_term", "gauge", "The raft term.", &[], r.raft.term as f64);
    o.metric("sitewatch_commit_index", "gauge", "The raft commit index.", &[], r.raft.commit as f64);
    o.metric("sitewatch_voters", "gauge", "Voters in the cluster.", &[], q.voters as f64);
    o.metric(
        "sitewatch_voters_reachable",
        "gauge",
        "Voters this node reaches, itself included.",
        &[],
        q.voters_reachable as f64,
    );
    let s = &r.site;
    for v in [Verdict::Healthy, Verdict::Degraded, Verdict::Down, Verdict::Recovering] {
        let name = v.to_string();
        o.metric(
            "sitewatch_verdict",
            "gauge",
            "1 for the committed site verdict.",
            &[("verdict", &name)],
            flag(s.verdict == v),
        );
    }
    o.metric(
        "sitewatch_burst_desired_capacity",
        "gauge",
        "The committed desired burst capacity.",
        &[],
        f64::from(s.desired_capacity),
    );
    o.metric(
        "sitewatch_burst_hold",
        "gauge",
        "1 while an operator hold freezes the capacity.",
        &[],
        flag(s.hold),
    );
    o.metric(
        "sitewatch_spend_instance_hours",
        "gauge",
        "Burst instance-hours this calendar month (UTC).",
        &[],
        s.instance_hours_this_month,
    );
    o.metric(
        "sitewatch_spend_level_percent",
        "gauge",
        "Spend alert level reached (0, 50, 80, 100).",
        &[],
        f64::from(s.spend_level),
    );
    for (target, result) in &s.actions {
        o.metric(
            "sitewatch_action_ok",
            "gauge",
            "1 when the target's latest committed action succeeded.",
            &[("target", target)],
            flag(result.ok),
        );
    }
    for (target, n) in &r.burst.failures {
        o.metric(
            "sitewatch_actuator_failures_total",
            "counter",
            "Actions that failed on this node, per actuator or notifier.",
            &[("target", target)],
            *n as f64,
        );
    }
    if let Some(obs) = &r.observation {
        o.metric(
            "sitewatch_host_on_battery",
            "gauge",
            "1 when every UPS feeding this host is on battery.",
            &[],
            flag(obs.power == Power::Battery),
        );
        for u in &obs.ups {
            let name = u.name.as_str();
            let data = match &u.state {
                UpsState::Data(d) => Some(d),
                _ => None,
            };
            o.metric(
                "sitewatch_ups_fresh",
                "gauge",
                "1 when upsd answered with data in the latest poll.",
                &[("ups", name)],
                flag(data.is_some()),
            );
            if let Some(d) = data {
                o.metric(
                    "sitewatch_ups_on_battery",
                    "gauge",
                    "1 when the UPS reports OB.",
                    &[("ups", name)],
                    flag(d.status.has(StatusFlag::OB)),
                );
                if let Some(rt) = d.battery_runtime_s {
                    o.metric(
                        "sitewatch_ups_runtime_seconds",
                        "gauge",
                        "Battery runtime left.",
                        &[("ups", name)],
                        rt as f64,
                    );
                }
                if let Some(c) = d.battery_charge {
                    o.metric("sitewatch_ups_charge_percent", "gauge", "Battery charge.", &[("ups", name)], c);
                }
            }
        }
        for p in &obs.probes {
            link(&mut o, "probe", &p.name, &p.summary);
        }
    }
    for p in &r.peers {
        o.metric(
            "sitewatch_peer_connected",
            "gauge",
            "1 while the cluster connection is up.",
            &[("peer", &p.name)],
            flag(p.connected),
        );
        link(&mut o, "peer", &p.name, &p.link);
    }
    o.text
}

fn link(o: &mut Out, kind: &'static str, name: &str, s: &sitewatch_proto::link::LinkSummary) {
    let (rtt, loss): (&'static str, &'static str) = if kind == "peer" {
        ("sitewatch_peer_rtt_seconds", "sitewatch_peer_loss_ratio")
    } else {
        ("sitewatch_probe_rtt_seconds", "sitewatch_probe_loss_ratio")
    };
    for (q, v) in [("0.5", s.rtt_median_ms), ("0.95", s.rtt_p95_ms)] {
        if let Some(ms) = v {
            o.metric(
                rtt,
                "gauge",
                "Round-trip time over the probe window.",
                &[(kind, name), ("quantile", q)],
                ms / 1000.0,
            );
        }
    }
    if let Some(l) = s.loss {
        o.metric(loss, "gauge", "Share of probes lost over the window.", &[(kind, name)], l);
    }
}

/// Serve `GET /metrics` on `addr` until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    reports: watch::Receiver<StatusReport>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "metrics listening");
    let answer = move |stream| answer(stream, reports.clone());
    serve_bounded(
        listener,
        Limits { what: "metrics", max_clients: MAX_CLIENTS, deadline: CLIENT_TIMEOUT },
        tracker,
        cancel,
        answer,
        || {},
    );
    Ok(bound)
}

async fn answer(mut stream: TcpStream, reports: watch::Receiver<StatusReport>) -> Result<(), String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) => return Err("closed before a request".into()),
            Err(e) => return Err(e.to_string()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err("request head too large".into());
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (status, kind, body) = if method == b"GET" && (path == b"/metrics" || path.starts_with(b"/metrics?"))
    {
        let body = render(&reports.borrow());
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "only GET /metrics here\n".to_string())
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await.map_err(|e| e.to_string())?;
    stream.shutdown().await.map_err(|e| e.to_string())
}
