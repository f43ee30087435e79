//! Link probes: one task per `[[probe]]`, each feeding a [`LinkTracker`] and publishing
//! every probe's [`ProbeStatus`] through one `watch` channel.
//!
//! - `tcp`: the time to a completed TCP handshake. The connection is closed at once.
//! - `icmp`: an echo through an unprivileged ping socket (`socket(AF_INET, SOCK_DGRAM,
//!   IPPROTO_ICMP)`), which needs no CAP_NET_RAW but only a group inside
//!   `net.ipv4.ping_group_range`. When the kernel refuses the socket (EACCES/EPERM), the
//!   probe falls back to a TCP connect to its `port` and reports `tcp-fallback`.
//!
//! The ping socket is opened with socket2 (already in the tree through tokio) and driven as
//! a tokio `UdpSocket`, which works for any connected datagram socket. surge-ping would do
//! the same through more crates (pnet_packet, parking_lot) for the twenty lines an echo
//! request and its matching take here.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use sitewatch_proto::link::{
    LinkSummary, LinkTracker, Outcome, ProbeConfig, ProbeKind, ProbeMethod, ProbeStatus, split_host_port,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// Start one task per probe. The receiver holds every probe's status, in config order,
/// updated after each outcome.
pub fn start(
    probes: Vec<ProbeConfig>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> watch::Receiver<Vec<ProbeStatus>> {
    let initial =
        probes.iter().map(|p| status(p, ProbeMethod::Unavailable, LinkSummary::default())).collect();
    let (tx, rx) = watch::channel(initial);
    for (index, config) in probes.into_iter().enumerate() {
        let span = info_span!("probe", name = %config.name, target = %config.target);
        tracker.spawn(run(config, index, tx.clone(), cancel.child_token()).instrument(span));
    }
    rx
}

fn status(config: &ProbeConfig, method: ProbeMethod, summary: LinkSummary) -> ProbeStatus {
    ProbeStatus {
        name: config.name.clone(),
        target: config.target.clone(),
        kind: config.kind,
        method,
        summary,
        last_error: None,
    }
}

/// The state one probe task publishes into its slot.
struct Publisher {
    tx: watch::Sender<Vec<ProbeStatus>>,
    index: usize,
    current: ProbeStatus,
}

impl Publisher {
    fn publish(&mut self, summary: LinkSummary) {
        let was_reachable = self.current.summary.reach != 0;
        let is_reachable = summary.reach != 0;
        if self.current.summary.sent > 0 && was_reachable != is_reachable {
            if is_reachable {
                info!(loss = ?summary.loss, "target answers again");
            } else {
                warn!(loss = ?summary.loss, last_error = ?self.current.last_error, "target unreachable: the last 8 probes went unanswered");
            }
        }
        self.current.summary = summary;
        self.push();
    }

    fn push(&self) {
        let current = self.current.clone();
        self.tx.send_modify(|all| {
            if let Some(slot) = all.get_mut(self.index) {
                *slot = current;
            }
        });
    }
}

async fn run(
    config: ProbeConfig,
    index: usize,
    tx: watch::Sender<Vec<ProbeStatus>>,
    cancel: CancellationToken,
) {
    let mut out =
        Publisher { tx, index, current: status(&config, ProbeMethod::Unavailable, LinkSummary::default()) };
    let Some(mut prober) = cancel.run_until_cancelled(open(&config, &mut out)).await.flatten() else {
        return;
    };
    out.current.method = prober.method();
    out.push();
    info!(method = ?out.current.method, interval = ?config.interval, timeout = ?config.timeout, "probing");

    let mut link = LinkTracker::<Instant>::new(config.window, config.timeout);
    let mut ticks = interval(config.interval);
    // After a stall, carry on at the interval rather than firing a burst of probes.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let deadline = link.next_deadline();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {
                let now = Instant::now();
                let seq = link.send(now);
                if let Err(e) = prober.send(seq).await {
                    debug!(seq, error = %e, "probe not sent");
                    out.current.last_error = Some(format!("send: {e}"));
                    link.fail(seq, Instant::now());
                }
            }
            answer = prober.next_answer(link.next_seq()) => match answer {
                Answer::Reply { seq, at } => {
                    // An answer in time ends the trouble an old error described.
                    if matches!(link.reply(seq, at), Some(Outcome::Reply { .. })) {
                        out.current.last_error = None;
                    }
                }
                Answer::Failed { seq, error } => {
                    debug!(seq, error = %error, "probe failed");
                    out.current.last_error = Some(error);
                    if let Some(seq) = seq {
                        link.fail(seq, Instant::now());
                    }
                }
                Answer::GaveUp => {}
            },
            // Just past the deadline: a probe counts as lost only once its time is over.
            _ = sleep_until(deadline.unwrap_or_else(Instant::now) + Duration::from_millis(1)), if deadline.is_some() => {
                link.expire(Instant::now());
            }
        }
        out.publish(link.summary());
    }
}

