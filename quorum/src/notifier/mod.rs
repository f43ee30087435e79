//! Notifications to people: Discord, Slack, ntfy or a generic webhook, on verdict and
//! burst changes, spend alerts and the witness's unilateral actions. Delivery retries a
//! few times with full-jitter backoff on 5xx, 429 and 408, each attempt under a timeout;
//! a notification that cannot be delivered is logged by the caller, never fatal.

pub mod config;
pub mod event;

use crate::actuator::http;
use crate::actuator::retry::{self, GaveUp, RetryPolicy};
use crate::actuator::secret::Secret;
use crate::actuator::webhook::SigningKey;

pub use config::{NotifierConfig, TargetConfig, check_notifiers};
pub use event::{Event, EventKind};

/// Discord refuses content over 2000 characters.
const DISCORD_MAX: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Permanent(String),
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("configuration: {0}")]
    Config(String),
}

impl From<GaveUp> for NotifyError {
    fn from(g: GaveUp) -> Self {
        match g {
            GaveUp::Permanent(why) => NotifyError::Permanent(why),
            GaveUp::Exhausted { attempts, last } => NotifyError::Exhausted { attempts, last },
        }
    }
}

#[derive(Debug)]
pub struct Notifier {
    name: String,
    target: Target,
    /// A Secret: chat webhook URLs carry their token.
    url: Secret,
    client: reqwest::Client,
    retry: RetryPolicy,
}

#[derive(Debug)]
enum Target {
    Discord,
    Slack,
    Ntfy { token: Option<Secret> },
    Webhook { key: Option<SigningKey> },
}

