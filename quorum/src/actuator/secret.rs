//! Secrets (webhook keys, notifier URLs that embed tokens, AWS secret keys) come from a
//! file or an environment variable, never from the config text itself, and never reach
//! a log: their Debug prints `<redacted>`.

use std::fmt;
use std::path::PathBuf;

/// Where a secret is read from: a config's `<name>-file` or `<name>-env` key, exactly one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSource {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

impl SecretSource {
    pub fn file(path: impl Into<PathBuf>) -> SecretSource {
        SecretSource { file: Some(path.into()), env: None }
    }

    pub fn env(name: impl Into<String>) -> SecretSource {
        SecretSource { file: None, env: Some(name.into()) }
    }

    pub fn is_set(&self) -> bool {
        self.file.is_some() || self.env.is_some()
    }

    /// `Some(why)` unless exactly one source is given.
    pub fn problem(&self, required: bool) -> Option<String> {
        match (&self.file, &self.env) {
            (Some(_), Some(_)) => {
                Some("give the secret as a file or an environment variable, not both".into())
            }
            (None, None) if required => Some("is required (as a file or an environment variable)".into()),
            (_, Some(name)) if name.trim().is_empty() => {
                Some("the environment variable name is empty".into())
            }
            _ => None,
        }
    }

    /// Read the secret. A file's trailing newline is dropped (editors add one).
    pub fn load(&self) -> Result<Secret, String> {
        let text = match (&self.file, &self.env) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?,
            (None, Some(name)) => {
                std::env::var(name).map_err(|e| format!("cannot read the secret from ${name}: {e}"))?
            }
            (None, None) => return Err("no secret source is configured".into()),
        };
        let text = text.trim_end_matches(['\n', '\r']).to_owned();
        if text.is_empty() {
            return Err(match (&self.file, &self.env) {
                (Some(path), _) => format!("the secret file {} is empty", path.display()),
                (_, name) => format!("${} is empty", name.as_deref().unwrap_or_default()),
            });
        }
        Ok(Secret(text))
    }
}

/// A secret value in memory. Only `expose` gives it out, so every use is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("whsec_c2VjcmV0");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&s)), "Some(<redacted>)");
    }

    #[test]
    fn a_file_secret_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(SecretSource::file(&path).load().unwrap().expose(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(SecretSource::file(&path).load().unwrap_err().contains("is empty"));
        let missing = SecretSource::file(dir.path().join("nope")).load().unwrap_err();
        assert!(missing.contains("cannot read the secret file"), "{missing}");
    }

    #[test]
    fn an_environment_secret_is_read() {
        // PATH is set wherever tests run; setting a variable would need unsafe code.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(SecretSource::env("PATH").load().unwrap().expose(), path);
        let e = SecretSource::env("SITEWATCH_TEST_SURELY_UNSET").load().unwrap_err();
        assert!(e.contains("$SITEWATCH_TEST_SURELY_UNSET"), "{e}");
    }

    #[test]
    fn exactly_one_source() {
        assert!(SecretSource::default().problem(true).is_some());
        assert!(SecretSource::default().problem(false).is_none());
        let both = SecretSource { file: Some("/a".into()), env: Some("B".into()) };
        assert!(both.problem(false).unwrap().contains("not both"));
        assert!(SecretSource::env("X").problem(true).is_none());
    }
}
