//! Assemble the agent's sensors into one `Observation` per interval and publish it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_proto::observation::Observation;
use sitewatch_quorum::config::Config;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use crate::host::{HostPaths, HostReader};

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct Observer {
    node: String,
    seq: u64,
    host: HostReader,
}

impl Observer {
    fn observe(&mut self, stopping: bool) -> Observation {
        self.seq += 1;
        Observation {
            node: self.node.clone(),
            seq: self.seq,
            taken_at_unix_ms: unix_ms(),
            host: self.host.read(stopping),
        }
    }
}

/// Start observing; the receiver always holds the latest observation. On `cancel` a
/// last observation says the agent is stopping.
pub fn start(config: &Config, every: Duration, cancel: CancellationToken) -> watch::Receiver<Observation> {
    let mut observer =
        Observer { node: config.node.clone(), seq: 0, host: HostReader::new(HostPaths::default()) };
    let (tx, rx) = watch::channel(observer.observe(false));
    tokio::spawn(async move {
        let mut tick = interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    tx.send_replace(observer.observe(true));
                    return;
                }
                _ = tick.tick() => {
                    tx.send_replace(observer.observe(false));
                }
            }
        }
    });
    rx
}