impl Notifier {
    /// Build from a validated table, reading its URL, token or secret.
    pub fn from_config(cfg: &NotifierConfig) -> Result<Notifier, NotifyError> {
        if let Some((key, why)) = cfg.problem() {
            return Err(NotifyError::Config(format!("`{key}`: {why}")));
        }
        let t = cfg.target();
        let url = match &t.url {
            Some(url) => Secret::new(url.clone()),
            None => t.url_secret().load().map_err(NotifyError::Config)?,
        };
        // The reason is not shown: it would quote the URL.
        if crate::actuator::config::check_http_url(url.expose()).is_some() {
            return Err(NotifyError::Config(
                "the URL read from its file or variable is not an http(s) URL".into(),
            ));
        }
        let target = match cfg {
            NotifierConfig::Discord(_) => Target::Discord,
            NotifierConfig::Slack(_) => Target::Slack,
            NotifierConfig::Ntfy(_) => Target::Ntfy {
                token: if t.token().is_set() {
                    Some(t.token().load().map_err(NotifyError::Config)?)
                } else {
                    None
                },
            },
            NotifierConfig::Webhook(_) => Target::Webhook {
                key: if t.secret().is_set() {
                    let secret = t.secret().load().map_err(NotifyError::Config)?;
                    Some(SigningKey::from_secret(&secret).map_err(NotifyError::Config)?)
                } else {
                    None
                },
            },
        };
        let client = http::client(t.timeout).map_err(NotifyError::Config)?;
        Ok(Notifier { name: t.name.clone(), target, url, client, retry: t.retry() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deliver `event`, retrying transient failures.
    pub async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        let (body, content_type) = self.render(event)?;
        let id = format!("{}-{}-{}", event.cluster_id, event.at_ms, self.name);
        retry::run(&self.retry, &self.name, |_| {
            let mut request = self
                .client
                .post(self.url.expose())
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone());
            match &self.target {
                Target::Ntfy { token } => {
                    request = request
                        .header("Title", event.title())
                        .header("Priority", event.priority().to_string())
                        .header("Tags", event.tags());
                    if let Some(token) = token {
                        request = request.bearer_auth(token.expose());
                    }
                }
                Target::Webhook { key: Some(key) } => request = key.headers(request, &id, &body),
                _ => {}
            }
            async move { http::classify(request.send().await).await }
        })
        .await?;
        Ok(())
    }

    /// The body and its content type, per target.
    fn render(&self, event: &Event) -> Result<(Vec<u8>, &'static str), NotifyError> {
        let encode = |v: serde_json::Value| {
            serde_json::to_vec(&v).map_err(|e| NotifyError::Permanent(format!("encoding: {e}")))
        };
        let json = "application/json";
        Ok(match self.target {
            Target::Discord => {
                let content: String = event.summary().chars().take(DISCORD_MAX).collect();
                (encode(serde_json::json!({ "content": content }))?, json)
            }
            Target::Slack => (encode(serde_json::json!({ "text": event.summary() }))?, json),
            Target::Ntfy { .. } => (event.summary().into_bytes(), "text/plain; charset=utf-8"),
            Target::Webhook { .. } => (
                serde_json::to_vec(event).map_err(|e| NotifyError::Permanent(format!("encoding: {e}")))?,
                json,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::event::tests::down;
    use super::*;
    use crate::testing::{Receiver, Reply, verify_standard_webhook};

    fn target(name: &str) -> TargetConfig {
        TargetConfig {
            name: name.into(),
            url: None,
            url_file: None,
            url_env: None,
            token_file: None,
            token_env: None,
            secret_file: None,
            secret_env: None,
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        }
    }

    fn file(dir: &Path, name: &str, text: &str) -> Option<std::path::PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    }

    fn json(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).unwrap()
    }

    #[tokio::test]
    async fn discord_and_slack_get_the_summary_in_their_own_field() {
        let rx = Receiver::start(vec![Reply::status(204)]).await;
        let dir = tempfile::tempdir().unwrap();
        let url_file = file(dir.path(), "url", &format!("{}\n", rx.url));
        let discord = Notifier::from_config(&NotifierConfig::Discord(TargetConfig {
            url_file: url_file.clone(),
            ..target("d")
        }))
        .unwrap();
        let slack =
            Notifier::from_config(&NotifierConfig::Slack(TargetConfig { url_file, ..target("s") })).unwrap();
        discord.notify(&down()).await.unwrap();
        slack.notify(&down()).await.unwrap();
        let calls = rx.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].path, "/hook/SECRETTOKEN");
        assert_eq!(json(&calls[0].body), serde_json::json!({ "content": down().summary() }));
        assert_eq!(json(&calls[1].body), serde_json::json!({ "text": down().summary() }));
        assert!(!format!("{discord:?}").contains("SECRETTOKEN"), "{discord:?}");
    }

    #[tokio::test]
    async fn ntfy_gets_plain_text_with_title_priority_tags_and_token() {
        let rx = Receiver::start(vec![Reply::status(200)]).await;
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::from_config(&NotifierConfig::Ntfy(TargetConfig {
            url: Some(rx.url.clone()),
            token_file: file(dir.path(), "token", "tk_abc\n"),
            ..target("phone")
        }))
        .unwrap();
        n.notify(&down()).await.unwrap();
        let c = &rx.calls()[0];
        assert_eq!(String::from_utf8(c.body.clone()).unwrap(), down().summary());
        assert_eq!(c.header("title"), Some("sitewatch home: site down"));
        assert_eq!(c.header("priority"), Some("5"));
        assert_eq!(c.header("tags"), Some("rotating_light"));
        assert_eq!(c.header("authorization"), Some("Bearer tk_abc"));
        assert!(c.header("content-type").unwrap().starts_with("text/plain"));
    }

    #[tokio::test]
    async fn a_generic_webhook_gets_the_event_signed() {
        let dir = tempfile::tempdir().unwrap();
        let rx = Receiver::start_verifying(Some(b"pager-key".to_vec()), vec![Reply::status(200)]).await;
        let n = Notifier::from_config(&NotifierConfig::Webhook(TargetConfig {
            url: Some(rx.url.clone()),
            secret_file: file(dir.path(), "secret", "pager-key"),
            ..target("pager")
        }))
        .unwrap();
        n.notify(&down()).await.unwrap();
        let c = &rx.calls()[0];
        verify_standard_webhook(b"pager-key", c).unwrap();
        let sent: Event = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(sent, down());
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_a_404_is_not() {
        let rx = Receiver::start(vec![Reply::status(503), Reply::status(408), Reply::status(200)]).await;
        let n = Notifier::from_config(&NotifierConfig::Webhook(TargetConfig {
            url: Some(rx.url.clone()),
            ..target("w")
        }))
        .unwrap();
        n.notify(&down()).await.unwrap();
        assert_eq!(rx.calls().len(), 3);

        let rx = Receiver::start(vec![Reply::status(404)]).await;
        let n = Notifier::from_config(&NotifierConfig::Webhook(TargetConfig {
            url: Some(rx.url.clone()),
            ..target("w")
        }))
        .unwrap();
        let e = n.notify(&down()).await.unwrap_err();
        assert!(matches!(&e, NotifyError::Permanent(why) if why.contains("404")), "{e:?}");
        assert_eq!(rx.calls().len(), 1);
    }

    #[tokio::test]
    async fn a_failure_never_shows_the_url_and_its_token() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{port}/api/webhooks/1/SECRETTOKEN");
        let n = Notifier::from_config(&NotifierConfig::Discord(TargetConfig {
            url_file: file(dir.path(), "url", &url),
            ..target("d")
        }))
        .unwrap();
        let e = n.notify(&down()).await.unwrap_err();
        assert!(matches!(e, NotifyError::Exhausted { attempts: 3, .. }), "{e:?}");
        assert!(!e.to_string().contains("SECRETTOKEN"), "{e}");
        assert!(!format!("{e:?}").contains("SECRETTOKEN"), "{e:?}");
    }
}
