//! The cluster connection: one TCP port per node, mutual TLS 1.3, length-prefixed
//! MessagePack frames (tokio-serde), a hello from each side first, then raft messages
//! and pings in both directions on the same connection.
//!
//! Agents dial witnesses, never the other way, so agents behind NAT work; between two
//! agents (or two witnesses) the lower id dials. Whichever side dialled, the connection
//! carries traffic both ways. A bad peer (garbage, an oversized frame, another CA,
//! another cluster) costs one log line and that connection, nothing else.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protobuf::Message as _;
use raft::prelude::Message;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use sitewatch_proto::link::{LinkSummary, LinkTracker};
use sitewatch_proto::observation::Observation;
use sitewatch_proto::{Frame, Hello, MAX_FRAME_LEN, PROTOCOL_VERSION, decode_frame, encode_frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep, timeout};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_util::bytes::{Bytes, BytesMut};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{Config, Member, Role, Timing};
use crate::tls::{TlsIdentity, cert_names};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; more are closed at once (a flood of garbage cannot
/// starve real peers of memory).
const MAX_PENDING_HANDSHAKES: usize = 32;
const OUTBOUND_QUEUE: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Why an accepted connection that closed before sending a byte was dropped: a TCP
/// reachability probe (an agent's `[[probe]]` aimed at this port, a load balancer's health
/// check) does exactly that every interval, and is no peer to warn about.
const CLOSED_SILENT: &str = "closed before sending a byte";
/// Pings kept per peer for its link figures: a minute at the default ping interval.
const PING_WINDOW: usize = 60;

type Wire = tokio_serde::SymmetricallyFramed<
    Framed<TlsStream<Counted<TcpStream>>, LengthDelimitedCodec>,
    Frame,
    FrameFormat,
>;

/// Frame bodies through proto's own codec ([`decode_frame`], [`encode_frame`]), so the
/// decoder the fuzzer exercises is the one every received frame goes through.
#[derive(Default)]
struct FrameFormat;

impl tokio_serde::Deserializer<Frame> for FrameFormat {
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, body: &BytesMut) -> Result<Frame, io::Error> {
        decode_frame(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl tokio_serde::Serializer<Frame> for FrameFormat {
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, frame: &Frame) -> Result<Bytes, io::Error> {
        encode_frame(frame).map(Bytes::from).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// What arrives from peers for the raft loop.
#[derive(Debug)]
pub enum Inbound {
    Raft(Message),
    Observation(Box<Observation>),
}

/// What the status shows of one peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: u64,
    pub name: String,
    pub role: Role,
    pub voter: bool,
    pub address: String,
    pub connected: bool,
    /// Round-trip time of the last answered application ping, milliseconds.
    pub rtt_ms: Option<f64>,
    /// The last pings to this peer: RTT median and p95, loss, jitter, reach.
    /// See [`ping_timeout`] for what counts as lost.
    #[serde(default)]
    pub link: LinkSummary,
    /// Milliseconds since anything arrived from the peer.
    pub last_contact_ms: Option<u64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

struct PeerState {
    link: Option<Link>,
    /// Application pings; kept across reconnections, so the figures describe the peer.
    pings: LinkTracker<Instant>,
    last_contact: Option<Instant>,
    /// Bytes of closed connections; the open one's are read live from its counters.
    bytes_sent: u64,
    bytes_received: u64,
    /// Whether the last dial failed, so repeated failures log once.
    failing: bool,
}

impl PeerState {
    fn new(timing: &Timing) -> PeerState {
        PeerState {
            link: None,
            pings: LinkTracker::new(PING_WINDOW, ping_timeout(timing)),
            last_contact: None,
            bytes_sent: 0,
            bytes_received: 0,
            failing: false,
        }
    }
}

/// A pong later than this counts its ping lost (and then late if it comes at all): twice
/// the ping interval, so a pong queued behind one busy interval of raft traffic is not a
/// loss, but never past the peer timeout, after which the connection is given up anyway.
pub fn ping_timeout(timing: &Timing) -> Duration {
    (timing.ping_interval * 2).min(timing.peer_timeout)
}

struct Link {
    conn: u64,
    tx: mpsc::Sender<Frame>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
}

struct Inner {
    config: Arc<Config>,
    hello: Hello,
    tls: TlsIdentity,
    peers: Mutex<HashMap<u64, PeerState>>,
    inbound: mpsc::Sender<Inbound>,
    next_conn: AtomicU64,
    handshakes: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Handle to the running transport; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    /// Bind the listener and start dialling the peers this node is responsible for.
    /// Raft messages and observations that arrive are sent to `inbound`.
    pub async fn start(
        config: Arc<Config>,
        tls: TlsIdentity,
        inbound: mpsc::Sender<Inbound>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> io::Result<(Transport, SocketAddr)> {
        let listener = TcpListener::bind(config.listen).await?;
        let local = listener.local_addr()?;
        let me = config.me().clone();
        let hello = Hello {
            cluster_id: config.cluster_id.clone(),
            node_id: me.id,
            node_name: me.name.clone(),
            protocol_version: PROTOCOL_VERSION,
            members_digest: config.members_digest(),
        };
        let peers = config
            .members
            .iter()
            .filter(|m| m.id != me.id)
            .map(|m| (m.id, PeerState::new(&config.timing)))
            .collect();
        let inner = Arc::new(Inner {
            config: config.clone(),
            hello,
            tls,
            peers: Mutex::new(peers),
            inbound,
            next_conn: AtomicU64::new(1),
            handshakes: Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES)),
            tracker: tracker.clone(),
            cancel: cancel.clone(),
        });
        tracker.spawn(accept_loop(inner.clone(), listener).instrument(info_span!("listen", addr = %local)));
        for peer in config.members.iter().filter(|m| m.id != me.id && dials(&me, m)) {
            tracker.spawn(
                dial_loop(inner.clone(), peer.clone()).instrument(info_span!("dial", peer = %peer.name)),
            );
        }
        Ok((Transport { inner }, local))
    }

    /// Queue a raft message for its peer. False when there is no connection or its
    /// queue is full: raft then treats the peer as unreachable.
    pub fn send(&self, m: &Message) -> bool {
        let bytes = match m.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                warn!(to = m.to, error = %e, "cannot encode raft message");
                return false;
            }
        };
        if bytes.len() + 16 > MAX_FRAME_LEN {
            warn!(to = m.to, len = bytes.len(), "raft message exceeds the frame limit; not sent");
            return false;
        }
        let peers = self.inner.peers.lock().expect("peer table lock");
        match peers.get(&m.to).and_then(|p| p.link.as_ref()) {
            Some(link) => link.tx.try_send(Frame::Raft(bytes)).is_ok(),
            None => false,
        }
    }

    /// Send this node's observation to every connected voter. Best effort: the next
    /// one follows within an observe interval.
    pub fn send_observation(&self, observation: &Observation) {
        let frame = Frame::Observation(Box::new(observation.clone()));
        let peers = self.inner.peers.lock().expect("peer table lock");
        for m in self.inner.config.members.iter().filter(|m| m.voter) {
            if let Some(link) = peers.get(&m.id).and_then(|p| p.link.as_ref()) {
                let _ = link.tx.try_send(frame.clone());
            }
        }
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        let peers = self.inner.peers.lock().expect("peer table lock");
        let mut out: Vec<PeerStatus> = self
            .inner
            .config
            .members
            .iter()
            .filter_map(|m| {
                let p = peers.get(&m.id)?;
                let link = p.pings.summary();
                let (live_sent, live_received) = p.link.as_ref().map_or((0, 0), |l| {
                    (l.counters.sent.load(Ordering::Relaxed), l.counters.received.load(Ordering::Relaxed))
                });
                Some(PeerStatus {
                    id: m.id,
                    name: m.name.clone(),
                    role: m.role,
                    voter: m.voter,
                    address: m.address.clone(),
                    connected: p.link.is_some(),
                    rtt_ms: link.last_rtt_ms,
                    link,
                    last_contact_ms: p.last_contact.map(|t| now.duration_since(t).as_millis() as u64),
                    bytes_sent: p.bytes_sent + live_sent,
                    bytes_received: p.bytes_received + live_received,
                })
            })
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }
}

/// Does `me` open the connection to `peer`?
pub fn dials(me: &Member, peer: &Member) -> bool {
    match (me.role, peer.role) {
        (Role::Agent, Role::Witness) => true,
        (Role::Witness, Role::Agent) => false,
        _ => me.id < peer.id,
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(4).max_frame_length(MAX_FRAME_LEN).new_codec()
}

fn wire(stream: TlsStream<Counted<TcpStream>>) -> Wire {
    tokio_serde::SymmetricallyFramed::new(Framed::new(stream, codec()), FrameFormat)
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let acceptor = TlsAcceptor::from(inner.tls.server.clone());
    loop {
        let (tcp, addr) = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = inner.handshakes.clone().try_acquire_owned() else {
            debug!(peer_addr = %addr, "too many handshakes in progress; closing");
            continue;
        };
        let inner2 = inner.clone();
        let acceptor = acceptor.clone();
        inner.tracker.spawn(async move {
            let accepted = timeout(HANDSHAKE_TIMEOUT, accept_one(&inner2, &acceptor, tcp)).await;
            drop(permit);
            match accepted {
                Ok(Ok((wire, peer))) => run_connection(inner2, wire, peer).await,
                Ok(Err(why)) if why == CLOSED_SILENT => {
                    debug!(peer_addr = %addr, "connection {why} (a TCP probe?)")
                }
                Ok(Err(why)) => warn!(peer_addr = %addr, reason = %why, "refused cluster connection"),
                Err(_) => warn!(peer_addr = %addr, "refused cluster connection: handshake timed out"),
            }
        });
    }
}

async fn accept_one(inner: &Inner, acceptor: &TlsAcceptor, tcp: TcpStream) -> Result<(Wire, Member), String> {
    let _ = tcp.set_nodelay(true);
    let tcp = Counted::new(tcp);
    let counters = tcp.counters.clone();
    let tls = acceptor.accept(tcp).await.map_err(|e| {
        if counters.received.load(Ordering::Relaxed) == 0 {
            CLOSED_SILENT.to_string()
        } else {
            handshake_error(&e)
        }
    })?;
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
    let mut wire = wire(TlsStream::Server(tls));
    let hello = match wire.next().await {
        Some(Ok(Frame::Hello(h))) => h,
        Some(Ok(other)) => return Err(format!("expected a hello, got {}", frame_kind(&other))),
        Some(Err(e)) => return Err(format!("malformed first frame: {e}")),
        None => return Err("closed before its hello".into()),
    };
    let peer = match check_hello(inner, &hello) {
        Ok(m) => m,
        Err(why) => return Err(reject(&mut wire, why).await),
    };
    if !cert.as_ref().is_some_and(|c| cert_names(c, &peer.name)) {
        let why = format!("its certificate does not name `{}`, the member it claims to be", peer.name);
        return Err(reject(&mut wire, why).await);
    }
    wire.send(Frame::Hello(inner.hello.clone())).await.map_err(|e| format!("sending hello: {e}"))?;
    Ok((wire, peer))
}

fn handshake_error(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        // rustls says only "tls handshake eof" when the other side hung up mid-handshake,
        // which is what a peer does when it does not trust our certificate.
        "TLS handshake failed: the peer closed the connection (does it trust this node's CA?)".into()
    } else {
        format!("TLS handshake failed: {e}")
    }
}

/// Tell the peer why, then give the reason back for our own log line.
async fn reject(wire: &mut Wire, why: String) -> String {
    let _ = timeout(Duration::from_secs(1), wire.send(Frame::Reject { reason: why.clone() })).await;
    why
}

fn check_hello(inner: &Inner, hello: &Hello) -> Result<Member, String> {
    let mine = &inner.hello;
    if hello.cluster_id != mine.cluster_id {
        return Err(format!("it belongs to cluster `{}`, this is `{}`", hello.cluster_id, mine.cluster_id));
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} (this node speaks {PROTOCOL_VERSION})",
            hello.protocol_version
        ));
    }
    let Some(member) = inner.config.member_by_id(hello.node_id) else {
        return Err(format!("node id {} (`{}`) is not in the member list", hello.node_id, hello.node_name));
    };
    if member.name != hello.node_name || member.id == mine.node_id {
        return Err(format!(
            "it calls itself `{}` with id {}, the member list says id {} is `{}`",
            hello.node_name, hello.node_id, member.id, member.name
        ));
    }
    if hello.members_digest != mine.members_digest {
        return Err(format!(
            "its member list differs from ours (digest {:016x} vs {:016x}): every node needs the same [[member]] entries",
            hello.members_digest, mine.members_digest
        ));
    }
    Ok(member.clone())
}

