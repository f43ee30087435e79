//! A webhook receiver for end-to-end tests: plain HTTP/1.1 on a loopback port, in a
//! thread, that checks each request's Standard Webhooks signature on its own (ring's
//! HMAC-SHA256, not the actuator's code) and keeps what it got.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// One request the receiver accepted.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub idempotency_key: Option<String>,
    pub body: serde_json::Value,
    /// The signature checked out against the receiver's own copy of the secret.
    pub signature_ok: bool,
    /// When the request was read (wall clock).
    pub at: SystemTime,
}

pub struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    /// Listen on a free loopback port; `secret` is the raw signing key.
    pub fn start(secret: &[u8]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(d) = read_one(stream, &key) {
                    sink.lock().expect("receiver lock").push(d);
                }
            }
        });
        Receiver { port, got }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/burst", self.port)
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().expect("receiver lock").clone()
    }
}

fn read_one(stream: TcpStream, key: &ring::hmac::Key) -> Option<Delivery> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let at = SystemTime::now();
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let timestamp = headers.get("webhook-timestamp").cloned().unwrap_or_default();
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", &body].concat();
    let expected = format!("v1,{}", STANDARD.encode(ring::hmac::sign(key, &signed).as_ref()));
    let signature_ok =
        headers.get("webhook-signature").is_some_and(|sigs| sigs.split(' ').any(|s| s == expected));
    let mut stream = stream;
    let reply: &[u8] = if signature_ok {
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    } else {
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    };
    let _ = stream.write_all(reply);
    Some(Delivery {
        id,
        idempotency_key: headers.get("idempotency-key").cloned(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        signature_ok,
        at,
    })
}
