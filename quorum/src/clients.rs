//! The accept loop the local endpoints share (the status socket, the metrics port): a
//! bound on clients at once, a deadline on each, and a pause instead of a spin when
//! accept itself fails (out of file descriptors, say).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// A listener whose connections [`serve_bounded`] hands out.
pub trait Acceptor: Send + 'static {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    async fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Acceptor for UnixListener {
    type Stream = UnixStream;
    async fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// What an endpoint allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Names the endpoint in logs.
    pub what: &'static str,
    /// Clients answered at once; more are closed at once.
    pub max_clients: usize,
    /// A client's whole exchange must end within this.
    pub deadline: Duration,
}

/// Accept on `listener` until `cancel`, answering each client with `answer` within the
/// limits; then `on_stop`.
pub fn serve_bounded<A, F, Fut>(
    listener: A,
    limits: Limits,
    tracker: &TaskTracker,
    cancel: CancellationToken,
    answer: F,
    on_stop: impl FnOnce() + Send + 'static,
) where
    A: Acceptor,
    F: Fn(A::Stream) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let Limits { what, max_clients, deadline } = limits;
    let clients = Arc::new(Semaphore::new(max_clients));
    let inner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept_one() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(endpoint = what, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = clients.clone().try_acquire_owned() else {
                debug!(endpoint = what, "too many clients; closing one");
                continue;
            };
            let answering = answer(stream);
            inner.spawn(async move {
                if let Err(e) = timeout(deadline, answering).await.unwrap_or(Err("timed out".into())) {
                    debug!(endpoint = what, error = %e, "client");
                }
                drop(permit);
            });
        }
        on_stop();
    });
}
