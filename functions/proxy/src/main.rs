//! The `proxy` Lambda function: configuration and clients are built once per cold start, then the same
//! router `qnp serve` uses handles every invocation.
//!
//! `QNP_RESPONSE_STREAMING=true` (the function-URL deployment, InvokeMode RESPONSE_STREAM) streams
//! responses as they are produced; otherwise (API Gateway HTTP API, which cannot take a streamed
//! response) the response is buffered by the runtime.

use std::sync::Arc;

use qnp_proxy::{Proxy, router};
use qnp_shared::catalog::Catalog;
use qnp_shared::config::Config;
use qnp_shared::plans::Plans;
use qnp_shared::store::Stores;
use qnp_shared::usage_log::UsageLog;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();
    let config = Config::load().await?;
    config.require_cloud_stores()?;
    let stores = Stores::from_config(&config).await?;
    let catalog = Arc::new(Catalog::load(config.models_file.as_deref())?);
    let plans = Arc::new(Plans::from_config(&config)?);
    let usage = UsageLog::inline(stores.records.clone());
    let proxy = Arc::new(Proxy::new(&config, &stores, usage, catalog, plans));
    let app = qnp_shared::web::with_fallbacks(router(proxy));
    let streaming = std::env::var("QNP_RESPONSE_STREAMING").is_ok_and(|v| v == "true");
    if streaming {
        lambda_http::run_with_streaming_response(app).await
    } else {
        lambda_http::run(app).await
    }
}
