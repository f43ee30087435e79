//! The `[policy]` table: what counts as down, how long to wait, how much to burst.
//!
//! Defaults follow the design: upssched-like 60 s before a power cut counts, a 30 min
//! cluster-autoscaler-like delay before giving capacity back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A host on battery this long is treated as going dark; shorter is a blip.
    #[serde(with = "humantime_serde")]
    pub burst_after: Duration,
    /// On battery with less runtime than this left counts at once, like LB or FSD.
    #[serde(with = "humantime_serde")]
    pub min_runtime: Duration,
    /// An agent unheard this long (by the node judging) is lost.
    #[serde(with = "humantime_serde")]
    pub host_lost_after: Duration,
    /// The site is down when at least this share of its agents is missing (lost,
    /// shutting down, or out of power) or cut off from the witness.
    pub down_share: f64,
    /// Capacity goes back only after this long of continuous health.
    #[serde(with = "humantime_serde")]
    pub scale_down_after: Duration,
    /// The witness acts alone (scale up only) after this long without word from any agent.
    #[serde(with = "humantime_serde")]
    pub dark_site_after: Duration,
    pub link: LinkThresholds,
    pub capacity: CapacityPolicy,
    pub spend: Option<SpendCap>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            burst_after: Duration::from_secs(60),
            min_runtime: Duration::from_secs(180),
            host_lost_after: Duration::from_secs(30),
            down_share: 0.5,
            scale_down_after: Duration::from_secs(30 * 60),
            dark_site_after: Duration::from_secs(5 * 60),
            link: LinkThresholds::default(),
            capacity: CapacityPolicy::default(),
            spend: None,
        }
    }
}

/// Link quality over each probe window (the last 60 probes or pings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LinkThresholds {
    /// Loss at or above this share makes a link degraded.
    pub degraded_loss: f64,
    /// Loss at or above this share makes a link down.
    pub down_loss: f64,
    /// A 95th-percentile RTT at or above this makes a link degraded.
    #[serde(with = "humantime_serde")]
    pub degraded_rtt: Duration,
    /// Fewer probes than this in a window is no evidence either way.
    pub min_samples: u32,
}

impl Default for LinkThresholds {
    fn default() -> Self {
        LinkThresholds {
            degraded_loss: 0.05,
            down_loss: 0.5,
            degraded_rtt: Duration::from_millis(300),
            min_samples: 5,
        }
    }
}

/// How much cloud capacity a down site gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CapacityPolicy {
    /// Instances that replace one missing host.
    pub per_host: u32,
    /// Added on top of the missing hosts' share during an outage.
    pub outage_buffer: u32,
    /// Never burst with fewer than this.
    pub min: u32,
    /// Never more than this, whatever is missing.
    pub max: u32,
    /// Burst to exactly this instead of counting missing hosts.
    pub fixed: Option<u32>,
}

impl Default for CapacityPolicy {
    fn default() -> Self {
        CapacityPolicy { per_host: 1, outage_buffer: 0, min: 1, max: 4, fixed: None }
    }
}

impl CapacityPolicy {
    /// The burst size for `missing` hosts: a fixed size, or missing hosts plus the
    /// buffer, clamped to [min, max].
    pub fn burst_size(&self, missing: u32) -> u32 {
        let wanted = match self.fixed {
            Some(n) => n,
            None => missing.saturating_mul(self.per_host).saturating_add(self.outage_buffer),
        };
        wanted.max(self.min).min(self.max)
    }
}

/// A monthly budget for burst capacity: instance-hours times a price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SpendCap {
    /// What one burst instance costs per hour, in the operator's currency.
    pub price_per_instance_hour: f64,
    /// The budget per calendar month (UTC), in the same currency.
    pub monthly_limit: f64,
    /// What happens at 100 %: alerts go out at 50, 80 and 100 % in every case.
    #[serde(default)]
    pub at_limit: SpendAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpendAction {
    /// Only notify.
    #[default]
    Alert,
    /// Keep what runs, add nothing.
    Hold,
    /// Give all burst capacity back.
    ScaleDown,
}

