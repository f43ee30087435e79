//! The raft node both sitewatch daemons run: durable log storage, the mutual-TLS
//! transport between members, the loop that drives raft-rs, and the actuators and
//! notifiers a leader drives.

pub mod actuator;
pub mod clients;
pub mod config;
pub mod daemon;
pub mod duty;
pub mod kept;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod notifier;
pub mod notify;
pub mod status;
pub mod storage;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
pub mod transport;

pub use actuator::{Action, Actuator, ActuatorConfig, ActuatorError, Outcome};
pub use config::{Config, ConfigError, Member, Role};
pub use node::{Node, NodeSettings, NodeStatus, Output};
pub use notifier::{Event, EventKind, Notifier, NotifierConfig, NotifyError};
pub use storage::{LogStore, MemoryStore, RedbStore};
