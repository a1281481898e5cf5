//! The `dashboard` Lambda function: serves the page and its files behind the HTTP API, on the same
//! origin as the API it calls.

use std::sync::Arc;

use qnp_dashboard::{Dashboard, router};
use qnp_shared::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let config = Config::load().await?;
    let dashboard = Dashboard::from_config(&config)?;
    let app = qnp_shared::web::with_fallbacks(router(Arc::new(Dashboard {
        dir: None,
        ..dashboard
    })));
    lambda_http::run(app).await
}