/// Resolve the target and open the socket; retried every interval until it works or the
/// probe cannot work at all (then the status says why and the task ends).
async fn open(config: &ProbeConfig, out: &mut Publisher) -> Option<Prober> {
    loop {
        match try_open(config).await {
            Ok(p) => {
                out.current.last_error = None;
                return Some(p);
            }
            Err(OpenError::Never(why)) => {
                warn!(reason = %why, "probe cannot run");
                out.current.method = ProbeMethod::Unavailable;
                out.current.last_error = Some(why);
                out.push();
                return None;
            }
            Err(OpenError::NotYet(why)) => {
                if out.current.last_error.as_deref() != Some(why.as_str()) {
                    warn!(reason = %why, "probe cannot start yet; retrying");
                    out.current.last_error = Some(why);
                    out.push();
                }
                sleep(config.interval).await;
            }
        }
    }
}

enum OpenError {
    /// Worth retrying (a name that does not resolve yet).
    NotYet(String),
    /// No retry will help (ping sockets forbidden and no fallback port).
    Never(String),
}

async fn try_open(config: &ProbeConfig) -> Result<Prober, OpenError> {
    let give_up_after = late_limit(config.timeout);
    match config.kind {
        ProbeKind::Tcp => {
            let (host, port) = split_host_port(&config.target)
                .ok_or_else(|| OpenError::Never(format!("`{}` is not host:port", config.target)))?;
            let addr = resolve(host, port).await?;
            Ok(Prober::Tcp(TcpProber::new(addr, give_up_after, ProbeMethod::Tcp)))
        }
        ProbeKind::Icmp => {
            let addr = resolve(&config.target, 0).await?;
            match IcmpProber::open(addr.ip()).await {
                Ok(p) => Ok(Prober::Icmp(p)),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    let Some(port) = config.port else {
                        return Err(OpenError::Never(format!(
                            "unprivileged ICMP sockets are refused ({e}: net.ipv4.ping_group_range excludes \
                             this process's groups) and no `port` is configured for a TCP fallback"
                        )));
                    };
                    warn!(port, error = %e, "unprivileged ICMP sockets are refused (net.ipv4.ping_group_range); probing with TCP connects instead");
                    let addr = SocketAddr::new(addr.ip(), port);
                    Ok(Prober::Tcp(TcpProber::new(addr, give_up_after, ProbeMethod::TcpFallback)))
                }
                Err(e) => Err(OpenError::NotYet(format!("cannot open a ping socket: {e}"))),
            }
        }
    }
}

/// How long after it left an answer is still worth waiting for, to be counted late:
/// three timeouts, and at least 2 s so that a handshake completed by the kernel's first
/// SYN retransmission (1 s) shows up as late, not lost.
fn late_limit(timeout: Duration) -> Duration {
    (timeout * 3).max(Duration::from_secs(2))
}

/// The first address of `host` (resolved once: a probe measures the path, not DNS).
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, OpenError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| OpenError::NotYet(format!("cannot resolve `{host}`: {e}")))?;
    addrs.next().ok_or_else(|| OpenError::NotYet(format!("`{host}` resolves to no address")))
}

enum Answer {
    Reply {
        seq: u64,
        at: Instant,
    },
    /// A probe (or, for ICMP errors, an unknown one) failed outright.
    Failed {
        seq: Option<u64>,
        error: String,
    },
    /// A probe waited out its late limit; it was recorded lost at its timeout already.
    GaveUp,
}

