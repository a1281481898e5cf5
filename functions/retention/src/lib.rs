//! The retention function's handler: one cleaner pass per scheduled EventBridge event.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use qnp_shared::retention::Cleaner;
use time::OffsetDateTime;

/// Runs a pass and returns its report (also logged as one structured line by the cleaner).
pub async fn handle(
    cleaner: &Cleaner,
    event: EventBridgeEvent,
) -> anyhow::Result<serde_json::Value> {
    tracing::info!(event_id = ?event.id, detail_type = ?event.detail_type, "scheduled retention run");
    let report = cleaner
        .run(OffsetDateTime::now_utc(), false, &|_| {})
        .await?;
    Ok(serde_json::to_value(report)?)
}
