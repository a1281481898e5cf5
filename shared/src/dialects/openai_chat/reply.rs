//! OpenAI's chat format for answers the gateway translated: an [`Answer`] as a `chat.completion`, and
//! [`AnswerEvent`]s as `chat.completion.chunk` events ending with the usage chunk and `[DONE]`.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::conversation::{Answer, AnswerEvent};
use crate::usage::TokenUsage;
use crate::wire::StreamItem;

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

/// A whole answer as an OpenAI `chat.completion` for `model` (the gateway's id for it).
pub(crate) fn completion(answer: &Answer, model: &str) -> Value {
    let mut assistant = json!({"role": "assistant", "content": answer.content, "refusal": null});
    if !answer.tool_calls.is_empty() {
        let calls: Vec<Value> = answer
            .tool_calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        assistant["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": format!("chatcmpl-{}", answer.id),
        "object": "chat.completion",
        "created": now_unix(),
        "model": model,
        "choices": [{"index": 0, "message": assistant, "logprobs": null,
            "finish_reason": answer.finish.as_openai()}],
        "usage": usage_json(&answer.usage.unwrap_or_default()),
    })
}

/// A streamed answer as OpenAI chunks: one encoder per stream, fed the answer's events in order.
pub(crate) struct ChunkEncoder {
    id: String,
    model: String,
    created: u64,
}

impl ChunkEncoder {
    /// `fallback_id` names the completion until the upstream's own id arrives with `Started`.
    pub(crate) fn new(model: &str, fallback_id: &str) -> ChunkEncoder {
        ChunkEncoder {
            id: format!("chatcmpl-{fallback_id}"),
            model: model.to_owned(),
            created: now_unix(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> StreamItem {
        StreamItem::Event {
            bytes: sse_event(&json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })),
            usage: None,
            usage_only: false,
            last: false,
        }
    }

    /// The items for one event. `Ended` is the usage-only chunk (forwarded only to clients that asked for
    /// usage) and `data: [DONE]`, the protocol's end.
    pub(crate) fn encode(&mut self, event: AnswerEvent) -> Vec<StreamItem> {
        match event {
            AnswerEvent::Started { id } => {
                self.id = format!("chatcmpl-{id}");
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            AnswerEvent::Text(text) => vec![self.chunk(json!({"content": text}), None)],
            AnswerEvent::ToolCall {
                index,
                id,
                name,
                arguments,
            } => vec![self.chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments}}]}),
                None,
            )],
            AnswerEvent::ToolArguments { index, fragment } => vec![self.chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                None,
            )],
            AnswerEvent::Finished(reason) => vec![self.chunk(json!({}), Some(reason.as_openai()))],
            AnswerEvent::Ended { usage } => {
                let chunk = json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [], "usage": usage_json(&usage.unwrap_or_default()),
                });
                vec![
                    StreamItem::Event {
                        bytes: sse_event(&chunk),
                        usage,
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
        }
    }
}
