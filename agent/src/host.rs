//! Host facts: uptime, boot id, load, memory through sysinfo, and whether the host is
//! on its way down, from the files systemd and pam_nologin leave under /run.

use std::path::PathBuf;

use sitewatch_proto::host::{GoingDown, HostFacts};
use sysinfo::{MemoryRefreshKind, RefreshKind, System};

/// Where the facts sysinfo does not give come from; tests point these elsewhere.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub boot_id: PathBuf,
    pub shutdown_scheduled: PathBuf,
    pub nologin: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            boot_id: "/proc/sys/kernel/random/boot_id".into(),
            shutdown_scheduled: "/run/systemd/shutdown/scheduled".into(),
            nologin: "/run/nologin".into(),
        }
    }
}

pub struct HostReader {
    system: System,
    paths: HostPaths,
    boot_id: Option<String>,
}

impl HostReader {
    pub fn new(paths: HostPaths) -> HostReader {
        // Memory only: refreshing processes or CPUs would cost far more than it tells.
        let system =
            System::new_with_specifics(RefreshKind::nothing().with_memory(MemoryRefreshKind::everything()));
        let boot_id = std::fs::read_to_string(&paths.boot_id).ok().map(|s| s.trim().to_string());
        HostReader { system, paths, boot_id }
    }

    /// This boot's id, read once at start.
    pub fn boot_id(&self) -> Option<&str> {
        self.boot_id.as_deref()
    }

    /// Read the facts now. `stopping` says whether the agent itself is shutting down.
    pub fn read(&mut self, stopping: bool) -> HostFacts {
        self.system.refresh_memory();
        let load = System::load_average();
        HostFacts {
            hostname: System::host_name(),
            boot_id: self.boot_id.clone(),
            uptime_s: System::uptime(),
            load: [load.one, load.five, load.fifteen],
            memory_total_kib: self.system.total_memory() / 1024,
            memory_available_kib: self.system.available_memory() / 1024,
            going_down: self.going_down(stopping),
        }
    }

    fn going_down(&self, stopping: bool) -> Option<GoingDown> {
        if let Ok(text) = std::fs::read_to_string(&self.paths.shutdown_scheduled) {
            return Some(parse_schedule(&text));
        }
        if self.paths.nologin.exists() {
            return Some(GoingDown::LoginsRefused);
        }
        stopping.then_some(GoingDown::AgentStopping)
    }
}

/// systemd-shutdownd's schedule file: `USEC=<unix microseconds>` and `MODE=poweroff`.
fn parse_schedule(text: &str) -> GoingDown {
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
    GoingDown::ShutdownScheduled {
        mode: field("MODE=").unwrap_or("unknown").to_string(),
        at_unix_ms: field("USEC=").and_then(|v| v.parse::<u64>().ok()).map(|us| us / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &std::path::Path) -> HostPaths {
        HostPaths {
            boot_id: dir.join("boot_id"),
            shutdown_scheduled: dir.join("scheduled"),
            nologin: dir.join("nologin"),
        }
    }

    #[test]
    fn reads_real_facts_of_this_host() {
        let facts = HostReader::new(HostPaths::default()).read(false);
        assert!(facts.uptime_s > 0);
        assert!(facts.memory_total_kib > 0 && facts.memory_available_kib <= facts.memory_total_kib);
        let boot_id = facts.boot_id.expect("Linux has a boot id");
        assert_eq!(boot_id.len(), 36, "{boot_id}");
        assert!(facts.load.iter().all(|l| *l >= 0.0));
    }

    #[test]
    fn a_scheduled_shutdown_wins_over_nologin_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let mut reader = HostReader::new(p.clone());
        assert_eq!(reader.read(false).going_down, None);
        assert_eq!(reader.read(true).going_down, Some(GoingDown::AgentStopping));
        std::fs::write(&p.nologin, "").unwrap();
        assert_eq!(reader.read(true).going_down, Some(GoingDown::LoginsRefused));
        std::fs::write(&p.shutdown_scheduled, "USEC=1795440000123456\nWARN_WALL=1\nMODE=poweroff\n").unwrap();
        assert_eq!(
            reader.read(false).going_down,
            Some(GoingDown::ShutdownScheduled {
                mode: "poweroff".into(),
                at_unix_ms: Some(1_795_440_000_123)
            })
        );
    }

    #[test]
    fn a_garbled_schedule_still_says_going_down() {
        assert_eq!(
            parse_schedule("garbage\n"),
            GoingDown::ShutdownScheduled { mode: "unknown".into(), at_unix_ms: None }
        );
    }
}
