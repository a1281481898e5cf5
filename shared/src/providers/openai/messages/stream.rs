//! OpenAI chunks as Anthropic's named stream events (message_start, content blocks, message_delta,
//! message_stop).

use super::*;

pub(super) fn event(name: &str, mut data: Value) -> Bytes {
    data["type"] = json!(name);
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

pub(super) fn item(bytes: Bytes) -> StreamItem {
    StreamItem::Event {
        bytes,
        usage: None,
        usage_only: false,
        last: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Block {
    Text(usize),
    Tool(usize),
}

/// Translates one OpenAI chunk stream into Anthropic events, chunk by chunk: `message_start` with the
/// first upstream event, one content block per run of text and per tool call (Anthropic block indices
/// from 0, OpenAI tool-call index → block index), and at `[DONE]` the closing `message_delta` (stop
/// reason and the final usage chunk's counts) and `message_stop`.
pub struct StreamTranslator {
    pub(super) model: String,
    pub(super) names: ToolNames,
    pub(super) started: bool,
    pub(super) next_block: usize,
    pub(super) open: Option<Block>,
    pub(super) tool_blocks: HashMap<u64, usize>,
    pub(super) finish_reason: Option<String>,
    pub(super) usage: Option<TokenUsage>,
}

impl StreamTranslator {
    pub fn new(model: &Model, names: ToolNames) -> StreamTranslator {
        StreamTranslator {
            model: model.id.clone(),
            names,
            started: false,
            next_block: 0,
            open: None,
            tool_blocks: HashMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    pub(super) fn start(&mut self, id: Option<&str>, out: &mut Vec<StreamItem>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(item(event(
            "message_start",
            json!({"message": {
                "id": format!("msg_{}", id.unwrap_or("openai")), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                // The counts arrive with the last chunk; message_delta carries them.
                "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }}),
        )));
    }

    pub(super) fn close(&mut self, out: &mut Vec<StreamItem>) {
        if let Some(Block::Text(index) | Block::Tool(index)) = self.open.take() {
            out.push(item(event("content_block_stop", json!({"index": index}))));
        }
    }

    pub(super) fn open_block(&mut self, block: Value, out: &mut Vec<StreamItem>) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(item(event(
            "content_block_start",
            json!({"index": index, "content_block": block}),
        )));
        index
    }

    pub(super) fn on_text(&mut self, text: &str, out: &mut Vec<StreamItem>) {
        let index = match self.open {
            Some(Block::Text(index)) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = Some(Block::Text(index));
                index
            }
        };
        out.push(item(event(
            "content_block_delta",
            json!({"index": index, "delta": {"type": "text_delta", "text": text}}),
        )));
    }

    pub(super) fn on_tool_call(
        &mut self,
        position: usize,
        call: &Value,
        out: &mut Vec<StreamItem>,
    ) {
        let key = call["index"].as_u64().unwrap_or(position as u64);
        let index = match self.tool_blocks.get(&key) {
            Some(&index) => index,
            None => {
                let id = call["id"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("call_{key}"));
                let name = self
                    .names
                    .original(call["function"]["name"].as_str().unwrap_or(""))
                    .to_owned();
                let index = self.open_block(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                self.open = Some(Block::Tool(index));
                self.tool_blocks.insert(key, index);
                index
            }
        };
        if let Some(arguments) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            out.push(item(event(
                "content_block_delta",
                json!({"index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            )));
        }
    }

    pub(super) fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<StreamItem>) {
        self.start(chunk["id"].as_str(), out);
        if let Some(usage) = parse_usage(&chunk["usage"]) {
            self.usage = Some(usage);
        }
        // The final usage chunk has no choices.
        let Some(choice) = chunk["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        for text in [&delta["content"], &delta["refusal"]] {
            if let Some(text) = text.as_str().filter(|t| !t.is_empty()) {
                self.on_text(text, out);
            }
        }
        for (position, call) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            self.on_tool_call(position, call, out);
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.close(out);
            self.finish_reason = Some(finish.to_owned());
        }
    }

    pub(super) fn on_done(&mut self, out: &mut Vec<StreamItem>) {
        self.start(None, out);
        self.close(out);
        if self.next_block == 0 {
            // Clients expect at least one block.
            self.open_block(json!({"type": "text", "text": ""}), out);
            out.push(item(event("content_block_stop", json!({"index": 0}))));
        }
        let reason = stop_reason(self.finish_reason.as_deref(), !self.tool_blocks.is_empty());
        let usage = match &self.usage {
            Some(u) => anthropic_usage(u),
            None => json!({"output_tokens": 0}),
        };
        out.push(StreamItem::Event {
            bytes: event(
                "message_delta",
                json!({"delta": {"stop_reason": reason, "stop_sequence": null}, "usage": usage}),
            ),
            usage: self.usage,
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

    /// The Anthropic items for one upstream SSE event (framed, with its trailing blank line).
    pub fn on_event(&mut self, event: &[u8]) -> Vec<StreamItem> {
        let mut out = Vec::new();
        let Some(data) = sse::data(event) else {
            return out;
        };
        if data == b"[DONE]" {
            self.on_done(&mut out);
            return out;
        }
        let chunk = match serde_json::from_slice::<Value>(&data) {
            Ok(chunk) => chunk,
            Err(_) => {
                tracing::warn!(provider = "openai", "unparsable stream chunk");
                out.push(StreamItem::Failed(GatewayError::UpstreamFailed));
                return out;
            }
        };
        if !chunk["error"].is_null() {
            tracing::warn!(
                provider = "openai",
                kind = chunk["error"]["type"].as_str().unwrap_or("unknown"),
                "upstream error event mid-stream"
            );
            out.push(StreamItem::Failed(GatewayError::UpstreamFailed));
            return out;
        }
        self.on_chunk(&chunk, &mut out);
        out
    }
}

/// An OpenAI stream body as Anthropic events, applying the idle timeout. A broken body, an error
/// event, or an end without `[DONE]` (the connection dropped) ends it with `StreamItem::Failed`.
pub fn message_stream<S, E>(
    body: S,
    mut translator: StreamTranslator,
    idle: Duration,
) -> BoxStream<'static, StreamItem>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let mut events = UpstreamEvents::from_stream(body, idle, "openai");
    async_stream::stream! {
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => { yield StreamItem::Failed(err); return; }
            };
            for item in translator.on_event(&event) {
                let end = matches!(item, StreamItem::Event { last: true, .. } | StreamItem::Failed(_));
                yield item;
                if end {
                    return;
                }
            }
        }
        tracing::warn!("upstream stream ended without [DONE]");
        yield StreamItem::Failed(GatewayError::UpstreamFailed);
    }
    .boxed()
}