fn frame_kind(f: &Frame) -> &'static str {
    match f {
        Frame::Hello(_) => "hello",
        Frame::Reject { .. } => "reject",
        Frame::Raft(_) => "raft message",
        Frame::Ping { .. } => "ping",
        Frame::Pong { .. } => "pong",
        Frame::Observation(_) => "observation",
    }
}

async fn dial_loop(inner: Arc<Inner>, peer: Member) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let attempt = timeout(HANDSHAKE_TIMEOUT + CONNECT_TIMEOUT, dial_one(&inner, &peer));
        let result = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            r = attempt => r.unwrap_or_else(|_| Err("handshake timed out".into())),
        };
        match result {
            Ok(wire) => {
                backoff = BACKOFF_MIN;
                run_connection(inner.clone(), wire, peer.clone()).await;
            }
            Err(why) => {
                let first = {
                    let mut peers = inner.peers.lock().expect("peer table lock");
                    let p = peers.entry(peer.id).or_insert_with(|| PeerState::new(&inner.config.timing));
                    !std::mem::replace(&mut p.failing, true)
                };
                if first {
                    warn!(peer = %peer.name, address = %peer.address, reason = %why, "cannot connect to peer; retrying with backoff");
                } else {
                    debug!(peer = %peer.name, reason = %why, "reconnect failed");
                }
            }
        }
        // Full jitter: peers that lost each other at once do not redial in lockstep.
        let wait = backoff.mul_f64(rand::random_range(0.5..1.0));
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = sleep(wait) => {}
        }
    }
}

