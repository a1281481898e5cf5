//! Anthropic's named stream events: translated into OpenAI chunks, or passed through byte for byte with
//! their usage read on the way.

use super::*;

/// Translates one Anthropic stream into OpenAI chunks, event by event.
pub(super) struct StreamTranslator {
    pub(super) id: String,
    pub(super) model: String,
    pub(super) created: u64,
    pub(super) usage: AnthropicUsage,
    /// Anthropic content-block index → OpenAI tool-call index (tool calls only).
    pub(super) tool_index: HashMap<u64, usize>,
    pub(super) tools_seen: usize,
    /// Tool blocks that have not received any argument text yet (closed with "{}").
    pub(super) empty_arguments: HashMap<u64, bool>,
    pub(super) json_tool_block: Option<u64>,
    pub(super) stop_reason: Option<String>,
}

impl StreamTranslator {
    pub(super) fn new(model: &Model) -> StreamTranslator {
        StreamTranslator {
            id: "chatcmpl-anthropic".into(),
            model: model.id.clone(),
            created: now_unix(),
            usage: AnthropicUsage::default(),
            tool_index: HashMap::new(),
            tools_seen: 0,
            empty_arguments: HashMap::new(),
            json_tool_block: None,
            stop_reason: None,
        }
    }

    pub(super) fn chunk(&self, delta: Value, finish: Option<&str>) -> StreamItem {
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

    /// The OpenAI items for one Anthropic event.
    pub(super) fn on_event(&mut self, name: &str, data: &Value) -> Vec<StreamItem> {
        match name {
            "message_start" => {
                let message = &data["message"];
                if let Some(id) = message["id"].as_str() {
                    self.id = format!("chatcmpl-{id}");
                }
                if let Ok(u) = serde_json::from_value::<AnthropicUsage>(message["usage"].clone()) {
                    self.usage.overlay(u);
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") if block["name"] == JSON_TOOL => {
                        self.json_tool_block = Some(index);
                        vec![]
                    }
                    Some("tool_use") => {
                        let tool = self.tools_seen;
                        self.tools_seen += 1;
                        self.tool_index.insert(index, tool);
                        self.empty_arguments.insert(index, true);
                        vec![self.chunk(json!({"tool_calls": [{"index": tool, "id": block["id"], "type": "function",
                            "function": {"name": block["name"], "arguments": ""}}]}), None)]
                    }
                    Some("text") if block["text"].as_str().is_some_and(|t| !t.is_empty()) => {
                        vec![self.chunk(json!({"content": block["text"]}), None)]
                    }
                    _ => vec![],
                }
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => vec![self.chunk(json!({"content": delta["text"]}), None)],
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or("");
                        if part.is_empty() {
                            return vec![];
                        }
                        if self.json_tool_block == Some(index) {
                            return vec![self.chunk(json!({"content": part}), None)];
                        }
                        match self.tool_index.get(&index) {
                            Some(&tool) => {
                                self.empty_arguments.insert(index, false);
                                vec![self.chunk(json!({"tool_calls": [{"index": tool, "function": {"arguments": part}}]}), None)]
                            }
                            None => vec![],
                        }
                    }
                    _ => vec![],
                }
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().unwrap_or(0);
                match (
                    self.tool_index.get(&index),
                    self.empty_arguments.remove(&index),
                ) {
                    (Some(&tool), Some(true)) => {
                        vec![self.chunk(json!({"tool_calls": [{"index": tool, "function": {"arguments": "{}"}}]}), None)]
                    }
                    _ => vec![],
                }
            }
            "message_delta" => {
                if let Ok(u) = serde_json::from_value::<AnthropicUsage>(data["usage"].clone()) {
                    self.usage.overlay(u);
                }
                self.stop_reason = data["delta"]["stop_reason"].as_str().map(str::to_owned);
                let finish = if self.json_tool_block.is_some() {
                    "stop"
                } else {
                    finish_reason(self.stop_reason.as_deref())
                };
                vec![self.chunk(json!({}), Some(finish))]
            }
            "message_stop" => stream_end(&self.id, self.created, &self.model, self.usage.tokens()),
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("api_error");
                tracing::warn!(
                    provider = "anthropic",
                    kind,
                    "upstream error event mid-stream"
                );
                vec![StreamItem::Failed(if kind == "overloaded_error" {
                    GatewayError::UpstreamOverloaded
                } else {
                    GatewayError::UpstreamFailed
                })]
            }
            _ => vec![],
        }
    }
}

pub(super) fn event_stream(
    mut events: UpstreamEvents,
    model: &Model,
) -> futures_util::stream::BoxStream<'static, StreamItem> {
    let mut translator = StreamTranslator::new(model);
    async_stream::stream! {
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => { yield StreamItem::Failed(err); return; }
            };
            let Some(data) = sse::data(&event) else { continue };
            let Ok(data) = serde_json::from_slice::<Value>(&data) else { continue };
            let name = sse::event_name(&event)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .or_else(|| data["type"].as_str().map(str::to_owned))
                .unwrap_or_default();
            for item in translator.on_event(&name, &data) {
                let done = matches!(item, StreamItem::Event { last: true, .. } | StreamItem::Failed(_));
                yield item;
                if done {
                    return;
                }
            }
        }
        tracing::warn!("anthropic stream ended without message_stop");
        yield StreamItem::Failed(GatewayError::UpstreamFailed);
    }
    .boxed()
}

/// Reads usage out of a native Anthropic stream without changing a byte of it: `message_start` and the
/// cumulative `message_delta` carry the counts, `message_stop` ends the protocol.
pub(super) fn passthrough_stream(
    mut events: UpstreamEvents,
) -> futures_util::stream::BoxStream<'static, StreamItem> {
    async_stream::stream! {
        let mut usage = AnthropicUsage::default();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => { yield StreamItem::Failed(err); return; }
            };
            let name = sse::event_name(&event).map(<[u8]>::to_vec).unwrap_or_default();
                let mut reported = None;
                if (name == b"message_start" || name == b"message_delta")
                    && let Some(data) = sse::data(&event)
                    && let Ok(data) = serde_json::from_slice::<Value>(&data)
                {
                    let counts = if name == b"message_start" { &data["message"]["usage"] } else { &data["usage"] };
                    if let Ok(u) = serde_json::from_value::<AnthropicUsage>(counts.clone()) {
                        usage.overlay(u);
                        reported = Some(usage.tokens());
                    }
                }
                if name == b"error" {
                    // Rendered by the proxy in the route's shape, and recorded as the call's error.
                    let kind = sse::data(&event)
                        .and_then(|d| serde_json::from_slice::<Value>(&d).ok())
                        .and_then(|d| d["error"]["type"].as_str().map(str::to_owned));
                    yield StreamItem::Failed(if kind.as_deref() == Some("overloaded_error") {
                        GatewayError::UpstreamOverloaded
                    } else {
                        GatewayError::UpstreamFailed
                    });
                    return;
                }
                let last = name == b"message_stop";
                yield StreamItem::Event { bytes: event, usage: reported, usage_only: false, last };
                if last {
                    return;
                }
        }
        yield StreamItem::Failed(GatewayError::UpstreamFailed);
    }
    .boxed()
}
