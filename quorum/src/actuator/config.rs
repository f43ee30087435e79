//! `[[actuator]]` tables: what each kind needs, with defaults, and a validation pass that
//! names the offending key. Secrets appear only as `*-file` / `*-env` keys.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::retry::RetryPolicy;
use super::secret::SecretSource;

/// One `[[actuator]]` table, chosen by its `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ActuatorConfig {
    Webhook(WebhookConfig),
    Exec(ExecConfig),
    AwsAsg(AsgConfig),
    DryRun(DryRunConfig),
}

/// POST the action as JSON, signed the Standard Webhooks way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// The signing secret: `whsec_` + base64 (Standard Webhooks) or raw bytes.
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    /// Per attempt.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "five")]
    pub max_attempts: u32,
    #[serde(default = "half_second", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// Run a program (no shell) with the action in its environment and on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExecConfig {
    pub name: String,
    /// argv: the program (an absolute path) and its arguments.
    pub command: Vec<String>,
    /// Per attempt; then SIGTERM, and SIGKILL `kill-grace` later.
    #[serde(default = "sixty_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub kill_grace: Duration,
    /// Exit status 75 (EX_TEMPFAIL) asks for another attempt.
    #[serde(default = "three")]
    pub max_attempts: u32,
    #[serde(default = "one_second", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// Set an AWS Auto Scaling group's desired capacity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AsgConfig {
    pub name: String,
    pub region: String,
    pub group: String,
    /// Another endpoint than `https://autoscaling.<region>.amazonaws.com/` (a test server).
    pub endpoint: Option<String>,
    /// The access key id is not a secret: it may stand inline. With none of the three,
    /// `$AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    pub access_key_id_env: Option<String>,
    /// With neither, `$AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key_file: Option<PathBuf>,
    pub secret_access_key_env: Option<String>,
    /// Temporary credentials; with neither, `$AWS_SESSION_TOKEN` when it is set.
    pub session_token_file: Option<PathBuf>,
    pub session_token_env: Option<String>,
    /// Per request.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    /// After SetDesiredCapacity, read the group back until it shows the target, this long.
    #[serde(default = "sixty_seconds", with = "humantime_serde")]
    pub converge_timeout: Duration,
    #[serde(default = "five")]
    pub max_attempts: u32,
    #[serde(default = "half_second", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "twenty_seconds", with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// Log what would be done; change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DryRunConfig {
    pub name: String,
}

const fn three() -> u32 {
    3
}
const fn five() -> u32 {
    5
}
const fn half_second() -> Duration {
    Duration::from_millis(500)
}
const fn one_second() -> Duration {
    Duration::from_secs(1)
}
const fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
const fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
const fn twenty_seconds() -> Duration {
    Duration::from_secs(20)
}
const fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
const fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}

impl WebhookConfig {
    pub fn secret(&self) -> SecretSource {
        SecretSource { file: self.secret_file.clone(), env: self.secret_env.clone() }
    }

    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy::new(self.max_attempts, self.initial_backoff, self.max_backoff)
    }
}

impl ExecConfig {
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy::new(self.max_attempts, self.initial_backoff, self.max_backoff)
    }
}

impl AsgConfig {
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy::new(self.max_attempts, self.initial_backoff, self.max_backoff)
    }

    /// The endpoint requests go to.
    pub fn endpoint_url(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| format!("https://autoscaling.{}.amazonaws.com/", self.region))
    }

    pub fn secret_access_key(&self) -> SecretSource {
        match (&self.secret_access_key_file, &self.secret_access_key_env) {
            (None, None) => SecretSource::env("AWS_SECRET_ACCESS_KEY"),
            (file, env) => SecretSource { file: file.clone(), env: env.clone() },
        }
    }

    /// `None`: no session token unless `$AWS_SESSION_TOKEN` is set.
    pub fn session_token(&self) -> Option<SecretSource> {
        match (&self.session_token_file, &self.session_token_env) {
            (None, None) => None,
            (file, env) => Some(SecretSource { file: file.clone(), env: env.clone() }),
        }
    }
}

