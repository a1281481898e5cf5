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

use crate::pipeline::{Checked, ClientHeader, Fallbacks, Route, model_field};
use crate::routing::Api;

pub const ROUTE: Route = Route {
    endpoint: "/v1/messages",
    dialect: Dialect::Anthropic,
    validate,
    model_kind: ModelKind::Chat,
    wrong_kind: "is not a chat model",
    fallbacks: Fallbacks::Configured,
    api: Api::Messages,
    client_headers: ANTHROPIC_HEADERS,
};

/// `POST /v1/messages/count_tokens`: Anthropic's own count for `anthropic/` models, an estimate in the
/// same shape (`{"input_tokens"}`) for the others. Authenticated and rate-limited like any call, recorded
/// with no tokens and no cost.
pub const COUNT_TOKENS: Route = Route {
    endpoint: "/v1/messages/count_tokens",
    dialect: Dialect::Anthropic,
    validate: validate_count,
    model_kind: ModelKind::Chat,
    wrong_kind: "is not a chat model",
    fallbacks: Fallbacks::None,
    api: Api::CountTokens,
    client_headers: ANTHROPIC_HEADERS,
};

/// What Anthropic clients send beside the body: the API version and the betas the body relies on
/// (Claude Code sends a list on every call), forwarded to Anthropic as they are.
const ANTHROPIC_HEADERS: &[ClientHeader] = &[
    ClientHeader {
        name: "anthropic-version",
        check: |_| Ok(()),
    },
    ClientHeader {
        name: "anthropic-beta",
        check: priced_betas,
    },
];

/// Refuses betas that change what a call costs in ways the catalog cannot price: the 1M-token context
/// window bills the whole request at long-context rates.
fn priced_betas(list: &str) -> Result<(), GatewayError> {
    match list
        .split(',')
        .map(str::trim)
        .find(|beta| beta.starts_with("context-1m"))
    {
        Some(beta) => Err(GatewayError::field(
            "anthropic-beta",
            format!(
                "anthropic-beta: '{}' bills requests over 200k tokens at long-context rates, which this \
                 gateway does not price; drop it",
                beta.chars().take(60).collect::<String>()
            ),
        )),
        None => Ok(()),
    }
}

fn validate_count(body: &RequestBody, _body_bytes: usize) -> Result<Checked, GatewayError> {
    let model = model_field(
        body,
        "model: Field required (e.g. anthropic/claude-sonnet-5-5)",
    )?;
    require_messages(body)?;
    Ok(Checked {
        model,
        stream: false,
        include_usage: true,
        bound: CostBound::default(),
    })
}

fn validate(body: &RequestBody, body_bytes: usize) -> Result<Checked, GatewayError> {
    let model = model_field(
        body,
        "model: Field required (e.g. anthropic/claude-sonnet-5-5)",
    )?;
    require_messages(body)?;
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

/// `messages` must be there and be an array, in Anthropic's words.
fn require_messages(body: &RequestBody) -> Result<(), GatewayError> {
    match body.raw("messages") {
        Some(raw) if raw.starts_with('[') => Ok(()),
        Some(_) => Err(GatewayError::field(
            "messages",
            "messages: must be an array",
        )),
        None => Err(GatewayError::field("messages", "messages: Field required")),
    }
}
