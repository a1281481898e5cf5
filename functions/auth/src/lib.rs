//! The `auth` function: sign-in with Google and Apple, the session cookie, the account and its API keys.
//!
//! Every route goes through `qnp_shared::web::guard`: deny by default, with `PUBLIC_ROUTES` the only
//! routes reachable without a session, and every state change checked against the dashboard's origin.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::{get, post};
use qnp_shared::GatewayError;
use qnp_shared::config::{AppleConfig, Config};
use qnp_shared::web::{Guard, PublicRoute, WebAuth};

mod account;
mod apple;
mod keys;
mod login;
pub mod oidc;
mod signin;

/// The only routes served without a session: starting and finishing a sign-in, and asking whether one
/// is signed in (which the dashboard does before anything else).
pub const PUBLIC_ROUTES: &[PublicRoute] = &[
    (Method::GET, "/auth/session"),
    (Method::GET, "/auth/google/login"),
    (Method::GET, "/auth/google/callback"),
    (Method::GET, "/auth/apple/login"),
    (Method::POST, "/auth/apple/callback"),
];

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
    /// The proxy's key cache when it runs in this process (`qnp serve`): revoking a key or restricting
    /// an account takes effect at once instead of within the cache lifetime.
    pub key_cache: Option<Arc<qnp_shared::keys::KeyVerifier>>,
}

impl Auth {
    pub fn new(
        config: &Config,
        web: Arc<WebAuth>,
        public_url: &str,
        http: reqwest::Client,
    ) -> Auth {
        let google = config.google.as_ref().map(|g| SignInProvider {
            relying: oidc::Relying::new(&g.issuer, &g.client_id, http.clone()),
            scope: "openid email profile",
            form_post: false,
            secret: ClientSecret::Static(g.client_secret.clone()),
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

/// The auth function's routes, guarded; whoever serves it applies `qnp_shared::web::with_fallbacks` once.
pub fn router(auth: Arc<Auth>) -> Router {
    let guard = Guard {
        web: auth.web.clone(),
        public: PUBLIC_ROUTES,
    };
    Router::new()
        .route("/auth/session", get(login::session))
        .route("/auth/google/login", get(login::google_login))
        .route("/auth/google/callback", get(login::google_callback))
        .route("/auth/apple/login", get(login::apple_login))
        .route("/auth/apple/callback", post(login::apple_callback))
        .route("/auth/logout", post(login::logout))
        .route(
            "/account",
            get(account::get)
                .patch(account::patch)
                .delete(account::delete),
        )
        .route(
            "/account/restrict",
            post(account::restrict).delete(account::lift_restriction),
        )
        .route("/keys", get(keys::list).post(keys::create))
        .route(
            "/keys/{id}",
            axum::routing::patch(keys::rename).delete(keys::revoke),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            guard,
            qnp_shared::web::guard,
        ))
        .with_state(auth)
}
