//! `GET /v1/models`: the catalog in OpenAI's list shape, with context lengths and prices added.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use qnp_shared::catalog::Catalog;
use serde_json::json;

use crate::Proxy;
use crate::call::Call;

/// Renders the list once per process; the catalog is immutable while it runs.
pub fn render(catalog: &Catalog) -> Bytes {
    let data: Vec<_> = catalog
        .models()
        .iter()
        .map(|m| {
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
                },
            })
        })
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
        Ok(call) => call.ok_response(Body::from(proxy.models_body.clone()), "application/json"),
        Err(response) => response,
    }
}
