//! Link quality from probes, sans-IO: a sliding window of probe outcomes per target and
//! the figures an operator and the verdict policy read from it.
//!
//! Nothing here sends a packet or reads a clock. [`LinkWindow`] holds outcomes;
//! [`LinkTracker`] adds the bookkeeping of probes in flight (sent at, timed out, answered
//! late) for any instant type the caller uses (`tokio::time::Instant` in the daemons,
//! a plain `Duration` since an arbitrary origin in tests).

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest window accepted in a config: an hour of probes at the default 1 s interval.
pub const MAX_WINDOW: usize = 3600;

/// What became of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered within its timeout.
    Reply { rtt: Duration },
    /// No answer within its timeout (or a refusal: see the probers).
    Lost,
    /// Answered, but after its timeout. Neither a loss nor an RTT sample: a path that
    /// answers in 3 s is not the 20 ms path the RTT figures describe, and it did deliver.
    Late { rtt: Duration },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    outcome: Outcome,
}

/// The last `capacity` probe outcomes of one target, plus an ntpd-style reach register.
#[derive(Debug, Clone)]
pub struct LinkWindow {
    capacity: usize,
    entries: VecDeque<Entry>,
    /// Shifted left once per outcome; the low bit is set on a reply (ntpd's `reach`).
    /// It outlives the window's entries, so it also works with a window of 1.
    reach: u8,
}

impl LinkWindow {
    /// A window of `capacity` outcomes (at least 1).
    pub fn new(capacity: usize) -> LinkWindow {
        let capacity = capacity.max(1);
        LinkWindow { capacity, entries: VecDeque::with_capacity(capacity.min(MAX_WINDOW)), reach: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Record the outcome of probe `seq`, pushing the oldest out of a full window.
    pub fn record(&mut self, seq: u64, outcome: Outcome) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry { seq, outcome });
        self.reach = (self.reach << 1) | u8::from(matches!(outcome, Outcome::Reply { .. }));
    }

    /// Probe `seq`, recorded as lost, was answered after all. False when it is no longer
    /// in the window or was not lost. The reach register keeps its 0: the probe did miss
    /// its deadline.
    pub fn mark_late(&mut self, seq: u64, rtt: Duration) -> bool {
        match self.entries.iter_mut().rev().find(|e| e.seq == seq) {
            Some(e) if e.outcome == Outcome::Lost => {
                e.outcome = Outcome::Late { rtt };
                true
            }
            _ => false,
        }
    }

    pub fn summary(&self) -> LinkSummary {
        let mut rtts = Vec::with_capacity(self.entries.len());
        let (mut lost, mut late) = (0u32, 0u32);
        for e in &self.entries {
            match e.outcome {
                Outcome::Reply { rtt } => rtts.push(rtt),
                Outcome::Lost => lost += 1,
                Outcome::Late { .. } => late += 1,
            }
        }
        let sent = self.entries.len() as u32;
        let last_rtt_ms = rtts.last().map(|d| ms(*d));
        let jitter_ms = rfc3550_jitter_ms(&rtts);
        rtts.sort_unstable();
        LinkSummary {
            sent,
            replies: rtts.len() as u32,
            lost,
            late,
            loss: (sent > 0).then(|| f64::from(lost) / f64::from(sent)),
            rtt_median_ms: median(&rtts).map(ms),
            rtt_p95_ms: nearest_rank(&rtts, 95).map(ms),
            jitter_ms,
            last_rtt_ms,
            reach: self.reach,
        }
    }
}

/// The figures of one window. Serialised into the status report and observations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    /// Probes in the window whose outcome is known.
    pub sent: u32,
    /// Replies within the timeout: the RTT samples.
    pub replies: u32,
    pub lost: u32,
    /// Replies after the timeout; counted neither as lost nor as received.
    pub late: u32,
    /// lost / sent; `None` for an empty window (no evidence is not "no loss").
    pub loss: Option<f64>,
    pub rtt_median_ms: Option<f64>,
    /// Nearest-rank 95th percentile of the RTT samples.
    pub rtt_p95_ms: Option<f64>,
    /// RFC 3550 interarrival jitter over consecutive RTT samples in the window
    /// (J += (|D| - J) / 16); `None` with fewer than two samples.
    pub jitter_ms: Option<f64>,
    pub last_rtt_ms: Option<f64>,
    /// The last 8 outcomes, newest in the low bit, 1 = reply (ntpd's reach; 255 = all
    /// eight answered, 0 = none).
    pub reach: u8,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median of sorted samples; the mean of the middle two for an even count.