async fn dial_one(inner: &Inner, peer: &Member) -> Result<Wire, String> {
    let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(&peer.address))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(peer.name.clone()).map_err(|e| format!("member name: {e}"))?;
    let tls = TlsConnector::from(inner.tls.client.clone())
        .connect(name, Counted::new(tcp))
        .await
        .map_err(|e| handshake_error(&e))?;
    let mut wire = wire(TlsStream::Client(tls));
    wire.send(Frame::Hello(inner.hello.clone())).await.map_err(|e| format!("sending hello: {e}"))?;
    match wire.next().await {
        Some(Ok(Frame::Hello(h))) => {
            let member = check_hello(inner, &h).map_err(|why| format!("refusing it: {why}"))?;
            if member.id != peer.id {
                return Err(format!("answered as `{}`, expected `{}`", member.name, peer.name));
            }
            Ok(wire)
        }
        Some(Ok(Frame::Reject { reason })) => Err(format!("it refused us: {reason}")),
        Some(Ok(other)) => Err(format!("expected a hello, got {}", frame_kind(&other))),
        Some(Err(e)) => Err(format!("malformed hello: {e}")),
        None => Err("closed during the hello (refused without a reason)".into()),
    }
}

/// Serve one established connection until it fails, goes silent, is replaced by a
/// newer one, or the node shuts down.
async fn run_connection(inner: Arc<Inner>, mut wire: Wire, peer: Member) {
    let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let counters = wire.get_ref().get_ref().get_ref().0.counters.clone();
    let (tx, mut rx) = mpsc::channel(OUTBOUND_QUEUE);
    {
        let mut peers = inner.peers.lock().expect("peer table lock");
        let p = peers.entry(peer.id).or_insert_with(|| PeerState::new(&inner.config.timing));
        if let Some(old) = p.link.replace(Link { conn, tx, counters: counters.clone() }) {
            p.bytes_sent += old.counters.sent.load(Ordering::Relaxed);
            p.bytes_received += old.counters.received.load(Ordering::Relaxed);
        }
        p.failing = false;
        p.last_contact = Some(Instant::now());
    }
    info!(peer = %peer.name, role = %peer.role, "peer connected");
    let timing = &inner.config.timing;
    let mut ping = tokio::time::interval(timing.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    let reason: String = loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => break "shutting down".into(),
            out = rx.recv() => {
                let Some(frame) = out else { break "replaced by a newer connection".into() };
                if let Err(e) = send_frame(&mut wire, frame, timing.peer_timeout).await {
                    break e;
                }
            }
            got = wire.next() => {
                let frame = match got {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => break format!("malformed frame: {e}"),
                    None => break "closed by peer".into(),
                };
                last_rx = Instant::now();
                match frame {
                    Frame::Raft(bytes) => {
                        let m = match Message::parse_from_bytes(&bytes) {
                            Ok(m) => m,
                            Err(e) => break format!("malformed raft message: {e}"),
                        };
                        if m.from != peer.id {
                            break format!("sent a raft message as node {}", m.from);
                        }
                        if m.to != inner.hello.node_id {
                            break format!("sent a raft message for node {}", m.to);
                        }
                        // Never wait on the raft loop: a connection that blocked here would
                        // stop answering pings. raft tolerates a dropped message.
                        match inner.inbound.try_send(Inbound::Raft(m)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                debug!(peer = %peer.name, "raft inbound queue full; message dropped");
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => break "shutting down".into(),
                        }
                    }
                    Frame::Observation(observation) => {
                        if observation.node != peer.name {
                            break format!("sent an observation as `{}`", observation.node);
                        }
                        // Dropped when the loop is busy: the next one comes within a second.
                        let _ = inner.inbound.try_send(Inbound::Observation(observation));
                    }
                    Frame::Ping { nonce } => {
                        if let Err(e) = send_frame(&mut wire, Frame::Pong { nonce }, timing.peer_timeout).await {
                            break e;
                        }
                    }
                    Frame::Pong { nonce } => {
                        let mut peers = inner.peers.lock().expect("peer table lock");
                        if let Some(p) = peers.get_mut(&peer.id) {
                            p.pings.reply(nonce, last_rx);
                        }
                    }
                    other => break format!("unexpected {} after the hello", frame_kind(&other)),
                }
                let mut peers = inner.peers.lock().expect("peer table lock");
                if let Some(p) = peers.get_mut(&peer.id) {
                    p.last_contact = Some(last_rx);
                }
            }
            _ = ping.tick() => {
                let silent = last_rx.elapsed();
                if silent > timing.peer_timeout {
                    break format!("silent for {} ms", silent.as_millis());
                }
                // Losses are noticed at this granularity: one ping interval.
                let nonce = {
                    let now = Instant::now();
                    let mut peers = inner.peers.lock().expect("peer table lock");
                    let Some(p) = peers.get_mut(&peer.id) else { break "peer vanished from the table".into() };
                    p.pings.expire(now);
                    p.pings.send(now)
                };
                if let Err(e) = send_frame(&mut wire, Frame::Ping { nonce }, timing.peer_timeout).await {
                    break e;
                }
            }
        }
    };
    {
        let mut peers = inner.peers.lock().expect("peer table lock");
        if let Some(p) = peers.get_mut(&peer.id)
            && p.link.as_ref().is_some_and(|l| l.conn == conn)
        {
            p.link = None;
            p.pings.abandon();
            p.bytes_sent += counters.sent.load(Ordering::Relaxed);
            p.bytes_received += counters.received.load(Ordering::Relaxed);
        }
    }
    if reason == "shutting down" || reason == "replaced by a newer connection" {
        debug!(peer = %peer.name, reason = %reason, "peer connection closed");
    } else {
        warn!(peer = %peer.name, reason = %reason, "peer connection closed");
    }
}

async fn send_frame(wire: &mut Wire, frame: Frame, limit: Duration) -> Result<(), String> {
    match timeout(limit, wire.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("send failed: {e}")),
        Err(_) => Err(format!("send blocked for {} ms", limit.as_millis())),
    }
}

/// A TCP stream that counts the bytes it carries (TLS included), for the status and
/// the footprint benchmark.
struct Counted<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Self {
        Counted { inner, counters: Arc::default() }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.counters.received.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
