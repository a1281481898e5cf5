//! Anthropic Messages upstream: OpenAI Chat Completions requests are translated to `POST /v1/messages`,
//! and replies (whole or streamed) back to OpenAI's format, so clients and the proxy see one wire format.
//!
//! Translation parses the request's messages (it must restructure them); nothing here logs or keeps
//! their content. Usage comes from Anthropic's own accounting: `input_tokens` excludes cache reads and
//! writes, so the prompt total is the sum of the three, with cache reads and writes priced separately.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::sse::{self, Translate};
use super::{
    ChatRequest, Provider, Reply, RequestBody, StreamItem, Upstream, bad, chat_reply, data_url,
    push_turn,
};
use crate::catalog::Model;
use crate::conversation::{Answer, AnswerEvent, AnswerToolCall, FinishReason};
use crate::dialects::openai_chat::ChunkEncoder;
use crate::error::GatewayError;
use crate::usage::TokenUsage;

mod reply;
mod request;
mod stream;
use reply::*;
pub use request::to_messages_request;
use stream::*;

pub const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    upstream: Upstream,
    messages_url: String,
    count_tokens_url: String,
    api_key: String,
}

/// The forced tool that carries a JSON-schema answer.
const JSON_TOOL: &str = "json_response";

impl Anthropic {
    pub fn connect(upstream: Upstream, base_url: &str, api_key: &str) -> Arc<dyn Provider> {
        Arc::new(Anthropic {
            upstream,
            messages_url: format!("{base_url}/v1/messages"),
            count_tokens_url: format!("{base_url}/v1/messages/count_tokens"),
            api_key: api_key.to_owned(),
        })
    }

    async fn post(&self, body: Vec<u8>) -> Result<reqwest::Response, GatewayError> {
        self.post_to(&self.messages_url, body, &[]).await
    }

