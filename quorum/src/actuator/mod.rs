//! Actuators: what brings a committed decision about. The leader of the term that
//! committed a decision hands each configured actuator an [`Action`] carrying the
//! decision's fencing token and idempotency key; the actuator retries inside
//! [`Actuator::apply`] by its own kind's rules. Desired capacity is absolute, so applying
//! an action twice is harmless.
//!
//! A caller cancels an apply by dropping its future (a newer decision superseded it, or
//! leadership was lost): every kind is cancel-safe and leaves no child process behind.

pub mod asg;
pub mod config;
pub mod dry_run;
pub mod exec;
pub mod http;
pub mod retry;
pub mod secret;
pub mod sigv4;
pub mod webhook;

use std::sync::{Mutex, PoisonError};

use sitewatch_proto::state::FencingToken;
use tracing::info;

pub use config::{ActuatorConfig, AsgConfig, DryRunConfig, ExecConfig, WebhookConfig, check_actuators};
pub use retry::RetryPolicy;
pub use secret::{Secret, SecretSource};

/// The action type is the sans-IO core's: the burst duties build it from a committed
/// decision, and its JSON is the webhook body and the exec hook's stdin.
pub use sitewatch_proto::burst::Action;

/// What an apply found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        detail: String,
    },
    /// The target already held the desired state.
    AlreadyThere {
        detail: String,
    },
    /// Deliberately not done: a unilateral action that would scale down, or a token older
    /// than one this actuator already applied.
    Skipped {
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActuatorError {
    /// Retrying cannot help: a 4xx, a failing hook, an unknown group, a bad signature.
    #[error("{0}")]
    Permanent(String),
    /// Every attempt met a transient failure; `last` is the final one.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    /// The configuration cannot work (an unreadable secret, a bad URL).
    #[error("configuration: {0}")]
    Config(String),
}

impl From<retry::GaveUp> for ActuatorError {
    fn from(g: retry::GaveUp) -> Self {
        match g {
            retry::GaveUp::Permanent(why) => ActuatorError::Permanent(why),
            retry::GaveUp::Exhausted { attempts, last } => ActuatorError::Exhausted { attempts, last },
        }
    }
}

/// One configured actuator, its secrets loaded.
#[derive(Debug)]
pub struct Actuator {
    name: String,
    kind: Kind,
    /// The newest committed token this actuator was handed: an older one is refused, so
    /// a late apply from a superseded decision cannot undo a newer one.
    newest: Mutex<Option<FencingToken>>,
}

#[derive(Debug)]
enum Kind {
    Webhook(Box<webhook::Webhook>),
    Exec(exec::Exec),
    Asg(Box<asg::Asg>),
    DryRun,
}

impl Actuator {
    /// Build from a validated table, reading its secrets from their files or variables.
    pub fn from_config(cfg: &ActuatorConfig) -> Result<Actuator, ActuatorError> {
        if let Some((key, why)) = cfg.problem() {
            return Err(ActuatorError::Config(format!("`{key}`: {why}")));
        }
        let kind = match cfg {
            ActuatorConfig::Webhook(c) => Kind::Webhook(Box::new(webhook::Webhook::from_config(c)?)),
            ActuatorConfig::Exec(c) => Kind::Exec(exec::Exec::from_config(c)),
            ActuatorConfig::AwsAsg(c) => Kind::Asg(Box::new(asg::Asg::from_config(c)?)),
            ActuatorConfig::DryRun(_) => Kind::DryRun,
        };
        Ok(Actuator { name: cfg.name().to_owned(), kind, newest: Mutex::new(None) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bring `action` about, retrying inside by the kind's rules. Cancel-safe: drop the
    /// future to abandon it (an exec hook's process group is killed).
    pub async fn apply(&self, action: &Action) -> Result<Outcome, ActuatorError> {
        if action.unilateral && action.desired_capacity < action.previous_capacity {
            // The fallback has no authority to take capacity away, whatever built the action.
            return Ok(Outcome::Skipped {
                detail: format!(
                    "unilateral action would scale down ({} -> {}); only a committed decision may",
                    action.previous_capacity, action.desired_capacity
                ),
            });
        }
        if !action.unilateral {
            // A poisoned lock only means another apply panicked; the token in it is sound.
            let mut newest = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(newer) = newest.filter(|n| *n > action.token) {
                return Ok(Outcome::Skipped {
                    detail: format!(
                        "superseded: term {} index {} is older than term {} index {}",
                        action.token.term, action.token.index, newer.term, newer.index
                    ),
                });
            }
            *newest = Some(action.token);
        }
        info!(
            actuator = %self.name,
            key = %action.idempotency_key,
            desired = action.desired_capacity,
            unilateral = action.unilateral,
            "applying"
        );
        match &self.kind {
            Kind::Webhook(w) => w.apply(&self.name, action).await,
            Kind::Exec(e) => e.apply(&self.name, action).await,
            Kind::Asg(a) => a.apply(&self.name, action).await,
            Kind::DryRun => Ok(dry_run::apply(&self.name, action)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sitewatch_proto::state::{FencingToken, Verdict};

    pub(crate) fn action(desired: u32, previous: u32) -> Action {
        let token = FencingToken { term: 3, index: 41 };
        Action {
            cluster_id: "home".into(),
            token,
            idempotency_key: token.idempotency_key("home"),
            verdict: Verdict::Down,
            previous_verdict: Verdict::Degraded,
            desired_capacity: desired,
            previous_capacity: previous,
            reasons: vec!["ups-on-battery:site".into(), "hosts-lost:2/3".into()],
            decided_at_ms: 1_700_000_000_000,
            spend_level: 0,
            unilateral: false,
            dry_run: false,
        }
    }

    #[test]
    fn the_action_json_is_stable() {
        let json = serde_json::to_value(action(3, 0)).unwrap();
        assert_eq!(json["token"], serde_json::json!({"term": 3, "index": 41}));
        assert_eq!(json["idempotency_key"], "home-3-41");
        assert_eq!(json["verdict"], "down");
        assert_eq!(json["desired_capacity"], 3);
        let back: Action = serde_json::from_value(json).unwrap();
        assert_eq!(back, action(3, 0));
    }

    #[tokio::test]
    async fn an_older_token_than_one_already_applied_is_refused() {
        let dry = Actuator::from_config(&ActuatorConfig::DryRun(DryRunConfig { name: "d".into() })).unwrap();
        let newer = action(3, 0);
        let mut older = action(5, 0);
        older.token = FencingToken { term: 3, index: 40 };
        assert!(matches!(dry.apply(&newer).await, Ok(Outcome::Applied { .. })));
        // The same token again is a retry, not a stale decision.
        assert!(matches!(dry.apply(&newer).await, Ok(Outcome::Applied { .. })));
        let out = dry.apply(&older).await.unwrap();
        assert!(matches!(&out, Outcome::Skipped { detail } if detail.contains("superseded")), "{out:?}");
    }

    #[tokio::test]
    async fn a_unilateral_scale_down_is_skipped_by_every_kind() {
        let dry = Actuator::from_config(&ActuatorConfig::DryRun(DryRunConfig { name: "d".into() })).unwrap();
        let mut a = action(1, 3);
        a.unilateral = true;
        assert!(matches!(dry.apply(&a).await, Ok(Outcome::Skipped { .. })));
        a.unilateral = false;
        assert!(matches!(dry.apply(&a).await, Ok(Outcome::Applied { .. })));
    }
}
