//! Bounded retries with full-jitter exponential backoff (AWS's "Exponential Backoff And
//! Jitter"): attempt n waits a uniform time in [0, min(cap, initial * 2^n)], so many
//! callers retrying the same outage spread out instead of arriving in waves.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tracing::warn;

/// How one actuator or notifier retries (its `max-attempts`, `initial-backoff` and
/// `max-backoff` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// No wait is longer, a server's Retry-After included.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    pub const fn new(max_attempts: u32, initial_backoff: Duration, max_backoff: Duration) -> RetryPolicy {
        RetryPolicy { max_attempts, initial_backoff, max_backoff }
    }

    /// The wait before retry number `retry` (0 = before the second attempt).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling =
            self.initial_backoff.saturating_mul(2u32.saturating_pow(retry.min(30))).min(self.max_backoff);
        if ceiling.is_zero() {
            return ceiling;
        }
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }

    /// `Some((key, why))` naming the offending key.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.max_attempts == 0 {
            return Some(("max-attempts", "must be at least 1".into()));
        }
        if self.max_attempts > 100 {
            return Some(("max-attempts", "more than 100 attempts is a loop, not a retry".into()));
        }
        if self.max_backoff < self.initial_backoff {
            return Some(("max-backoff", "must not be shorter than initial-backoff".into()));
        }
        None
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T> {
    Done(T),
    /// Worth another try; `retry_after` is the server's own hint.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Fail(String),
}

/// Why [`run`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaveUp {
    Permanent(String),
    Exhausted { attempts: u32, last: String },
}

/// Run `attempt(n)` (n from 1) until it is done, fails for good, or the policy's attempts
/// are spent. Cancel-safe: nothing outlives a dropped future but what `attempt` spawns.
pub async fn run<T, F, Fut>(policy: &RetryPolicy, what: &str, mut attempt: F) -> Result<T, GaveUp>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut n = 1;
    loop {
        match attempt(n).await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(why) => return Err(GaveUp::Permanent(why)),
            Attempt::Retry { error, retry_after } => {
                if n >= policy.max_attempts {
                    return Err(GaveUp::Exhausted { attempts: n, last: error });
                }
                let wait = match retry_after {
                    Some(hint) => hint.min(policy.max_backoff),
                    None => policy.backoff(n - 1),
                };
                warn!(name = %what, attempt = n, error = %error, wait_ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
                n += 1;
            }
        }
    }
}

/// Retry-After as delta-seconds or an HTTP-date (RFC 9110 10.2.3); a date in the past is 0.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        let p = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_secs(1));
        for retry in 0..8 {
            let ceiling = Duration::from_millis(100 * (1 << retry)).min(Duration::from_secs(1));
            let waits: Vec<Duration> = (0..200).map(|_| p.backoff(retry)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "retry {retry}");
            // Full jitter: waits spread over the range rather than sitting at the ceiling.
            assert!(waits.iter().any(|w| *w < ceiling / 2), "retry {retry}");
        }
        assert_eq!(RetryPolicy::new(3, Duration::ZERO, Duration::ZERO).backoff(5), Duration::ZERO);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_at_max_attempts_and_on_a_permanent_failure() {
        let p = RetryPolicy::new(3, Duration::from_millis(10), Duration::from_millis(50));
        let mut calls = 0;
        let r: Result<(), GaveUp> = run(&p, "t", |_| {
            calls += 1;
            async { Attempt::Retry { error: "503".into(), retry_after: None } }
        })
        .await;
        assert_eq!(r, Err(GaveUp::Exhausted { attempts: 3, last: "503".into() }));
        assert_eq!(calls, 3);

        let mut calls = 0;
        let r: Result<(), GaveUp> = run(&p, "t", |_| {
            calls += 1;
            async { Attempt::Fail("400".into()) }
        })
        .await;
        assert_eq!((r, calls), (Err(GaveUp::Permanent("400".into())), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_hint_is_capped_by_max_backoff() {
        let p = RetryPolicy::new(2, Duration::from_millis(1), Duration::from_secs(5));
        let start = tokio::time::Instant::now();
        let r = run(&p, "t", |n| async move {
            if n == 1 {
                Attempt::Retry { error: "429".into(), retry_after: Some(Duration::from_secs(3600)) }
            } else {
                Attempt::Done(n)
            }
        })
        .await;
        assert_eq!(r, Ok(2));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