enum Prober {
    Tcp(TcpProber),
    Icmp(IcmpProber),
}

impl Prober {
    fn method(&self) -> ProbeMethod {
        match self {
            Prober::Tcp(p) => p.method,
            Prober::Icmp(_) => ProbeMethod::Icmp,
        }
    }

    async fn send(&mut self, seq: u64) -> io::Result<()> {
        match self {
            Prober::Tcp(p) => {
                p.start(seq);
                Ok(())
            }
            Prober::Icmp(p) => p.send(seq).await,
        }
    }

    /// The next answer; pending forever while nothing is in flight.
    async fn next_answer(&mut self, next_seq: u64) -> Answer {
        match self {
            Prober::Tcp(p) => match p.connects.next().await {
                Some(answer) => answer,
                None => std::future::pending().await,
            },
            Prober::Icmp(p) => p.recv(next_seq).await,
        }
    }
}

struct TcpProber {
    addr: SocketAddr,
    give_up_after: Duration,
    method: ProbeMethod,
    connects: FuturesUnordered<BoxFuture<'static, Answer>>,
}

impl TcpProber {
    fn new(addr: SocketAddr, give_up_after: Duration, method: ProbeMethod) -> TcpProber {
        TcpProber { addr, give_up_after, method, connects: FuturesUnordered::new() }
    }

    fn start(&mut self, seq: u64) {
        let (addr, limit) = (self.addr, self.give_up_after);
        self.connects.push(Box::pin(async move {
            match timeout(limit, TcpStream::connect(addr)).await {
                // Dropping the stream closes it: the handshake was the measurement.
                Ok(Ok(_stream)) => Answer::Reply { seq, at: Instant::now() },
                // A refusal counts as lost, at once. An operator probing host:port asks
                // "can I reach that service"; a RST may come from any firewall on the path
                // (`reject with tcp reset`) and proves nothing about the target, and a
                // refusing service is as useless to a failover decision as a silent one.
                // The reason is kept in `last_error` so the status tells the two apart.
                Ok(Err(e)) => Answer::Failed { seq: Some(seq), error: format!("connect: {e}") },
                Err(_) => Answer::GaveUp,
            }
        }));
    }
}

const ICMP_PAYLOAD: &[u8; 16] = b"sitewatch probe.";

struct IcmpProber {
    socket: UdpSocket,
    v6: bool,
    buf: Vec<u8>,
}

impl IcmpProber {
    /// A ping socket connected to `ip`. PermissionDenied means ping_group_range forbids it.
    async fn open(ip: IpAddr) -> io::Result<IcmpProber> {
        let (domain, protocol) = match ip {
            IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
            IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(protocol))?;
        socket.set_nonblocking(true)?;
        // The kernel fills in the identifier (the socket's "port") and the checksum, and
        // delivers to this socket only the replies that carry its identifier.
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        socket.connect(SocketAddr::new(ip, 0)).await?;
        Ok(IcmpProber { socket, v6: ip.is_ipv6(), buf: vec![0; 1500] })
    }

