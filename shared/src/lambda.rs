//! What every Lambda function does at cold start, once: JSON logs, configuration (with the secret),
//! the cloud stores, and serving its router (streamed or buffered, as `Config::response_streaming` says).
//! The mains in functions/*/src/main.rs only add what is their own.

use axum::Router;
use lambda_http::Error;

use crate::config::Config;
use crate::store::Stores;

/// JSON log lines for CloudWatch, filtered by `RUST_LOG`; Lambda stamps the time itself.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();
}

/// Logging, then the configuration: a missing or malformed value fails the cold start, naming it.
pub async fn config() -> Result<Config, Error> {
    init_tracing();
    Ok(Config::load().await?)
}

/// The MongoDB and DynamoDB stores: a function keeps nothing on local disk, so the embedded store is a
/// configuration error here.
pub async fn stores(config: &Config) -> Result<Stores, Error> {
    config.require_cloud_stores()?;
    Ok(Stores::from_config(config).await?)
}

/// Serves `routes` (with the gateway's fallbacks) until the runtime stops the function.
pub async fn serve(routes: Router, config: &Config) -> Result<(), Error> {
    let app = crate::web::with_fallbacks(routes);
    if config.response_streaming {
        lambda_http::run_with_streaming_response(app).await
    } else {
        lambda_http::run(app).await
    }
}
