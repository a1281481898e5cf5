//! OpenAI chunks decoded into answer events (tool names restored), which `dialects::anthropic_messages`
//! renders as Anthropic's named stream events.

use super::*;

/// Translates one OpenAI chunk stream into Anthropic events, chunk by chunk: the first upstream event
/// starts the message, each run of text and each tool call (by OpenAI's tool-call index) is a content
/// block, and `[DONE]` ends it with the stop reason and the final usage chunk's counts.
pub struct StreamTranslator {
    pub(super) names: ToolNames,
    pub(super) started: bool,
    /// OpenAI tool-call index (or position) → the answer's tool-call index.
    pub(super) tool_calls: HashMap<u64, usize>,
    pub(super) usage: Option<TokenUsage>,
    pub(super) events: EventEncoder,
}

impl StreamTranslator {
    pub fn new(model: &Model, names: ToolNames) -> StreamTranslator {
        StreamTranslator {
            names,
            started: false,
            tool_calls: HashMap::new(),
            usage: None,
            events: EventEncoder::new(&model.id, "openai"),
        }
    }

    /// The answer events of one chunk.
    pub(super) fn decode(&mut self, chunk: &Value) -> Vec<AnswerEvent> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(AnswerEvent::Started {
                id: chunk["id"].as_str().unwrap_or("openai").to_owned(),
            });
        }
        if let Some(usage) = parse_usage(&chunk["usage"]) {
            self.usage = Some(usage);
        }
        // The final usage chunk has no choices.
        let Some(choice) = chunk["choices"].get(0) else {
            return out;
        };
        let delta = &choice["delta"];
        for text in [&delta["content"], &delta["refusal"]] {
            if let Some(text) = text.as_str().filter(|t| !t.is_empty()) {
                out.push(AnswerEvent::Text(text.to_owned()));
            }
        }
        for (position, call) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let key = call["index"].as_u64().unwrap_or(position as u64);
            let arguments = call["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            match self.tool_calls.get(&key) {
                Some(&index) => out.push(AnswerEvent::ToolArguments {
                    index,
                    fragment: arguments,
                }),
                None => {
                    let index = self.tool_calls.len();
                    self.tool_calls.insert(key, index);
                    out.push(AnswerEvent::ToolCall {
                        index,
                        id: call["id"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("call_{key}")),
                        name: self
                            .names
                            .original(call["function"]["name"].as_str().unwrap_or(""))
                            .to_owned(),
                        arguments,
                    });
                }
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            out.push(AnswerEvent::Finished(finish(Some(reason))));
        }
        out
    }

    /// The Anthropic items for one upstream SSE event (framed, with its trailing blank line).
    pub fn on_event(&mut self, event: &[u8]) -> Vec<StreamItem> {
        let Some(data) = sse::data(event) else {
            return vec![];
        };
        let answer_events = if data == b"[DONE]" {
            vec![AnswerEvent::Ended { usage: self.usage }]
        } else {
            let chunk = match serde_json::from_slice::<Value>(&data) {
                Ok(chunk) => chunk,
                Err(_) => {
                    tracing::warn!(provider = "openai", "unparsable stream chunk");
                    return vec![StreamItem::Failed(GatewayError::UpstreamFailed)];
                }
            };
            if !chunk["error"].is_null() {
                tracing::warn!(
                    provider = "openai",
                    kind = chunk["error"]["type"].as_str().unwrap_or("unknown"),
                    "upstream error event mid-stream"
                );
                return vec![StreamItem::Failed(GatewayError::UpstreamFailed)];
            }
            self.decode(&chunk)
        };
        answer_events
            .into_iter()
            .flat_map(|e| self.events.encode(e))
            .collect()
    }
}

impl Translate for StreamTranslator {
    fn event(&mut self, event: Bytes) -> Vec<StreamItem> {
        self.on_event(&event)
    }
}

/// An OpenAI stream body as Anthropic events, applying the idle timeout. A broken body, an error
/// event, or an end without `[DONE]` (the connection dropped) ends it with `StreamItem::Failed`.
pub fn message_stream<S, E>(
    body: S,
    translator: StreamTranslator,
    idle: Duration,
) -> BoxStream<'static, StreamItem>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    sse::translate(
        UpstreamEvents::from_stream(body, idle, "openai"),
        translator,
    )
}
