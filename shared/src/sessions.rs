//! Signed cookies: the dashboard session (a JWT naming the account and the session version it was issued
//! under) and the short-lived OAuth state cookie. Both are HS256 JWTs keyed by `QNP_SESSION_SECRET`, told
//! apart by audience so one can never be replayed as the other.

use axum::http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::accounts::Account;

/// `__Host-`: the browser only accepts it with Secure, Path=/ and no Domain, so no subdomain can set it.
pub const SESSION_COOKIE: &str = "__Host-qnp_session";
const SESSION_AUDIENCE: &str = "qnp-session";
/// A session lasts a week and is re-issued when less than a day is left.
pub const SESSION_TTL_SECS: i64 = 7 * 24 * 3600;
const REFRESH_BELOW_SECS: i64 = 24 * 3600;
/// The short-lived cookie that carries a sign-in attempt's state, nonce and PKCE verifier from the login
/// redirect to the provider's callback.
pub const OAUTH_STATE_COOKIE: &str = "__Host-qnp_oauth";
/// Time a user has to finish signing in at the provider.
pub const OAUTH_STATE_TTL_SECS: i64 = 600;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SessionClaims {
    /// The account id.
    pub sub: String,
    /// The account's session version at issue; a bump invalidates the session.
    pub sv: i64,
    pub iat: i64,
    pub exp: i64,
    pub aud: String,
}

impl SessionClaims {
    pub fn needs_refresh(&self, now: OffsetDateTime) -> bool {
        self.exp - now.unix_timestamp() < REFRESH_BELOW_SECS
    }
}

pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Sessions {
    pub fn new(secret: &[u8]) -> Sessions {
        Sessions {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Signs any claims for `audience`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Verifies signature, expiry (no leeway: these are our own clocks) and audience.
    pub fn verify<T: DeserializeOwned>(&self, token: &str, audience: &str) -> Option<T> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }

    pub fn issue(&self, account: &Account, now: OffsetDateTime) -> String {
        self.sign(&SessionClaims {
            sub: account.id.clone(),
            sv: account.session_version,
            iat: now.unix_timestamp(),
            exp: now.unix_timestamp() + SESSION_TTL_SECS,
            aud: SESSION_AUDIENCE.into(),
        })
    }

    pub fn verify_session(&self, token: &str) -> Option<SessionClaims> {
        self.verify(token, SESSION_AUDIENCE)
    }
}

/// `Set-Cookie` for a session token.
pub fn session_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Max-Age={SESSION_TTL_SECS}; Path=/; Secure; HttpOnly; SameSite=Lax"
    ))
    .expect("a JWT is a valid header value")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-qnp_session=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax",
    )
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account::new("a@example.com", "free", OffsetDateTime::now_utc())
    }

    #[test]
    fn sessions_verify_only_untampered_unexpired_tokens_of_their_audience() {
        let sessions = Sessions::new(b"secret-1");
        let now = OffsetDateTime::now_utc();
        let token = sessions.issue(&account(), now);
        assert!(sessions.verify_session(&token).is_some());
        assert!(Sessions::new(b"secret-2").verify_session(&token).is_none());
        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 3, 'x');
        assert!(sessions.verify_session(&tampered).is_none());
        let expired = sessions.issue(
            &account(),
            now - time::Duration::seconds(SESSION_TTL_SECS + 1),
        );
        assert!(sessions.verify_session(&expired).is_none());
        let other_audience = sessions.sign(&SessionClaims {
            sub: "acct".into(),
            sv: 0,
            iat: now.unix_timestamp(),
            exp: now.unix_timestamp() + 60,
            aud: "qnp-oauth".into(),
        });
        assert!(sessions.verify_session(&other_audience).is_none());
    }

    #[test]
    fn cookie_attributes_and_parsing() {
        let set = session_cookie("abc");
        let set = set.to_str().unwrap();
        for attribute in [
            "__Host-qnp_session=abc",
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=",
        ] {
            assert!(set.contains(attribute), "{set}");
        }
        assert!(!set.contains("Domain"));
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-qnp_session=tok"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&headers, "missing"), None);
    }
}
