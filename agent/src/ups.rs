//! Watching UPSes through NUT's upsd: a small async client and one monitor task per UPS.
//!
//! Our own client, not the `nut-client` crate: nut-client 0.4 (now `rups`) panicked when
//! upsd dropped the connection, has no connect or read timeout (a call blocked 12 s on a
//! hung upsd), does not tell DATA-STALE apart, never reconnects, and pins rustls 0.19 /
//! ring 0.16 with advisories. The protocol is a few line-based commands; what matters is
//! deadlines, reconnects and explicit states, and those are easier to own than to patch.
//!
//! The client never sends LOGIN, USERNAME or PASSWORD: reading needs none, and upsmon
//! primaries count logged-in clients during a shutdown, so an observer must stay anonymous.
//! Parsing and the meaning of answers live in `sitewatch_proto::ups`; this module moves bytes.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sitewatch_proto::ups::{
    MAX_LINE_LEN, OutOfStep, ReplyError, UpsConfig, UpsPoll, UpsReading, UpsState, parse_reply,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval, sleep, timeout};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::Clock;

/// The latest reading of every configured UPS, by UPS name.
pub type UpsReadings = BTreeMap<String, UpsReading>;

/// First reconnect delay cap; doubles per failure up to [`BACKOFF_MAX`] (full jitter).
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NutError {
    #[error("cannot connect to {server}: {source}")]
    Connect { server: String, source: io::Error },
    #[error("no connection to {server} within {timeout:?}")]
    ConnectTimeout { server: String, timeout: Duration },
    #[error("no answer from upsd within {timeout:?}")]
    Timeout { timeout: Duration },
    #[error("upsd closed the connection")]
    Closed,
    #[error("connection to upsd failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Reply(#[from] ReplyError),
    #[error(transparent)]
    OutOfStep(#[from] OutOfStep),
    #[error("upsd refused STARTTLS: {0}")]
    StartTls(String),
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    #[error("UPS `{0}` is configured twice; readings are keyed by UPS name")]
    Duplicate(String),
}

impl NutError {
    /// The peer hung up: on a connection that sat idle this is upsd's 60 s idle close,
    /// not a sign that upsd is gone.
    pub fn is_hang_up(&self) -> bool {
        match self {
            NutError::Closed => true,
            NutError::Io(e) => {
                matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
            }
            _ => false,
        }
    }
}

/// What the connection runs over: plain TCP, or TLS after STARTTLS.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// One open connection to upsd. Every connect and every answer has a deadline.
pub struct NutConnection {
    stream: BufReader<Box<dyn Transport>>,
    timeout: Duration,
}

impl NutConnection {
    /// Connect to `config.server`, upgrading with STARTTLS when `tls` is given.
    pub async fn connect(config: &UpsConfig, tls: Option<&TlsConnector>) -> Result<NutConnection, NutError> {
        let server = &config.server;
        let tcp = timeout(config.timeout, TcpStream::connect(server))
            .await
            .map_err(|_| NutError::ConnectTimeout { server: server.clone(), timeout: config.timeout })?
            .map_err(|source| NutError::Connect { server: server.clone(), source })?;
        // Requests are single short lines: send each at once.
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Transport> = match tls {
            None => Box::new(tcp),
            Some(connector) => Box::new(starttls(tcp, connector, config).await?),
        };
        Ok(NutConnection { stream: BufReader::new(stream), timeout: config.timeout })
    }

    /// Ask upsd for this UPS's variables and say what they amount to.
    pub async fn poll(&mut self, ups: &str) -> Result<UpsState, NutError> {
        let mut poll = UpsPoll::new(ups);
        while let Some(command) = poll.next_command() {
            let line = self.request(&command).await?;
            poll.on_reply(parse_reply(&line)?)?;
        }
        Ok(poll.finish())
    }

    /// Send one command and read its one-line answer, all within the deadline.
    async fn request(&mut self, command: &str) -> Result<Vec<u8>, NutError> {
        let deadline = self.timeout;
        timeout(deadline, async {
            self.stream.get_mut().write_all(command.as_bytes()).await?;
            self.stream.get_mut().flush().await?;
            read_line(&mut self.stream).await
        })
        .await
        .map_err(|_| NutError::Timeout { timeout: deadline })?
    }
}

/// Read one line of at most [`MAX_LINE_LEN`] bytes, newline included.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, NutError> {
    let mut line = Vec::with_capacity(64);
    // The limit makes a peer that never sends a newline cost at most one line of memory.
    let limit = u64::try_from(MAX_LINE_LEN).unwrap_or(u64::MAX) + 1;
    let n = reader.take(limit).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(NutError::Closed);
    }
    if !line.ends_with(b"\n") {
        return Err(if line.len() > MAX_LINE_LEN {
            NutError::Reply(ReplyError::TooLong { max: MAX_LINE_LEN })
        } else {
            NutError::Closed
        });
    }
    Ok(line)
}

