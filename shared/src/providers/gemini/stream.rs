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

/// Translates one Gemini stream into OpenAI chunks. Every Gemini event is a whole response object whose
/// parts are new (text deltas, whole function calls) and whose usage is the running total.
pub(super) struct StreamTranslator {
    pub(super) id: Option<String>,
    pub(super) model: String,
    pub(super) created: u64,
    pub(super) tag: String,
    pub(super) tool_calls: usize,
    pub(super) usage: UsageMetadata,
    pub(super) finished: bool,
}

impl StreamTranslator {
    pub(super) fn new(model: &Model) -> StreamTranslator {
        StreamTranslator {
            id: None,
            model: model.id.clone(),
            created: now_unix(),
            tag: call_tag(),
            tool_calls: 0,
            usage: UsageMetadata::default(),
            finished: false,
        }
    }

    pub(super) fn event(&self, body: Value) -> StreamItem {
        StreamItem::Event {
            bytes: sse_event(&body),
            usage: None,
            usage_only: false,
            last: false,
        }
    }

    pub(super) fn chunk(&self, delta: Value, finish: Option<&str>) -> StreamItem {
        self.event(json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }))
    }

    /// The OpenAI items for one Gemini event.
    pub(super) fn on_chunk(&mut self, data: &Value) -> Vec<StreamItem> {
        if let Some(error) = data.get("error") {
            return vec![StreamItem::Failed(stream_error(error))];
        }
        let mut items = Vec::new();
        if self.id.is_none() {
            self.id = Some(completion_id(data));
            items.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(usage) = usage_of(data) {
            self.usage = usage;
        }
        if self.finished {
            return items;
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
                let args = if call["args"].is_object() {
                    call["args"].clone()
                } else {
                    json!({})
                };
                let id = call_id(call, signature_of(part), &self.tag, index);
                items.push(self.chunk(
                    json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                        "function": {"name": call["name"], "arguments": args.to_string()}}]}),
                    None,
                ));
            } else if let Some(text) = part_text(part) {
                items.push(self.chunk(json!({"content": text}), None));
            }
        }
        let finish = if candidate.is_null() && !data["promptFeedback"]["blockReason"].is_null() {
            Some("content_filter")
        } else {
            candidate["finishReason"]
                .as_str()
                .map(|r| finish_reason(Some(r), self.tool_calls > 0))
        };
        if let Some(finish) = finish {
            self.finished = true;
            items.push(self.chunk(json!({}), Some(finish)));
        }
        items
    }

    /// The upstream's stream ended: the usage chunk and `[DONE]` if the reply was finished, else a failure.
    pub(super) fn on_end(&mut self) -> Vec<StreamItem> {
        if !self.finished {
            tracing::warn!("gemini stream ended without a finishReason");
            return vec![StreamItem::Failed(GatewayError::UpstreamFailed)];
        }
        stream_end(
            self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            self.created,
            &self.model,
            self.usage.tokens(),
        )
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

pub(super) fn event_stream(
    mut events: UpstreamEvents,
    model: &Model,
) -> futures_util::stream::BoxStream<'static, StreamItem> {
    let mut translator = StreamTranslator::new(model);
    async_stream::stream! {
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                // A reply that already finished lacks nothing but its usage: end it rather than fail.
                Err(GatewayError::UpstreamTimeout) if translator.finished => break,
                Err(err) => { yield StreamItem::Failed(err); return; }
            };
            for item in translate_event(&mut translator, &event) {
                let failed = matches!(item, StreamItem::Failed(_));
                yield item;
                if failed {
                    return;
                }
            }
        }
        for item in translator.on_end() {
            let done = matches!(item, StreamItem::Failed(_));
            yield item;
            if done {
                return;
            }
        }
    }
    .boxed()
}
