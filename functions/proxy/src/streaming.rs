//! Streamed answers, for every route: upstream events are forwarded as they arrive and metered on the
//! way (time to first token, the provider's usage, output read), and a client that hangs up early still
//! gets its call recorded and billed for what was generated (see `Drop for StreamMeter`).

use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use qnp_shared::GatewayError;
use qnp_shared::error::Dialect;
use qnp_shared::providers::StreamItem;
use qnp_shared::usage::TokenUsage;

use crate::call::Call;
use crate::routing::Api;

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
    /// Generated output read from the upstream so far (forwarded, or drained after a hang-up), for an
    /// estimate when the provider reports no usage.
    output_bytes: usize,
    /// Events read from the upstream.
    events_read: usize,
}

impl StreamMeter {
    fn usage(&self) -> TokenUsage {
        match (self.usage, &self.call) {
            (Some(usage), _) => usage,
            (None, Some(call)) if self.events_read > 0 => call.estimate(self.output_bytes),
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

/// The most a drain reads after a hang-up before it stops (and the upstream connection is dropped, which
/// makes providers stop generating): bounds the time and memory a vanished client can cost.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// What a drain read from a stream nobody is listening to.
#[derive(Default)]
struct Drained {
    usage: Option<TokenUsage>,
    output_bytes: usize,
    events: usize,
}

/// Reads what is left of a stream nobody is listening to, until the provider's usage arrives, the stream
/// ends, or the drain's time or byte bound is reached, so that what was generated is billed: by the
/// provider's count when it comes, else by an estimate from everything read.
async fn drain(mut events: Events, limit: std::time::Duration) -> Drained {
    let mut drained = Drained::default();
    let mut read = 0usize;
    let _ = tokio::time::timeout(limit, async {
        while let Some(item) = events.next().await {
            match item {
                StreamItem::Event {
                    bytes, usage, last, ..
                } => {
                    drained.events += 1;
                    read = read.saturating_add(bytes.len());
                    drained.output_bytes = drained
                        .output_bytes
                        .saturating_add(qnp_shared::providers::sse::output_bytes(&bytes));
                    if usage.is_some() {
                        drained.usage = usage;
                    }
                    if last || read > MAX_DRAIN_BYTES {
                        break;
                    }
                }
                StreamItem::Failed(_) => break,
            }
        }
    })
    .await;
    drained
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        // Still holding the call: the response body was dropped before `finish`.
        let Some(call) = self.call.take() else {
            return;
        };
        let mut usage = self.usage;
        let (output_bytes, events_seen) = (self.output_bytes, self.events_read);
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
            let drained = match events {
                Some(events) => drain(events, limit).await,
                None => Drained::default(),
            };
            usage = usage.or(drained.usage);
            let billed = match usage {
                Some(usage) => usage,
                None if events_seen + drained.events > 0 => {
                    call.estimate(output_bytes.saturating_add(drained.output_bytes))
                }
                None => TokenUsage::default(),
            };
            call.finish(200, billed, ttft, error.as_deref()).await;
        });
    }
}

/// The SSE event that ends a stream whose upstream failed, in the route's error shape: a Responses
/// stream ends with `response.failed` (numbered after the `sent` events before it), the others with
/// an error event.
fn error_event(err: &GatewayError, dialect: Dialect, api: Api, sent: usize) -> Bytes {
    if api == Api::Responses {
        return qnp_shared::dialects::openai_responses::failed_event(err, sent);
    }
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
pub fn respond(call: Call, events: Events, include_usage: bool, api: Api) -> Response {
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
        output_bytes: 0,
        events_read: 0,
    };
    let body = async_stream::stream! {
        let mut sent = 0usize;
        while let Some(item) = meter.next().await {
            match item {
                StreamItem::Event { bytes, usage, usage_only, last } => {
                    if meter.ttft_ms.is_none() {
                        meter.ttft_ms = Some(already_ms + started.elapsed().as_millis() as u64);
                    }
                    if usage.is_some() {
                        meter.usage = usage;
                    }
                    meter.events_read += 1;
                    meter.output_bytes = meter
                        .output_bytes
                        .saturating_add(qnp_shared::providers::sse::output_bytes(&bytes));
                    if usage_only && !include_usage {
                        continue;
                    }
                    meter.complete = last;
                    sent += 1;
                    let bytes = match &meter.call {
                        Some(call) => call.present_event(bytes, usage.as_ref()),
                        None => bytes,
                    };
                    yield Ok::<Bytes, std::convert::Infallible>(bytes);
                    if last {
                        break;
                    }
                }
                StreamItem::Failed(err) => {
                    meter.error = Some(err.kind().to_owned());
                    yield Ok(error_event(&err, dialect, api, sent));
                    break;
                }
            }
        }
        meter.finish().await;
    };
    *response.body_mut() = Body::from_stream(body);
    response
}
