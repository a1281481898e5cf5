//! The `auth` function: sign-in with Google and Apple, the session cookie, the account and its API keys.
//!
//! Every route goes through `qnp_shared::web::guard`: deny by default, with the `Public` endpoints the only
//! routes reachable without a session, and every state change checked against the dashboard's origin.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use qnp_shared::GatewayError;
use qnp_shared::config::{AppleConfig, Config};
use qnp_shared::routes::{Access, Endpoint};
use qnp_shared::web::WebAuth;

mod account;
mod apple;
mod keys;
mod login;
pub mod oidc;
mod signin;

/// A configured identity provider.
pub struct SignInProvider {
    pub relying: oidc::Relying,
    scope: &'static str,
    /// Apple answers with a cross-site form POST instead of a redirect.
    form_post: bool,
    secret: ClientSecret,
}

enum ClientSecret {
    Static(String),
    /// Minted per exchange: Apple's client secret is a JWT the gateway signs.
    Apple(AppleConfig),
}

impl SignInProvider {
    fn client_secret(&self) -> Result<String, GatewayError> {
        match &self.secret {
            ClientSecret::Static(secret) => Ok(secret.clone()),
            ClientSecret::Apple(apple) => {
                apple::client_secret(apple, time::OffsetDateTime::now_utc())
                    .map_err(GatewayError::internal)
            }
        }
    }
}

pub struct Auth {
    pub web: Arc<WebAuth>,
    /// `QNP_PUBLIC_URL` without a trailing slash: redirect URIs and the post-login landing page.
    pub public_url: String,
    pub google: Option<SignInProvider>,
    pub apple: Option<SignInProvider>,
    pub bcrypt_cost: u32,
    /// The spend counters a key's own monthly limit is kept in (shown on the key, seeded when set).
    pub budget: qnp_shared::budget::Budget,
    /// How long a rotated key's old secret keeps working by default.
    pub rotation_grace: time::Duration,
    /// The proxy's key cache when it runs in this process (`qnp serve`): revoking a key or restricting
    /// an account takes effect at once instead of within the cache lifetime.
    pub key_cache: Option<Arc<qnp_shared::keys::KeyVerifier>>,
}

impl Auth {
    pub fn new(
        config: &Config,
        web: Arc<WebAuth>,
        counters: Arc<dyn qnp_shared::store::CounterStore>,
        public_url: &str,
        http: reqwest::Client,
    ) -> Auth {
        let google = config.google.as_ref().map(|g| SignInProvider {
            relying: oidc::Relying::new(&g.issuer, &g.client_id, http.clone()),
            scope: "openid email profile",
            form_post: false,
            secret: ClientSecret::Static(g.client_secret.to_string()),
        });
        let apple = config.apple.as_ref().map(|a| SignInProvider {
            relying: oidc::Relying::new(&a.issuer, &a.client_id, http.clone()),
            scope: "openid email name",
            form_post: true,
            secret: ClientSecret::Apple(a.clone()),
        });
        Auth {
            web,
            public_url: public_url.trim_end_matches('/').to_owned(),
            google,
            apple,
            bcrypt_cost: config.bcrypt_cost,
            budget: qnp_shared::budget::Budget::new(counters),
            rotation_grace: config.key_rotation_grace,
            key_cache: None,
        }
    }

    /// Makes the account's keys be read again on their next use, where the proxy shares this process.
    fn forget_account_keys(&self, account_id: &str) {
        if let Some(cache) = &self.key_cache {
            cache.forget_account(account_id);
        }
    }

    fn redirect_uri(&self, provider: &str) -> String {
        format!("{}/auth/{provider}/callback", self.public_url)
    }
}

/// The auth function's routes. Only starting and finishing a sign-in, and asking whether one is signed
/// in (which the dashboard does before anything else), are served without a session.
pub fn endpoints() -> Vec<Endpoint<Arc<Auth>>> {
    use Access::{Public, Session};
    vec![
        Endpoint::new(Method::GET, "/auth/session", Public, login::session),
        Endpoint::new(
            Method::GET,
            "/auth/google/login",
            Public,
            login::google_login,
        ),
        Endpoint::new(
            Method::GET,
            "/auth/google/callback",
            Public,
            login::google_callback,
        ),
        Endpoint::new(Method::GET, "/auth/apple/login", Public, login::apple_login),
        Endpoint::new(
            Method::POST,
            "/auth/apple/callback",
            Public,
            login::apple_callback,
        ),
        Endpoint::new(Method::POST, "/auth/logout", Session, login::logout),
        Endpoint::new(Method::GET, "/account", Session, account::get),
        Endpoint::new(Method::PATCH, "/account", Session, account::patch),
        Endpoint::new(Method::DELETE, "/account", Session, account::delete),
        Endpoint::new(
            Method::POST,
            "/account/restrict",
            Session,
            account::restrict,
        ),
        Endpoint::new(
            Method::DELETE,
            "/account/restrict",
            Session,
            account::lift_restriction,
        ),
        Endpoint::new(Method::GET, "/keys", Session, keys::list),
        Endpoint::new(Method::POST, "/keys", Session, keys::create),
        Endpoint::new(Method::PATCH, "/keys/{id}", Session, keys::update),
        Endpoint::new(Method::POST, "/keys/{id}/rotate", Session, keys::rotate),
        Endpoint::new(Method::DELETE, "/keys/{id}", Session, keys::revoke),
    ]
}

/// The auth function's routes, guarded; whoever serves it applies `qnp_shared::web::with_fallbacks` once.
pub fn router(auth: Arc<Auth>) -> Router {
    qnp_shared::web::guarded(endpoints(), auth.web.clone()).with_state(auth)
}
