//! `/account`: see it, correct it, restrict processing, delete it (GDPR access, rectification,
//! restriction and erasure).

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use qnp_shared::GatewayError;
use qnp_shared::accounts::{
    Account, Identity, ProfileChange, ProfileUpdate, is_plausible_email, normalize_email,
};
use qnp_shared::sessions::clear_session_cookie;
use qnp_shared::web::{SignedIn, json_body};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::Auth;

use qnp_shared::retention::ERASURE_DAYS;

fn ts(t: OffsetDateTime) -> String {
    qnp_shared::usage::format_timestamp(t)
}

pub fn account_json(account: &Account, identities: &[Identity]) -> Value {
    json!({
        "id": account.id,
        "email": account.email,
        "name": account.name,
        "plan": account.plan,
        "created_at": ts(account.created_at),
        "restricted": account.restricted,
        "deletion_requested_at": account.deletion_requested_at.map(ts),
        "identities": identities.iter().map(|i| json!({
            "provider": i.provider,
            "email": i.email,
            "created_at": ts(i.created_at),
        })).collect::<Vec<_>>(),
    })
}

async fn render(auth: &Auth, account: &Account) -> Result<Response, GatewayError> {
    let identities = auth
        .web
        .records
        .identities_for_account(&account.id)
        .await
        .map_err(GatewayError::internal)?;
    Ok(Json(account_json(account, &identities)).into_response())
}

pub async fn get(State(auth): State<Arc<Auth>>, Extension(me): Extension<SignedIn>) -> Response {
    render(&auth, &me.account)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    name: Option<String>,
    email: Option<String>,
}

async fn patch_account(auth: &Auth, me: &SignedIn, body: &[u8]) -> Result<Response, GatewayError> {
    let patch: Patch = json_body(body)?;
    if let Some(name) = &patch.name
        && (name.trim().is_empty() || name.chars().count() > 200)
    {
        return Err(GatewayError::field(
            "name",
            "'name' must be 1 to 200 characters",
        ));
    }
    if let Some(email) = &patch.email
        && !is_plausible_email(email)
    {
        return Err(GatewayError::field(
            "email",
            "'email' must be an email address",
        ));
    }
    // Correcting the email (GDPR rectification) means choosing among addresses an identity provider
    // verified as this person's: the account's own, or one of its sign-in identities'. An address the
    // user merely typed is never taken, or anyone could claim someone else's address before its owner
    // signs up and be handed their account.
    let email = patch.email.as_deref().map(normalize_email);
    if let Some(email) = &email
        && *email != me.account.email
    {
        let identities = auth
            .web
            .records
            .identities_for_account(&me.account.id)
            .await
            .map_err(GatewayError::internal)?;
        if !identities.iter().any(|i| i.email.as_ref() == Some(email)) {
            return Err(GatewayError::field(
                "email",
                "an address becomes your account's email only once Google or Apple has confirmed it is \
                 yours: sign in once with an account that has it, then choose it here",
            ));
        }
    }
    let change = ProfileChange {
        name: patch.name.map(|n| n.trim().to_owned()),
        email,
    };
    match auth
        .web
        .records
        .update_profile(&me.account.id, &change)
        .await
        .map_err(GatewayError::internal)?
    {
        ProfileUpdate::Updated(account) => render(auth, &account).await,
        ProfileUpdate::EmailTaken => Err(GatewayError::Conflict(
            "that email belongs to another account".into(),
        )),
        ProfileUpdate::NotFound => Err(GatewayError::NotSignedIn),
    }
}

pub async fn patch(
    State(auth): State<Arc<Auth>>,
    Extension(me): Extension<SignedIn>,
    body: Bytes,
) -> Response {
    patch_account(&auth, &me, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn set_restricted(
    auth: &Auth,
    me: &SignedIn,
    restricted: bool,
) -> Result<Response, GatewayError> {
    auth.web
        .records
        .set_restricted(&me.account.id, restricted)
        .await
        .map_err(GatewayError::internal)?;
    auth.forget_account_keys(&me.account.id);
    let account = Account {
        restricted,
        ..me.account.clone()
    };
    render(auth, &account).await
}

/// Restricts processing: the proxy refuses the account's keys (403) until it is lifted.
pub async fn restrict(
    State(auth): State<Arc<Auth>>,
    Extension(me): Extension<SignedIn>,
) -> Response {
    set_restricted(&auth, &me, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn lift_restriction(
    State(auth): State<Arc<Auth>>,
    Extension(me): Extension<SignedIn>,
) -> Response {
    set_restricted(&auth, &me, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Deletes the account: sessions end and keys are revoked at once; the data is erased within 30 days.
pub async fn delete(State(auth): State<Arc<Auth>>, Extension(me): Extension<SignedIn>) -> Response {
    let now = OffsetDateTime::now_utc();
    if let Err(e) = auth.web.records.request_deletion(&me.account.id, now).await {
        return GatewayError::internal(e).into_response();
    }
    auth.forget_account_keys(&me.account.id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({
            "deletion_requested_at": ts(now),
            "erased_by": ts(now + time::Duration::days(ERASURE_DAYS)),
            "message": "Your sessions have ended and your API keys are revoked. All your data will be erased by the date above.",
        })),
    )
        .into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_session_cookie());
    response
}
