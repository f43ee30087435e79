//! Assemble the agent's sensors (UPS monitors, link probes, host facts) into one
//! `Observation` per interval and publish it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_proto::link::ProbeStatus;
use sitewatch_proto::observation::{BatterySummary, Observation};
use sitewatch_proto::ups::{Power, StatusFlag, UpsConfig, UpsState, feeds_of, host_power};
use sitewatch_quorum::config::Config;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::host::{HostPaths, HostReader};
use crate::power_memory::{self, PowerMemory, Remembered, carried_over};
use crate::probe;
use crate::ups::{NutError, UpsReadings, spawn_monitors};

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct Observer {
    node: String,
    seq: u64,
    clock: Clock,
    host: HostReader,
    ups_configs: Vec<UpsConfig>,
    ups: watch::Receiver<UpsReadings>,
    probes: watch::Receiver<Vec<ProbeStatus>>,
    /// This host's power and since when (agent clock, ms).
    power: (Power, u64),
    /// How long the power had already been what it is when the agent started: carried
    /// over from the last run in this boot; 0 after any change.
    power_before_start_ms: u64,
    memory: PowerMemory,
    boot: Option<BootClock>,
    /// The last run's record, until the first known power is read.
    last_run: Option<Remembered>,
}

/// The boot clock, read once at start and followed on the agent's clock after.
struct BootClock {
    id: String,
    /// Milliseconds since boot when the agent's clock read 0.
    at_start_ms: u64,
}

impl Observer {
    fn observe(&mut self, stopping: bool) -> Observation {
        self.seq += 1;
        let now = self.clock.now_ms();
        let readings = self.ups.borrow().clone();
        let feeds: Vec<&UpsConfig> = feeds_of(&self.ups_configs, &self.node, &self.node).collect();
        let max_age = max_age(&feeds);
        let power = host_power(feeds.iter().map(|c| readings.get(&c.name)), now, max_age);
        let battery = (power == Power::Battery).then(|| battery_summary(&feeds, &readings, now, max_age));
        if power != self.power.0 {
            self.power = (power, now);
            self.power_before_start_ms = 0;
            self.remember(power, now);
        }
        Observation {
            node: self.node.clone(),
            seq: self.seq,
            taken_at_unix_ms: unix_ms(),
            clock_ms: now,
            host: self.host.read(stopping),
            ups: readings.into_values().collect(),
            power,
            power_for_ms: now.saturating_sub(self.power.1) + self.power_before_start_ms,
            battery,
            probes: self.probes.borrow().clone(),
            peers: Vec::new(),
        }
    }

    /// A known power state was just read: the first one after start may continue the
    /// last run's (same boot, same power); any other is kept for the next run.
    fn remember(&mut self, power: Power, now: u64) {
        if power == Power::Unknown {
            return;
        }
        let Some(boot) = &self.boot else { return };
        let now_boot_ms = boot.at_start_ms + now;
        if let Some(last) = self.last_run.take()
            && let Some(carried) = carried_over(&last, &boot.id, power, now_boot_ms)
        {
            self.power_before_start_ms = carried;
            return;
        }
        self.memory.save(&Remembered { boot_id: boot.id.clone(), power, since_boot_ms: now_boot_ms });
    }
}

/// What the fresh readings of the feeding UPSes say about a host on battery.
fn battery_summary(
    feeds: &[&UpsConfig],
    readings: &UpsReadings,
    now: u64,
    max_age: Duration,
) -> BatterySummary {
    let mut summary = BatterySummary::default();
    for config in feeds {
        let Some(data) = readings.get(&config.name).and_then(|r| r.fresh_data(now, max_age)) else {
            continue;
        };
        for flag in [StatusFlag::LB, StatusFlag::FSD] {
            if data.status.has(flag) {
                summary.critical.push(format!("{}:{}", flag.as_str(), config.name));
            }
        }
        summary.runtime_s = summary.runtime_s.max(data.battery_runtime_s);
        if let Some(charge) = data.battery_charge {
            summary.charge_pct = Some(summary.charge_pct.map_or(charge, |c: f64| c.max(charge)));
        }
    }
    summary
}

/// What about the UPSes is worth an observation out of turn: each one's state and flags.
fn ups_signature(readings: &UpsReadings) -> Vec<(String, String)> {
    readings
        .values()
        .map(|r| {
            let what = match &r.state {
                UpsState::Data(d) => d.status.to_string(),
                other => other.kind().to_string(),
            };
            (r.name.clone(), what)
        })
        .collect()
}

/// How old a reading may be and still count: three missed polls of the slowest feed,
/// plus its read deadline.
fn max_age(feeds: &[&UpsConfig]) -> Duration {
    feeds.iter().map(|c| c.poll_interval * 3 + c.timeout).max().unwrap_or(Duration::ZERO)
}

/// Start the sensors and the observer; the receiver always holds the latest
/// observation. On `cancel` a last observation says the agent is stopping.
pub fn start(
    config: &Config,
    every: Duration,
    cancel: CancellationToken,
) -> Result<watch::Receiver<Observation>, NutError> {
    let clock = Clock::start();
    let memory = PowerMemory::in_dir(&config.data_dir);
    let tracker = TaskTracker::new();
    let ups = spawn_monitors(&config.ups, clock, &cancel, &tracker)?;
    let probes = probe::start(config.probes.clone(), &tracker, &cancel);
    let host = HostReader::new(HostPaths::default());
    let boot = host
        .boot_id()
        .map(str::to_owned)
        .zip(power_memory::boot_ms())
        .map(|(id, boot_ms)| BootClock { id, at_start_ms: boot_ms.saturating_sub(clock.now_ms()) });
    let mut observer = Observer {
        node: config.node.clone(),
        seq: 0,
        clock,
        host,
        ups_configs: config.ups.clone(),
        ups,
        probes,
        power: (Power::Unknown, 0),
        power_before_start_ms: 0,
        last_run: memory.load(),
        memory,
        boot,
    };
    let (tx, rx) = watch::channel(observer.observe(false));
    tokio::spawn(async move {
        let mut tick = interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ups = observer.ups.clone();
        let mut ups_alive = true;
        let mut published = ups_signature(&ups.borrow());
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    tx.send_replace(observer.observe(true));
                    return;
                }
                _ = tick.tick() => {}
                changed = ups.changed(), if ups_alive => {
                    // A power change goes out at once, not at the next tick; a poll that
                    // found the same state waits for the tick.
                    ups_alive = changed.is_ok();
                    if ups_signature(&ups.borrow_and_update()) == published {
                        continue;
                    }
                }
            }
            published = ups_signature(&ups.borrow());
            tx.send_replace(observer.observe(false));
        }
    });
    Ok(rx)
}