    async fn send(&self, seq: u64) -> io::Result<()> {
        let mut packet = [0u8; 8 + ICMP_PAYLOAD.len()];
        packet[0] = if self.v6 { 128 } else { 8 }; // echo request
        // Sequence numbers are 16 bits on the wire; `widen` gives the full one back.
        packet[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        packet[8..].copy_from_slice(ICMP_PAYLOAD);
        self.socket.send(&packet).await.map(drop)
    }

    async fn recv(&mut self, next_seq: u64) -> Answer {
        loop {
            let n = match self.socket.recv(&mut self.buf).await {
                Ok(n) => n,
                // An ICMP error (unreachable, prohibited) for some probe: that probe times
                // out as lost; keep the reason for the status.
                Err(e) => return Answer::Failed { seq: None, error: format!("icmp: {e}") },
            };
            let at = Instant::now();
            let reply_type = if self.v6 { 129 } else { 0 };
            let packet = &self.buf[..n];
            if n < 8 || packet[0] != reply_type || &packet[8..] != ICMP_PAYLOAD {
                continue;
            }
            let seq16 = u16::from_be_bytes([packet[6], packet[7]]);
            if let Some(seq) = widen(seq16, next_seq) {
                return Answer::Reply { seq, at };
            }
        }
    }
}

/// The most recent full sequence number below `next_seq` whose low 16 bits are `seq16`.
fn widen(seq16: u16, next_seq: u64) -> Option<u64> {
    let candidate = (next_seq & !0xffff) | u64::from(seq16);
    if candidate < next_seq { Some(candidate) } else { candidate.checked_sub(0x1_0000) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_sequences_widen_to_the_latest_probe() {
        assert_eq!(widen(0, 1), Some(0));
        assert_eq!(widen(5, 1), None, "not sent yet");
        assert_eq!(widen(0xffff, 0x1_0002), Some(0xffff));
        assert_eq!(widen(1, 0x1_0002), Some(0x1_0001));
        assert_eq!(widen(7, 0x3_0000), Some(0x2_0007));
    }

    #[test]
    fn late_answers_are_awaited_past_a_syn_retransmission() {
        assert_eq!(late_limit(Duration::from_millis(200)), Duration::from_secs(2));
        assert_eq!(late_limit(Duration::from_secs(1)), Duration::from_secs(3));
    }

    fn probe(kind: ProbeKind, target: &str, port: Option<u16>) -> ProbeConfig {
        ProbeConfig {
            name: "t".into(),
            target: target.into(),
            kind,
            port,
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            window: 100,
        }
    }

    async fn wait_until(
        rx: &mut watch::Receiver<Vec<ProbeStatus>>,
        f: impl Fn(&ProbeStatus) -> bool,
    ) -> ProbeStatus {
        let found = timeout(Duration::from_secs(10), rx.wait_for(|all| f(&all[0]))).await;
        found.expect("in time").expect("channel open")[0].clone()
    }

    #[tokio::test]
    async fn a_tcp_probe_measures_a_listener_and_loses_a_refusing_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_port = listener.local_addr().unwrap().port();
        // A port that was bound and is now closed: connecting is refused.
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut open_rx =
            start(vec![probe(ProbeKind::Tcp, &format!("127.0.0.1:{open_port}"), None)], &tracker, &cancel);
        let mut closed_rx =
            start(vec![probe(ProbeKind::Tcp, &format!("127.0.0.1:{closed_port}"), None)], &tracker, &cancel);
        let up = wait_until(&mut open_rx, |s| s.summary.replies >= 10).await;
        assert_eq!(up.method, ProbeMethod::Tcp);
        assert_eq!(up.summary.lost, 0, "{up:?}");
        assert!(up.summary.rtt_median_ms.is_some_and(|r| r < 100.0), "{up:?}");
        assert_eq!(up.summary.reach, 0xff);
        let down = wait_until(&mut closed_rx, |s| s.summary.sent >= 10).await;
        assert_eq!((down.summary.replies, down.summary.reach), (0, 0), "{down:?}");
        assert_eq!(down.summary.loss, Some(1.0));
        assert!(down.last_error.as_deref().is_some_and(|e| e.contains("refused")), "{down:?}");
        cancel.cancel();
        tracker.close();
        timeout(Duration::from_secs(2), tracker.wait()).await.expect("probe tasks stop on cancel");
        drop(listener);
    }

    #[tokio::test]
    async fn an_icmp_probe_without_a_fallback_port_says_why_when_ping_sockets_are_refused() {
        // This test only means something where ping sockets are forbidden; elsewhere it
        // checks that loopback answers.
        let refused = matches!(
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied
        );
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut rx = start(vec![probe(ProbeKind::Icmp, "127.0.0.1", None)], &tracker, &cancel);
        if refused {
            let s = wait_until(&mut rx, |s| s.last_error.is_some()).await;
            assert_eq!(s.method, ProbeMethod::Unavailable);
            assert!(s.last_error.as_deref().is_some_and(|e| e.contains("ping_group_range")), "{s:?}");
        } else {
            let s = wait_until(&mut rx, |s| s.summary.replies >= 5).await;
            assert_eq!(s.method, ProbeMethod::Icmp);
        }
        cancel.cancel();
    }
}
