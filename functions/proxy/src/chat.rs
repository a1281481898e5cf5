//! `POST /v1/chat/completions`: OpenAI format in and out, whole or streamed.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use qnp_shared::GatewayError;
use qnp_shared::catalog::ModelKind;
use qnp_shared::error::Dialect;
use qnp_shared::providers::{Reply, RequestBody, StreamItem};
use qnp_shared::usage::TokenUsage;
use serde::Deserialize;

use crate::call::{Call, begin_with_body};
use crate::{Proxy, routing};

const ENDPOINT: &str = "/v1/chat/completions";

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Validates the fields the gateway itself relies on; the upstream validates the rest.
fn validate(body: &RequestBody) -> Result<(String, bool, bool, Option<u64>), GatewayError> {
    let model: String = body
        .get("model", "a string naming a model as provider/model")?
        .ok_or_else(|| {
            GatewayError::field("model", "'model' is required (e.g. openai/gpt-4o-mini)")
        })?;
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
    // OpenAI's newer name wins when a client sends both.
    let mut max_tokens = None;
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(value) = body.get::<u64>(field, "a non-negative integer")? {
            max_tokens = Some(value);
        }
    }
    Ok((model, stream, include_usage, max_tokens))
}

pub async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (mut call, body) = match begin_with_body(&proxy, request, ENDPOINT, Dialect::OpenAi).await {
        Ok(started) => started,
        Err(response) => return response,
    };
    let parsed = RequestBody::parse(&body).and_then(|body| validate(&body).map(|v| (body, v)));
    let (body, (model_id, stream, include_usage, max_tokens)) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => return call.fail(err).await,
    };
    let Some(model) = proxy.catalog.get(&model_id).cloned() else {
        return call.fail(GatewayError::UnknownModel(model_id)).await;
    };
    call.set_model(model.clone(), stream);
    if model.kind != ModelKind::Chat {
        let err = GatewayError::WrongModelKind(format!(
            "'{}' is an embedding model; use it with /v1/embeddings",
            model.id
        ));
        return call.fail(err).await;
    }
    let mut body = body;
    // `models` is the gateway's own fallback list; upstreams do not know it.
    let requested = match body.get::<Vec<String>>("models", "an array of model names") {
        Ok(list) => list,
        Err(err) => return call.fail(err).await,
    };
    body.remove("models");
    let candidates = match routing::candidates(&proxy, &model, requested) {
        Ok(list) => list,
        Err(err) => return call.fail(err).await,
    };
    if let Err(err) = call.reserve(&candidates, max_tokens).await {
        return call.fail(err).await;
    }
    match routing::first_answer(
        &proxy,
        &candidates,
        &body,
        stream,
        routing::Api::ChatCompletions,
    )
    .await
    {
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
                Reply::Stream(events) => stream_response(call, events, include_usage),
            }
        }
    }
}

type Events = futures_util::stream::BoxStream<'static, StreamItem>;

/// What a stream has seen so far. It owns the upstream events, so that if the client goes away before
/// the end, `Drop` can keep reading the upstream (for a bounded time) until the provider's usage arrives,
/// and still record and bill the call.
struct StreamMeter {
    call: Option<Call>,
    events: Option<Events>,
    usage: Option<TokenUsage>,
    ttft_ms: Option<u64>,
    error: Option<String>,
    /// The protocol's last event is being handed to the client: a hang-up from here on is not a
    /// disconnect mid-stream.
    complete: bool,
    /// Bytes forwarded, for an estimate when the provider reports no usage.
    bytes_out: usize,
}

impl StreamMeter {
    fn usage(&self) -> TokenUsage {
        match (self.usage, &self.call) {
            (Some(usage), _) => usage,
            (None, Some(call)) if self.bytes_out > 0 => call.estimate(self.bytes_out),
            _ => TokenUsage::default(),
        }
    }

    async fn next(&mut self) -> Option<StreamItem> {
        self.events.as_mut()?.next().await
    }

    async fn finish(mut self) {
        let usage = self.usage();
        if let Some(call) = self.call.take() {
            call.finish(200, usage, self.ttft_ms, self.error.as_deref())
                .await;
        }
    }
}

/// Reads what is left of a stream nobody is listening to, for its usage.
async fn drain(mut events: Events, limit: std::time::Duration) -> Option<TokenUsage> {
    let mut usage = None;
    let _ = tokio::time::timeout(limit, async {
        while let Some(item) = events.next().await {
            match item {
                StreamItem::Event { usage: Some(u), .. } => usage = Some(u),
                StreamItem::Event { last: true, .. } | StreamItem::Failed(_) => break,
                StreamItem::Event { .. } => {}
            }
        }
    })
    .await;
    usage
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        // Still holding the call: the response body was dropped before `finish`.
        let fallback = self.usage();
        let Some(call) = self.call.take() else {
            return;
        };
        let mut usage = self.usage;
        let ttft = self.ttft_ms;
        let error = match (self.complete, self.error.take()) {
            (_, Some(error)) => Some(error),
            (true, None) => None,
            (false, None) => Some("client_disconnected".to_owned()),
        };
        let events = if self.complete {
            None
        } else {
            self.events.take()
        };
        let limit = call.proxy.disconnect_drain;
        tokio::spawn(async move {
            if let Some(events) = events
                && let Some(drained) = drain(events, limit).await
            {
                usage = Some(drained);
            }
            call.finish(200, usage.unwrap_or(fallback), ttft, error.as_deref())
                .await;
        });
    }
}

/// The SSE event that ends a stream whose upstream failed, in the route's error shape.
fn error_event(err: &GatewayError, dialect: Dialect) -> Bytes {
    let mut event = match dialect {
        Dialect::OpenAi => b"data: ".to_vec(),
        Dialect::Anthropic => b"event: error\ndata: ".to_vec(),
    };
    event.extend_from_slice(&err.body_for(dialect));
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// Forwards upstream events as they arrive. Only the usage-only chunk is held back, from clients that did
/// not ask for usage; nothing else is buffered or rewritten.
pub fn stream_response(call: Call, events: Events, include_usage: bool) -> Response {
    let dialect = call.dialect;
    let started = Instant::now();
    let mut response = call.ok_response(Body::empty(), "text/event-stream");
    response.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-cache"),
    );
    let already_ms = call.elapsed_ms();
    let mut meter = StreamMeter {
        call: Some(call),
        events: Some(events),
        usage: None,
        ttft_ms: None,
        error: None,
        complete: false,
        bytes_out: 0,
    };
    let body = async_stream::stream! {
        while let Some(item) = meter.next().await {
            match item {
                StreamItem::Event { bytes, usage, usage_only, last } => {
                    if meter.ttft_ms.is_none() {
                        meter.ttft_ms = Some(already_ms + started.elapsed().as_millis() as u64);
                    }
                    if usage.is_some() {
                        meter.usage = usage;
                    }
                    if usage_only && !include_usage {
                        continue;
                    }
                    meter.complete = last;
                    meter.bytes_out += bytes.len();
                    yield Ok::<Bytes, std::convert::Infallible>(bytes);
                    if last {
                        break;
                    }
                }
                StreamItem::Failed(err) => {
                    meter.error = Some(err.kind().to_owned());
                    yield Ok(error_event(&err, dialect));
                    break;
                }
            }
        }
        meter.finish().await;
    };
    *response.body_mut() = Body::from_stream(body);
    response
}
