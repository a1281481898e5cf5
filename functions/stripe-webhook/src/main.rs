//! The `stripe-webhook` Lambda function behind the HTTP API: Stripe's deliveries and the dashboard's
//! billing routes. Clients (database, Stripe) are built once per cold start.

use std::sync::Arc;

use qnp_shared::lambda;
use qnp_shared::plans::Plans;
use qnp_shared::web::WebAuth;
use qnp_stripe_webhook::{Payments, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = lambda::config().await?;
    let stores = lambda::stores(&config).await?;
    let plans = Arc::new(Plans::from_config(&config)?);
    let (web, public_url) = WebAuth::for_lambda(&config, stores.records.clone())?;
    let payments = Payments::new(&config, &stores, Arc::new(web), plans, &public_url)?;
    lambda::serve(router(Arc::new(payments)), &config).await
}
