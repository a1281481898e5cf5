//! Changing a key's name and controls, and rotating its secret: the steps `PATCH /keys/{id}`,
//! `POST /keys/{id}/rotate` and `qnp keys update/rotate` share, so both ways behave the same.

use time::OffsetDateTime;

use crate::accounts::ApiKeyRecord;
use crate::budget::Budget;
use crate::error::GatewayError;
use crate::key_controls::KeyChange;
use crate::store::RecordStore;

/// Applies `change` to the key and stores it. A spend limit given to a key that had none first counts
/// what the key already spent this month (from its usage rows), so a limit set on the 20th limits the
/// whole month. Returns the key as stored.
pub async fn update(
    records: &dyn RecordStore,
    budget: &Budget,
    mut key: ApiKeyRecord,
    change: &KeyChange,
    now: OffsetDateTime,
) -> Result<ApiKeyRecord, GatewayError> {
    if key.revoked_at.is_some() && change.changes_controls() {
        return Err(GatewayError::Conflict(
            "this key is revoked: its controls no longer apply (it can still be renamed)".into(),
        ));
    }
    let had_limit = key.controls.monthly_spend_limit_usd.is_some();
    change.apply(&mut key.name, &mut key.controls);
    if !had_limit && key.controls.monthly_spend_limit_usd.is_some() {
        let month_start = now
            .replace_day(1)
            .map_err(GatewayError::internal)?
            .replace_time(time::Time::MIDNIGHT);
        let spent: f64 = records
            .usage_totals(&key.account_id, Some(&key.key_id), month_start, now)
            .await
            .map_err(GatewayError::internal)?
            .iter()
            .map(|t| t.cost_usd)
            .sum();
        budget
            .count_key_spend_from(&key.key_id, spent, now)
            .await
            .map_err(GatewayError::internal)?;
    }
    if !records
        .update_key(&key.key_id, key.name.as_deref(), &key.controls)
        .await
        .map_err(GatewayError::internal)?
    {
        return Err(GatewayError::NotFound(format!("no key {}", key.key_id)));
    }
    Ok(key)
}

/// The grace period a rotation asked for in hours, or the configured default; at most
/// [`crate::keys::MAX_ROTATION_GRACE`].
pub fn grace_period(
    hours: Option<f64>,
    default: time::Duration,
) -> Result<time::Duration, GatewayError> {
    let max_hours = crate::keys::MAX_ROTATION_GRACE.whole_hours();
    match hours {
        None => Ok(default),
        Some(h) if h.is_finite() && (0.0..=max_hours as f64).contains(&h) => {
            Ok(time::Duration::seconds_f64(h * 3600.0))
        }
        Some(_) => Err(GatewayError::field(
            "grace_period_hours",
            format!("'grace_period_hours' must be a number of hours from 0 to {max_hours}"),
        )),
    }
}

/// Gives the key a new secret (bcrypt off the async threads); the old one stays valid for `grace`.
/// Returns the plaintext of the new key (shown once) and the key as stored.
pub async fn rotate(
    records: &dyn RecordStore,
    key: ApiKeyRecord,
    bcrypt_cost: u32,
    grace: time::Duration,
    now: OffsetDateTime,
) -> Result<(String, ApiKeyRecord), GatewayError> {
    if key.revoked_at.is_some() {
        return Err(GatewayError::Conflict(
            "this key is revoked; create a new key instead".into(),
        ));
    }
    let current = key.clone();
    let rotation =
        tokio::task::spawn_blocking(move || crate::keys::rotate(&current, bcrypt_cost, grace, now))
            .await
            .map_err(GatewayError::internal)?
            .map_err(GatewayError::internal)?;
    if !records
        .rotate_key(&key.key_id, &rotation.new_hash, &rotation.previous)
        .await
        .map_err(GatewayError::internal)?
    {
        return Err(GatewayError::Conflict(
            "this key was rotated or revoked at the same moment; reload it and try again".into(),
        ));
    }
    let rotated = ApiKeyRecord {
        hash: rotation.new_hash,
        previous: Some(rotation.previous),
        ..key
    };
    Ok((rotation.plaintext, rotated))
}