fn median(sorted: &[Duration]) -> Option<Duration> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Nearest-rank percentile: the smallest sample with at least `pct` % of samples at or
/// below it. Always one of the samples, never interpolated.
fn nearest_rank(sorted: &[Duration], pct: usize) -> Option<Duration> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (pct * n).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// RFC 3550 section 6.4.1's estimator, with D the difference between consecutive RTTs.
/// Kept in f64 milliseconds: a Duration would round each step to the nanosecond.
fn rfc3550_jitter_ms(rtts_in_order: &[Duration]) -> Option<f64> {
    if rtts_in_order.len() < 2 {
        return None;
    }
    let mut j = 0.0f64;
    for pair in rtts_in_order.windows(2) {
        let d = (ms(pair[1]) - ms(pair[0])).abs();
        j += (d - j) / 16.0;
    }
    Some(j)
}

/// Probes in flight for one target, and its window of outcomes.
///
/// `I` is whatever instant the caller's clock gives: only ordering, differences and
/// adding a duration are needed.
#[derive(Debug, Clone)]
pub struct LinkTracker<I> {
    window: LinkWindow,
    timeout: Duration,
    next_seq: u64,
    /// Sent, not yet answered, not yet past their timeout; oldest first.
    in_flight: VecDeque<(u64, I)>,
    /// Recorded as lost; an answer would still make them late. Bounded by the window.
    overdue: VecDeque<(u64, I)>,
}

impl<I> LinkTracker<I>
where
    I: Copy + Ord + Sub<Output = Duration> + Add<Duration, Output = I>,
{
    pub fn new(window: usize, timeout: Duration) -> LinkTracker<I> {
        LinkTracker {
            window: LinkWindow::new(window),
            timeout,
            next_seq: 0,
            in_flight: VecDeque::new(),
            overdue: VecDeque::new(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A probe leaves now; its sequence number identifies the answer.
    pub fn send(&mut self, now: I) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push_back((seq, now));
        seq
    }

    /// The sequence number the next `send` will return.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// An answer to probe `seq` arrived now. Returns what it was recorded as, or `None`
    /// for a probe this tracker does not know (a duplicate, or one too old to matter).
    pub fn reply(&mut self, seq: u64, now: I) -> Option<Outcome> {
        self.expire(now);
        if let Some(pos) = self.in_flight.iter().position(|(s, _)| *s == seq) {
            let (_, sent) = self.in_flight.remove(pos)?;
            let outcome = Outcome::Reply { rtt: since(sent, now) };
            self.window.record(seq, outcome);
            return Some(outcome);
        }
        let pos = self.overdue.iter().position(|(s, _)| *s == seq)?;
        let (_, sent) = self.overdue.remove(pos)?;
        let rtt = since(sent, now);
        self.window.mark_late(seq, rtt).then_some(Outcome::Late { rtt })
    }

    /// Probe `seq` failed outright now (refused, unreachable): lost without waiting for
    /// its timeout. False when it was not in flight.
    pub fn fail(&mut self, seq: u64, now: I) -> bool {
        self.expire(now);
        let Some(pos) = self.in_flight.iter().position(|(s, _)| *s == seq) else { return false };
        self.in_flight.remove(pos);
        self.window.record(seq, Outcome::Lost);
        true
    }

    /// Record as lost every probe whose timeout has passed at `now` (an answer exactly at
    /// the deadline still counts). Returns how many.
    pub fn expire(&mut self, now: I) -> usize {
        let mut n = 0;
        while let Some(&(seq, sent)) = self.in_flight.front() {
            if now <= sent + self.timeout {
                break;
            }
            self.in_flight.pop_front();
            self.window.record(seq, Outcome::Lost);
            self.remember_overdue(seq, sent);
            n += 1;
        }
        n
    }

    /// Every probe in flight is lost now, whatever its deadline: the connection that
    /// would have carried the answers is gone.
    pub fn abandon(&mut self) {
        while let Some((seq, _)) = self.in_flight.pop_front() {
            self.window.record(seq, Outcome::Lost);
        }
    }

    /// When the oldest probe in flight times out, if any is in flight.
    pub fn next_deadline(&self) -> Option<I> {
        self.in_flight.front().map(|&(_, sent)| sent + self.timeout)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn window(&self) -> &LinkWindow {
        &self.window
    }

    pub fn summary(&self) -> LinkSummary {
        self.window.summary()
    }

    fn remember_overdue(&mut self, seq: u64, sent: I) {
        if self.overdue.len() == self.window.capacity() {
            self.overdue.pop_front();
        }
        self.overdue.push_back((seq, sent));
    }
}

fn since<I: Ord + Sub<Output = Duration>>(earlier: I, now: I) -> Duration {
    if now > earlier { now - earlier } else { Duration::ZERO }
}

/// How a probe reaches its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    /// Time to a completed TCP handshake with `target` (host:port).
    Tcp,
    /// ICMP echo to `target` (a host) through an unprivileged ping socket; a TCP connect
    /// to `port` when the system forbids such sockets.
    Icmp,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Icmp => "icmp",
        })
    }
}

