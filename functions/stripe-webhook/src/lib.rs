//! The `stripe-webhook` function: Stripe's deliveries (`POST /webhooks/stripe`, public, authenticated by
//! its signature) and the signed-in user's billing (`GET /billing`, `POST /billing/checkout`,
//! `POST /billing/portal`, behind the session and CSRF guard). The same router runs on Lambda and in
//! `qnp serve`.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::{get, post};
use qnp_shared::billing::events::Webhooks;
use qnp_shared::billing::stripe_api::StripeApi;
use qnp_shared::budget::Budget;
use qnp_shared::config::Config;
use qnp_shared::plans::Plans;
use qnp_shared::store::Stores;
use qnp_shared::web::{Guard, PublicRoute, WebAuth};

mod billing;
mod webhook;

/// Stripe's deliveries carry no session; their signature is their authentication.
const PUBLIC: &[PublicRoute] = &[(Method::POST, "/webhooks/stripe")];

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
                secrets: config.stripe.webhook_secrets.clone(),
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

/// The function's routes, without fallbacks so `qnp serve` can merge it with the other functions.
pub fn router(payments: Arc<Payments>) -> Router {
    let guard = Guard {
        web: payments.web.clone(),
        public: PUBLIC,
    };
    Router::new()
        .route("/webhooks/stripe", post(webhook::receive))
        .route("/billing", get(billing::status))
        .route("/billing/checkout", post(billing::checkout))
        .route("/billing/portal", post(billing::portal))
        .route_layer(axum::middleware::from_fn_with_state(
            guard,
            qnp_shared::web::guard,
        ))
        .with_state(payments)
}
