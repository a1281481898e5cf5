//! Which upstream answers a call: the requested model, then the fallbacks the client listed (`models`)
//! or the operator configured for the model. Before the first byte reaches the client, failures that a
//! retry may fix (connection errors, 429, 5xx, overloaded) are retried with jittered exponential backoff
//! inside a total time budget, then the next candidate is tried. After the first byte there are no
//! retries: the client already has part of an answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use qnp_shared::GatewayError;
use qnp_shared::catalog::{Model, ModelKind};
use qnp_shared::providers::{ChatRequest, Reply, RequestBody, StreamItem, retriable};
use rand::Rng;

use crate::Proxy;

/// Attempts per candidate before moving to the next one.
const ATTEMPTS_PER_MODEL: u32 = 2;
const BASE_BACKOFF: Duration = Duration::from_millis(100);

/// The models to try, in order: the requested one first.
pub fn candidates(
    proxy: &Proxy,
    model: &Arc<Model>,
    requested: Option<Vec<String>>,
) -> Result<Vec<Arc<Model>>, GatewayError> {
    let names = requested.unwrap_or_else(|| model.fallbacks.clone());
    let mut list = vec![model.clone()];
    for name in names {
        let candidate = proxy
            .catalog
            .get(&name)
            .cloned()
            .ok_or_else(|| GatewayError::unknown_model(&name))?;
        if candidate.kind != ModelKind::Chat {
            return Err(GatewayError::field(
                "models",
                format!("'{name}' is not a chat model"),
            ));
        }
        if !list.iter().any(|m| m.id == candidate.id) {
            list.push(candidate);
        }
    }
    Ok(list)
}

fn backoff(attempt: u32) -> Duration {
    let base = BASE_BACKOFF * 2u32.pow(attempt.min(6));
    // Full jitter in [base/2, base): concurrent retries spread out instead of arriving together.
    let jitter = rand::rng().random_range(0.5..1.0);
    base.mul_f64(jitter)
}

/// Which API the call speaks; the provider answers in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ChatCompletions,
    Messages,
    Responses,
    /// `/v1/responses/compact`: one model, one whole answer.
    Compact,
    /// `/v1/messages/count_tokens`: one model, not billed.
    CountTokens,
    Embeddings,
}

/// The model that answered and its reply. A streamed reply has its first event already read (and put
/// back): a stream that fails before producing anything counts as a failed attempt.
pub async fn first_answer(
    proxy: &Proxy,
    candidates: &[Arc<Model>],
    body: RequestBody,
    stream: bool,
    api: Api,
    client_headers: Vec<(&'static str, String)>,
) -> Result<(Arc<Model>, Reply), GatewayError> {
    let started = Instant::now();
    let mut last_error = GatewayError::UpstreamFailed;
    let mut attempt = 0;
    // One request for every attempt: a translating provider parses the body once for all of them.
    let call_request = ChatRequest::new(body, stream).with_client_headers(client_headers);
    for model in candidates {
        let provider = match proxy.providers.get(model.provider) {
            Ok(provider) => provider.clone(),
            Err(err) => {
                last_error = err;
                continue;
            }
        };
        for _ in 0..ATTEMPTS_PER_MODEL {
            if attempt > 0 {
                let pause = backoff(attempt - 1);
                if started.elapsed() + pause > proxy.retry_budget {
                    return Err(last_error);
                }
                tokio::time::sleep(pause).await;
            }
            attempt += 1;
            let request = call_request.clone();
            let reply = match api {
                Api::ChatCompletions => provider.chat(model, request).await,
                Api::Messages => provider.messages(model, request).await,
                Api::Responses => provider.responses(model, request).await,
                Api::Compact => provider.compact(model, request.body).await,
                Api::CountTokens => provider.count_tokens(model, request).await,
                Api::Embeddings => provider.embeddings(model, request.body).await,
            };
            let outcome = match reply {
                Ok(Reply::Stream(events)) => peek(events).await,
                other => other,
            };
            match outcome {
                Ok(reply) => return Ok((model.clone(), reply)),
                Err(err) if retriable(&err) => {
                    tracing::warn!(model = %model.id, attempt, error = err.kind(), "upstream attempt failed; retrying");
                    last_error = err;
                }
                Err(err) => return Err(err),
            }
        }
    }
    Err(last_error)
}

/// Reads a stream's first item; a stream that fails at once is an error (retriable), otherwise the
/// item is put back in front of the rest.
async fn peek(mut events: BoxStream<'static, StreamItem>) -> Result<Reply, GatewayError> {
    match events.next().await {
        None => Err(GatewayError::UpstreamFailed),
        Some(StreamItem::Failed(err)) => Err(err),
        Some(first) => Ok(Reply::Stream(
            futures_util::stream::once(async move { first })
                .chain(events)
                .boxed(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_a_retry_can_fix_are_retried() {
        assert!(retriable(&GatewayError::UpstreamFailed));
        assert!(retriable(&GatewayError::UpstreamOverloaded));
        assert!(retriable(&qnp_shared::providers::upstream_error(
            "openai", 429, b"{}"
        )));
        assert!(!retriable(&qnp_shared::providers::upstream_error(
            "openai", 400, b"{}"
        )));
        assert!(!retriable(&GatewayError::UpstreamTimeout));
        for attempt in 0..5 {
            let pause = backoff(attempt);
            let base = BASE_BACKOFF * 2u32.pow(attempt);
            assert!(pause >= base / 2 && pause < base);
        }
    }
}
