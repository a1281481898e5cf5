//! Sign in with Apple's client secret: instead of a static secret, Apple wants a short-lived ES256 JWT
//! signed with the team's key (header `kid`; `iss` = team id, `sub` = client id, `aud` = Apple's issuer).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use qnp_shared::config::AppleConfig;
use serde::Serialize;
use time::OffsetDateTime;

/// Apple accepts up to six months; five minutes is all one code exchange needs.
const LIFETIME_SECS: i64 = 300;

#[derive(Serialize)]
struct ClientSecretClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

pub fn client_secret(apple: &AppleConfig, now: OffsetDateTime) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(apple.key_id.clone());
    let claims = ClientSecretClaims {
        iss: &apple.team_id,
        sub: &apple.client_id,
        aud: &apple.issuer,
        iat: now.unix_timestamp(),
        exp: now.unix_timestamp() + LIFETIME_SECS,
    };
    let key = EncodingKey::from_ec_pem(apple.private_key.as_bytes())?;
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}
