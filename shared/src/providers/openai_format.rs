//! Pieces of OpenAI's wire format that every translating provider emits the same way.

use bytes::Bytes;
use serde_json::{Value, json};

use super::StreamItem;
use crate::usage::TokenUsage;

/// OpenAI's usage object for a translated reply.
pub(crate) fn usage_json(u: &TokenUsage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// One SSE `data:` event.
pub(crate) fn sse_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

pub(crate) fn now_unix() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp() as u64
}

/// The end of a translated stream: the usage-only chunk (forwarded only to clients that asked for
/// usage) and `data: [DONE]`.
pub(crate) fn stream_end(
    id: &str,
    created: u64,
    model: &str,
    usage: TokenUsage,
) -> Vec<StreamItem> {
    let chunk = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [], "usage": usage_json(&usage),
    });
    vec![
        StreamItem::Event {
            bytes: sse_event(&chunk),
            usage: Some(usage),
            usage_only: true,
            last: false,
        },
        StreamItem::Event {
            bytes: Bytes::from_static(b"data: [DONE]\n\n"),
            usage: None,
            usage_only: false,
            last: true,
        },
    ]
}
