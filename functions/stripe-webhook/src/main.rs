//! The `stripe-webhook` Lambda function behind the HTTP API: Stripe's deliveries and the dashboard's
//! billing routes. Clients (database, Stripe) are built once per cold start.

use std::sync::Arc;

use qnp_shared::config::Config;
use qnp_shared::plans::Plans;
use qnp_shared::store::Stores;
use qnp_shared::web::WebAuth;
use qnp_stripe_webhook::{Payments, router};

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
    let plans = Arc::new(Plans::from_config(&config)?);
    let (web, public_url) = WebAuth::for_lambda(&config, stores.records.clone())?;
    let payments = Payments::new(&config, &stores, Arc::new(web), plans, &public_url)?;
    let app = qnp_shared::web::with_fallbacks(router(Arc::new(payments)));
    lambda_http::run(app).await
}
