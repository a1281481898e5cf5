//! An OpenID Connect relying party for one identity provider: discovery, the authorization URL with
//! state, nonce and PKCE (S256), the code exchange, and ID-token validation against the provider's JWKS
//! (cached, refreshed when a token names an unknown key).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use qnp_shared::GatewayError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, RwLock};

/// Clock skew tolerated on `exp` / `iat`.
const LEEWAY_SECS: u64 = 60;
/// A token naming an unknown key triggers at most one JWKS refetch per this interval.
const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// The claims QNP uses from a validated ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    /// Google sends a boolean; Apple has sent the string "true".
    #[serde(default, deserialize_with = "bool_or_string")]
    pub email_verified: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    aud: serde_json::Value,
    #[serde(default)]
    iat: Option<i64>,
}

fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<Flag>::deserialize(d)? {
        Some(Flag::Bool(b)) => Some(b),
        Some(Flag::Text(t)) => Some(t == "true"),
        None => None,
    })
}

/// Why a sign-in failed. Logged in full; the user sees a short, safe message.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider refused the code exchange: {0}")]
    ExchangeRefused(String),
    #[error("the ID token is invalid: {0}")]
    InvalidToken(String),
}

impl From<SignInError> for GatewayError {
    fn from(err: SignInError) -> GatewayError {
        tracing::warn!(error = %err, "sign-in failed");
        match err {
            SignInError::Unreachable(_) => GatewayError::UpstreamFailed,
            SignInError::ExchangeRefused(_) => GatewayError::BadRequest(
                "sign-in failed: the authorization code was refused".into(),
            ),
            SignInError::InvalidToken(_) => {
                GatewayError::BadRequest("sign-in failed: the identity token is not valid".into())
            }
        }
    }
}

pub struct Relying {
    pub issuer: String,
    pub client_id: String,
    http: reqwest::Client,
    discovery: OnceCell<Discovery>,
    jwks: RwLock<Option<(JwkSet, Instant)>>,
}

/// One login attempt's secrets, kept in the signed state cookie between login and callback.
pub struct Attempt {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl Default for Attempt {
    fn default() -> Attempt {
        Attempt::new()
    }
}

impl Attempt {
    pub fn new() -> Attempt {
        Attempt {
            state: qnp_shared::keys::random_token(32),
            nonce: qnp_shared::keys::random_token(32),
            verifier: qnp_shared::keys::random_token(64),
        }
    }

    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

/// Constant-time equality for the values an attacker may probe (state, nonce).
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Relying {
    pub fn new(issuer: &str, client_id: &str, http: reqwest::Client) -> Relying {
        Relying {
            issuer: issuer.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            http,
            discovery: OnceCell::new(),
            jwks: RwLock::new(None),
        }
    }

    /// The provider's discovery document, fetched once (a failure is retried on the next login).
    pub async fn discovery(&self) -> Result<&Discovery, SignInError> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.issuer);
                let doc: Discovery = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| SignInError::Unreachable(e.to_string()))?
                    .json()
                    .await
                    .map_err(|e| SignInError::Unreachable(format!("discovery document: {e}")))?;
                if doc.issuer.trim_end_matches('/') != self.issuer {
                    return Err(SignInError::Unreachable(format!(
                        "discovery names issuer {} instead of {}",
                        doc.issuer, self.issuer
                    )));
                }
                Ok(doc)
            })
            .await
    }

    pub async fn authorization_url(
        &self,
        attempt: &Attempt,
        redirect_uri: &str,
        scope: &str,
        form_post: bool,
    ) -> Result<String, SignInError> {
        let discovery = self.discovery().await?;
        let mut url = url::Url::parse(&discovery.authorization_endpoint)
            .map_err(|e| SignInError::Unreachable(format!("authorization endpoint: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", scope)
                .append_pair("state", &attempt.state)
                .append_pair("nonce", &attempt.nonce)
                .append_pair("code_challenge", &attempt.challenge())
                .append_pair("code_challenge_method", "S256");
            if form_post {
                query.append_pair("response_mode", "form_post");
            }
        }
        Ok(url.into())
    }

    /// Exchanges the authorization code (with the PKCE verifier) for an ID token.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        client_secret: &str,
    ) -> Result<String, SignInError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
        }
        let discovery = self.discovery().await?;
        let response = self
            .http
            .post(&discovery.token_endpoint)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", &self.client_id),
                ("client_secret", client_secret),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .map_err(|e| SignInError::Unreachable(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(SignInError::ExchangeRefused(format!("{status}: {body}")));
        }
        let tokens: TokenResponse = response
            .json()
            .await
            .map_err(|e| SignInError::ExchangeRefused(format!("token response: {e}")))?;
        tokens
            .id_token
            .ok_or_else(|| SignInError::ExchangeRefused("no id_token in the token response".into()))
    }

    async fn key_for(&self, kid: &str) -> Result<DecodingKey, SignInError> {
        let lookup = |jwks: &JwkSet| jwks.find(kid).map(DecodingKey::from_jwk);
        let stale = {
            let cached = self.jwks.read().await;
            if let Some((jwks, _)) = cached.as_ref()
                && let Some(key) = lookup(jwks)
            {
                return key.map_err(|e| SignInError::InvalidToken(format!("JWK {kid}: {e}")));
            }
            cached
                .as_ref()
                .is_none_or(|(_, fetched)| fetched.elapsed() >= JWKS_REFRESH_MIN_INTERVAL)
        };
        if !stale {
            return Err(SignInError::InvalidToken(format!(
                "unknown signing key '{kid}'"
            )));
        }
        // Unknown key: the provider may have rotated. Refetch once, then decide.
        let discovery = self.discovery().await?;
        let jwks: JwkSet = self
            .http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| SignInError::Unreachable(format!("JWKS: {e}")))?
            .json()
            .await
            .map_err(|e| SignInError::Unreachable(format!("JWKS: {e}")))?;
        let key = lookup(&jwks);
        *self.jwks.write().await = Some((jwks, Instant::now()));
        match key {
            Some(key) => key.map_err(|e| SignInError::InvalidToken(format!("JWK {kid}: {e}"))),
            None => Err(SignInError::InvalidToken(format!(
                "unknown signing key '{kid}'"
            ))),
        }
    }

    /// Validates signature (by `kid` from the JWKS), issuer (exact), audience (contains our client id;
    /// `azp` must be us when present or when there are several audiences), expiry and issue time (with
    /// leeway), and the nonce of this login attempt.
    pub async fn validate(&self, id_token: &str, nonce: &str) -> Result<IdClaims, SignInError> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| SignInError::InvalidToken(format!("header: {e}")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(SignInError::InvalidToken(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| SignInError::InvalidToken("no kid in the header".into()))?;
        let key = self.key_for(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.client_id]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdClaims>(id_token, &key, &validation)
            .map_err(|e| SignInError::InvalidToken(e.to_string()))?
            .claims;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS as i64) {
            return Err(SignInError::InvalidToken("issued in the future".into()));
        }
        let several_audiences =
            matches!(&claims.aud, serde_json::Value::Array(list) if list.len() > 1);
        match &claims.azp {
            Some(azp) if *azp != self.client_id => {
                return Err(SignInError::InvalidToken("azp is another client".into()));
            }
            None if several_audiences => {
                return Err(SignInError::InvalidToken(
                    "several audiences and no azp".into(),
                ));
            }
            _ => {}
        }
        match &claims.nonce {
            Some(got) if same_secret(got, nonce) => Ok(claims),
            _ => Err(SignInError::InvalidToken("nonce mismatch".into())),
        }
    }
}
