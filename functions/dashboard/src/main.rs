//! The `dashboard` Lambda function: serves the page and its files behind the HTTP API, on the same
//! origin as the API it calls. It needs no store.

use std::sync::Arc;

use qnp_dashboard::{Dashboard, router};
use qnp_shared::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = lambda::config().await?;
    let dashboard = Dashboard {
        dir: None,
        ..Dashboard::from_config(&config)?
    };
    lambda::serve(router(Arc::new(dashboard)), &config).await
}
