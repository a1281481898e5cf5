//! `POST /v1/chat/completions`: OpenAI format in and out, whole or streamed.

use qnp_shared::GatewayError;
use qnp_shared::catalog::ModelKind;
use qnp_shared::cost_bound::CostBound;
use qnp_shared::error::Dialect;
use qnp_shared::providers::RequestBody;
use serde::Deserialize;

use crate::pipeline::{Checked, Fallbacks, Route, model_field};
use crate::routing::Api;

pub const ROUTE: Route = Route {
    endpoint: "/v1/chat/completions",
    dialect: Dialect::OpenAi,
    validate,
    model_kind: ModelKind::Chat,
    wrong_kind: "is an embedding model; use it with /v1/embeddings",
    fallbacks: Fallbacks::ClientOrConfigured,
    api: Api::ChatCompletions,
    client_headers: &[],
};

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

fn validate(body: &RequestBody, body_bytes: usize) -> Result<Checked, GatewayError> {
    let model = model_field(body, "'model' is required (e.g. openai/gpt-4o-mini)")?;
    match body.raw("messages") {
        None => return Err(GatewayError::field("messages", "'messages' is required")),
        Some(raw) if !raw.starts_with('[') || raw == "[]" => {
            return Err(GatewayError::field(
                "messages",
                "'messages' must be a non-empty array",
            ));
        }
        Some(_) => {}
    }
    let stream = body.get::<bool>("stream", "a boolean")?.unwrap_or(false);
    let include_usage = body
        .get::<StreamOptions>("stream_options", "an object")?
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let bound = CostBound::chat_completions(body, body_bytes)?;
    Ok(Checked {
        model,
        stream,
        include_usage,
        bound,
    })
}
