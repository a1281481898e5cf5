//! `/auth/{google,apple}/login` and `/callback`, and `/auth/logout`.
//!
//! Login stores the attempt's state, nonce and PKCE verifier in a short-lived signed cookie and redirects
//! to the provider; the callback checks the state against that cookie, exchanges the code with the
//! verifier, validates the ID token (nonce included), and sets the session cookie.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use qnp_shared::GatewayError;
use qnp_shared::sessions::{clear_session_cookie, cookie, session_cookie};
use qnp_shared::web::SignedIn;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::oidc::{Attempt, same_secret};
use crate::{Auth, SignInProvider};

const STATE_AUDIENCE: &str = "qnp-oauth";
use qnp_shared::sessions::{
    OAUTH_STATE_COOKIE as STATE_COOKIE, OAUTH_STATE_TTL_SECS as STATE_TTL_SECS,
};

#[derive(Serialize, Deserialize)]
struct StateClaims {
    aud: String,
    exp: i64,
    provider: String,
    state: String,
    nonce: String,
    verifier: String,
}

fn provider<'a>(auth: &'a Auth, name: &str) -> Result<&'a SignInProvider, GatewayError> {
    let (slot, variables) = match name {
        "google" => (&auth.google, "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET"),
        _ => (
            &auth.apple,
            "APPLE_CLIENT_ID, APPLE_TEAM_ID, APPLE_KEY_ID and APPLE_PRIVATE_KEY",
        ),
    };
    slot.as_ref().ok_or(GatewayError::ProviderNotConfigured {
        provider: if name == "google" {
            "Google sign-in"
        } else {
            "Sign in with Apple"
        },
        variable: variables,
    })
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Apple posts its callback from appleid.apple.com (a cross-site POST), which only carries a cookie
/// marked SameSite=None; Google's callback is a top-level GET, for which Lax suffices.
fn state_cookie(value: &str, max_age: i64, cross_site_post: bool) -> HeaderValue {
    let same_site = if cross_site_post { "None" } else { "Lax" };
    HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite={same_site}"
    ))
    .expect("a JWT is a valid header value")
}

async fn login(auth: &Auth, name: &str) -> Result<Response, GatewayError> {
    let provider = provider(auth, name)?;
    let attempt = Attempt::new();
    let redirect_uri = auth.redirect_uri(name);
    let url = provider
        .relying
        .authorization_url(&attempt, &redirect_uri, provider.scope, provider.form_post)
        .await?;
    let token = auth.web.sessions.sign(&StateClaims {
        aud: STATE_AUDIENCE.into(),
        exp: OffsetDateTime::now_utc().unix_timestamp() + STATE_TTL_SECS,
        provider: name.into(),
        state: attempt.state,
        nonce: attempt.nonce,
        verifier: attempt.verifier,
    });
    let mut response = redirect(&url);
    response.headers_mut().append(
        header::SET_COOKIE,
        state_cookie(&token, STATE_TTL_SECS, provider.form_post),
    );
    Ok(response)
}

/// The start of the message for a sign-in the provider answered with an error (`error=...`).
const PROVIDER_REFUSED: &str = "sign-in did not complete: ";
/// The message for a callback whose sign-in cannot be matched to this browser's attempt.
const ATTEMPT_LOST: &str = "sign-in expired or was started in another browser; start again";

/// Why a browser's sign-in failed, as a code from a fixed set: the dashboard words it. A link anyone can
/// craft must not be able to put its own text on our page, so no message travels in the URL.
fn sign_in_failure_code(err: &GatewayError) -> &'static str {
    match err {
        GatewayError::ProviderNotConfigured { .. } => "not_configured",
        GatewayError::BadRequest(message)
            if message.strip_prefix(PROVIDER_REFUSED) == Some("access_denied") =>
        {
            "cancelled"
        }
        GatewayError::BadRequest(message) if message == ATTEMPT_LOST => "expired",
        _ => "failed",
    }
}

/// Sign-in pages are browser navigations: a failure there goes back to the dashboard with a reason code
/// (`/?signin_error=cancelled`) rather than to a bare JSON body. API clients (no `text/html` in
/// `Accept`) get the JSON error as everywhere else. The detail is logged.
fn finish_sign_in(
    auth: &Auth,
    headers: &HeaderMap,
    result: Result<Response, GatewayError>,
) -> Response {
    let err = match result {
        Ok(response) => return response,
        Err(err) => err,
    };
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !wants_page {
        return err.into_response();
    }
    tracing::warn!(error = %err, "sign-in failed");
    let code = sign_in_failure_code(&err);
    redirect(&format!("{}/?signin_error={code}", auth.public_url))
}

