//! The HTTP client the webhook, AWS and notifier targets share: reqwest over rustls with
//! the ring provider (the workspace's; reqwest's own default would bring aws-lc-rs) and
//! the platform's trust store, HTTP/1.1 only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_platform_verifier::BuilderVerifierExt;

use super::retry::{Attempt, parse_retry_after};

/// A client whose requests each give up after `timeout`.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_platform_verifier()
        .map_err(|e| format!("TLS trust store: {e}"))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("sitewatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// At most this much of an error body goes into an error message.
const BODY_EXCERPT: usize = 300;

/// Classify a sent request: 2xx done (with the body), 5xx, 429 and 408 worth retrying
/// (honouring Retry-After), any other status final; a transport error (connect, timeout,
/// reset) is worth retrying.
pub async fn classify(sent: Result<reqwest::Response, reqwest::Error>) -> Attempt<(u16, String)> {
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Attempt::Retry { error: describe(e), retry_after: None },
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = match response.text().await {
        Ok(b) => b,
        Err(e) if status.is_success() => return Attempt::Retry { error: describe(e), retry_after: None },
        Err(_) => String::new(),
    };
    let code = status.as_u16();
    if status.is_success() {
        return Attempt::Done((code, body));
    }
    let error = format!("HTTP {status}: {}", excerpt(&body));
    if status.is_server_error() || code == 429 || code == 408 {
        Attempt::Retry { error, retry_after }
    } else {
        Attempt::Fail(error)
    }
}

/// reqwest's Display hides the cause ("error sending request"); add the chain. The URL
/// is left out: a notifier's URL often carries its token.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = if e.is_timeout() { format!("timed out: {e}") } else { e.to_string() };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The first line-ish part of a body, for an error message.
pub fn excerpt(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= BODY_EXCERPT {
        return flat;
    }
    let cut: String = flat.chars().take(BODY_EXCERPT).collect();
    format!("{cut}…")
}
