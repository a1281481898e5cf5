//! The `auth` Lambda function: configuration and clients built once per cold start.

use std::sync::Arc;

use qnp_auth::{Auth, router};
use qnp_shared::lambda;
use qnp_shared::web::WebAuth;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = lambda::config().await?;
    let stores = lambda::stores(&config).await?;
    let (web, public_url) = WebAuth::for_lambda(&config, stores.records.clone())?;
    let http = qnp_shared::providers::http_client();
    let auth = Arc::new(Auth::new(
        &config,
        Arc::new(web),
        stores.counters.clone(),
        &public_url,
        http,
    ));
    lambda::serve(router(auth), &config).await
}
