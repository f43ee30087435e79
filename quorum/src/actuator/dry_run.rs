//! The dry-run actuator: says what it would do, in structured fields, and does nothing.

use tracing::info;

use super::{Action, Outcome};

pub fn apply(name: &str, action: &Action) -> Outcome {
    info!(
        actuator = %name,
        cluster = %action.cluster_id,
        term = action.token.term,
        index = action.token.index,
        key = %action.idempotency_key,
        verdict = %action.verdict,
        desired = action.desired_capacity,
        previous = action.previous_capacity,
        unilateral = action.unilateral,
        reasons = %action.reasons.join(","),
        "dry run: would set the cloud capacity"
    );
    Outcome::Applied {
        detail: format!(
            "dry run: would set capacity {} -> {}",
            action.previous_capacity, action.desired_capacity
        ),
    }
}