    /// A request to `url`, with the client's Anthropic headers (its API version and betas) when it came
    /// in speaking Anthropic's API.
    async fn post_to(
        &self,
        url: &str,
        body: Vec<u8>,
        client: &[(&'static str, String)],
    ) -> Result<reqwest::Response, GatewayError> {
        let header = |name: &str| {
            client
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        let version = header("anthropic-version").unwrap_or(API_VERSION);
        let mut request = self
            .upstream
            .post(url, body)
            .header("x-api-key", &self.api_key)
            .header("anthropic-version", version);
        if let Some(betas) = header("anthropic-beta") {
            request = request.header("anthropic-beta", betas);
        }
        self.upstream.send(request).await
    }
}

#[async_trait]
impl Provider for Anthropic {
    async fn chat(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        let body = request::from_conversation(request.conversation()?, model, request.stream)?;
        let response = self
            .post(serde_json::to_vec(&body).expect("JSON serialises"))
            .await?;
        let (upstream, stream) = (&self.upstream, request.stream);
        chat_reply(
            upstream,
            response,
            stream,
            model,
            StreamTranslator::new,
            to_answer,
        )
        .await
    }

    async fn embeddings(&self, model: &Model, _body: RequestBody) -> Result<Reply, GatewayError> {
        Err(GatewayError::WrongModelKind(format!(
            "{} has no embeddings API",
            model.id
        )))
    }

    /// Native Messages: the request goes upstream unchanged but for the model name, and the reply comes
    /// back byte for byte; only the usage is read out of it.
    async fn messages(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        let mut body = request.body;
        body.set("model", &model.upstream_model);
        let response = self
            .post_to(
                &self.messages_url,
                body.to_bytes().to_vec(),
                &request.client_headers,
            )
            .await?;
        if request.stream {
            return Ok(Reply::Stream(sse::translate(
                self.upstream.events(response),
                Passthrough::default(),
            )));
        }
        let bytes = self.upstream.body(response).await?;
        let usage = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|m| serde_json::from_value::<AnthropicUsage>(m["usage"].clone()).ok())
            .map(|u| u.tokens());
        Ok(Reply::Complete { body: bytes, usage })
    }

    /// Anthropic's own count, passed through; counting is not billed.
    async fn count_tokens(
        &self,
        model: &Model,
        request: ChatRequest,
    ) -> Result<Reply, GatewayError> {
        let mut body = request.body;
        body.set("model", &model.upstream_model);
        let response = self
            .post_to(
                &self.count_tokens_url,
                body.to_bytes().to_vec(),
                &request.client_headers,
            )
            .await?;
        Ok(Reply::Complete {
            body: self.upstream.body(response).await?,
            usage: Some(crate::usage::TokenUsage::default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever Anthropic answers, whole or as events, translates to chat without a panic.
        #[test]
        fn any_reply_or_event_translates(value in crate::test_support::arb_json(), name in "[a-z_]{0,20}") {
            let model = model();
            let _ = reply::to_chat_completion(&value, &model);
            let _ = reply::to_answer(&value);
            let mut translator = stream::StreamTranslator::new(&model);
            for event in ["message_start", "content_block_start", "content_block_delta", "message_delta", name.as_str()] {
                let _ = translator.on_event(event, &value);
            }
        }
    }

    fn model() -> Model {
        (**Catalog::bundled()
            .get("anthropic/claude-sonnet-5-5")
            .unwrap())
        .clone()
    }

    fn body(value: Value) -> RequestBody {
        RequestBody::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_reply_or_stream_without_usage_is_not_billed_as_free() {
        let message = json!({"id": "msg_1", "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn"});
        assert_eq!(to_answer(&message).usage, None);
        let mut t = StreamTranslator::new(&model());
        let mut items = t.on_event("message_start", &json!({"message": {"id": "msg_1"}}));
        items.extend(t.on_event(
            "content_block_delta",
            &json!({"index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
        ));
        items.extend(t.on_event("message_stop", &json!({})));
        // No usage anywhere: the proxy estimates from what was read.
        assert!(
            items
                .iter()
                .all(|i| matches!(i, StreamItem::Event { usage: None, .. })),
            "a stream without usage reported some"
        );
        assert!(matches!(
            items.last(),
            Some(StreamItem::Event { last: true, .. })
        ));
    }

    #[test]
    fn requests_translate_system_history_tools_images_and_limits() {
        let request = body(json!({"model": "anthropic/claude-sonnet-5-5", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"y\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "A"},
            {"role": "tool", "tool_call_id": "call_2", "content": "B"},
            {"role": "user", "content": "Summarize."}],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
            "tool_choice": "required", "parallel_tool_calls": false, "stop": "END", "max_completion_tokens": 512,
            "temperature": 1.7}));
        let out = to_messages_request(&request, &model(), false).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "claude-sonnet-5-5", "max_tokens": 512, "stop_sequences": ["END"], "temperature": 1.0,
                "system": [{"type": "text", "text": "Be terse."}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}},
                        {"type": "tool_use", "id": "call_2", "name": "lookup", "input": {"q": "y"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "A"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "B"},
                        {"type": "text", "text": "Summarize."}]}],
                "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
            })
        );
    }

    #[test]
    fn defaults_and_json_modes() {
        let plain = to_messages_request(
            &body(json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 0.5})),
            &model(),
            true,
        )
        .unwrap();
        assert_eq!(plain["max_tokens"], 8192);
        assert_eq!(plain["stream"], true);
        assert_eq!(plain["top_p"], 0.5);
        let schema = to_messages_request(&body(json!({"messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "number"}}}}}})), &model(), false).unwrap();
        assert_eq!(
            schema["tool_choice"],
            json!({"type": "tool", "name": JSON_TOOL})
        );
        let object = to_messages_request(&body(json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})), &model(), false).unwrap();
        assert!(
            object["system"][0]["text"]
                .as_str()
                .unwrap()
                .contains("JSON")
        );
        let err = to_messages_request(
            &body(json!({"messages": [{"role": "wizard", "content": "hi"}]})),
            &model(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("wizard"));
        let err = to_messages_request(&body(json!({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]})), &model(), false).unwrap_err();
        assert!(err.to_string().contains("JSON object"));
    }

    #[test]
    fn replies_and_usage_translate_with_cache_tokens_counted_once() {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [
            {"type": "text", "text": "Tomorrow: rain."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 35, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 2048, "output_tokens": 120, "output_tokens_details": {"thinking_tokens": 60}}});
        let (completion, usage) = to_chat_completion(&message, &model());
        assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            completion["choices"][0]["message"]["content"],
            "Tomorrow: rain."
        );
        assert_eq!(
            completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            usage,
            TokenUsage {
                prompt_tokens: 2093,
                completion_tokens: 120,
                cached_tokens: 2048,
                cache_write_tokens: 10,
                cache_write_1h_tokens: 0,
                web_search_calls: 0,
                reasoning_tokens: 60,
                estimated: false,
                input_images: 0,
                service_tier: None,
            }
        );
        assert_eq!(
            completion["usage"]["prompt_tokens_details"]["cached_tokens"],
            2048
        );
    }

    #[test]
    fn streams_translate_tool_calls_with_openai_indices() {
        let mut t = StreamTranslator::new(&model());
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_9", "usage": {"input_tokens": 677, "output_tokens": 1, "cache_read_input_tokens": 100}}}),
            ),
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
            ),
            ("content_block_stop", json!({"index": 0})),
            (
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Par"}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "is\"}"}}),
            ),
            ("content_block_stop", json!({"index": 1})),
            (
                "content_block_start",
                json!({"index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
            ),
            ("content_block_stop", json!({"index": 2})),
            (
                "message_delta",
                json!({"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 89}}),
            ),
            ("message_stop", json!({})),
        ];
        let mut chunks = Vec::new();
        let mut usage = None;
        for (name, data) in events {
            for item in t.on_event(name, &data) {
                match item {
                    StreamItem::Event {
                        bytes, usage: u, ..
                    } => {
                        if u.is_some() {
                            usage = u;
                        }
                        let text = String::from_utf8(bytes.to_vec()).unwrap();
                        chunks.push(text.trim_start_matches("data: ").trim().to_owned());
                    }
                    StreamItem::Failed(_) => panic!("failed"),
                }
            }
        }
        assert_eq!(chunks.last().unwrap(), "[DONE]");
        let parsed: Vec<Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| serde_json::from_str(c).unwrap())
            .collect();
        let deltas: Vec<&Value> = parsed
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .map(|c| &c["delta"])
            .collect();
        assert_eq!(deltas[0]["role"], "assistant");
        assert_eq!(deltas[1]["content"], "Checking");
        assert_eq!(
            deltas[2]["tool_calls"][0],
            json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
        );
        let args: String = deltas
            .iter()
            .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
            .take(3)
            .collect();
        assert_eq!(args, "{\"city\": \"Paris\"}");
        assert_eq!(
            deltas[5]["tool_calls"][0]["index"], 1,
            "the second tool call is OpenAI index 1"
        );
        assert_eq!(
            deltas[6]["tool_calls"][0]["function"]["arguments"], "{}",
            "a call without arguments is closed with {{}}"
        );
        assert_eq!(
            parsed
                .iter()
                .find_map(|c| c["choices"][0]["finish_reason"].as_str()),
            Some("tool_calls")
        );
        assert_eq!(
            usage.unwrap(),
            TokenUsage {
                prompt_tokens: 777,
                completion_tokens: 89,
                cached_tokens: 100,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                web_search_calls: 0,
                reasoning_tokens: 0,
                estimated: false,
                input_images: 0,
                service_tier: None,
            }
        );
    }
}
