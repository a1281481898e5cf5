//! `POST /v1/embeddings`: OpenAI format in and out.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use qnp_shared::GatewayError;
use qnp_shared::catalog::ModelKind;
use qnp_shared::cost_bound::CostBound;
use qnp_shared::error::Dialect;
use qnp_shared::providers::{Reply, RequestBody};

use crate::Proxy;
use crate::call::begin_with_body;

const ENDPOINT: &str = "/v1/embeddings";

fn validate(body: &RequestBody) -> Result<String, GatewayError> {
    let model: String = body
        .get("model", "a string naming a model as provider/model")?
        .ok_or_else(|| {
            GatewayError::field(
                "model",
                "'model' is required (e.g. openai/text-embedding-3-small)",
            )
        })?;
    match body.raw("input") {
        Some(raw) if raw.starts_with('"') || raw.starts_with('[') => Ok(model),
        Some(_) => Err(GatewayError::field(
            "input",
            "'input' must be a string or an array",
        )),
        None => Err(GatewayError::field("input", "'input' is required")),
    }
}

pub async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (mut call, body) = match begin_with_body(&proxy, request, ENDPOINT, Dialect::OpenAi).await {
        Ok(started) => started,
        Err(response) => return response,
    };
    let bound = CostBound::embeddings(body.len());
    let (body, model_id) =
        match RequestBody::parse(&body).and_then(|b| validate(&b).map(|m| (b, m))) {
            Ok(parsed) => parsed,
            Err(err) => return call.fail(err).await,
        };
    let Some(model) = proxy.catalog.get(&model_id).cloned() else {
        return call.fail(GatewayError::UnknownModel(model_id)).await;
    };
    call.set_model(model.clone(), false);
    if model.kind != ModelKind::Embedding {
        let err = GatewayError::WrongModelKind(format!(
            "'{}' is a chat model; use it with /v1/chat/completions",
            model.id
        ));
        return call.fail(err).await;
    }
    let provider = match proxy.providers.get(model.provider) {
        Ok(provider) => provider.clone(),
        Err(err) => return call.fail(err).await,
    };
    if let Err(err) = call.reserve(std::slice::from_ref(&model), &bound).await {
        return call.fail(err).await;
    }
    match provider.embeddings(&model, body).await {
        Ok(Reply::Complete { body, usage }) => {
            {
                let usage = usage.unwrap_or_else(|| call.estimate(0));
                call.respond(body, usage)
            }
            .await
        }
        Ok(Reply::Stream(_)) => {
            call.fail(GatewayError::internal(anyhow::anyhow!(
                "embeddings replied with a stream"
            )))
            .await
        }
        Err(err) => call.fail(err).await,
    }
}
