//! Test helpers: an in-process HTTP receiver on 127.0.0.1:0 that answers from a script
//! and keeps every request it got.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::task::AbortOnDropHandle;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, delay: Duration::ZERO, retry_after: None }
    }
}

/// Standard Webhooks verification, written from the specification with ring alone (not
/// with the code under test): `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
/// possibly among several space-separated signatures, and a timestamp within 5 minutes.
pub fn verify_standard_webhook(key: &[u8], r: &Received) -> Result<(), String> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let id = r.header("webhook-id").ok_or("no webhook-id")?;
    let ts = r.header("webhook-timestamp").ok_or("no webhook-timestamp")?;
    let sigs = r.header("webhook-signature").ok_or("no webhook-signature")?;
    let stamp: u64 = ts.parse().map_err(|_| "bad timestamp")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if now.abs_diff(stamp) > 300 {
        return Err(format!("timestamp {stamp} is {}s off", now.abs_diff(stamp)));
    }
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    for sig in sigs.split(' ') {
        let Some(b64) = sig.strip_prefix("v1,") else { continue };
        let Ok(mac) = engine.decode(b64) else { continue };
        if ring::hmac::verify(&key, &signed, &mac).is_ok() {
            return Ok(());
        }
    }
    Err("no valid v1 signature".into())
}

pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Vec<Received>>>,
    _task: AbortOnDropHandle<()>,
}

impl Receiver {
    /// Answer requests with `replies` in order; the last one repeats.
    pub async fn start(replies: Vec<Reply>) -> Receiver {
        Receiver::start_verifying(None, replies).await
    }

    /// As `start`, but a request whose Standard Webhooks signature does not verify with
    /// `key` gets 401 (and does not consume a scripted reply).
    pub async fn start_verifying(key: Option<Vec<u8>>, replies: Vec<Reply>) -> Receiver {
        let key = Arc::new(key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/SECRETTOKEN", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(replies)));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (log, script, key) = (log.clone(), script.clone(), key.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (log, script, key) = (log.clone(), script.clone(), key.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                            let received = Received { path, headers, body };
                            let forged = key
                                .as_ref()
                                .as_ref()
                                .is_some_and(|k| verify_standard_webhook(k, &received).is_err());
                            log.lock().unwrap().push(received);
                            let reply = if forged {
                                Reply::status(401)
                            } else {
                                let mut s = script.lock().unwrap();
                                if s.len() > 1 { s.pop_front().unwrap() } else { s.front().unwrap().clone() }
                            };
                            tokio::time::sleep(reply.delay).await;
                            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                            *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            if let Some(after) = reply.retry_after {
                                response.headers_mut().insert("retry-after", after.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, seen, _task: AbortOnDropHandle::new(task) }
    }

    pub fn calls(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}
