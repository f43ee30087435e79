//! The agent's monotonic clock in milliseconds, the "now" that sans-IO code in proto takes.
//!
//! Built on `tokio::time::Instant`, so paused-time tests move it too.

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock whose zero is now (the agent's start).
    pub fn start() -> Clock {
        Clock { start: Instant::now() }
    }

    /// Milliseconds since the clock started.
    pub fn now_ms(&self) -> u64 {
        // u64 milliseconds last 584 million years; saturate rather than wrap anyway.
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn counts_milliseconds_from_its_start() {
        let clock = Clock::start();
        assert_eq!(clock.now_ms(), 0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now_ms(), 1500);
    }
}
