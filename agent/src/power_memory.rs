//! Since when this host's power has been what it is, kept across agent restarts within
//! one boot. An agent restarted during an outage (an upgrade, an OOM kill) would otherwise
//! count its host's time on battery from 0 and delay the burst by up to burst-after.
//!
//! Times are on the boot clock (/proc/uptime: monotonic, counts suspend, restarts at
//! boot), tagged with the boot id, so a wall-clock step never moves them and a record
//! from an earlier boot is never taken for this one.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sitewatch_proto::ups::Power;
use sitewatch_quorum::kept::Kept;
use tracing::warn;

/// What one agent remembered when its host's power last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub boot_id: String,
    pub power: Power,
    /// When it changed: milliseconds since boot.
    pub since_boot_ms: u64,
}

/// The file under the agent's data directory.
pub struct PowerMemory {
    kept: Kept,
}

impl PowerMemory {
    pub fn in_dir(data_dir: &Path) -> PowerMemory {
        PowerMemory { kept: Kept::at(data_dir.join("power-since.json")) }
    }

    /// The last run's record, if there is a readable one (a missing or corrupt file: the
    /// timer starts at 0, as it would have without this file).
    pub fn load(&self) -> Option<Remembered> {
        self.kept.load()
    }

    /// Keep `r`; a failure is logged, not fatal: only the carry-over is lost.
    pub fn save(&self, r: &Remembered) {
        if let Err(e) = self.kept.save(r) {
            warn!(path = %self.kept.path().display(), error = %e, "cannot keep the power state for a restart");
        }
    }
}

/// Milliseconds since boot, from /proc/uptime (10 ms resolution).
pub fn boot_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// How long before now (boot clock) `power` began, if the record says so: the same boot,
/// the same power, and not in the future.
pub fn carried_over(r: &Remembered, boot_id: &str, power: Power, now_boot_ms: u64) -> Option<u64> {
    (r.boot_id == boot_id && r.power == power && power != Power::Unknown)
        .then(|| now_boot_ms.checked_sub(r.since_boot_ms))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(power: Power, since_boot_ms: u64) -> Remembered {
        Remembered { boot_id: "b1".into(), power, since_boot_ms }
    }

    #[test]
    fn carried_over_only_within_the_boot_for_the_same_power() {
        let r = record(Power::Battery, 10_000);
        assert_eq!(carried_over(&r, "b1", Power::Battery, 25_000), Some(15_000));
        assert_eq!(carried_over(&r, "b2", Power::Battery, 25_000), None, "another boot");
        assert_eq!(carried_over(&r, "b1", Power::Line, 25_000), None, "power changed meanwhile");
        assert_eq!(carried_over(&r, "b1", Power::Battery, 9_000), None, "from the future");
        let unknown = record(Power::Unknown, 10_000);
        assert_eq!(carried_over(&unknown, "b1", Power::Unknown, 25_000), None, "unknown is no news");
    }

    #[test]
    fn kept_and_found_again_and_a_corrupt_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let memory = PowerMemory::in_dir(dir.path());
        assert_eq!(memory.load(), None, "first start");
        let r = record(Power::Battery, 42);
        memory.save(&r);
        assert_eq!(memory.load(), Some(r));
        std::fs::write(dir.path().join("power-since.json"), b"{\"boot_id\": \"b1\", \"pow").unwrap();
        assert_eq!(memory.load(), None);
    }

    #[test]
    fn the_boot_clock_is_readable() {
        assert!(boot_ms().is_some_and(|ms| ms > 0));
    }
}
