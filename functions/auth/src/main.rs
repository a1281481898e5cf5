//! The `auth` Lambda function: configuration and clients built once per cold start.

use std::sync::Arc;

use qnp_auth::{Auth, router};
use qnp_shared::config::{Config, ConfigError};
use qnp_shared::sessions::Sessions;
use qnp_shared::store::Stores;
use qnp_shared::web::{WebAuth, origin_of};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let config = Config::load().await?;
    config.require_cloud_stores()?;
    let secret = config.session_secret.clone().ok_or(ConfigError::Missing {
        variable: "QNP_SESSION_SECRET".into(),
        reason: "it signs session cookies".into(),
    })?;
    let public_url = config.public_url.clone().ok_or(ConfigError::Missing {
        variable: "QNP_PUBLIC_URL".into(),
        reason: "sign-in redirects and the CSRF origin check need it".into(),
    })?;
    let stores = Stores::from_config(&config).await?;
    let web = Arc::new(WebAuth {
        sessions: Sessions::new(secret.as_bytes()),
        records: stores.records.clone(),
        public_origin: origin_of(&public_url),
    });
    let auth = Arc::new(Auth::new(
        &config,
        web,
        &public_url,
        qnp_shared::providers::http_client(),
    ));
    lambda_http::run(qnp_shared::web::with_fallbacks(router(auth))).await
}