/// Upgrade a fresh connection to TLS: `STARTTLS`, `OK STARTTLS`, then the handshake.
async fn starttls(
    tcp: TcpStream,
    connector: &TlsConnector,
    config: &UpsConfig,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, NutError> {
    let name = ServerName::try_from(config.server_host().to_owned()).map_err(|e| {
        NutError::TlsSetup(format!("`{}` is not a TLS server name: {e}", config.server_host()))
    })?;
    let deadline = config.timeout;
    timeout(deadline, async {
        let mut reader = BufReader::new(tcp);
        reader.get_mut().write_all(b"STARTTLS\n").await?;
        let answer = read_line(&mut reader).await?;
        let answer = String::from_utf8_lossy(&answer);
        if answer.trim_end() != "OK STARTTLS" {
            return Err(NutError::StartTls(answer.trim_end().chars().take(80).collect()));
        }
        // upsd sends nothing after OK until our ClientHello; bytes here would be lost.
        if !reader.buffer().is_empty() {
            return Err(NutError::StartTls("unexpected data after OK STARTTLS".into()));
        }
        Ok(connector.connect(name, reader.into_inner()).await?)
    })
    .await
    .map_err(|_| NutError::Timeout { timeout: deadline })?
}

/// A TLS client that trusts only the CA in `ca` (PEM), with the ring provider.
pub fn tls_connector(ca: &Path) -> Result<TlsConnector, NutError> {
    let setup = |what: String| NutError::TlsSetup(format!("{}: {what}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| setup(e.to_string()))? {
        roots.add(cert.map_err(|e| setup(e.to_string()))?).map_err(|e| setup(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(setup("no PEM certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Start one monitor task per UPS on `tracker`; they stop when `cancel` fires. The
/// receiver always holds the latest reading of every UPS (unknown until first polled).
pub fn spawn_monitors(
    configs: &[UpsConfig],
    clock: Clock,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<watch::Receiver<UpsReadings>, NutError> {
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = configs.iter().find(|c| !names.insert(c.name.as_str())) {
        return Err(NutError::Duplicate(twice.name.clone()));
    }
    let now = clock.now_ms();
    let initial = configs.iter().map(|c| (c.name.clone(), UpsReading::unknown(&c.name, now))).collect();
    let (sender, receiver) = watch::channel(initial);
    let sender = Arc::new(sender);
    // Load every CA before starting anything: a bad file fails the start, not a poll.
    let mut monitors = Vec::with_capacity(configs.len());
    for config in configs {
        let tls = match (&config.ca, config.starttls) {
            (Some(ca), true) => Some(tls_connector(ca)?),
            (None, true) => {
                return Err(NutError::TlsSetup(format!("UPS {}: starttls needs a CA", config.name)));
            }
            _ => None,
        };
        monitors.push(Monitor {
            config: config.clone(),
            tls,
            clock,
            readings: sender.clone(),
            cancel: cancel.child_token(),
        });
    }
    for monitor in monitors {
        let span = info_span!("ups", ups = %monitor.config.name, server = %monitor.config.server);
        tracker.spawn(monitor.run().instrument(span));
    }
    Ok(receiver)
}

/// Polls one UPS every poll-interval and publishes what it finds.
struct Monitor {
    config: UpsConfig,
    tls: Option<TlsConnector>,
    clock: Clock,
    readings: Arc<watch::Sender<UpsReadings>>,
    cancel: CancellationToken,
}

impl Monitor {
    async fn run(self) {
        let mut connection: Option<NutConnection> = None;
        let mut failures: u32 = 0;
        let mut last_seen: Option<String> = None;
        let mut ticker = interval(self.config.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // Stamped with the poll's start: ups.status is read after it, so a slow poll
            // makes a reading look older than it is, never fresher.
            let started = self.clock.now_ms();
            let state = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                state = self.poll_once(&mut connection) => state,
            };
            let unreachable = matches!(state, UpsState::Unreachable { .. });
            self.log_change(&mut last_seen, &state);
            self.publish(state, started);
            if !unreachable {
                failures = 0;
                continue;
            }
            failures = failures.saturating_add(1);
            let wait = backoff(failures);
            debug!(failures, wait_ms = wait.as_millis(), "reconnecting after a pause");
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = sleep(wait) => ticker.reset_immediately(),
            }
        }
        debug!("UPS monitor stopped");
    }

    /// One poll, on the open connection or a new one. Any error drops the connection.
    async fn poll_once(&self, connection: &mut Option<NutConnection>) -> UpsState {
        let reused = connection.is_some();
        let mut result = self.try_poll(connection).await;
        // upsd closes clients idle for 60 s; a hang-up on a reused connection earns one
        // immediate retry on a new one before the UPS is called unreachable.
        if reused && result.as_ref().is_err_and(NutError::is_hang_up) {
            debug!("upsd hung up on the idle connection; reconnecting");
            *connection = None;
            result = self.try_poll(connection).await;
        }
        result.unwrap_or_else(|e| {
            *connection = None;
            UpsState::Unreachable { error: e.to_string() }
        })
    }

    async fn try_poll(&self, connection: &mut Option<NutConnection>) -> Result<UpsState, NutError> {
        let open = match connection {
            Some(open) => open,
            None => connection.insert(NutConnection::connect(&self.config, self.tls.as_ref()).await?),
        };
        open.poll(&self.config.name).await
    }

    fn publish(&self, state: UpsState, now: u64) {
        let name = &self.config.name;
        self.readings.send_modify(|all| {
            let next = match all.get(name) {
                Some(previous) => previous.next(state, now),
                None => UpsReading::unknown(name, now).next(state, now),
            };
            all.insert(name.clone(), next);
        });
    }

    /// One line per change of state or status flags, not one per poll (and not per
    /// change of battery charge or of the wording of a connection error).
    fn log_change(&self, last_seen: &mut Option<String>, state: &UpsState) {
        let summary = match state {
            UpsState::Data(data) => format!("data {}", data.status),
            other => other.kind().to_owned(),
        };
        if last_seen.as_deref() == Some(summary.as_str()) {
            return;
        }
        match last_seen.replace(summary) {
            None => info!(state = state.kind(), detail = %state, "first UPS reading"),
            Some(from) => warn!(state = state.kind(), from = %from, to = %state, "UPS state changed"),
        }
    }
}

/// Full jitter: a uniform wait up to a cap that doubles with each consecutive failure, so
/// many agents that lost the same upsd do not come back in step.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let cap = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX);
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=cap_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_proto::ups::{POLLED_VARS, StatusFlag};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    const POLLED_VARS_LEN: usize = POLLED_VARS.len();

    #[tokio::test]
    async fn monitors_refuse_a_name_twice_and_a_bad_ca() {
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let twice = [UpsConfig::new("a"), UpsConfig::new("a")];
        let e = spawn_monitors(&twice, Clock::start(), &cancel, &tracker).err().unwrap();
        assert!(matches!(&e, NutError::Duplicate(name) if name == "a"), "{e}");
        let bad_ca =
            UpsConfig { starttls: true, ca: Some("/nonexistent/ca.pem".into()), ..UpsConfig::new("a") };
        let e = spawn_monitors(&[bad_ca], Clock::start(), &cancel, &tracker).err().unwrap();
        assert!(matches!(&e, NutError::TlsSetup(m) if m.contains("/nonexistent/ca.pem")), "{e}");
        assert!(tracker.is_empty(), "nothing started");
    }

    #[test]
    fn backoff_is_capped_and_grows() {
        for _ in 0..200 {
            assert!(backoff(1) <= BACKOFF_BASE);
            assert!(backoff(3) <= BACKOFF_BASE * 4);
            assert!(backoff(u32::MAX) <= BACKOFF_MAX);
        }
        // Jitter: 200 draws under a 5 s cap are not all equal.
        let draws: std::collections::HashSet<_> = (0..200).map(|_| backoff(30)).collect();
        assert!(draws.len() > 10);
    }

    #[tokio::test]
    async fn a_line_without_end_is_refused_at_the_cap() {
        let (mut a, b) = tokio::io::duplex(4096);
        a.write_all(&vec![b'x'; MAX_LINE_LEN + 10]).await.unwrap();
        let mut reader = BufReader::new(b);
        let e = read_line(&mut reader).await.unwrap_err();
        assert!(matches!(e, NutError::Reply(ReplyError::TooLong { .. })), "{e}");
    }

    #[tokio::test]
    async fn end_of_stream_is_closed() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"VAR site ups.status \"O").await.unwrap();
        drop(a);
        let mut reader = BufReader::new(b);
        assert!(matches!(read_line(&mut reader).await, Err(NutError::Closed)));
    }

    /// A fake upsd for what a real one will not do on demand: answer out of step, hang
    /// mid-line. The real-upsd tests live in agent/tests/nut.rs.
    async fn fake_upsd(script: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 256];
            let _ = socket.read(&mut request).await;
            socket.write_all(script).await.unwrap();
            // Hold the connection open without answering more.
            sleep(Duration::from_secs(60)).await;
        });
        address
    }

    fn config_for(server: String) -> UpsConfig {
        let mut config = UpsConfig::new("site");
        config.server = server;
        config.timeout = Duration::from_millis(300);
        config
    }

    #[tokio::test]
    async fn an_answer_for_another_ups_is_an_error() {
        let config = config_for(fake_upsd(b"VAR other ups.status \"OL\"\n").await);
        let mut connection = NutConnection::connect(&config, None).await.unwrap();
        let e = connection.poll("site").await.unwrap_err();
        assert!(matches!(e, NutError::OutOfStep(_)), "{e}");
    }

    #[tokio::test]
    async fn a_half_line_then_silence_hits_the_deadline() {
        let config = config_for(fake_upsd(b"VAR site ups.sta").await);
        let mut connection = NutConnection::connect(&config, None).await.unwrap();
        let started = tokio::time::Instant::now();
        let e = connection.poll("site").await.unwrap_err();
        assert!(matches!(e, NutError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// A fake upsd that answers GET VAR lines for UPS `site` (status `status`, nothing
    /// else supported), closing each connection after `answers_per_connection` answers,
    /// as upsd does to an idle client. With `tls`, it expects STARTTLS first.
    async fn answering_upsd(
        status: &'static str,
        answers_per_connection: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(socket);
                    let stream: Box<dyn Transport> = match tls {
                        None => Box::new(reader),
                        Some(acceptor) => {
                            let mut line = String::new();
                            reader.read_line(&mut line).await.unwrap();
                            assert_eq!(line, "STARTTLS\n");
                            reader.get_mut().write_all(b"OK STARTTLS\n").await.unwrap();
                            let Ok(tls) = acceptor.accept(reader.into_inner()).await else { return };
                            Box::new(BufReader::new(tls))
                        }
                    };
                    let mut lines = BufReader::new(stream).lines();
                    for _ in 0..answers_per_connection {
                        let Ok(Some(line)) = lines.next_line().await else { return };
                        let answer = match line.strip_prefix("GET VAR site ") {
                            Some("ups.status") => format!("VAR site ups.status \"{status}\"\n"),
                            Some(_) => "ERR VAR-NOT-SUPPORTED\n".to_owned(),
                            None => "ERR UNKNOWN-COMMAND\n".to_owned(),
                        };
                        lines.get_mut().get_mut().write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (address, connections)
    }

    fn monitor_for(config: UpsConfig, tls: Option<TlsConnector>) -> Monitor {
        let (sender, _) = watch::channel(UpsReadings::new());
        Monitor {
            config,
            tls,
            clock: Clock::start(),
            readings: Arc::new(sender),
            cancel: CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn an_idle_close_costs_a_reconnect_not_a_reading() {
        // One full poll per connection: every later poll finds its connection closed.
        let (address, connections) = answering_upsd("OL", POLLED_VARS_LEN, None).await;
        let monitor = monitor_for(config_for(address), None);
        let mut connection = None;
        for _ in 0..4 {
            let state = monitor.poll_once(&mut connection).await;
            assert!(matches!(&state, UpsState::Data(d) if d.status.has(StatusFlag::OL)), "{state:?}");
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_hang_up_on_a_fresh_connection_is_unreachable() {
        // Closes before the first answer: on a connection just made, that is no idle close.
        let (address, _) = answering_upsd("OL", 0, None).await;
        let monitor = monitor_for(config_for(address), None);
        let mut connection = None;
        let state = monitor.poll_once(&mut connection).await;
        assert!(
            matches!(&state, UpsState::Unreachable { error } if error.contains("closed") || error.contains("reset")),
            "{state:?}"
        );
        assert!(connection.is_none(), "a failed connection is dropped");
    }

    /// A CA, and a server certificate for 127.0.0.1 signed by it.
    fn test_pki() -> (String, rustls::ServerConfig) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        (ca_pem, server)
    }

    #[tokio::test]
    async fn starttls_reads_through_tls_and_checks_the_ca() {
        let (ca_pem, server) = test_pki();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let (address, _) = answering_upsd("OB", 100, Some(acceptor)).await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &ca_pem).unwrap();
        let mut config = config_for(address);
        config.starttls = true;
        config.ca = Some(ca.clone());

        let mut connection =
            NutConnection::connect(&config, Some(&tls_connector(&ca).unwrap())).await.unwrap();
        let state = connection.poll("site").await.unwrap();
        assert!(matches!(&state, UpsState::Data(d) if d.status.has(StatusFlag::OB)), "{state:?}");

        // Another CA's certificate is refused.
        let (other_ca, _) = test_pki();
        let other = dir.path().join("other.pem");
        std::fs::write(&other, other_ca).unwrap();
        let e = NutConnection::connect(&config, Some(&tls_connector(&other).unwrap())).await.err().unwrap();
        assert!(e.to_string().contains("certificate"), "{e}");
        // A file without a certificate is a setup error naming the file.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = tls_connector(&empty).err().unwrap();
        assert!(matches!(&e, NutError::TlsSetup(m) if m.contains("empty.pem")), "{e}");
    }

    #[tokio::test]
    async fn a_refused_starttls_is_reported() {
        let mut config = config_for(fake_upsd(b"ERR FEATURE-NOT-CONFIGURED\n").await);
        config.starttls = true;
        let roots = rustls::RootCertStore::empty();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(client));
        let e = NutConnection::connect(&config, Some(&connector)).await.err().unwrap();
        assert!(matches!(&e, NutError::StartTls(answer) if answer.contains("FEATURE-NOT-CONFIGURED")), "{e}");
    }
}
