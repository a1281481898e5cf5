//! Gemini's SSE stream (each event a whole partial response) as OpenAI chunks.

use super::*;

/// A Gemini error object (HTTP body or mid-stream event): quota and capacity errors are retriable.
pub(super) fn stream_error(error: &Value) -> GatewayError {
    let code = error["code"].as_u64();
    let status = error["status"].as_str().unwrap_or("");
    tracing::warn!(
        provider = "google",
        code,
        status,
        "upstream error event mid-stream"
    );
    if matches!(code, Some(429 | 503)) || matches!(status, "RESOURCE_EXHAUSTED" | "UNAVAILABLE") {
        GatewayError::UpstreamOverloaded
    } else {
        GatewayError::UpstreamFailed
    }
}

/// Decodes one Gemini stream into answer events. Every Gemini event is a whole response object whose
/// parts are new (text deltas, whole function calls) and whose usage is the running total.
pub(super) struct StreamTranslator {
    pub(super) started: bool,
    pub(super) tag: String,
    pub(super) tool_calls: usize,
    /// The running total; `None` until an event carries one (a stream without any is estimated).
    pub(super) usage: Option<UsageMetadata>,
    pub(super) finished: bool,
    pub(super) chunks: ChunkEncoder,
}

impl StreamTranslator {
    pub(super) fn new(model: &Model) -> StreamTranslator {
        StreamTranslator {
            started: false,
            tag: call_tag(),
            tool_calls: 0,
            usage: None,
            finished: false,
            chunks: ChunkEncoder::new(&model.id, "gemini"),
        }
    }

    fn encode(&mut self, events: Vec<AnswerEvent>) -> Vec<StreamItem> {
        events
            .into_iter()
            .flat_map(|e| self.chunks.encode(e))
            .collect()
    }

    /// The OpenAI items for one Gemini event.
    pub(super) fn on_chunk(&mut self, data: &Value) -> Vec<StreamItem> {
        if let Some(error) = data.get("error") {
            return vec![StreamItem::Failed(stream_error(error))];
        }
        let events = self.decode(data);
        self.encode(events)
    }

    /// The answer events one Gemini event stands for.
    fn decode(&mut self, data: &Value) -> Vec<AnswerEvent> {
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            events.push(AnswerEvent::Started {
                id: completion_id(data),
            });
        }
        if let Some(usage) = usage_of(data) {
            self.usage = Some(usage);
        }
        if self.finished {
            return events;
        }
        let candidate = &data["candidates"][0];
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(call) = function_call_of(part) {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let call = tool_call(call, part, &self.tag, index);
                events.push(AnswerEvent::ToolCall {
                    index,
                    id: call.id,
                    name: call.name,
                    arguments: call.arguments,
                });
            } else if let Some(text) = part_text(part) {
                events.push(AnswerEvent::Text(text.to_owned()));
            }
        }
        let finish = if candidate.is_null() && !data["promptFeedback"]["blockReason"].is_null() {
            Some(FinishReason::ContentFilter)
        } else {
            candidate["finishReason"]
                .as_str()
                .map(|r| finish_reason(Some(r), self.tool_calls > 0))
        };
        if let Some(finish) = finish {
            self.finished = true;
            events.push(AnswerEvent::Finished(finish));
        }
        events
    }

    /// The upstream's stream ended: the usage chunk and `[DONE]` if the reply was finished, else a failure.
    pub(super) fn on_end(&mut self) -> Vec<StreamItem> {
        if !self.finished {
            tracing::warn!("gemini stream ended without a finishReason");
            return vec![StreamItem::Failed(GatewayError::UpstreamFailed)];
        }
        let usage = self.usage.map(|u| u.tokens());
        self.encode(vec![AnswerEvent::Ended { usage }])
    }
}

/// The items for one SSE event (its `data:` parsed as JSON; anything else is skipped).
pub(super) fn translate_event(translator: &mut StreamTranslator, event: &[u8]) -> Vec<StreamItem> {
    let Some(data) = sse::data(event) else {
        return vec![];
    };
    match serde_json::from_slice::<Value>(&data) {
        Ok(data) => translator.on_chunk(&data),
        Err(_) => vec![],
    }
}

impl Translate for StreamTranslator {
    fn event(&mut self, event: Bytes) -> Vec<StreamItem> {
        translate_event(self, &event)
    }

    fn end(&mut self) -> Vec<StreamItem> {
        self.on_end()
    }

    /// A reply that already finished lacks nothing but its usage: a silence ends it rather than fails it.
    fn ends_cleanly_on(&self, err: &GatewayError) -> bool {
        self.finished && matches!(err, GatewayError::UpstreamTimeout)
    }
}
