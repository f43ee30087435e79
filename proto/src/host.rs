//! What an agent reports about its own host, besides power and links.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: Option<String>,
    /// Changes at every boot: a new boot id with a short uptime means the host restarted.
    pub boot_id: Option<String>,
    pub uptime_s: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub memory_total_kib: u64,
    pub memory_available_kib: u64,
    /// Set when the host is on its way down on purpose: the leader can tell a host that
    /// is shutting down (UPS-driven or by an operator) from one that vanished.
    pub going_down: Option<GoingDown>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "why")]
pub enum GoingDown {
    /// `shutdown` scheduled a power-off, halt or reboot (systemd's schedule file).
    ShutdownScheduled { mode: String, at_unix_ms: Option<u64> },
    /// Logins are refused (`/run/nologin`): a shutdown is minutes away or under way.
    LoginsRefused,
    /// The agent itself was told to stop.
    AgentStopping,
}
