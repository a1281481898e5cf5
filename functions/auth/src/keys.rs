//! `/keys`: the signed-in user's API keys: list, create (the plaintext is in the creation response
//! only), rename, revoke.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qnp_shared::GatewayError;
use qnp_shared::accounts::ApiKeyRecord;
use qnp_shared::usage::format_timestamp;
use qnp_shared::web::{SignedIn, json_body};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::Auth;

/// Enough for every environment and teammate; a runaway script cannot mint keys without bound.
const MAX_ACTIVE_KEYS: u64 = 50;

fn key_json(key: &ApiKeyRecord) -> Value {
    json!({
        "id": key.key_id,
        "name": key.name,
        "prefix": key.prefix(),
        "created_at": format_timestamp(key.created_at),
        "last_used_at": key.last_used_at.map(format_timestamp),
        "revoked_at": key.revoked_at.map(format_timestamp),
    })
}

pub async fn list(State(auth): State<Arc<Auth>>, Extension(me): Extension<SignedIn>) -> Response {
    match auth.web.records.keys_for_account(&me.account.id).await {
        Ok(keys) => {
            Json(json!({"data": keys.iter().map(key_json).collect::<Vec<_>>()})).into_response()
        }
        Err(e) => GatewayError::internal(e).into_response(),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: Option<String>,
}

/// A key's name as the user typed it: trimmed, empty meaning none, at most 100 characters, and no
/// control characters (names are printed on operators' terminals by `qnp keys list`).
fn key_name(name: Option<String>) -> Result<Option<String>, GatewayError> {
    qnp_shared::accounts::key_name(name).map_err(|message| GatewayError::field("name", message))
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
    let request: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        json_body(body)?
    };
    let name = key_name(request.name)?;
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
    let key = tokio::task::spawn_blocking(move || {
        qnp_shared::keys::generate(&account_id, name, cost, OffsetDateTime::now_utc())
    })
    .await
    .map_err(GatewayError::internal)?
    .map_err(GatewayError::internal)?;
    if !records
        .insert_key_within(&key.record, MAX_ACTIVE_KEYS)
        .await
        .map_err(GatewayError::internal)?
    {
        return Err(at_limit());
    }
    let mut body = key_json(&key.record);
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    name: Option<String>,
}

async fn rename_key(
    auth: &Auth,
    me: &SignedIn,
    key_id: &str,
    body: &[u8],
) -> Result<Response, GatewayError> {
    let request: Rename = json_body(body)?;
    let name = key_name(request.name)?;
    let mut key = own_key(auth, me, key_id).await?;
    auth.web
        .records
        .rename_key(key_id, name.as_deref())
        .await
        .map_err(GatewayError::internal)?;
    key.name = name;
    Ok(Json(key_json(&key)).into_response())
}

/// Names or renames one of the user's keys (`{"name": "..."}`; null or empty clears it).
pub async fn rename(
    State(auth): State<Arc<Auth>>,
    Extension(me): Extension<SignedIn>,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Response {
    rename_key(&auth, &me, &key_id, &body)
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
