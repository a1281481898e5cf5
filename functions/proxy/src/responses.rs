//! `POST /v1/responses`: the OpenAI Responses API, which Codex, the OpenAI Agents SDKs and most agent
//! frameworks speak. Stateless, because QNP stores no content: every request carries its whole history,
//! and whatever would make the upstream keep or look up a conversation is refused with a clear answer.
//! `openai/` models pass through to OpenAI's own endpoint; every other model is served by translation to
//! chat completions (`qnp_shared::dialects::openai_responses`). Also `POST /v1/responses/compact`
//! (OpenAI models only) and the stateful neighbours clients probe (`GET`/`DELETE /v1/responses/{id}`,
//! the WebSocket upgrade on `GET /v1/responses`), which get answers that make them fall back at once.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use qnp_shared::GatewayError;
use qnp_shared::catalog::ModelKind;
use qnp_shared::cost_bound::CostBound;
use qnp_shared::error::Dialect;
use qnp_shared::providers::RequestBody;
use serde_json::Value;

use crate::Proxy;
use crate::call::Call;
use crate::pipeline::{Checked, Fallbacks, Route, model_field};
use crate::routing::Api;

pub const ROUTE: Route = Route {
    endpoint: "/v1/responses",
    dialect: Dialect::OpenAi,
    validate,
    model_kind: ModelKind::Chat,
    wrong_kind: "is an embedding model; use it with /v1/embeddings",
    fallbacks: Fallbacks::Configured,
    api: Api::Responses,
    client_headers: &[],
};

pub const COMPACT: Route = Route {
    endpoint: "/v1/responses/compact",
    dialect: Dialect::OpenAi,
    validate: validate_compact,
    model_kind: ModelKind::Chat,
    wrong_kind: "is an embedding model and cannot compact a conversation",
    fallbacks: Fallbacks::None,
    api: Api::Compact,
    client_headers: &[],
};

/// What every refusal of conversation state says.
const STATELESS: &str = "QNP keeps no conversation state (it stores no prompts or answers), so \
    responses cannot be stored, retrieved or continued by id; send the whole conversation in 'input' \
    (a 'store' flag is accepted and ignored: QNP always sends store: false upstream)";

/// Fields that make the upstream keep or look up state, refused before anything is reserved.
fn refuse_state(body: &RequestBody) -> Result<(), GatewayError> {
    for field in ["previous_response_id", "conversation"] {
        if body.raw(field).is_some_and(|raw| raw != "null") {
            return Err(GatewayError::field(field, STATELESS));
        }
    }
    if body.get::<bool>("background", "a boolean")? == Some(true) {
        return Err(GatewayError::field(
            "background",
            "background responses are stored at the provider to be polled later, which QNP does not \
             do; stream the response instead",
        ));
    }
    if body.raw("prompt").is_some_and(|raw| raw != "null") {
        return Err(GatewayError::field(
            "prompt",
            "prompt templates are stored at the provider, where QNP cannot see or price them; send \
             the prompt's text in 'instructions' and 'input'",
        ));
    }
    Ok(())
}

fn require_input(body: &RequestBody) -> Result<(), GatewayError> {
    match body.raw("input") {
        Some(raw) if raw.starts_with('"') || (raw.starts_with('[') && raw != "[]") => Ok(()),
        Some(_) => Err(GatewayError::field(
            "input",
            "'input' must be a string or a non-empty array of input items",
        )),
        None => Err(GatewayError::field(
            "input",
            "'input' is required: QNP keeps no conversation state, so every request carries its \
             whole conversation",
        )),
    }
}

fn validate(body: &RequestBody, body_bytes: usize) -> Result<Checked, GatewayError> {
    let model = model_field(body, "'model' is required (e.g. openai/gpt-4o-mini)")?;
    refuse_state(body)?;
    require_input(body)?;
    let stream = body.get::<bool>("stream", "a boolean")?.unwrap_or(false);
    let bound = CostBound::responses(body, body_bytes)?;
    Ok(Checked {
        model,
        stream,
        // The usage arrives in the terminal event, which every client reads: nothing is held back.
        include_usage: true,
        bound,
    })
}

fn validate_compact(body: &RequestBody, body_bytes: usize) -> Result<Checked, GatewayError> {
    let model = model_field(body, "'model' is required (e.g. openai/gpt-5)")?;
    refuse_state(body)?;
    require_input(body)?;
    Ok(Checked {
        model,
        stream: false,
        include_usage: true,
        bound: CostBound::responses(body, body_bytes)?,
    })
}

/// `GET` and `DELETE /v1/responses/{id}`: there is nothing stored to read or delete.
pub async fn stored(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    match Call::begin(&proxy, &parts, "/v1/responses/{id}", Dialect::OpenAi).await {
        Ok(call) => {
            call.fail(GatewayError::field("response_id", STATELESS))
                .await
        }
        Err(response) => response,
    }
}

/// `GET /v1/responses`: the WebSocket transport some Codex versions try first. A plain 426 makes them
/// use HTTP streaming at once instead of retrying the upgrade.
pub async fn websocket(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    match Call::begin(&proxy, &parts, "/v1/responses", Dialect::OpenAi).await {
        Ok(call) => {
            let body = serde_json::json!({"error": {
                "message": "QNP serves the Responses API over HTTP (POST /v1/responses, with \
                    \"stream\": true for events), not over WebSocket",
                "type": "invalid_request_error",
                "code": "websocket_not_supported",
                "param": Value::Null,
            }});
            let mut response =
                call.ok_response(axum::body::Body::from(body.to_string()), "application/json");
            *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
            response
        }
        Err(response) => response,
    }
}
