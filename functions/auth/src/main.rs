//! The `auth` Lambda function: configuration and clients built once per cold start.

use std::sync::Arc;

use qnp_auth::{Auth, router};
use qnp_shared::config::Config;
use qnp_shared::store::Stores;
use qnp_shared::web::WebAuth;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let config = Config::load().await?;
    config.require_cloud_stores()?;
    let stores = Stores::from_config(&config).await?;
    let (web, public_url) = WebAuth::for_lambda(&config, stores.records.clone())?;
    let web = Arc::new(web);
    let auth = Arc::new(Auth::new(
        &config,
        web,
        &public_url,
        qnp_shared::providers::http_client(),
    ));
    lambda_http::run(qnp_shared::web::with_fallbacks(router(auth))).await
}
