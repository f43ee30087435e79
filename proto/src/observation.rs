//! One agent's view of its site at one moment: what it sends the leader about once a
//! second and what its own status shows.

use serde::{Deserialize, Serialize};

use crate::host::HostFacts;
use crate::link::{LinkSummary, ProbeStatus};
use crate::ups::{Power, UpsReading};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The observing member's name.
    pub node: String,
    /// One per observation, from 1 at each agent start; with `host.boot_id` it tells a
    /// fresh observation from a replayed or reordered one.
    pub seq: u64,
    /// The agent's wall clock when taken, for display; freshness is judged by the
    /// receiver's own clock on arrival, never by this.
    pub taken_at_unix_ms: u64,
    /// The agent's monotonic clock (ms since it started) when taken; the UPS readings'
    /// times are on the same clock, so their age at this moment is exact.
    pub clock_ms: u64,
    pub host: HostFacts,
    /// Every UPS this agent reads, whichever hosts they feed.
    pub ups: Vec<UpsReading>,
    /// This host's power, from the fresh readings of the UPSes that feed it.
    pub power: Power,
    /// How long `power` has been what it is: on the agent's clock, plus, after a restart
    /// within one boot that found the same power, how long it had been so before.
    #[serde(default)]
    pub power_for_ms: u64,
    /// While on battery: what the feeding UPSes say about what is left.
    #[serde(default)]
    pub battery: Option<BatterySummary>,
    /// Link quality to each configured `[[probe]]` target, in config order.
    pub probes: Vec<ProbeStatus>,
    /// The cluster connections the verdict judges, from the quorum's own pings: an
    /// agent's to each witness, a witness's to each agent (filled in by the daemon, which
    /// owns the connections).
    #[serde(default)]
    pub peers: Vec<PeerLink>,
}

/// The feeding UPSes' word on how long a host on battery has left.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatterySummary {
    /// Flags that mean "shutting down now", e.g. `LB:rack-ups`, `FSD:rack-ups`.
    pub critical: Vec<String>,
    /// The largest runtime any feeding UPS reports (the host lives as long as its best feed).
    pub runtime_s: Option<u64>,
    pub charge_pct: Option<f64>,
}

/// This node's cluster connection to one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerLink {
    pub name: String,
    pub connected: bool,
    pub link: LinkSummary,
    /// Milliseconds since anything arrived from the peer; `None` if nothing ever did.
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
}
