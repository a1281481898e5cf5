//! `POST /v1/messages`: the Anthropic Messages API, for tools that speak it (the `anthropic` SDKs,
//! Claude Code). Keys come as `x-api-key` or `Authorization: Bearer`; errors use Anthropic's shape.
//! `anthropic/` models are served natively: the request and the reply pass through unchanged but for
//! the model name, and usage is read from Anthropic's own events. `openai/` models are served by
//! translation (shared::providers::messages_bridge).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use qnp_shared::GatewayError;
use qnp_shared::catalog::ModelKind;
use qnp_shared::cost_bound::CostBound;
use qnp_shared::error::Dialect;
use qnp_shared::providers::{Reply, RequestBody};

use crate::call::begin_with_body;
use crate::chat::stream_response;
use crate::{Proxy, routing};

const ENDPOINT: &str = "/v1/messages";

fn validate(
    body: &RequestBody,
    body_bytes: usize,
) -> Result<(String, bool, CostBound), GatewayError> {
    let model: String = body
        .get("model", "a string naming a model as provider/model")?
        .ok_or_else(|| {
            GatewayError::field(
                "model",
                "model: Field required (e.g. anthropic/claude-sonnet-4-5)",
            )
        })?;
    match body.raw("messages") {
        Some(raw) if raw.starts_with('[') => {}
        Some(_) => {
            return Err(GatewayError::field(
                "messages",
                "messages: must be an array",
            ));
        }
        None => return Err(GatewayError::field("messages", "messages: Field required")),
    }
    let bound = CostBound::messages(body, body_bytes)?;
    if bound.max_output.is_none() {
        return Err(GatewayError::field(
            "max_tokens",
            "max_tokens: Field required",
        ));
    }
    let stream = body.get::<bool>("stream", "a boolean")?.unwrap_or(false);
    Ok((model, stream, bound))
}

pub async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (mut call, body) =
        match begin_with_body(&proxy, request, ENDPOINT, Dialect::Anthropic).await {
            Ok(started) => started,
            Err(response) => return response,
        };
    let (body, (model_id, stream, bound)) =
        match RequestBody::parse(&body).and_then(|b| validate(&b, body.len()).map(|v| (b, v))) {
            Ok(parsed) => parsed,
            Err(err) => return call.fail(err).await,
        };
    let Some(model) = proxy.catalog.get(&model_id).cloned() else {
        return call.fail(GatewayError::UnknownModel(model_id)).await;
    };
    call.set_model(model.clone(), stream);
    if model.kind != ModelKind::Chat {
        let err = GatewayError::WrongModelKind(format!("'{}' is not a chat model", model.id));
        return call.fail(err).await;
    }
    let candidates = match routing::candidates(&proxy, &model, None) {
        Ok(list) => list,
        Err(err) => return call.fail(err).await,
    };
    if let Err(err) = call.reserve(&candidates, &bound).await {
        return call.fail(err).await;
    }
    match routing::first_answer(&proxy, &candidates, &body, stream, routing::Api::Messages).await {
        Err(err) => call.fail(err).await,
        Ok((served_by, reply)) => {
            call.set_model(served_by, stream);
            match reply {
                Reply::Complete { body, usage } => {
                    {
                        let usage = usage.unwrap_or_else(|| call.estimate(body.len()));
                        call.respond(body, usage)
                    }
                    .await
                }
                // Anthropic streams carry their usage in ordinary events: nothing is held back.
                Reply::Stream(events) => stream_response(call, events, true),
            }
        }
    }
}
