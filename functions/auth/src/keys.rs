//! `/keys`: the signed-in user's API keys: list, create (the plaintext is in the creation response
//! only), change (name and controls: expiry, own spend limit, model allowlist, requests per minute),
//! rotate (a new secret under the same id, the old one valid for a grace period), revoke.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qnp_shared::GatewayError;
use qnp_shared::accounts::ApiKeyRecord;
use qnp_shared::key_controls::KeyChange;
use qnp_shared::key_settings;
use qnp_shared::usage::format_timestamp;
use qnp_shared::web::{SignedIn, json_body};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::Auth;

/// Enough for every environment and teammate; a runaway script cannot mint keys without bound.
const MAX_ACTIVE_KEYS: u64 = 50;

/// A key as the dashboard and the API show it: never its hash, with its controls, its spend this month
/// where it has a limit of its own, and the old secret's grace period after a rotation.
fn key_json(key: &ApiKeyRecord, spent_usd: Option<f64>, now: OffsetDateTime) -> Value {
    let controls = &key.controls;
    let rotation = key.previous_in_grace(now).map(|p| {
        json!({
            "rotated_at": format_timestamp(p.rotated_at),
            "previous_secret_valid_until": format_timestamp(p.valid_until),
        })
    });
    json!({
        "id": key.key_id,
        "name": key.name,
        "prefix": key.prefix(),
        "created_at": format_timestamp(key.created_at),
        "last_used_at": key.last_used_at.map(format_timestamp),
        "revoked_at": key.revoked_at.map(format_timestamp),
        "expires_at": controls.expires_at.map(format_timestamp),
        "expired": controls.expired(now),
        "monthly_spend_limit_usd": controls.monthly_spend_limit_usd,
        "spend_this_month_usd": spent_usd,
        "models": controls.models,
        "requests_per_minute": controls.requests_per_minute,
        "rotation": rotation,
    })
}

/// The key's spend this month as its own limit counts it, for keys that have one.
async fn spent_of(auth: &Auth, key: &ApiKeyRecord, now: OffsetDateTime) -> Option<f64> {
    key.controls.monthly_spend_limit_usd?;
    match auth.budget.key_spent(&key.key_id, now).await {
        Ok(spent) => Some(spent),
        Err(e) => {
            tracing::warn!(error = %e, key_id = %key.key_id, "could not read a key's spend");
            None
        }
    }
}

async fn shown(auth: &Auth, key: &ApiKeyRecord) -> Value {
    let now = OffsetDateTime::now_utc();
    key_json(key, spent_of(auth, key, now).await, now)
}

pub async fn list(State(auth): State<Arc<Auth>>, Extension(me): Extension<SignedIn>) -> Response {
    match auth.web.records.keys_for_account(&me.account.id).await {
        Ok(keys) => {
            let data = futures_util::future::join_all(keys.iter().map(|k| shown(&auth, k))).await;
            Json(json!({ "data": data })).into_response()
        }
        Err(e) => GatewayError::internal(e).into_response(),
    }
}

/// A body's key settings: an empty body is none.
fn change_of(body: &[u8]) -> Result<KeyChange, GatewayError> {
    if body.is_empty() {
        return Ok(KeyChange::default());
    }
    let value: Value = json_body(body)?;
    KeyChange::from_json(&value, OffsetDateTime::now_utc())
}

/// The signed-in user's key with this id. Someone else's key id is indistinguishable from a missing one
/// (404).
async fn own_key(auth: &Auth, me: &SignedIn, key_id: &str) -> Result<ApiKeyRecord, GatewayError> {
    auth.web
        .records
        .key(key_id)
        .await
        .map_err(GatewayError::internal)?
        .filter(|k| k.account_id == me.account.id)
        .ok_or_else(|| GatewayError::NotFound(format!("no key {key_id}")))
}

