//! The `export` Lambda function. `QNP_RESPONSE_STREAMING=true` (function URL, RESPONSE_STREAM) streams
//! exports of any size in flat memory; behind the HTTP API the runtime buffers the response (6 MB).

use std::sync::Arc;

use qnp_export::{Export, router};
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
    let (web, _) = WebAuth::for_lambda(&config, stores.records.clone())?;
    let web = Arc::new(web);
    let app =
        qnp_shared::web::with_fallbacks(router(Arc::new(Export::new(web, config.export_stall))));
    if std::env::var("QNP_RESPONSE_STREAMING").is_ok_and(|v| v == "true") {
        lambda_http::run_with_streaming_response(app).await
    } else {
        lambda_http::run(app).await
    }
}
