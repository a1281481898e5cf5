//! `POST /v1/embeddings`: OpenAI format in and out.

use qnp_shared::GatewayError;
use qnp_shared::catalog::ModelKind;
use qnp_shared::cost_bound::CostBound;
use qnp_shared::error::Dialect;
use qnp_shared::providers::RequestBody;

use crate::pipeline::{Checked, Fallbacks, Route, model_field};
use crate::routing::Api;

pub const ROUTE: Route = Route {
    endpoint: "/v1/embeddings",
    dialect: Dialect::OpenAi,
    validate,
    model_kind: ModelKind::Embedding,
    wrong_kind: "is a chat model; use it with /v1/chat/completions",
    fallbacks: Fallbacks::None,
    api: Api::Embeddings,
    client_headers: &[],
};

fn validate(body: &RequestBody, body_bytes: usize) -> Result<Checked, GatewayError> {
    let model = model_field(
        body,
        "'model' is required (e.g. openai/text-embedding-3-small)",
    )?;
    match body.raw("input") {
        Some(raw) if raw.starts_with('"') || raw.starts_with('[') => Ok(Checked {
            model,
            stream: false,
            include_usage: false,
            bound: CostBound::embeddings(body_bytes),
        }),
        Some(_) => Err(GatewayError::field(
            "input",
            "'input' must be a string or an array",
        )),
        None => Err(GatewayError::field("input", "'input' is required")),
    }
}