impl ActuatorConfig {
    pub fn name(&self) -> &str {
        match self {
            ActuatorConfig::Webhook(c) => &c.name,
            ActuatorConfig::Exec(c) => &c.name,
            ActuatorConfig::AwsAsg(c) => &c.name,
            ActuatorConfig::DryRun(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ActuatorConfig::Webhook(_) => "webhook",
            ActuatorConfig::Exec(_) => "exec",
            ActuatorConfig::AwsAsg(_) => "aws-asg",
            ActuatorConfig::DryRun(_) => "dry-run",
        }
    }

    /// `Some((key, why))` for the first problem in this table. Files and variables are not
    /// read here (that is `Actuator::from_config`'s work, at start).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(why) = check_name(self.name()) {
            return Some(("name", why));
        }
        match self {
            ActuatorConfig::Webhook(c) => {
                if let Some(why) = check_http_url(&c.url) {
                    return Some(("url", why));
                }
                if let Some(why) = c.secret().problem(true) {
                    return Some((
                        secret_key(&c.secret_file, &c.secret_env, "secret-file", "secret-env"),
                        why,
                    ));
                }
                positive(c.timeout, "timeout").or_else(|| c.retry().problem())
            }
            ActuatorConfig::Exec(c) => {
                let Some(program) = c.command.first() else {
                    return Some((
                        "command",
                        "needs the program to run, e.g. [\"/usr/local/bin/burst\"]".into(),
                    ));
                };
                if !program.starts_with('/') {
                    return Some((
                        "command",
                        format!("`{program}` must be an absolute path (no shell, no PATH lookup)"),
                    ));
                }
                positive(c.timeout, "timeout").or_else(|| c.retry().problem())
            }
            ActuatorConfig::AwsAsg(c) => {
                if c.region.trim().is_empty()
                    || !c.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Some(("region", format!("`{}` is not a region name like eu-west-1", c.region)));
                }
                if c.group.trim().is_empty() {
                    return Some(("group", "must not be empty".into()));
                }
                if let Some(why) = c.endpoint.as_deref().and_then(check_http_url) {
                    return Some(("endpoint", why));
                }
                let id_sources = [
                    c.access_key_id.is_some(),
                    c.access_key_id_file.is_some(),
                    c.access_key_id_env.is_some(),
                ];
                if id_sources.iter().filter(|s| **s).count() > 1 {
                    return Some((
                        "access-key-id",
                        "give one of access-key-id, access-key-id-file and access-key-id-env".into(),
                    ));
                }
                let key = c.secret_access_key();
                if let Some(why) = key.problem(true) {
                    let at =
                        secret_key(&key.file, &key.env, "secret-access-key-file", "secret-access-key-env");
                    return Some((at, why));
                }
                if let Some(why) = c.session_token().and_then(|t| t.problem(true)) {
                    return Some(("session-token-file", why));
                }
                positive(c.timeout, "timeout")
                    .or_else(|| positive(c.converge_timeout, "converge-timeout"))
                    .or_else(|| c.retry().problem())
            }
            ActuatorConfig::DryRun(_) => None,
        }
    }
}

/// Check every `[[actuator]]`: `Err((index, key, why))`, for the config's validation to
/// locate as `actuator[index+1].key`.
pub fn check_actuators(all: &[ActuatorConfig]) -> Result<(), (usize, &'static str, String)> {
    let mut names = HashSet::new();
    for (i, a) in all.iter().enumerate() {
        if let Some((key, why)) = a.problem() {
            return Err((i, key, why));
        }
        if !names.insert(a.name()) {
            return Err((i, "name", format!("`{}` appears twice", a.name())));
        }
    }
    Ok(())
}

/// Names show in logs and status: keep them short and plain.
pub(crate) fn check_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    (!ok).then(|| format!("`{name}` is not a valid name: use 1-64 letters, digits, `-`, `_` or `.`"))
}

pub(crate) fn check_http_url(url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => None,
        Ok(_) => Some(format!("`{url}` is not an http or https URL")),
        Err(e) => Some(format!("`{url}` is not a URL: {e}")),
    }
}

/// The key to blame for a secret source problem: the one that is set, else the file key.
pub(crate) fn secret_key<A, B>(
    file: &Option<A>,
    env: &Option<B>,
    file_key: &'static str,
    env_key: &'static str,
) -> &'static str {
    if file.is_none() && env.is_some() { env_key } else { file_key }
}

