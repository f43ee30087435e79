//! The raft node both sitewatch daemons run: durable log storage, the mutual-TLS
//! transport between members, and the loop that drives raft-rs.

pub mod config;
pub mod daemon;
pub mod duty;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod status;
pub mod storage;
pub mod tls;
pub mod transport;

pub use config::{Config, ConfigError, Member, Role};
pub use node::{Node, NodeSettings, NodeStatus, Output};
pub use storage::{LogStore, MemoryStore, RedbStore};