pub async fn google_login(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    finish_sign_in(&auth, &headers, login(&auth, "google").await)
}

pub async fn apple_login(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    finish_sign_in(&auth, &headers, login(&auth, "apple").await)
}

/// `GET /auth/session`: whether this browser is signed in, and which sign-in providers are configured,
/// so the dashboard can choose its view (and its buttons) without provoking a 401.
pub async fn session(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    let signed_in = match qnp_shared::web::current_account(&auth.web, &headers).await {
        Ok(account) => account.is_some(),
        Err(err) => return err.into_response(),
    };
    let mut response = axum::Json(serde_json::json!({
        "signed_in": signed_in,
        "providers": {"google": auth.google.is_some(), "apple": auth.apple.is_some()},
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn callback(
    auth: &Auth,
    name: &str,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Response, GatewayError> {
    let provider = provider(auth, name)?;
    if let Some(error) = params.get("error") {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(GatewayError::BadRequest(format!(
            "{PROVIDER_REFUSED}{error}"
        )));
    }
    let saved: StateClaims = cookie(headers, STATE_COOKIE)
        .and_then(|token| auth.web.sessions.verify(token, STATE_AUDIENCE))
        .filter(|claims: &StateClaims| claims.provider == name)
        .ok_or_else(|| GatewayError::BadRequest(ATTEMPT_LOST.into()))?;
    let state = params
        .get("state")
        .ok_or_else(|| GatewayError::field("state", "the callback has no 'state'"))?;
    if !same_secret(state, &saved.state) {
        return Err(GatewayError::BadRequest(
            "sign-in state mismatch; start again".into(),
        ));
    }
    let code = params
        .get("code")
        .ok_or_else(|| GatewayError::field("code", "the callback has no 'code'"))?;
    let client_secret = provider.client_secret()?;
    let id_token = provider
        .relying
        .exchange(
            code,
            &saved.verifier,
            &auth.redirect_uri(name),
            &client_secret,
        )
        .await?;
    let claims = provider.relying.validate(&id_token, &saved.nonce).await?;
    // Apple sends the user's name once, on the first authorization, as a JSON form field.
    let first_name = params.get("user").and_then(|user| apple_user_name(user));
    let account =
        crate::signin::account_for(auth.web.records.as_ref(), name, &claims, first_name).await?;
    let session = auth.web.sessions.issue(&account, OffsetDateTime::now_utc());
    let mut response = redirect(&format!("{}/", auth.public_url));
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, session_cookie(&session));
    headers.append(header::SET_COOKIE, state_cookie("", 0, provider.form_post));
    Ok(response)
}

fn apple_user_name(user: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct User {
        name: Option<Name>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Name {
        first_name: Option<String>,
        last_name: Option<String>,
    }
    let name = serde_json::from_str::<User>(user).ok()?.name?;
    let full = [name.first_name, name.last_name]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    (!full.trim().is_empty()).then(|| full.trim().chars().take(200).collect())
}

pub async fn google_callback(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let result = callback(&auth, "google", &headers, &params).await;
    finish_sign_in(&auth, &headers, result)
}

/// Apple's `response_mode=form_post` callback: the fields arrive as a form body.
pub async fn apple_callback(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let params: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let result = callback(&auth, "apple", &headers, &params).await;
    finish_sign_in(&auth, &headers, result)
}

/// Ends every session of the account (server-side, by bumping its session version) and clears the cookie.
pub async fn logout(State(auth): State<Arc<Auth>>, Extension(me): Extension<SignedIn>) -> Response {
    if let Err(e) = auth.web.records.bump_session_version(&me.account.id).await {
        return GatewayError::internal(e).into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_session_cookie());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_user_names() {
        assert_eq!(
            apple_user_name(
                r#"{"name":{"firstName":"Ada","lastName":"Lovelace"},"email":"x@privaterelay.appleid.com"}"#
            ),
            Some("Ada Lovelace".into())
        );
        assert_eq!(apple_user_name(r#"{"email":"x"}"#), None);
        assert_eq!(apple_user_name("not json"), None);
    }
}
