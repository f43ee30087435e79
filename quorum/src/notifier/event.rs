//! What a notification says: an [`Event`] and its one-line summary.

use serde::{Deserialize, Serialize};
use sitewatch_proto::state::{FencingToken, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    VerdictChanged,
    BurstChanged,
    /// The cloud spend reached this share of its cap.
    SpendAlert {
        percent: u32,
    },
    /// The witness scaled up on its own (dark-site fallback), without a committed decision.
    Unilateral,
}

/// One thing an operator should hear about. The generic webhook target sends it as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub cluster_id: String,
    pub kind: EventKind,
    pub verdict: Verdict,
    pub previous_verdict: Verdict,
    pub desired_capacity: u32,
    pub previous_capacity: u32,
    pub reasons: Vec<String>,
    /// The committed decision behind it; `None` for a unilateral action.
    pub token: Option<FencingToken>,
    /// Unix milliseconds.
    pub at_ms: u64,
}

impl Event {
    /// One line of plain text for a human, the same on every target.
    pub fn summary(&self) -> String {
        let c = &self.cluster_id;
        let capacity = if self.desired_capacity == self.previous_capacity {
            format!("cloud capacity stays {}", self.desired_capacity)
        } else {
            format!("cloud capacity {} -> {}", self.previous_capacity, self.desired_capacity)
        };
        let mut line = match self.kind {
            EventKind::VerdictChanged => format!(
                "[{c}] site {} (was {}); {capacity}",
                self.verdict.to_string().to_uppercase(),
                self.previous_verdict
            ),
            EventKind::BurstChanged => format!("[{c}] {capacity} (site {})", self.verdict),
            EventKind::SpendAlert { percent } => format!(
                "[{c}] cloud spend at {percent}% of its cap; capacity {} (site {})",
                self.desired_capacity, self.verdict
            ),
            EventKind::Unilateral => format!(
                "[{c}] witness scaled UP on its own: {capacity}; no word from the site (fallback, not a committed decision)"
            ),
        };
        if !self.reasons.is_empty() {
            line.push_str("; reasons: ");
            line.push_str(&self.reasons.join(", "));
        }
        if let Some(t) = self.token {
            line.push_str(&format!(" [term {}, index {}]", t.term, t.index));
        }
        line
    }

    /// A short title (ntfy's Title header): ASCII only, as a header must be.
    pub fn title(&self) -> String {
        let what = match self.kind {
            EventKind::VerdictChanged => format!("site {}", self.verdict),
            EventKind::BurstChanged => format!("capacity {}", self.desired_capacity),
            EventKind::SpendAlert { percent } => format!("spend {percent}%"),
            EventKind::Unilateral => format!("unilateral scale-up to {}", self.desired_capacity),
        };
        format!("sitewatch {}: {what}", self.cluster_id)
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .collect()
    }

    /// ntfy priority: 5 (max) when the site is down or the witness acted alone.
    pub fn priority(&self) -> u8 {
        match (self.kind, self.verdict) {
            (EventKind::Unilateral, _) | (_, Verdict::Down) => 5,
            (EventKind::SpendAlert { .. }, _) | (_, Verdict::Degraded) => 4,
            _ => 3,
        }
    }

    /// ntfy tags (emoji short codes).
    pub fn tags(&self) -> &'static str {
        match (self.kind, self.verdict) {
            (EventKind::Unilateral, _) => "cloud,warning",
            (EventKind::SpendAlert { .. }, _) => "moneybag",
            (_, Verdict::Down) => "rotating_light",
            (_, Verdict::Degraded) => "warning",
            (_, Verdict::Recovering) => "hourglass",
            (_, Verdict::Healthy) => "white_check_mark",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn down() -> Event {
        Event {
            cluster_id: "home".into(),
            kind: EventKind::VerdictChanged,
            verdict: Verdict::Down,
            previous_verdict: Verdict::Healthy,
            desired_capacity: 3,
            previous_capacity: 0,
            reasons: vec!["ups-on-battery:site".into(), "hosts-lost:2/3".into()],
            token: Some(FencingToken { term: 3, index: 41 }),
            at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn summaries_read_as_one_line() {
        assert_eq!(
            down().summary(),
            "[home] site DOWN (was healthy); cloud capacity 0 -> 3; reasons: ups-on-battery:site, \
             hosts-lost:2/3 [term 3, index 41]"
        );
        let burst = Event { kind: EventKind::BurstChanged, ..down() };
        assert!(
            burst.summary().starts_with("[home] cloud capacity 0 -> 3 (site down)"),
            "{}",
            burst.summary()
        );
        let spend =
            Event { kind: EventKind::SpendAlert { percent: 80 }, reasons: vec![], token: None, ..down() };
        assert_eq!(spend.summary(), "[home] cloud spend at 80% of its cap; capacity 3 (site down)");
        let alone = Event { kind: EventKind::Unilateral, token: None, reasons: vec![], ..down() };
        assert!(alone.summary().contains("witness scaled UP on its own: cloud capacity 0 -> 3"));
        assert!(!down().summary().contains('\n'));
        assert_eq!((down().priority(), down().tags()), (5, "rotating_light"));
        assert_eq!(down().title(), "sitewatch home: site down");
    }

    #[test]
    fn the_event_json_names_its_kind() {
        let json =
            serde_json::to_value(Event { kind: EventKind::SpendAlert { percent: 90 }, ..down() }).unwrap();
        assert_eq!(json["kind"], serde_json::json!({"spend-alert": {"percent": 90}}));
        assert_eq!(serde_json::to_value(down()).unwrap()["kind"], "verdict-changed");
    }
}
