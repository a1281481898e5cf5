//! `GET /v1/models`: the catalog in OpenAI's list shape, with context lengths and prices added, listing
//! only models whose provider is configured (a model that can only answer 503 is not offered) and that
//! the key's allowlist admits; and
//! `GET /v1/models/{id}` (the SDKs' `models.retrieve`), one entry by id, alias or bare name.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use qnp_shared::GatewayError;
use qnp_shared::catalog::{Catalog, Model};
use qnp_shared::key_controls::KeyControls;
use qnp_shared::providers::Providers;
use serde_json::{Value, json};

use crate::Proxy;
use crate::call::Call;

/// One model as the list shows it.
fn entry(m: &Model) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": 0,
        "owned_by": m.provider.as_str(),
        "kind": m.kind,
        "context_length": m.context_length,
        "max_output_tokens": m.max_output_tokens,
        "pricing": {
            "currency": "USD",
            "unit": "1M tokens",
            "input": m.input_per_mtok,
            "output": m.output_per_mtok,
            "cached_input": m.cached_input_per_mtok,
            "cache_write": m.cache_write_per_mtok,
            "cache_write_long": m.cache_write_1h_per_mtok,
            "web_search_per_call": m.web_search_per_call_usd,
            "input_per_image": m.input_per_image_usd,
            // What the request can change: the tiers it may select, and the long-context rule.
            "service_tiers": m.service_tiers,
            "long_context": m.long_context,
        },
    })
}

/// Renders the list once per process; the catalog and the providers are fixed while it runs.
pub fn render(catalog: &Catalog, providers: &Providers) -> Bytes {
    render_for(catalog, providers, &KeyControls::default())
}

/// The list as one key sees it: only the models its allowlist admits (rendered per request, for keys
/// that have one).
fn render_for(catalog: &Catalog, providers: &Providers, controls: &KeyControls) -> Bytes {
    let data: Vec<_> = catalog
        .models()
        .iter()
        .filter(|m| providers.get(m.provider).is_ok() && controls.allows_model(&m.id))
        .map(|m| entry(m))
        .collect();
    let list = json!({"object": "list", "price_version": catalog.version(), "data": data});
    Bytes::from(serde_json::to_vec(&list).expect("catalog serialises"))
}

pub async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    match Call::begin(
        &proxy,
        &parts,
        "/v1/models",
        qnp_shared::error::Dialect::OpenAi,
    )
    .await
    {
        Ok(call) => {
            let controls = &call.key.controls;
            let body = if controls.models.is_empty() {
                proxy.models_body.clone()
            } else {
                render_for(&proxy.catalog, &proxy.providers, controls)
            };
            call.ok_response(Body::from(body), "application/json")
        }
        Err(response) => response,
    }
}

/// `GET /v1/models/{id}`: ids contain a slash, so the path's rest is the id.
pub async fn retrieve(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let call = match Call::begin(
        &proxy,
        &parts,
        "/v1/models",
        qnp_shared::error::Dialect::OpenAi,
    )
    .await
    {
        Ok(call) => call,
        Err(response) => return response,
    };
    let id = parts
        .uri
        .path()
        .strip_prefix("/v1/models/")
        .unwrap_or_default();
    let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
    match proxy
        .catalog
        .get(&id)
        .filter(|m| proxy.providers.get(m.provider).is_ok())
    {
        Some(model) if !call.key.controls.allows_model(&model.id) => {
            call.error_response(call.key.controls.model_error(&model.id))
        }
        Some(model) => call.ok_response(Body::from(entry(model).to_string()), "application/json"),
        // A lookup, not a call: answered without a usage row, like the list.
        None => call.error_response(GatewayError::unknown_model(&id)),
    }
}
