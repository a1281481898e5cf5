//! Anthropic's Messages format as the gateway emits it for replies it translated: an [`Answer`] as a
//! `message`, and [`AnswerEvent`]s as Anthropic's named stream events (message_start, one content block
//! per run of text and per tool call, message_delta with the stop reason and usage, message_stop).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::conversation::{Answer, AnswerEvent, FinishReason};
use crate::usage::TokenUsage;
use crate::wire::StreamItem;

/// The gateway's usage as Anthropic's usage object (input tokens exclude cache reads and writes).
pub(crate) fn usage_json(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u
            .prompt_tokens
            .saturating_sub(u.cached_tokens.saturating_add(u.cache_write_tokens)),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.completion_tokens,
    })
}

/// A finish reason as Anthropic's `stop_reason`. A turn that ends in tool calls is `tool_use` whatever
/// the upstream said (some OpenAI-compatible servers report `stop`), since Anthropic clients run tools
/// on `tool_use`. No dialect says which stop sequence matched, so one reads as `end_turn`.
pub(crate) fn stop_reason(finish: Option<FinishReason>, has_tool_calls: bool) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls) => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// Tool-call arguments as a `tool_use` input: a JSON object, `{}` when absent or unparsable.
pub(crate) fn tool_input(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// A whole answer as an Anthropic `message` for `model` (the gateway's id for it).
pub(crate) fn message(answer: &Answer, model: &str) -> Value {
    let mut content = Vec::new();
    if let Some(text) = answer.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in &answer.tool_calls {
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
            "input": tool_input(&call.arguments)}));
    }
    json!({
        "id": format!("msg_{}", answer.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(Some(answer.finish), !answer.tool_calls.is_empty()),
        "stop_sequence": null,
        "usage": usage_json(&answer.usage.unwrap_or_default()),
    })
}

fn event(name: &str, mut data: Value) -> Bytes {
    data["type"] = json!(name);
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn item(bytes: Bytes) -> StreamItem {
    StreamItem::Event {
        bytes,
        usage: None,
        usage_only: false,
        last: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text(usize),
    Tool(usize),
}

/// A streamed answer as Anthropic events: one encoder per stream, fed the answer's events in order.
pub(crate) struct EventEncoder {
    model: String,
    fallback_id: String,
    /// The prompt's size as message_start reports it: the upstream's count arrives only with the end of
    /// the answer, and clients (Claude Code) track their context window from message_start.
    input_tokens: u64,
    started: bool,
    next_block: usize,
    open: Option<Block>,
    /// Tool-call index → content-block index.
    tool_blocks: HashMap<usize, usize>,
    finish: Option<FinishReason>,
}

impl EventEncoder {
    /// `fallback_id` names the message if the stream ends before the upstream's id arrived.
    /// `input_tokens` is what message_start says of the prompt (an estimate: the upstream counts at
    /// the end, and message_delta carries its count).
    pub(crate) fn new(model: &str, fallback_id: &str, input_tokens: u64) -> EventEncoder {
        EventEncoder {
            model: model.to_owned(),
            fallback_id: fallback_id.to_owned(),
            input_tokens,
            started: false,
            next_block: 0,
            open: None,
            tool_blocks: HashMap::new(),
            finish: None,
        }
    }

    fn start(&mut self, id: &str, out: &mut Vec<StreamItem>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(item(event(
            "message_start",
            json!({"message": {
                "id": format!("msg_{id}"), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                // The upstream's counts arrive with the end of the answer, in message_delta.
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }}),
        )));
    }

    fn close(&mut self, out: &mut Vec<StreamItem>) {
        if let Some(Block::Text(index) | Block::Tool(index)) = self.open.take() {
            out.push(item(event("content_block_stop", json!({"index": index}))));
        }
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<StreamItem>) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(item(event(
            "content_block_start",
            json!({"index": index, "content_block": block}),
        )));
        index
    }

    fn arguments(index: usize, fragment: &str, out: &mut Vec<StreamItem>) {
        if !fragment.is_empty() {
            out.push(item(event(
                "content_block_delta",
                json!({"index": index, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
            )));
        }
    }

    /// The items for one event; `Ended` closes the message and is the protocol's end.
    pub(crate) fn encode(&mut self, answer_event: AnswerEvent) -> Vec<StreamItem> {
        let mut out = Vec::new();
        match answer_event {
            AnswerEvent::Started { id } => self.start(&id, &mut out),
            AnswerEvent::Text(text) => {
                let index = match self.open {
                    Some(Block::Text(index)) => index,
                    _ => {
                        let index = self.open_block(json!({"type": "text", "text": ""}), &mut out);
                        self.open = Some(Block::Text(index));
                        index
                    }
                };
                out.push(item(event(
                    "content_block_delta",
                    json!({"index": index, "delta": {"type": "text_delta", "text": text}}),
                )));
            }
            AnswerEvent::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let block = self.open_block(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    &mut out,
                );
                self.open = Some(Block::Tool(block));
                self.tool_blocks.insert(index, block);
                Self::arguments(block, &arguments, &mut out);
            }
            AnswerEvent::ToolArguments { index, fragment } => {
                if let Some(&block) = self.tool_blocks.get(&index) {
                    Self::arguments(block, &fragment, &mut out);
                }
            }
            AnswerEvent::Finished(reason) => {
                self.close(&mut out);
                self.finish = Some(reason);
            }
            AnswerEvent::Ended { usage } => {
                let fallback = self.fallback_id.clone();
                self.start(&fallback, &mut out);
                self.close(&mut out);
                if self.next_block == 0 {
                    // Clients expect at least one block.
                    self.open_block(json!({"type": "text", "text": ""}), &mut out);
                    out.push(item(event("content_block_stop", json!({"index": 0}))));
                }
                let reason = stop_reason(self.finish, !self.tool_blocks.is_empty());
                let counts = match &usage {
                    Some(u) => usage_json(u),
                    None => json!({"output_tokens": 0}),
                };
                out.push(StreamItem::Event {
                    bytes: event(
                        "message_delta",
                        json!({"delta": {"stop_reason": reason, "stop_sequence": null}, "usage": counts}),
                    ),
                    usage,
                    usage_only: false,
                    last: false,
                });
                out.push(StreamItem::Event {
                    bytes: event("message_stop", json!({})),
                    usage: None,
                    usage_only: false,
                    last: true,
                });
            }
        }
        out
    }
}