async fn create_key(auth: &Auth, me: &SignedIn, body: &[u8]) -> Result<Response, GatewayError> {
    let change = change_of(body)?;
    let records = &auth.web.records;
    let at_limit = || {
        GatewayError::Conflict(format!(
            "an account can have {MAX_ACTIVE_KEYS} active keys; revoke one first"
        ))
    };
    // A quick look spares bcrypt when the account is clearly full; the insert below decides, atomically.
    let existing = records
        .keys_for_account(&me.account.id)
        .await
        .map_err(GatewayError::internal)?;
    if existing.iter().filter(|k| k.revoked_at.is_none()).count() as u64 >= MAX_ACTIVE_KEYS {
        return Err(at_limit());
    }
    let account_id = me.account.id.clone();
    let cost = auth.bcrypt_cost;
    let mut key = tokio::task::spawn_blocking(move || {
        qnp_shared::keys::generate(&account_id, None, cost, OffsetDateTime::now_utc())
    })
    .await
    .map_err(GatewayError::internal)?
    .map_err(GatewayError::internal)?;
    change.apply(&mut key.record.name, &mut key.record.controls);
    if !records
        .insert_key_within(&key.record, MAX_ACTIVE_KEYS)
        .await
        .map_err(GatewayError::internal)?
    {
        return Err(at_limit());
    }
    let mut body = shown(auth, &key.record).await;
    body["key"] = Value::String(key.plaintext);
    body["notice"] = Value::String("Copy this key now: it is shown only once.".into());
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn create(
    State(auth): State<Arc<Auth>>,
    Extension(me): Extension<SignedIn>,
    body: Bytes,
) -> Response {
    create_key(&auth, &me, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn update_key(
    auth: &Auth,
    me: &SignedIn,
    key_id: &str,
    body: &[u8],
) -> Result<Response, GatewayError> {
    let change: KeyChange = {
        let value: Value = json_body(body)?;
        KeyChange::from_json(&value, OffsetDateTime::now_utc())?
    };
    let key = own_key(auth, me, key_id).await?;
    let records = auth.web.records.as_ref();
    let key = key_settings::update(
        records,
        &auth.budget,
        key,
        &change,
        OffsetDateTime::now_utc(),
    )
    .await?;
    if let Some(cache) = &auth.key_cache {
        cache.forget(key_id);
    }
    Ok(Json(shown(auth, &key).await).into_response())
}

/// Changes one of the user's keys: its name and any of its controls (`null` clears one, an absent
/// field is left as it is).
pub async fn update(
    State(auth): State<Arc<Auth>>,
    Extension(me): Extension<SignedIn>,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Response {
    update_key(&auth, &me, &key_id, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// How long the old secret keeps working; the gateway's default (24 h) when absent.
    grace_period_hours: Option<f64>,
}

async fn rotate_key(
    auth: &Auth,
    me: &SignedIn,
    key_id: &str,
    body: &[u8],
) -> Result<Response, GatewayError> {
    let request: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        json_body(body)?
    };
    let grace = key_settings::grace_period(request.grace_period_hours, auth.rotation_grace)?;
    let key = own_key(auth, me, key_id).await?;
    let records = auth.web.records.as_ref();
    let now = OffsetDateTime::now_utc();
    let (plaintext, rotated) =
        key_settings::rotate(records, key, auth.bcrypt_cost, grace, now).await?;
    if let Some(cache) = &auth.key_cache {
        cache.forget(key_id);
    }
    let until = rotated
        .previous
        .as_ref()
        .map(|p| format_timestamp(p.valid_until))
        .unwrap_or_default();
    let mut body = shown(auth, &rotated).await;
    body["key"] = Value::String(plaintext);
    body["notice"] = Value::String(format!(
        "Copy this key now: it is shown only once. The old secret keeps working until {until}."
    ));
    Ok(Json(body).into_response())
}

/// Gives one of the user's keys a new secret under the same id; the old one keeps working for the
/// grace period (`{"grace_period_hours": N}`, default 24). Rotating again within it ends the older
/// secret at once: a key has at most two.
pub async fn rotate(
    State(auth): State<Arc<Auth>>,
    Extension(me): Extension<SignedIn>,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Response {
    rotate_key(&auth, &me, &key_id, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Revokes one of the user's keys.
pub async fn revoke(
    State(auth): State<Arc<Auth>>,
    Extension(me): Extension<SignedIn>,
    Path(key_id): Path<String>,
) -> Response {
    if let Err(err) = own_key(&auth, &me, &key_id).await {
        return err.into_response();
    }
    match auth
        .web
        .records
        .revoke_key(&key_id, OffsetDateTime::now_utc())
        .await
    {
        Ok(_) => {
            if let Some(cache) = &auth.key_cache {
                cache.forget(&key_id);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => GatewayError::internal(e).into_response(),
    }
}
