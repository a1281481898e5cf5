//! The `export` Lambda function. Behind a function URL (`QNP_RESPONSE_STREAMING=true`) it streams
//! exports of any size in flat memory; behind the HTTP API the runtime buffers the response (6 MB).

use std::sync::Arc;

use qnp_export::{Export, router};
use qnp_shared::lambda;
use qnp_shared::web::WebAuth;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = lambda::config().await?;
    let stores = lambda::stores(&config).await?;
    let (web, _) = WebAuth::for_lambda(&config, stores.records.clone())?;
    let export = Arc::new(Export::new(Arc::new(web), config.export_stall));
    lambda::serve(router(export), &config).await
}
