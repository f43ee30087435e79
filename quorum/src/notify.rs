//! systemd's notify protocol (Type=notify): READY=1 once the node can serve, STATUS= with
//! the one-line state an operator sees in `systemctl status`, WATCHDOG=1 from the raft
//! loop itself (so a wedged loop gets the daemon restarted), STOPPING=1 on the way out.
//! Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tracing::debug;

pub struct Notifier {
    /// Pet the watchdog this often: half of WatchdogSec, as systemd recommends.
    watchdog_every: Option<Duration>,
    last_pet: Option<Instant>,
    last_status: String,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog_every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last_pet: None,
            last_status: String::new(),
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(state) {
            debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// Send STATUS= only when it changed.
    pub fn status(&mut self, line: &str) {
        if line != self.last_status {
            self.send(&[NotifyState::Status(line)]);
            self.last_status = line.to_string();
        }
    }

    /// Call from the loop that must stay alive; sends WATCHDOG=1 when due.
    pub fn pet(&mut self, now: Instant) {
        let Some(every) = self.watchdog_every else { return };
        if self.last_pet.is_none_or(|t| now.duration_since(t) >= every) {
            self.send(&[NotifyState::Watchdog]);
            self.last_pet = Some(now);
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}
