//! What a running daemon costs: RSS and CPU from /proc, bytes from its status report's
//! per-peer transport counters (TLS included). Shared by the footprint benchmarks.

use serde_json::Value;

/// USER_HZ on Linux: the unit of utime and stime in /proc/PID/stat.
pub const TICKS_PER_S: f64 = 100.0;

pub struct Sample {
    pub rss_kb: u64,
    /// utime + stime, in [`TICKS_PER_S`] ticks.
    pub cpu_ticks: u64,
}

pub fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start after ") ".
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("stat").1.split_whitespace().collect();
    let cpu_ticks = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Sample { rss_kb, cpu_ticks }
}

/// Percent of one core between two samples `elapsed_s` apart.
pub fn cpu_percent(before: &Sample, after: &Sample, elapsed_s: f64) -> f64 {
    after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / TICKS_PER_S / elapsed_s * 100.0
}

/// Bytes both ways with the connected peers that `keep` selects, by peer name.
pub fn peer_bytes_by(status: &Value, keep: impl Fn(&Value) -> bool) -> Vec<(String, u64)> {
    status["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["connected"] == true && keep(p))
                .map(|p| {
                    let name = p["name"].as_str().unwrap_or_default().to_owned();
                    let bytes =
                        p["bytes_sent"].as_u64().unwrap_or(0) + p["bytes_received"].as_u64().unwrap_or(0);
                    (name, bytes)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes both ways with every connected peer.
pub fn peer_bytes(status: &Value) -> u64 {
    peer_bytes_by(status, |_| true).iter().map(|(_, b)| b).sum()
}

pub fn connected_peers(status: &Value) -> usize {
    status["peers"].as_array().map_or(0, |ps| ps.iter().filter(|p| p["connected"] == true).count())
}

/// The machine's load averages over 1, 5 and 15 minutes, as /proc/loadavg gives them: a
/// benchmark prints them so a figure taken on a busy machine says so.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
