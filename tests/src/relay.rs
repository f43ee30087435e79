//! A recording TCP relay in front of an HTTP/1.1 server on loopback: every byte goes
//! through unchanged (keep-alive included), and each request is stamped (wall clock) when
//! its last byte arrives. Timing a client's call this way needs no polling of the server
//! (moto answers a DescribeAutoScalingGroups in milliseconds of Python, which a poll would
//! add to every figure).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One request as it went through.
#[derive(Debug, Clone)]
pub struct Request {
    /// When its last byte was read from the client.
    pub at: SystemTime,
    /// The request line and headers.
    pub head: String,
    pub body: String,
}

impl Request {
    /// A field of a form-encoded body (`Action`, `DesiredCapacity`, ...), not decoded.
    pub fn form(&self, key: &str) -> Option<&str> {
        self.body.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }
}

pub struct Relay {
    port: u16,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Relay {
    /// Listen on a free loopback port and relay every connection to `upstream_port`.
    pub fn start(upstream_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || relay_one(client, upstream_port, &sink));
            }
        });
        Relay { port, got }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.got.lock().expect("relay lock").clone()
    }
}

fn relay_one(client: TcpStream, upstream_port: u16, sink: &Mutex<Vec<Request>>) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else { return };
    // Small writes must not wait for an ACK (Nagle) on either leg: that would be timed.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(mut from_upstream), Ok(mut to_client)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_upstream, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let (mut from_client, mut to_upstream) = (client, upstream);
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from_client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = SystemTime::now();
        if to_upstream.write_all(&buf[..n]).is_err() {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(request) = take_request(&mut pending, at) {
            sink.lock().expect("relay lock").push(request);
        }
    }
    let _ = to_upstream.shutdown(Shutdown::Write);
}

/// The first complete request in `pending` (Content-Length bodies only: what reqwest
/// sends for a fixed body), removed from it.
fn take_request(pending: &mut Vec<u8>, at: SystemTime) -> Option<Request> {
    let end = pending.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    if pending.len() < end + len {
        return None;
    }
    let body = String::from_utf8_lossy(&pending[end..end + len]).into_owned();
    pending.drain(..end + len);
    Some(Request { at, head, body })
}
