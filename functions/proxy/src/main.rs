//! The `proxy` Lambda function: configuration and clients are built once per cold start, then the same
//! router `qnp serve` uses handles every invocation. It runs as two functions: behind the HTTP API
//! (buffered) and behind a function URL (`QNP_RESPONSE_STREAMING=true`, streamed).

use std::sync::Arc;

use qnp_proxy::{Proxy, router};
use qnp_shared::catalog::Catalog;
use qnp_shared::lambda;
use qnp_shared::plans::Plans;
use qnp_shared::usage_log::UsageLog;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = lambda::config().await?;
    let stores = lambda::stores(&config).await?;
    let catalog = Arc::new(Catalog::load(config.models_file.as_deref())?);
    let plans = Arc::new(Plans::from_config(&config)?);
    let usage = UsageLog::inline(stores.records.clone(), stores.counters.clone());
    let proxy = Arc::new(Proxy::new(&config, &stores, usage, catalog, plans));
    lambda::serve(router(proxy), &config).await
}