fn positive(d: Duration, key: &'static str) -> Option<(&'static str, String)> {
    d.is_zero().then(|| (key, "must be above zero".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        actuator: Vec<ActuatorConfig>,
    }

    fn parse(text: &str) -> Result<Vec<ActuatorConfig>, String> {
        toml::from_str::<Doc>(text).map(|d| d.actuator).map_err(|e| e.to_string())
    }

    pub(crate) const EXAMPLES: &str = r#"
[[actuator]]
kind = "webhook"
name = "burst-hook"
url = "https://ops.example.net/burst"
secret-file = "/etc/sitewatch/webhook.secret"
timeout = "5s"
max-attempts = 6

[[actuator]]
kind = "exec"
name = "script"
command = ["/usr/local/bin/burst", "--site", "home"]
timeout = "2m"
kill-grace = "10s"

[[actuator]]
kind = "aws-asg"
name = "cloud"
region = "eu-west-1"
group = "burst-asg"
secret-access-key-file = "/etc/sitewatch/aws.secret"
access-key-id = "AKIDEXAMPLE"

[[actuator]]
kind = "dry-run"
name = "log-only"
"#;

    #[test]
    fn every_kind_parses_with_defaults() {
        let all = parse(EXAMPLES).unwrap();
        check_actuators(&all).unwrap();
        let ActuatorConfig::Webhook(w) = &all[0] else { panic!("webhook") };
        assert_eq!(
            (w.timeout, w.max_attempts, w.max_backoff),
            (Duration::from_secs(5), 6, Duration::from_secs(30))
        );
        let ActuatorConfig::Exec(e) = &all[1] else { panic!("exec") };
        assert_eq!(
            (e.timeout, e.kill_grace, e.max_attempts),
            (Duration::from_secs(120), Duration::from_secs(10), 3)
        );
        let ActuatorConfig::AwsAsg(a) = &all[2] else { panic!("asg") };
        assert_eq!(a.endpoint_url(), "https://autoscaling.eu-west-1.amazonaws.com/");
        assert_eq!(a.session_token(), None);
        assert_eq!(a.secret_access_key(), SecretSource::file("/etc/sitewatch/aws.secret"));
        assert_eq!(all[3].kind(), "dry-run");
    }

    #[test]
    fn an_inline_secret_or_unknown_key_is_refused() {
        let e = parse(
            "[[actuator]]\nkind = \"webhook\"\nname = \"a\"\nurl = \"http://x/\"\nsecret = \"hunter2\"\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown field `secret`"), "{e}");
        let e = parse("[[actuator]]\nkind = \"aws-asg\"\nname = \"a\"\nregion = \"r\"\ngroup = \"g\"\nsecret-access-key = \"x\"\n")
            .unwrap_err();
        assert!(e.contains("unknown field `secret-access-key`"), "{e}");
        let e = parse("[[actuator]]\nkind = \"lambda\"\nname = \"a\"\n").unwrap_err();
        assert!(e.contains("lambda"), "{e}");
    }

    #[test]
    fn problems_name_their_key() {
        let base = parse(EXAMPLES).unwrap();
        let with = |i: usize, edit: &dyn Fn(&mut ActuatorConfig)| {
            let mut all = base.clone();
            edit(&mut all[i]);
            let (index, key, _) = check_actuators(&all).unwrap_err();
            (index, key)
        };
        let cases = vec![
            (
                (0, "url"),
                with(0, &|a| {
                    if let ActuatorConfig::Webhook(w) = a {
                        w.url = "ftp://x/".into()
                    }
                }),
            ),
            (
                (0, "secret-file"),
                with(0, &|a| {
                    if let ActuatorConfig::Webhook(w) = a {
                        w.secret_file = None
                    }
                }),
            ),
            (
                (0, "secret-env"),
                with(0, &|a| {
                    if let ActuatorConfig::Webhook(w) = a {
                        w.secret_file = None;
                        w.secret_env = Some(" ".into());
                    }
                }),
            ),
            (
                (0, "max-attempts"),
                with(0, &|a| {
                    if let ActuatorConfig::Webhook(w) = a {
                        w.max_attempts = 0
                    }
                }),
            ),
            (
                (1, "command"),
                with(1, &|a| {
                    if let ActuatorConfig::Exec(e) = a {
                        e.command = vec!["burst".into()]
                    }
                }),
            ),
            (
                (1, "command"),
                with(1, &|a| {
                    if let ActuatorConfig::Exec(e) = a {
                        e.command.clear()
                    }
                }),
            ),
            (
                (1, "timeout"),
                with(1, &|a| {
                    if let ActuatorConfig::Exec(e) = a {
                        e.timeout = Duration::ZERO
                    }
                }),
            ),
            (
                (2, "region"),
                with(2, &|a| {
                    if let ActuatorConfig::AwsAsg(c) = a {
                        c.region = "eu west".into()
                    }
                }),
            ),
            (
                (2, "access-key-id"),
                with(2, &|a| {
                    if let ActuatorConfig::AwsAsg(c) = a {
                        c.access_key_id_env = Some("K".into())
                    }
                }),
            ),
            (
                (2, "endpoint"),
                with(2, &|a| {
                    if let ActuatorConfig::AwsAsg(c) = a {
                        c.endpoint = Some("x".into())
                    }
                }),
            ),
            (
                (3, "name"),
                with(3, &|a| {
                    if let ActuatorConfig::DryRun(d) = a {
                        d.name = "cloud".into()
                    }
                }),
            ),
            (
                (3, "name"),
                with(3, &|a| {
                    if let ActuatorConfig::DryRun(d) = a {
                        d.name = "a b".into()
                    }
                }),
            ),
        ];
        for (want, got) in cases {
            assert_eq!(want, got);
        }
    }
}
