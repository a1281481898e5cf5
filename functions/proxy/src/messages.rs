//! `POST /v1/messages`: the Anthropic Messages API, for tools that speak it (the `anthropic` SDKs,
//! Claude Code). Keys come as `x-api-key` or `Authorization: Bearer`; errors use Anthropic's shape.
//! `anthropic/` models are served natively: the request and the reply pass through unchanged but for
//! the model name, and usage is read from Anthropic's own events. `openai/` models are served by
//! translation (shared::providers::openai::messages).

use qnp_shared::GatewayError;
use qnp_shared::catalog::ModelKind;
use qnp_shared::cost_bound::CostBound;
use qnp_shared::error::Dialect;
use qnp_shared::providers::RequestBody;

use crate::pipeline::{Checked, Fallbacks, Route, model_field};
use crate::routing::Api;

pub const ROUTE: Route = Route {
    endpoint: "/v1/messages",
    dialect: Dialect::Anthropic,
    validate,
    model_kind: ModelKind::Chat,
    wrong_kind: "is not a chat model",
    fallbacks: Fallbacks::Configured,
    api: Api::Messages,
};

fn validate(body: &RequestBody, body_bytes: usize) -> Result<Checked, GatewayError> {
    let model = model_field(
        body,
        "model: Field required (e.g. anthropic/claude-sonnet-4-5)",
    )?;
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
    Ok(Checked {
        model,
        stream,
        // Anthropic streams carry their usage in ordinary events: nothing is held back.
        include_usage: true,
        bound,
    })
}