/// One `[[probe]]` of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProbeConfig {
    /// Names the probe in status and logs; unique.
    pub name: String,
    /// host:port for `tcp`, a host for `icmp`.
    pub target: String,
    pub kind: ProbeKind,
    /// For `icmp` only: the TCP port to connect to when ICMP sockets are refused
    /// (net.ipv4.ping_group_range excludes this process). Without it such a probe
    /// reports itself unavailable instead of guessing a port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Time between probes.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long an answer may take; separate from the interval, so several probes can be
    /// in flight on a slow path.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Outcomes kept, in probes.
    #[serde(default = "default_window")]
    pub window: usize,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_window() -> usize {
    60
}

impl ProbeConfig {
    /// The first problem with this probe on its own, as (key, message). Uniqueness of
    /// names is the config's business.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.name.trim().is_empty() {
            return Some(("name", "must not be empty".into()));
        }
        if self.interval.is_zero() {
            return Some(("interval", "must be above zero".into()));
        }
        if self.timeout.is_zero() {
            return Some(("timeout", "must be above zero".into()));
        }
        if !(1..=MAX_WINDOW).contains(&self.window) {
            return Some(("window", format!("must be 1 to {MAX_WINDOW} probes, not {}", self.window)));
        }
        match self.kind {
            ProbeKind::Tcp => {
                if split_host_port(&self.target).is_none() {
                    return Some(("target", format!("`{}` needs host:port for a tcp probe", self.target)));
                }
                if self.port.is_some() {
                    return Some((
                        "port",
                        "only for icmp probes (their TCP fallback); put the port in `target`".into(),
                    ));
                }
            }
            ProbeKind::Icmp => {
                if self.target.trim().is_empty() {
                    return Some(("target", "must name a host".into()));
                }
                if self.target.parse::<std::net::SocketAddr>().is_ok()
                    || split_host_port(&self.target).is_some()
                {
                    return Some((
                        "target",
                        format!(
                            "`{}`: an icmp target is a host without a port; the fallback port goes in `port`",
                            self.target
                        ),
                    ));
                }
                if self.port == Some(0) {
                    return Some(("port", "must be 1 to 65535".into()));
                }
            }
        }
        None
    }
}

/// `host:port` with a numeric port above zero; `[v6]:port` works too. A bare IPv6
/// address is not host:port.
pub fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    (port > 0).then_some((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// How a probe is actually being carried out, for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeMethod {
    Tcp,
    Icmp,
    /// An icmp probe whose ping socket was refused, connecting to its `port` instead.
    TcpFallback,
    /// Cannot probe at all; `last_error` says why.
    Unavailable,
}

impl fmt::Display for ProbeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeMethod::Tcp => "tcp",
            ProbeMethod::Icmp => "icmp",
            ProbeMethod::TcpFallback => "tcp-fallback",
            ProbeMethod::Unavailable => "unavailable",
        })
    }
}

