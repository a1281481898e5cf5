//! The `stripe-webhook` function: Stripe's deliveries (`POST /webhooks/stripe`, public, authenticated by
//! its signature) and the signed-in user's billing (`GET /billing`, `POST /billing/checkout`,
//! `POST /billing/portal`, behind the session and CSRF guard). The same router runs on Lambda and in
//! `qnp serve`.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use qnp_shared::billing::events::Webhooks;
use qnp_shared::billing::stripe_api::StripeApi;
use qnp_shared::budget::Budget;
use qnp_shared::config::Config;
use qnp_shared::plans::Plans;
use qnp_shared::routes::{Access, Endpoint};
use qnp_shared::store::Stores;
use qnp_shared::web::WebAuth;

mod billing;
mod webhook;

/// Everything the function's routes need, built once per process (per Lambda cold start).
pub struct Payments {
    pub web: Arc<WebAuth>,
    pub plans: Arc<Plans>,
    /// `None` when `STRIPE_SECRET_KEY` is not set: checkout and portal answer 503.
    pub stripe: Option<StripeApi>,
    pub webhooks: Webhooks,
    pub budget: Budget,
    /// Where Checkout and the portal send the user back to.
    pub public_url: String,
    pub grace: time::Duration,
}

impl Payments {
    pub fn new(
        config: &Config,
        stores: &Stores,
        web: Arc<WebAuth>,
        plans: Arc<Plans>,
        public_url: &str,
    ) -> anyhow::Result<Payments> {
        let stripe = StripeApi::from_config(&config.stripe)?;
        let grace = config.billing_grace;
        Ok(Payments {
            webhooks: Webhooks {
                records: stores.records.clone(),
                stripe: stripe.clone(),
                secrets: config
                    .stripe
                    .webhook_secrets
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                grace,
                key_cache: None,
            },
            budget: Budget::new(stores.counters.clone()),
            web,
            plans,
            stripe,
            public_url: public_url.trim_end_matches('/').to_owned(),
            grace,
        })
    }
}

/// The function's routes. Stripe's deliveries carry no session: their signature is their authentication.
pub fn endpoints() -> Vec<Endpoint<Arc<Payments>>> {
    use Access::{Public, Session};
    vec![
        Endpoint::new(Method::POST, "/webhooks/stripe", Public, webhook::receive),
        Endpoint::new(Method::GET, "/billing", Session, billing::status),
        Endpoint::new(
            Method::POST,
            "/billing/checkout",
            Session,
            billing::checkout,
        ),
        Endpoint::new(Method::POST, "/billing/portal", Session, billing::portal),
    ]
}

/// The function's routes, without fallbacks so `qnp serve` can merge it with the other functions.
pub fn router(payments: Arc<Payments>) -> Router {
    qnp_shared::web::guarded(endpoints(), payments.web.clone()).with_state(payments)
}
