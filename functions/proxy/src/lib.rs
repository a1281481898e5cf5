//! The `proxy` function: QNP's OpenAI-compatible API.
//!
//! Every route authenticates a key, counts the request against the key's plan, forwards to the model's
//! provider and records one metadata-only usage row. The same `router` runs on Lambda (`main.rs`) and in
//! `qnp serve`.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use bytes::Bytes;
use qnp_shared::budget::Budget;
use qnp_shared::catalog::Catalog;
use qnp_shared::config::Config;
use qnp_shared::keys::KeyVerifier;
use qnp_shared::limits::RateLimiter;
use qnp_shared::plans::Plans;
use qnp_shared::providers::Providers;
use qnp_shared::routes::{self, Access, Endpoint};
use qnp_shared::store::Stores;
use qnp_shared::usage_log::UsageLog;

mod annotate;
mod call;
mod chat;
mod embeddings;
mod generation;
mod messages;
mod models;
mod pipeline;
mod responses;
mod routing;
mod streaming;

/// Everything a proxied request needs, built once per process (per Lambda cold start).
pub struct Proxy {
    pub catalog: Arc<Catalog>,
    pub plans: Arc<Plans>,
    /// Shared with the auth and billing routes when they run in this process, so revocations and plan
    /// changes reach the cache at once.
    pub keys: Arc<KeyVerifier>,
    pub limiter: RateLimiter,
    pub budget: Budget,
    /// How long a subscription with a failed payment keeps its plan.
    pub billing_grace: time::Duration,
    pub usage: UsageLog,
    /// Where `GET /v1/generation` reads a call's row.
    pub generations: Arc<dyn qnp_shared::store::UsageStore>,
    pub providers: Providers,
    pub max_body_bytes: usize,
    pub retry_budget: std::time::Duration,
    pub disconnect_drain: std::time::Duration,
    /// `GET /v1/models` never changes while the process lives, so its body is rendered once.
    models_body: Bytes,
}

impl Proxy {
    pub fn new(
        config: &Config,
        stores: &Stores,
        usage: UsageLog,
        catalog: Arc<Catalog>,
        plans: Arc<Plans>,
    ) -> Proxy {
        let providers = Providers::from_config(config, qnp_shared::providers::http_client());
        let models_body = models::render(&catalog, &providers);
        Proxy {
            keys: Arc::new(KeyVerifier::new(
                stores.keys.clone(),
                stores.records.clone(),
                config.key_cache_ttl,
            )),
            limiter: RateLimiter::new(stores.counters.clone()),
            budget: Budget::new(stores.counters.clone()),
            billing_grace: config.billing_grace,
            generations: stores.records.clone(),
            providers,
            max_body_bytes: config.max_body_bytes,
            retry_budget: config.retry_budget,
            disconnect_drain: config.disconnect_drain,
            catalog,
            plans,
            usage,
            models_body,
        }
    }
}

/// The proxy's routes, all authenticated by an API key.
pub fn endpoints() -> Vec<Endpoint<Arc<Proxy>>> {
    use Access::ApiKey;
    vec![
        Endpoint::new(
            Method::POST,
            chat::ROUTE.endpoint,
            ApiKey,
            pipeline::serve(&chat::ROUTE),
        ),
        Endpoint::new(
            Method::POST,
            embeddings::ROUTE.endpoint,
            ApiKey,
            pipeline::serve(&embeddings::ROUTE),
        ),
        Endpoint::new(Method::GET, "/v1/models", ApiKey, models::handle),
        Endpoint::new(Method::GET, "/v1/models/{*id}", ApiKey, models::retrieve),
        Endpoint::new(Method::GET, "/v1/generation", ApiKey, generation::handle),
        Endpoint::new(
            Method::POST,
            messages::ROUTE.endpoint,
            ApiKey,
            pipeline::serve(&messages::ROUTE),
        ),
        Endpoint::new(
            Method::POST,
            messages::COUNT_TOKENS.endpoint,
            ApiKey,
            pipeline::serve(&messages::COUNT_TOKENS),
        ),
        Endpoint::new(
            Method::POST,
            responses::ROUTE.endpoint,
            ApiKey,
            pipeline::serve(&responses::ROUTE),
        ),
        Endpoint::new(Method::GET, "/v1/responses", ApiKey, responses::websocket),
        Endpoint::new(
            Method::POST,
            responses::COMPACT.endpoint,
            ApiKey,
            pipeline::serve(&responses::COMPACT),
        ),
        Endpoint::new(Method::GET, "/v1/responses/{id}", ApiKey, responses::stored),
        Endpoint::new(
            Method::DELETE,
            "/v1/responses/{id}",
            ApiKey,
            responses::stored,
        ),
    ]
}

/// The proxy's routes, without fallbacks so `qnp serve` can merge it with the other functions' routers;
/// whoever serves it applies `qnp_shared::web::with_fallbacks` once.
pub fn router(proxy: Arc<Proxy>) -> Router {
    routes::mount(endpoints()).with_state(proxy)
}
