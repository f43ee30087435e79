//! The monthly burst spend, kept as instance-time in the replicated state.
//!
//! It moves only when a committed decision changes the capacity, at the time the leader
//! stamped on it, so every node computes the same figure from the same log.

use serde::{Deserialize, Serialize};

const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpendLedger {
    /// The calendar month (UTC) counted, as year * 12 + month - 1.
    pub month: u32,
    /// Instance-milliseconds run this month up to `since_ms`.
    pub instance_ms: u64,
    /// The capacity in force since `since_ms`.
    pub capacity: u32,
    pub since_ms: u64,
}

impl SpendLedger {
    /// The capacity becomes `capacity` at `at_ms` (a committed decision's time).
    pub fn change(&mut self, capacity: u32, at_ms: u64) {
        *self = self.accrued_to(at_ms);
        self.capacity = capacity;
    }

    /// Instance-milliseconds this month as of `now_ms`, counting what runs now.
    pub fn instance_ms_at(&self, now_ms: u64) -> u64 {
        self.accrued_to(now_ms).instance_ms
    }

    /// The ledger carried forward to `to_ms`, starting over at each month boundary. A
    /// time before `since_ms` (a leader with a slow clock) adds nothing.
    fn accrued_to(&self, to_ms: u64) -> SpendLedger {
        let mut l = *self;
        if l.since_ms == 0 {
            // Nothing counted yet: start here.
            return SpendLedger {
                month: month_of(to_ms),
                instance_ms: 0,
                capacity: l.capacity,
                since_ms: to_ms,
            };
        }
        let to_ms = to_ms.max(l.since_ms);
        loop {
            let month_end = month_start(month_of(l.since_ms) + 1);
            if month_of(l.since_ms) != l.month {
                l.month = month_of(l.since_ms);
                l.instance_ms = 0;
            }
            let until = to_ms.min(month_end);
            l.instance_ms =
                l.instance_ms.saturating_add(u64::from(l.capacity).saturating_mul(until - l.since_ms));
            l.since_ms = until;
            if until == to_ms {
                if month_of(to_ms) != l.month {
                    l.month = month_of(to_ms);
                    l.instance_ms = 0;
                }
                return l;
            }
        }
    }
}

/// The month (year * 12 + month - 1) that a UNIX time in milliseconds falls in.
pub fn month_of(unix_ms: u64) -> u32 {
    let (y, m, _) = civil_from_days((unix_ms / DAY_MS) as i64);
    (y * 12 + m as i64 - 1) as u32
}

/// The first millisecond of a month as numbered by [`month_of`].
pub fn month_start(month: u32) -> u64 {
    let (y, m) = (i64::from(month / 12), month % 12 + 1);
    days_from_civil(y, m, 1).max(0) as u64 * DAY_MS
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian, days since 1970-01-01).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    // 2026-11-23T00:00:00Z and 2026-12-01T00:00:00Z.
    const NOV_23: u64 = 1_795_392_000_000;
    const DEC_1: u64 = 1_796_083_200_000;

    #[test]
    fn calendar_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days((NOV_23 / DAY_MS) as i64), (2026, 11, 23));
        assert_eq!(month_start(month_of(NOV_23)) + 22 * DAY_MS, NOV_23);
        assert_eq!(month_start(month_of(NOV_23) + 1), DEC_1);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn capacity_times_time_accrues() {
        let mut l = SpendLedger::default();
        l.change(3, NOV_23);
        assert_eq!(l.instance_ms_at(NOV_23 + 2 * HOUR), 6 * HOUR);
        l.change(1, NOV_23 + 2 * HOUR);
        l.change(0, NOV_23 + 5 * HOUR);
        assert_eq!(l.instance_ms_at(NOV_23 + 50 * HOUR), 9 * HOUR);
    }

    #[test]
    fn a_new_month_starts_over() {
        let mut l = SpendLedger::default();
        l.change(2, DEC_1 - HOUR);
        assert_eq!(l.instance_ms_at(DEC_1 - 1), 2 * (HOUR - 1));
        // Two hours later: one hour in November (gone) and one in December.
        assert_eq!(l.instance_ms_at(DEC_1 + HOUR), 2 * HOUR);
        l.change(0, DEC_1 + HOUR);
        assert_eq!(l.month, month_of(DEC_1));
        assert_eq!(l.instance_ms_at(DEC_1 + 40 * DAY_MS), 0, "January starts at zero");
    }

    #[test]
    fn a_clock_going_back_adds_nothing() {
        let mut l = SpendLedger::default();
        l.change(4, NOV_23);
        l.change(0, NOV_23 - HOUR);
        assert_eq!(l.instance_ms_at(NOV_23 + HOUR), 0);
    }
}
