//! The webhook actuator: POST the action as JSON, signed per Standard Webhooks
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`), with the idempotency key as the message id and as an
//! `Idempotency-Key` header, so a receiver can drop a repeat.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

use super::config::WebhookConfig;
use super::retry::{self, RetryPolicy};
use super::secret::Secret;
use super::{Action, ActuatorError, Outcome, http};

/// A Standard Webhooks signing key.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl SigningKey {
    /// `whsec_` + base64 is the Standard Webhooks form; anything else is taken as raw bytes.
    pub fn from_secret(secret: &Secret) -> Result<SigningKey, String> {
        let text = secret.expose();
        let bytes = match text.strip_prefix("whsec_") {
            Some(b64) => {
                STANDARD.decode(b64).map_err(|_| "a whsec_ secret must be base64 after the prefix")?
            }
            None => text.as_bytes().to_vec(),
        };
        Ok(SigningKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(format!(".{timestamp}.").as_bytes());
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }

    /// Add the three Standard Webhooks headers, stamped now.
    pub fn headers(
        &self,
        request: reqwest::RequestBuilder,
        id: &str,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        // Before 1970 only on a broken clock; a 0 stamp is then refused by the receiver.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        request
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", self.sign(id, now, body))
    }
}

#[derive(Debug)]
pub struct Webhook {
    url: reqwest::Url,
    key: SigningKey,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl Webhook {
    pub fn from_config(c: &WebhookConfig) -> Result<Webhook, ActuatorError> {
        let url = reqwest::Url::parse(&c.url).map_err(|e| ActuatorError::Config(format!("url: {e}")))?;
        let secret = c.secret().load().map_err(ActuatorError::Config)?;
        let key = SigningKey::from_secret(&secret).map_err(ActuatorError::Config)?;
        let client = http::client(c.timeout).map_err(ActuatorError::Config)?;
        Ok(Webhook { url, key, client, retry: c.retry() })
    }

    pub async fn apply(&self, name: &str, action: &Action) -> Result<Outcome, ActuatorError> {
        let body =
            serde_json::to_vec(action).map_err(|e| ActuatorError::Permanent(format!("encoding: {e}")))?;
        let id = action.idempotency_key.as_str();
        let (code, _) = retry::run(&self.retry, name, |_| {
            let request = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", id)
                .body(body.clone());
            // Signed per attempt: receivers refuse a stale timestamp.
            let request = self.key.headers(request, id, &body);
            async move { http::classify(request.send().await).await }
        })
        .await?;
        Ok(Outcome::Applied { detail: format!("HTTP {code} from {}", self.url.host_str().unwrap_or("?")) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actuator::tests::action;
    use crate::actuator::{Actuator, ActuatorConfig};
    use crate::testing::{Receiver, Reply, verify_standard_webhook};

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A webhook actuator for `url` whose secret (in `whsec_` form) is in a temp file.
    fn actuator(
        url: &str,
        key: &[u8],
        timeout: Duration,
        max_attempts: u32,
    ) -> (Actuator, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("whsec_{}\n", STANDARD.encode(key))).unwrap();
        let cfg = ActuatorConfig::Webhook(WebhookConfig {
            name: "hook".into(),
            url: url.into(),
            secret_file: Some(path),
            secret_env: None,
            timeout,
            max_attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        });
        (Actuator::from_config(&cfg).unwrap(), dir)
    }

    #[tokio::test]
    async fn a_signed_action_is_applied() {
        let rx = Receiver::start_verifying(Some(KEY.to_vec()), vec![Reply::status(204)]).await;
        let (a, _dir) = actuator(&rx.url, KEY, Duration::from_secs(5), 3);
        let out = a.apply(&action(3, 0)).await.unwrap();
        assert!(matches!(&out, Outcome::Applied { detail } if detail.contains("204")), "{out:?}");
        let calls = rx.calls();
        assert_eq!(calls.len(), 1);
        verify_standard_webhook(KEY, &calls[0]).unwrap();
        assert_eq!(calls[0].header("webhook-id"), Some("home-3-41"));
        assert_eq!(calls[0].header("idempotency-key"), Some("home-3-41"));
        assert_eq!(calls[0].header("content-type"), Some("application/json"));
        let sent: Action = serde_json::from_slice(&calls[0].body).unwrap();
        assert_eq!(sent, action(3, 0));
    }

    #[tokio::test]
    async fn a_503_twice_is_retried_with_the_same_id() {
        let rx = Receiver::start_verifying(
            Some(KEY.to_vec()),
            vec![Reply::status(503), Reply::status(503), Reply::status(200)],
        )
        .await;
        let (a, _dir) = actuator(&rx.url, KEY, Duration::from_secs(5), 5);
        assert!(matches!(a.apply(&action(3, 0)).await, Ok(Outcome::Applied { .. })));
        let calls = rx.calls();
        assert_eq!(calls.len(), 3);
        for c in &calls {
            verify_standard_webhook(KEY, c).unwrap();
            assert_eq!(c.header("webhook-id"), Some("home-3-41"));
        }
    }

    #[tokio::test]
    async fn a_400_is_permanent_after_one_call() {
        let rx = Receiver::start(vec![Reply::status(400)]).await;
        let (a, _dir) = actuator(&rx.url, KEY, Duration::from_secs(5), 5);
        let e = a.apply(&action(3, 0)).await.unwrap_err();
        assert!(matches!(&e, ActuatorError::Permanent(why) if why.contains("400")), "{e:?}");
        assert_eq!(rx.calls().len(), 1);
    }

    #[tokio::test]
    async fn attempts_time_out_and_the_actuator_gives_up() {
        let slow = Reply { status: 200, delay: Duration::from_secs(30), retry_after: None };
        let rx = Receiver::start(vec![slow]).await;
        let (a, _dir) = actuator(&rx.url, KEY, Duration::from_millis(200), 2);
        let start = tokio::time::Instant::now();
        let e = a.apply(&action(3, 0)).await.unwrap_err();
        assert!(
            matches!(&e, ActuatorError::Exhausted { attempts: 2, last } if last.contains("timed out")),
            "{e:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(rx.calls().len(), 2);
    }

    #[tokio::test]
    async fn a_wrong_secret_is_caught_by_the_receiver() {
        let rx = Receiver::start_verifying(Some(KEY.to_vec()), vec![Reply::status(200)]).await;
        let (a, _dir) = actuator(&rx.url, b"not the receiver's key", Duration::from_secs(5), 3);
        let e = a.apply(&action(3, 0)).await.unwrap_err();
        assert!(matches!(&e, ActuatorError::Permanent(why) if why.contains("401")), "{e:?}");
        let calls = rx.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(verify_standard_webhook(KEY, &calls[0]), Err("no valid v1 signature".into()));
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let busy = Reply { status: 429, delay: Duration::ZERO, retry_after: Some("1".into()) };
        let rx = Receiver::start(vec![busy, Reply::status(200)]).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "raw secret bytes").unwrap();
        let cfg = ActuatorConfig::Webhook(WebhookConfig {
            name: "hook".into(),
            url: rx.url.clone(),
            secret_file: Some(path),
            secret_env: None,
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_secs(10),
        });
        let a = Actuator::from_config(&cfg).unwrap();
        let start = tokio::time::Instant::now();
        assert!(a.apply(&action(3, 0)).await.is_ok());
        assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
        let calls = rx.calls();
        assert_eq!(calls.len(), 2);
        // A secret without the whsec_ prefix is used as raw bytes.
        verify_standard_webhook(b"raw secret bytes", &calls[1]).unwrap();
    }

    #[test]
    fn signs_the_standard_webhooks_example() {
        // The Standard Webhooks specification's own example.
        let key = SigningKey::from_secret(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(SigningKey::from_secret(&Secret::new("whsec_!!")).is_err());
    }
}
