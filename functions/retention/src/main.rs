//! The `retention` Lambda function, run daily by an EventBridge schedule. Stores are connected once per
//! cold start; a pass stops starting batches before the function's timeout, and the next scheduled run
//! finishes whatever is left.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use qnp_shared::lambda;
use qnp_shared::retention::Cleaner;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = lambda::config().await?;
    let stores = lambda::stores(&config).await?;
    let cleaner = Arc::new(Cleaner {
        records: stores.records.clone(),
        counters: stores.counters.clone(),
        stripe: qnp_shared::billing::stripe_api::StripeApi::from_config(&config.stripe)?,
        // The function's timeout is 15 minutes; leave room for the batch in flight.
        budget: Duration::from_secs(12 * 60),
        usage_days: config.usage_retention_days,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent>| {
        let cleaner = cleaner.clone();
        async move {
            qnp_retention::handle(&cleaner, event.payload)
                .await
                .map_err(Error::from)
        }
    }))
    .await
}
