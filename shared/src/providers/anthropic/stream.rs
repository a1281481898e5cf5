//! Anthropic's named stream events: translated into OpenAI chunks, or passed through byte for byte with
//! their usage read on the way.

use super::*;

/// Decodes one Anthropic stream into answer events, event by event.
pub(super) struct StreamTranslator {
    pub(super) usage: AnthropicUsage,
    /// Whether any event carried a usage object: a stream without one is billed by an estimate.
    pub(super) usage_seen: bool,
    /// Anthropic content-block index → tool-call index (tool calls only).
    pub(super) tool_index: HashMap<u64, usize>,
    pub(super) tools_seen: usize,
    /// Tool blocks that have not received any argument text yet (closed with "{}").
    pub(super) empty_arguments: HashMap<u64, bool>,
    pub(super) json_tool_block: Option<u64>,
    pub(super) stop_reason: Option<String>,
    pub(super) chunks: ChunkEncoder,
}

impl StreamTranslator {
    pub(super) fn new(model: &Model) -> StreamTranslator {
        StreamTranslator {
            usage: AnthropicUsage::default(),
            usage_seen: false,
            tool_index: HashMap::new(),
            tools_seen: 0,
            empty_arguments: HashMap::new(),
            json_tool_block: None,
            stop_reason: None,
            chunks: ChunkEncoder::new(&model.id, "anthropic"),
        }
    }

    /// The OpenAI items for one Anthropic event.
    pub(super) fn on_event(&mut self, name: &str, data: &Value) -> Vec<StreamItem> {
        match self.decode(name, data) {
            Ok(events) => events
                .into_iter()
                .flat_map(|e| self.chunks.encode(e))
                .collect(),
            Err(err) => vec![StreamItem::Failed(err)],
        }
    }

    /// The answer events one Anthropic event stands for.
    fn decode(&mut self, name: &str, data: &Value) -> Result<Vec<AnswerEvent>, GatewayError> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(match name {
            "message_start" => {
                let message = &data["message"];
                if let Ok(u) = serde_json::from_value::<AnthropicUsage>(message["usage"].clone()) {
                    self.usage.overlay(u);
                    self.usage_seen = true;
                }
                let id = message["id"].as_str().unwrap_or("anthropic").to_owned();
                vec![AnswerEvent::Started { id }]
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
                        vec![AnswerEvent::ToolCall {
                            index: tool,
                            id: text(&block["id"]),
                            name: text(&block["name"]),
                            arguments: String::new(),
                        }]
                    }
                    Some("text") if block["text"].as_str().is_some_and(|t| !t.is_empty()) => {
                        vec![AnswerEvent::Text(text(&block["text"]))]
                    }
                    _ => vec![],
                }
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => vec![AnswerEvent::Text(text(&delta["text"]))],
                    Some("input_json_delta") => {
                        let part = text(&delta["partial_json"]);
                        if part.is_empty() {
                            return Ok(vec![]);
                        }
                        if self.json_tool_block == Some(index) {
                            return Ok(vec![AnswerEvent::Text(part)]);
                        }
                        match self.tool_index.get(&index) {
                            Some(&tool) => {
                                self.empty_arguments.insert(index, false);
                                vec![AnswerEvent::ToolArguments {
                                    index: tool,
                                    fragment: part,
                                }]
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
                    (Some(&tool), Some(true)) => vec![AnswerEvent::ToolArguments {
                        index: tool,
                        fragment: "{}".into(),
                    }],
                    _ => vec![],
                }
            }
            "message_delta" => {
                if let Ok(u) = serde_json::from_value::<AnthropicUsage>(data["usage"].clone()) {
                    self.usage.overlay(u);
                    self.usage_seen = true;
                }
                self.stop_reason = data["delta"]["stop_reason"].as_str().map(str::to_owned);
                let finish = if self.json_tool_block.is_some() {
                    FinishReason::Stop
                } else {
                    finish_reason(self.stop_reason.as_deref())
                };
                vec![AnswerEvent::Finished(finish)]
            }
            "message_stop" => vec![AnswerEvent::Ended {
                usage: self.usage_seen.then(|| self.usage.tokens()),
            }],
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or("api_error");
                tracing::warn!(
                    provider = "anthropic",
                    kind,
                    "upstream error event mid-stream"
                );
                return Err(if kind == "overloaded_error" {
                    GatewayError::UpstreamOverloaded
                } else {
                    GatewayError::UpstreamFailed
                });
            }
            _ => vec![],
        })
    }
}

impl Translate for StreamTranslator {
    fn event(&mut self, event: Bytes) -> Vec<StreamItem> {
        let Some(data) = sse::data(&event) else {
            return vec![];
        };
        let Ok(data) = serde_json::from_slice::<Value>(&data) else {
            return vec![];
        };
        let name = sse::event_name(&event)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .or_else(|| data["type"].as_str().map(str::to_owned))
            .unwrap_or_default();
        self.on_event(&name, &data)
    }
}

/// Reads usage out of a native Anthropic stream without changing a byte of it: `message_start` and the
/// cumulative `message_delta` carry the counts, `message_stop` ends the protocol.
#[derive(Default)]
pub(super) struct Passthrough {
    usage: AnthropicUsage,
}

impl Translate for Passthrough {
    fn event(&mut self, event: Bytes) -> Vec<StreamItem> {
        let name = sse::event_name(&event)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut reported = None;
        if (name == b"message_start" || name == b"message_delta")
            && let Some(data) = sse::data(&event)
            && let Ok(data) = serde_json::from_slice::<Value>(&data)
        {
            let counts = if name == b"message_start" {
                &data["message"]["usage"]
            } else {
                &data["usage"]
            };
            if let Ok(u) = serde_json::from_value::<AnthropicUsage>(counts.clone()) {
                self.usage.overlay(u);
                reported = Some(self.usage.tokens());
            }
        }
        if name == b"error" {
            // Rendered by the proxy in the route's shape, and recorded as the call's error.
            let kind = sse::data(&event)
                .and_then(|d| serde_json::from_slice::<Value>(&d).ok())
                .and_then(|d| d["error"]["type"].as_str().map(str::to_owned));
            return vec![StreamItem::Failed(
                if kind.as_deref() == Some("overloaded_error") {
                    GatewayError::UpstreamOverloaded
                } else {
                    GatewayError::UpstreamFailed
                },
            )];
        }
        let last = name == b"message_stop";
        vec![StreamItem::Event {
            bytes: event,
            usage: reported,
            usage_only: false,
            last,
        }]
    }
}
