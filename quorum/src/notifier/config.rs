//! `[[notify]]` tables. A chat webhook URL carries its token, so Discord and Slack take
//! theirs only from a file or the environment; ntfy and a generic webhook may name a
//! plain URL inline and keep their token or signing secret in a file or variable.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::actuator::RetryPolicy;
use crate::actuator::config::{check_http_url, check_name, secret_key};
use crate::actuator::secret::SecretSource;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NotifierConfig {
    Discord(TargetConfig),
    Slack(TargetConfig),
    Ntfy(TargetConfig),
    Webhook(TargetConfig),
}

/// The keys every notifier kind shares; which are allowed depends on the kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    /// Inline only where the URL holds no token (ntfy, generic webhook).
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    pub url_env: Option<String>,
    /// ntfy: an access token, sent as `Authorization: Bearer`.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// Generic webhook: sign the body the Standard Webhooks way with this secret.
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "four")]
    pub max_attempts: u32,
    #[serde(default = "half_second", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub max_backoff: Duration,
}

const fn four() -> u32 {
    4
}
const fn half_second() -> Duration {
    Duration::from_millis(500)
}
const fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

impl TargetConfig {
    pub fn url_secret(&self) -> SecretSource {
        SecretSource { file: self.url_file.clone(), env: self.url_env.clone() }
    }

    pub fn token(&self) -> SecretSource {
        SecretSource { file: self.token_file.clone(), env: self.token_env.clone() }
    }

    pub fn secret(&self) -> SecretSource {
        SecretSource { file: self.secret_file.clone(), env: self.secret_env.clone() }
    }

    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy::new(self.max_attempts, self.initial_backoff, self.max_backoff)
    }
}

impl NotifierConfig {
    pub fn target(&self) -> &TargetConfig {
        match self {
            NotifierConfig::Discord(t)
            | NotifierConfig::Slack(t)
            | NotifierConfig::Ntfy(t)
            | NotifierConfig::Webhook(t) => t,
        }
    }

    pub fn name(&self) -> &str {
        &self.target().name
    }

    pub fn kind(&self) -> &'static str {
        match self {
            NotifierConfig::Discord(_) => "discord",
            NotifierConfig::Slack(_) => "slack",
            NotifierConfig::Ntfy(_) => "ntfy",
            NotifierConfig::Webhook(_) => "webhook",
        }
    }

    /// `Some((key, why))` for the first problem in this table.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let t = self.target();
        if let Some(why) = check_name(&t.name) {
            return Some(("name", why));
        }
        let token_in_url = matches!(self, NotifierConfig::Discord(_) | NotifierConfig::Slack(_));
        match (&t.url, t.url_secret().is_set()) {
            (Some(_), _) if token_in_url => {
                return Some((
                    "url",
                    format!("a {} webhook URL holds its token: give it as url-file or url-env", self.kind()),
                ));
            }
            (Some(_), true) => return Some(("url", "give one of url, url-file and url-env".into())),
            (Some(url), false) => {
                if let Some(why) = check_http_url(url) {
                    return Some(("url", why));
                }
            }
            (None, _) => {
                if let Some(why) = t.url_secret().problem(true) {
                    return Some((secret_key(&t.url_file, &t.url_env, "url-file", "url-env"), why));
                }
            }
        }
        if !matches!(self, NotifierConfig::Ntfy(_)) && t.token().is_set() {
            return Some((
                secret_key(&t.token_file, &t.token_env, "token-file", "token-env"),
                "is for ntfy only".into(),
            ));
        }
        if !matches!(self, NotifierConfig::Webhook(_)) && t.secret().is_set() {
            return Some((
                secret_key(&t.secret_file, &t.secret_env, "secret-file", "secret-env"),
                "is for the generic webhook only".into(),
            ));
        }
        if let Some(why) = t.token().problem(false) {
            return Some((secret_key(&t.token_file, &t.token_env, "token-file", "token-env"), why));
        }
        if let Some(why) = t.secret().problem(false) {
            return Some((secret_key(&t.secret_file, &t.secret_env, "secret-file", "secret-env"), why));
        }
        if t.timeout.is_zero() {
            return Some(("timeout", "must be above zero".into()));
        }
        t.retry().problem()
    }
}

/// Check every `[[notify]]`: `Err((index, key, why))`, located as `notify[index+1].key`.
pub fn check_notifiers(all: &[NotifierConfig]) -> Result<(), (usize, &'static str, String)> {
    let mut names = HashSet::new();
    for (i, n) in all.iter().enumerate() {
        if let Some((key, why)) = n.problem() {
            return Err((i, key, why));
        }
        if !names.insert(n.name()) {
            return Err((i, "name", format!("`{}` appears twice", n.name())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        notify: Vec<NotifierConfig>,
    }

    pub(crate) const EXAMPLES: &str = r#"
[[notify]]
kind = "discord"
name = "ops-discord"
url-file = "/etc/sitewatch/discord.url"

[[notify]]
kind = "slack"
name = "ops-slack"
url-env = "SITEWATCH_SLACK_URL"

[[notify]]
kind = "ntfy"
name = "phone"
url = "https://ntfy.example.net/home-site"
token-file = "/etc/sitewatch/ntfy.token"
max-attempts = 3

[[notify]]
kind = "webhook"
name = "pager"
url = "https://pager.example.net/hook"
secret-env = "SITEWATCH_PAGER_SECRET"
timeout = "3s"
"#;

    fn parse(text: &str) -> Vec<NotifierConfig> {
        toml::from_str::<Doc>(text).unwrap().notify
    }

    #[test]
    fn every_kind_parses_and_validates() {
        let all = parse(EXAMPLES);
        check_notifiers(&all).unwrap();
        assert_eq!(
            all.iter().map(NotifierConfig::kind).collect::<Vec<_>>(),
            ["discord", "slack", "ntfy", "webhook"]
        );
        assert_eq!(all[2].target().max_attempts, 3);
        assert_eq!(all[3].target().timeout, Duration::from_secs(3));
        assert_eq!(all[0].target().max_attempts, 4);
    }

    #[test]
    fn problems_name_their_key() {
        let all = parse(EXAMPLES);
        let fail = |i: usize, edit: &dyn Fn(&mut TargetConfig)| {
            let mut all = all.clone();
            match &mut all[i] {
                NotifierConfig::Discord(t)
                | NotifierConfig::Slack(t)
                | NotifierConfig::Ntfy(t)
                | NotifierConfig::Webhook(t) => edit(t),
            }
            let (index, key, _) = check_notifiers(&all).unwrap_err();
            (index, key)
        };
        assert_eq!(fail(0, &|t| t.url = Some("https://discord.com/api/webhooks/1/tok".into())), (0, "url"));
        assert_eq!(fail(0, &|t| t.url_file = None), (0, "url-file"));
        assert_eq!(fail(1, &|t| t.url_file = Some("/x".into())), (1, "url-file"));
        assert_eq!(fail(2, &|t| t.url = Some("ntfy.sh/topic".into())), (2, "url"));
        assert_eq!(fail(2, &|t| t.url_env = Some("U".into())), (2, "url"));
        assert_eq!(fail(3, &|t| t.token_env = Some("T".into())), (3, "token-env"));
        assert_eq!(fail(2, &|t| t.secret_file = Some("/s".into())), (2, "secret-file"));
        assert_eq!(fail(3, &|t| t.max_attempts = 0), (3, "max-attempts"));
        assert_eq!(fail(3, &|t| t.name = "phone".into()), (3, "name"));
    }
}