/// One probe as the status and observations show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    pub target: String,
    pub kind: ProbeKind,
    pub method: ProbeMethod,
    pub summary: LinkSummary,
    /// The latest failure worth telling (refused, unreachable, no ping socket); cleared
    /// by the next answer in time.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn reply(n: u64) -> Outcome {
        Outcome::Reply { rtt: ms_(n) }
    }

    fn window_of(capacity: usize, outcomes: &[Outcome]) -> LinkWindow {
        let mut w = LinkWindow::new(capacity);
        for (i, o) in outcomes.iter().enumerate() {
            w.record(i as u64, *o);
        }
        w
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn an_empty_window_claims_nothing() {
        let s = LinkWindow::new(60).summary();
        assert_eq!(s, LinkSummary::default());
        assert_eq!(s.loss, None, "no probes is not zero loss");
        assert_eq!(s.reach, 0);
    }

    #[test]
    fn all_lost() {
        let s = window_of(10, &[Outcome::Lost; 12]).summary();
        assert_eq!((s.sent, s.replies, s.lost, s.late), (10, 0, 10, 0));
        assert_eq!(s.loss, Some(1.0));
        assert_eq!((s.rtt_median_ms, s.rtt_p95_ms, s.jitter_ms, s.last_rtt_ms), (None, None, None, None));
        assert_eq!(s.reach, 0);
    }

    #[test]
    fn median_and_p95_over_the_window() {
        // 1..=20 ms in a scrambled order: median (10+11)/2, p95 rank ceil(19) = 19 ms.
        let order = [7, 3, 20, 1, 15, 9, 11, 2, 18, 5, 14, 10, 4, 19, 6, 16, 13, 8, 17, 12];
        let outcomes: Vec<Outcome> = order.iter().map(|&n| reply(n)).collect();
        let s = window_of(20, &outcomes).summary();
        assert!(close(s.rtt_median_ms, 10.5), "{s:?}");
        assert!(close(s.rtt_p95_ms, 19.0), "{s:?}");
        assert!(close(s.last_rtt_ms, 12.0), "{s:?}");
        assert_eq!(s.loss, Some(0.0));
        assert_eq!(s.reach, 0xff);

        let odd = window_of(5, &[reply(50), reply(10), reply(30), reply(20), reply(40)]).summary();
        assert!(close(odd.rtt_median_ms, 30.0), "{odd:?}");
        // ceil(0.95 * 5) = 5th: the largest.
        assert!(close(odd.rtt_p95_ms, 50.0), "{odd:?}");
    }

    #[test]
    fn the_window_slides() {
        // Three slow replies then five fast ones in a window of 5: only the fast remain.
        let mut outcomes = vec![reply(500); 3];
        outcomes.extend([reply(10); 5]);
        let s = window_of(5, &outcomes).summary();
        assert_eq!(s.sent, 5);
        assert!(close(s.rtt_p95_ms, 10.0), "{s:?}");
        assert!(close(s.jitter_ms, 0.0), "{s:?}");
    }

    #[test]
    fn loss_counts_lost_over_sent_and_late_apart() {
        let mut o = vec![reply(10); 16];
        o.extend([Outcome::Lost; 3]);
        o.push(Outcome::Late { rtt: ms_(3000) });
        let s = window_of(20, &o).summary();
        assert_eq!((s.sent, s.replies, s.lost, s.late), (20, 16, 3, 1));
        assert!(close(s.loss, 3.0 / 20.0), "{s:?}");
        // The late reply is no RTT sample: p95 stays at 10 ms, not 3 s.
        assert!(close(s.rtt_p95_ms, 10.0), "{s:?}");
        assert!(close(s.last_rtt_ms, 10.0), "{s:?}");
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        // 10, 20, 10: |D| = 10 then 10. J1 = 10/16 = 0.625; J2 = 0.625 + (10 - 0.625)/16.
        let s = window_of(10, &[reply(10), reply(20), Outcome::Lost, reply(10)]).summary();
        let j2 = 0.625 + (10.0 - 0.625) / 16.0;
        assert!(close(s.jitter_ms, j2), "{s:?} vs {j2}");
        // A steady path has no jitter, a single sample has none to speak of.
        assert!(close(window_of(10, &[reply(7); 9]).summary().jitter_ms, 0.0));
        assert_eq!(window_of(10, &[reply(7)]).summary().jitter_ms, None);
    }

    #[test]
    fn reach_shifts_in_one_bit_per_probe() {
        let s = window_of(60, &[reply(1), Outcome::Lost, reply(1), reply(1)]).summary();
        assert_eq!(s.reach, 0b1011);
        let mut w = window_of(60, &[reply(1); 8]);
        assert_eq!(w.summary().reach, 0xff);
        for (i, expect) in [0xfe, 0xfc, 0xf8].into_iter().enumerate() {
            w.record(100 + i as u64, Outcome::Lost);
            assert_eq!(w.summary().reach, expect);
        }
        w.record(200, Outcome::Late { rtt: ms_(5) });
        assert_eq!(w.summary().reach, 0xf0, "a late answer missed its deadline");
        // A window of one still has an 8-probe reach.
        assert_eq!(window_of(1, &[reply(1), reply(1), Outcome::Lost]).summary().reach, 0b110);
    }

    // The tracker, with Duration since an arbitrary origin as the clock.
    type T = LinkTracker<Duration>;

    #[test]
    fn a_tracked_answer_within_the_timeout_is_a_reply() {
        let mut t = T::new(10, ms_(100));
        let seq = t.send(ms_(1000));
        assert_eq!(t.next_deadline(), Some(ms_(1100)));
        // Exactly at the deadline still counts.
        assert_eq!(t.reply(seq, ms_(1100)), Some(reply(100)));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.reply(seq, ms_(1101)), None, "a duplicate answer is ignored");
        assert_eq!(t.summary().replies, 1);
    }

    #[test]
    fn an_unanswered_probe_is_lost_then_late_when_its_answer_comes() {
        let mut t = T::new(10, ms_(100));
        let a = t.send(ms_(0));
        let b = t.send(ms_(50));
        assert_eq!(t.expire(ms_(100)), 0);
        assert_eq!(t.expire(ms_(101)), 1);
        let s = t.summary();
        assert_eq!((s.lost, s.reach), (1, 0));
        assert_eq!(t.next_deadline(), Some(ms_(150)));
        // a's answer arrives late; b's arrives late before anyone called expire.
        assert_eq!(t.reply(a, ms_(400)), Some(Outcome::Late { rtt: ms_(400) }));
        assert_eq!(t.reply(b, ms_(400)), Some(Outcome::Late { rtt: ms_(350) }));
        let s = t.summary();
        assert_eq!((s.sent, s.lost, s.late, s.replies), (2, 0, 2, 0));
        assert_eq!(s.loss, Some(0.0));
    }

    #[test]
    fn a_failure_is_lost_at_once_and_abandon_loses_the_rest() {
        let mut t = T::new(10, ms_(1000));
        let a = t.send(ms_(0));
        let _b = t.send(ms_(10));
        let _c = t.send(ms_(20));
        assert!(t.fail(a, ms_(1)));
        assert!(!t.fail(a, ms_(2)));
        assert_eq!(t.summary().lost, 1);
        t.abandon();
        let s = t.summary();
        assert_eq!((s.sent, s.lost, s.loss), (3, 3, Some(1.0)));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_cut_drains_the_reach_register_one_timeout_after_each_probe() {
        let mut t = T::new(60, ms_(200));
        let mut now = ms_(0);
        for _ in 0..8 {
            let s = t.send(now);
            t.reply(s, now + ms_(1));
            now += ms_(50);
        }
        assert_eq!(t.summary().reach, 0xff);
        // Cut: probes keep leaving every 50 ms, nothing comes back.
        let cut = now;
        while t.summary().reach & 1 == 1 {
            t.send(now);
            now += ms_(50);
            t.expire(now);
        }
        assert!(now - cut <= ms_(250), "first loss seen {:?} after the cut", now - cut);
        while t.summary().reach != 0 {
            t.send(now);
            now += ms_(50);
            t.expire(now);
        }
        assert!(now - cut <= ms_(200 + 8 * 50), "reach drained {:?} after the cut", now - cut);
    }

    fn probe(kind: ProbeKind, target: &str) -> ProbeConfig {
        ProbeConfig {
            name: "p".into(),
            target: target.into(),
            kind,
            port: None,
            interval: default_interval(),
            timeout: default_timeout(),
            window: default_window(),
        }
    }

    #[test]
    fn probe_targets_are_checked_by_kind() {
        assert_eq!(probe(ProbeKind::Tcp, "witness.example.net:7420").problem(), None);
        assert_eq!(probe(ProbeKind::Tcp, "[2001:db8::1]:443").problem(), None);
        assert_eq!(probe(ProbeKind::Icmp, "2001:db8::1").problem(), None);
        assert_eq!(probe(ProbeKind::Icmp, "192.0.2.1").problem(), None);
        for (kind, target) in [
            (ProbeKind::Tcp, "192.0.2.1"),
            (ProbeKind::Tcp, "192.0.2.1:0"),
            (ProbeKind::Tcp, "2001:db8::1"),
            (ProbeKind::Icmp, "192.0.2.1:80"),
            (ProbeKind::Icmp, ""),
        ] {
            assert_eq!(probe(kind, target).problem().map(|p| p.0), Some("target"), "{kind} {target}");
        }
        let mut p = probe(ProbeKind::Tcp, "h:1");
        p.port = Some(80);
        assert_eq!(p.problem().map(|p| p.0), Some("port"));
    }
}
