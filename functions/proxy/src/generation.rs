//! `GET /v1/generation?id=<request id>`: one call's metadata row, as OpenRouter's lookup answers it: the
//! model and provider, tokens by kind, what it cost, its latency and time to first token, its status,
//! whether it streamed and whether the client hung up. Never any content (QNP has none). For the key's
//! own account only, for as long as usage rows are kept (30 days); a row is written just after its call
//! ends, so a lookup made at once may briefly answer 404.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use qnp_shared::GatewayError;
use qnp_shared::error::Dialect;
use qnp_shared::usage::UsageRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Proxy;
use crate::call::Call;

#[derive(Deserialize)]
struct Query {
    #[serde(default)]
    id: Option<String>,
}

/// A usage row as the lookup shows it.
fn generation(row: &UsageRecord) -> Value {
    let u = &row.usage;
    json!({"data": {
        "id": row.request_id,
        "created_at": row.timestamp.format(&time::format_description::well_known::Rfc3339).ok(),
        "endpoint": row.endpoint,
        "model": row.model,
        "provider": row.provider,
        "api_key_id": row.api_key_id,
        "streamed": row.streamed,
        "status": row.status,
        "error_type": row.error_type,
        "cancelled": row.error_type.as_deref() == Some("client_disconnected"),
        "tokens_prompt": u.prompt_tokens,
        "tokens_completion": u.completion_tokens,
        "tokens_cached": u.cached_tokens,
        "tokens_cache_write": u.cache_write_tokens,
        "tokens_reasoning": u.reasoning_tokens,
        "web_search_calls": u.web_search_calls,
        "input_images": u.input_images,
        "tokens_estimated": u.estimated,
        "total_cost": row.cost_usd,
        "rates": row.rates,
        "output_cap_tokens": row.output_cap_tokens,
        "price_version": row.price_version,
        "latency_ms": row.latency_ms,
        "time_to_first_token_ms": row.ttft_ms,
    }})
}

pub async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let call = match Call::begin(&proxy, &parts, "/v1/generation", Dialect::OpenAi).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let id = match axum::extract::Query::<Query>::try_from_uri(&parts.uri) {
        Ok(axum::extract::Query(Query { id: Some(id) })) if !id.is_empty() => id,
        _ => {
            return call.error_response(GatewayError::field(
                "id",
                "'id' is required: the request id of a call (its x-request-id header)",
            ));
        }
    };
    let shown: String = id.chars().take(100).collect();
    match proxy
        .generations
        .usage_of_request(&call.key.account_id, &id)
        .await
    {
        Ok(Some(row)) => call.ok_response(
            Body::from(generation(&row).to_string()),
            "application/json",
        ),
        Ok(None) => call.error_response(GatewayError::NotFound(format!(
            "no call '{shown}' for this key's account in the last 30 days (rows are written just after \
             a call ends)"
        ))),
        Err(err) => call.error_response(GatewayError::internal(err)),
    }
}