/// The alert levels, in percent of the monthly limit.
pub const SPEND_LEVELS: [u8; 3] = [50, 80, 100];

impl PolicyConfig {
    /// Checks that do not fit a type; `Err((key path under [policy], why))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.burst_after.is_zero() {
            return Err(("burst-after", "must be above zero: a zero grace bursts on every blip".into()));
        }
        if self.host_lost_after.is_zero() {
            return Err(("host-lost-after", "must be above zero".into()));
        }
        if !(self.down_share > 0.0 && self.down_share <= 1.0) {
            return Err(("down-share", format!("{} is not a share in (0, 1]", self.down_share)));
        }
        let l = &self.link;
        for (key, v) in [("link.degraded-loss", l.degraded_loss), ("link.down-loss", l.down_loss)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err((key, format!("{v} is not a share in (0, 1]")));
            }
        }
        if l.degraded_loss > l.down_loss {
            return Err(("link.degraded-loss", "must not be above down-loss".into()));
        }
        let c = &self.capacity;
        if c.max == 0 {
            return Err(("capacity.max", "must be at least 1, or nothing can burst".into()));
        }
        if c.min > c.max {
            return Err(("capacity.min", format!("{} is above max ({})", c.min, c.max)));
        }
        if c.fixed.is_some_and(|f| f == 0 || f > c.max) {
            return Err(("capacity.fixed", format!("must be between 1 and max ({})", c.max)));
        }
        if let Some(s) = &self.spend {
            if !(s.price_per_instance_hour.is_finite() && s.price_per_instance_hour > 0.0) {
                return Err(("spend.price-per-instance-hour", "must be a positive number".into()));
            }
            if !(s.monthly_limit.is_finite() && s.monthly_limit > 0.0) {
                return Err(("spend.monthly-limit", "must be a positive number".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_designs() {
        let p: PolicyConfig = toml::from_str("").unwrap();
        assert_eq!(p, PolicyConfig::default());
        assert_eq!(p.burst_after, Duration::from_secs(60));
        assert_eq!(p.scale_down_after, Duration::from_secs(1800));
        assert!(p.check().is_ok());
    }

    #[test]
    fn a_table_parses_with_humane_durations() {
        let p: PolicyConfig = toml::from_str(
            "burst-after = \"90s\"\nscale-down-after = \"10m\"\n[capacity]\nmax = 6\nfixed = 3\n\
             [spend]\nprice-per-instance-hour = 0.05\nmonthly-limit = 20.0\nat-limit = \"hold\"\n",
        )
        .unwrap();
        assert_eq!(p.burst_after, Duration::from_secs(90));
        assert_eq!(p.capacity.burst_size(0), 3);
        assert_eq!(p.spend.unwrap().at_limit, SpendAction::Hold);
    }

    #[test]
    fn burst_size_counts_missing_hosts_within_bounds() {
        let c = CapacityPolicy { per_host: 2, outage_buffer: 1, min: 2, max: 6, fixed: None };
        assert_eq!(c.burst_size(0), 2);
        assert_eq!(c.burst_size(1), 3);
        assert_eq!(c.burst_size(2), 5);
        assert_eq!(c.burst_size(10), 6);
        assert_eq!(c.burst_size(u32::MAX), 6);
    }

    #[test]
    fn nonsense_is_refused_with_its_key() {
        let mut p = PolicyConfig::default();
        p.capacity.min = 9;
        assert_eq!(p.check().unwrap_err().0, "capacity.min");
        let mut p = PolicyConfig { down_share: 0.0, ..Default::default() };
        assert_eq!(p.check().unwrap_err().0, "down-share");
        p.down_share = 0.5;
        p.link.degraded_loss = 0.9;
        assert_eq!(p.check().unwrap_err().0, "link.degraded-loss");
    }
}
