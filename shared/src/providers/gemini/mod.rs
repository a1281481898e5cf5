//! Google Gemini (Developer API) upstream: OpenAI Chat Completions requests are translated to
//! `POST /v1beta/models/{model}:generateContent` (`:streamGenerateContent?alt=sse` when streamed), and
//! replies back to OpenAI's format; OpenAI embedding requests go to `:batchEmbedContents`.
//!
//! Translation parses the request's messages (it must restructure them); nothing here logs or keeps their
//! content. Usage comes from Gemini's `usageMetadata`: `promptTokenCount` already includes cached tokens,
//! and `candidatesTokenCount` excludes thinking tokens, which are billed as output and added back.
//!
//! Thought signatures: Gemini 3 returns an opaque `thoughtSignature` on function calls and refuses the
//! next request unless it comes back on the same part. OpenAI clients keep nothing but the tool call id,
//! so the signature travels inside it (`call_…__thought__<signature>`, the convention other gateways
//! use) and is put back on the `functionCall` part when the history returns.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
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

mod embeddings;
mod reply;
mod request;
mod stream;
use embeddings::*;
use reply::*;
pub use request::to_gemini_request;
use stream::*;

/// Separates a tool call id from the thought signature carried inside it.
const THOUGHT_SEPARATOR: &str = "__thought__";

/// The value Google documents for function calls Gemini did not produce (another model's history, or a
/// client that lost the id): it skips signature validation on models that require a signature.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

pub struct Gemini {
    upstream: Upstream,
    base_url: String,
    api_key: String,
}

impl Gemini {
    pub fn connect(upstream: Upstream, base_url: &str, api_key: &str) -> Arc<dyn Provider> {
        Arc::new(Gemini {
            upstream,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
        })
    }

    /// `{base}/v1beta/models/{model}:{action}`, with the upstream name's own `models/` prefix tolerated.
    fn url(&self, model: &Model, action: &str) -> String {
        let name = model
            .upstream_model
            .strip_prefix("models/")
            .unwrap_or(&model.upstream_model);
        format!("{}/v1beta/models/{name}:{action}", self.base_url)
    }

    async fn post(&self, url: &str, body: &Value) -> Result<reqwest::Response, GatewayError> {
        let body = serde_json::to_vec(body).expect("JSON serialises");
        let request = self
            .upstream
            .post(url, body)
            .header("x-goog-api-key", &self.api_key);
        self.upstream.send(request).await
    }
}

#[async_trait]
impl Provider for Gemini {
    async fn chat(&self, model: &Model, request: ChatRequest) -> Result<Reply, GatewayError> {
        let body = request::from_conversation(request.conversation()?, model)?;
        let url = if request.stream {
            self.url(model, "streamGenerateContent?alt=sse")
        } else {
            self.url(model, "generateContent")
        };
        let response = self.post(&url, &body).await?;
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

    async fn embeddings(&self, model: &Model, body: RequestBody) -> Result<Reply, GatewayError> {
        let inputs = embedding_inputs(&body)?;
        let dimensions = body.get::<u64>("dimensions", "a positive integer")?;
        let base64 = match body
            .get::<String>("encoding_format", "\"float\" or \"base64\"")?
            .as_deref()
        {
            None | Some("float") => false,
            Some("base64") => true,
            Some(_) => {
                return Err(bad(
                    "encoding_format",
                    "'encoding_format' must be \"float\" or \"base64\"",
                ));
            }
        };
        let name = model
            .upstream_model
            .strip_prefix("models/")
            .unwrap_or(&model.upstream_model);
        let url = self.url(model, "batchEmbedContents");
        let mut data = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(EMBED_BATCH) {
            let requests: Vec<Value> = batch
                .iter()
                .map(|text| {
                    let mut request = json!({"model": format!("models/{name}"), "content": {"parts": [{"text": text}]}});
                    if let Some(d) = dimensions {
                        request["outputDimensionality"] = json!(d);
                    }
                    request
                })
                .collect();
            let response = self.post(&url, &json!({"requests": requests})).await?;
            let reply: Value = self.upstream.json(response).await?;
            let embeddings = reply["embeddings"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if embeddings.len() != batch.len() {
                tracing::warn!(
                    expected = batch.len(),
                    got = embeddings.len(),
                    "gemini answered a different number of embeddings"
                );
                return Err(GatewayError::UpstreamFailed);
            }
            for embedding in embeddings {
                let values = embedding["values"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let vector = if base64 {
                    json!(base64_floats(values))
                } else {
                    Value::Array(values.to_vec())
                };
                data.push(json!({"object": "embedding", "index": data.len(), "embedding": vector}));
            }
        }
        // Gemini reports no token usage for embeddings. This is an ESTIMATE (about four characters per
        // token), so that every call is metered and priced; it is not the provider's own count.
        let chars: usize = inputs.iter().map(|t| t.chars().count()).sum();
        let estimated = chars.div_ceil(4) as u64;
        let usage = TokenUsage {
            prompt_tokens: estimated,
            estimated: true,
            ..TokenUsage::default()
        };
        let reply = json!({
            "object": "list",
            "data": data,
            "model": model.id,
            "usage": {"prompt_tokens": estimated, "total_tokens": estimated},
        });
        Ok(Reply::Complete {
            body: Bytes::from(serde_json::to_vec(&reply).expect("JSON serialises")),
            usage: Some(usage),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::request::*;
    use super::*;
    use crate::catalog::Catalog;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever Gemini answers, whole or as stream chunks (JSON or not), translates without a panic.
        #[test]
        fn any_reply_or_chunk_translates(value in crate::test_support::arb_json(), raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let model = flash();
            let _ = reply::to_chat_completion(&value, &model);
            let _ = reply::to_answer(&value);
            let mut translator = stream::StreamTranslator::new(&model);
            let _ = translator.on_chunk(&value);
            let event = format!("data: {value}\n\n");
            let _ = stream::translate_event(&mut translator, event.as_bytes());
            let mut bad = b"data: ".to_vec();
            bad.extend_from_slice(&raw);
            bad.extend_from_slice(b"\n\n");
            let _ = stream::translate_event(&mut translator, &bad);
            let _ = translator.on_end();
        }
    }

    fn model(id: &str) -> Model {
        (**Catalog::bundled().get(id).unwrap()).clone()
    }

    fn flash() -> Model {
        model("google/gemini-2.5-flash")
    }

    fn body(value: Value) -> RequestBody {
        RequestBody::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_reply_or_stream_without_usage_is_not_billed_as_free() {
        let response = json!({"candidates": [{"content": {"parts": [{"text": "hi"}]},
            "finishReason": "STOP"}]});
        assert_eq!(to_answer(&response).usage, None);
        let mut t = StreamTranslator::new(&flash());
        let mut items = t.on_chunk(&response);
        items.extend(t.on_end());
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
    fn requests_translate_system_history_tools_images_and_config() {
        let request = body(json!({"model": "google/gemini-2.5-flash", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?x=1"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/photo"}}]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "A"},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Summarize."}],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false}}},
                {"type": "function", "function": {"name": "now"}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "stop": "END", "max_tokens": 100, "max_completion_tokens": 512, "temperature": 1.5, "top_p": 0.9, "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}));
        let out = to_gemini_request(&request, &flash()).unwrap();
        assert_eq!(
            out,
            json!({
                "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "Use metric."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "What's in this?"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}},
                        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}}]},
                    {"role": "model", "parts": [{"text": "Let me look."},
                        {"functionCall": {"name": "lookup", "args": {"q": "x"}}},
                        {"functionCall": {"name": "now", "args": {}}}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "lookup", "response": {"content": "A"}}},
                        {"functionResponse": {"name": "now", "response": {"content": "noon"}}},
                        {"text": "Summarize."}]}],
                "generationConfig": {"maxOutputTokens": 512, "temperature": 1.5, "topP": 0.9, "seed": 7,
                    "stopSequences": ["END"], "responseMimeType": "application/json",
                    "responseJsonSchema": {"type": "object"}},
                "tools": [{"functionDeclarations": [
                    {"name": "lookup", "description": "Look up", "parametersJsonSchema":
                        {"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false}},
                    {"name": "now"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}}
            })
        );
    }

    #[test]
    fn tool_choices_json_mode_and_errors() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
            let out = to_gemini_request(
                &body(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": choice})),
                &flash(),
            )
            .unwrap();
            assert_eq!(out["toolConfig"]["functionCallingConfig"]["mode"], mode);
        }
        let plain = to_gemini_request(
            &body(
                json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto",
                "response_format": {"type": "json_object"}}),
            ),
            &flash(),
        )
        .unwrap();
        assert_eq!(
            plain,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "generationConfig": {"responseMimeType": "application/json"}}),
            "no tools, no toolConfig"
        );
        let err = to_gemini_request(
            &body(
                json!({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "A"}]}),
            ),
            &flash(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("call_x"), "{err}");
        let err = to_gemini_request(
            &body(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]})),
            &flash(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("data URLs"));
        let err = to_gemini_request(
            &body(json!({"messages": [{"role": "system", "content": "only"}]})),
            &flash(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least one"));
    }

    #[test]
    fn thought_signatures_ride_in_tool_call_ids() {
        let history = |id: &str| {
            body(json!({"messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": id, "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "rain"}]}))
        };
        let out = to_gemini_request(&history("call_1__thought__CqMBsig=="), &flash()).unwrap();
        let calls = &out["contents"][1]["parts"];
        assert_eq!(calls[0]["thoughtSignature"], "CqMBsig==");
        assert!(calls[1].get("thoughtSignature").is_none());
        assert_eq!(
            out["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );

        // History Gemini did not produce: Gemini 3+ gets the documented skip value, 2.x nothing.
        let gemini3 = model("google/gemini-3.5-flash-lite");
        let out = to_gemini_request(&history("call_1"), &gemini3).unwrap();
        assert_eq!(
            out["contents"][1]["parts"][0]["thoughtSignature"],
            SKIP_SIGNATURE
        );
        assert!(
            out["contents"][1]["parts"][1]
                .get("thoughtSignature")
                .is_none()
        );
        let out = to_gemini_request(&history("call_1"), &flash()).unwrap();
        assert!(
            out["contents"][1]["parts"][0]
                .get("thoughtSignature")
                .is_none()
        );

        assert_eq!(
            split_call_id("call_1__thought__abc"),
            ("call_1", Some("abc"))
        );
        assert_eq!(split_call_id("call_1"), ("call_1", None));
    }

    #[test]
    fn replies_translate_with_calls_signatures_and_usage() {
        let reply = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking about it", "thought": true},
            {"text": "Tomorrow: "}, {"text": "rain."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "SIG"},
            {"functionCall": {"name": "now"}}]},
            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 80, "thoughtsTokenCount": 300,
                "cachedContentTokenCount": 1024, "toolUsePromptTokenCount": 5, "totalTokenCount": 1585},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp1"});
        let (completion, usage) = to_chat_completion(&reply, &flash());
        assert_eq!(completion["id"], "chatcmpl-resp1");
        assert_eq!(completion["model"], "google/gemini-2.5-flash");
        let choice = &completion["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Tomorrow: rain.");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            calls[1]["function"],
            json!({"name": "now", "arguments": "{}"})
        );
        let first = calls[0]["id"].as_str().unwrap();
        assert!(
            first.starts_with("call_") && first.ends_with("__thought__SIG"),
            "{first}"
        );
        assert_ne!(split_call_id(first).0, calls[1]["id"].as_str().unwrap());
        assert_eq!(
            usage,
            TokenUsage {
                prompt_tokens: 1205,
                completion_tokens: 380,
                cached_tokens: 1024,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                web_search_calls: 0,
                reasoning_tokens: 300,
                estimated: false,
                input_images: 0,
                service_tier: None,
            }
        );
        assert_eq!(completion["usage"]["total_tokens"], 1585);
        assert_eq!(
            completion["usage"]["completion_tokens_details"]["reasoning_tokens"],
            300
        );

        // Thoughts already inside candidates (the total gives it away) are not counted twice.
        let inclusive = UsageMetadata {
            prompt_token_count: Some(10),
            candidates_token_count: Some(50),
            thoughts_token_count: Some(20),
            total_token_count: Some(60),
            ..UsageMetadata::default()
        };
        assert_eq!(inclusive.tokens().completion_tokens, 50);

        let (cut, _) = to_chat_completion(
            &json!({"candidates": [{"content": {"parts": [{"text": "abc"}]}, "finishReason": "MAX_TOKENS"}]}),
            &flash(),
        );
        assert_eq!(cut["choices"][0]["finish_reason"], "length");
        let (blocked, usage) = to_chat_completion(
            &json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}),
            &flash(),
        );
        assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
        assert!(blocked["choices"][0]["message"]["content"].is_null());
        assert_eq!(usage.prompt_tokens, 7);
        assert_eq!(finish_reason(Some("recitation"), false), "content_filter");
        assert_eq!(
            finish_reason(Some("MALFORMED_FUNCTION_CALL"), false),
            "stop"
        );
    }

    fn run(t: &mut StreamTranslator, chunks: &[Value]) -> (Vec<Value>, Option<TokenUsage>, bool) {
        let mut out = Vec::new();
        let mut usage = None;
        let mut done = false;
        let mut items: Vec<StreamItem> = chunks.iter().flat_map(|c| t.on_chunk(c)).collect();
        items.extend(t.on_end());
        for item in items {
            match item {
                StreamItem::Event {
                    bytes,
                    usage: u,
                    usage_only,
                    last,
                } => {
                    assert_eq!(usage_only, u.is_some());
                    if u.is_some() {
                        usage = u;
                    }
                    let text = String::from_utf8(bytes.to_vec()).unwrap();
                    let data = text.trim_start_matches("data: ").trim();
                    if last {
                        assert_eq!(data, "[DONE]");
                        done = true;
                    } else {
                        out.push(serde_json::from_str(data).unwrap());
                    }
                }
                StreamItem::Failed(_) => panic!("failed"),
            }
        }
        (out, usage, done)
    }

    #[test]
    fn streams_translate_text_function_calls_and_running_usage() {
        let mut t = StreamTranslator::new(&flash());
        let chunks = [
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking"}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1, "totalTokenCount": 10}, "responseId": "r9"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}, {"text": " now."}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12}}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "S1"},
                {"functionCall": {"name": "now", "args": {}}}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 20, "thoughtsTokenCount": 15,
                    "cachedContentTokenCount": 4, "totalTokenCount": 44}}),
        ];
        let (chunks, usage, done) = run(&mut t, &chunks);
        assert!(done);
        assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-r9"));
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .map(|c| &c["delta"])
            .collect();
        assert_eq!(deltas[0]["role"], "assistant");
        assert_eq!(deltas[1]["content"], "Checking");
        assert_eq!(deltas[2]["content"], " now.");
        let call = &deltas[3]["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert_eq!(call["type"], "function");
        assert_eq!(
            call["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert!(call["id"].as_str().unwrap().ends_with("__thought__S1"));
        assert_eq!(deltas[4]["tool_calls"][0]["index"], 1);
        assert_eq!(
            chunks[5]["choices"][0]["finish_reason"], "tool_calls",
            "function calls finish with STOP upstream"
        );
        assert_eq!(chunks[6]["choices"], json!([]));
        assert_eq!(
            chunks[6]["usage"]["prompt_tokens_details"]["cached_tokens"],
            4
        );
        assert_eq!(
            usage.unwrap(),
            TokenUsage {
                prompt_tokens: 9,
                completion_tokens: 35,
                cached_tokens: 4,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                web_search_calls: 0,
                reasoning_tokens: 15,
                estimated: false,
                input_images: 0,
                service_tier: None,
            }
        );
    }

    #[test]
    fn stream_errors_and_truncation_fail() {
        let mut t = StreamTranslator::new(&flash());
        let first = t.on_chunk(&json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}]}));
        assert_eq!(first.len(), 2);
        let items = t.on_chunk(
            &json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        );
        assert!(matches!(
            items.as_slice(),
            [StreamItem::Failed(GatewayError::UpstreamOverloaded)]
        ));
        let items =
            t.on_chunk(&json!({"error": {"code": 500, "message": "x", "status": "INTERNAL"}}));
        assert!(matches!(
            items.as_slice(),
            [StreamItem::Failed(GatewayError::UpstreamFailed)]
        ));
        assert!(matches!(
            t.on_end().as_slice(),
            [StreamItem::Failed(GatewayError::UpstreamFailed)]
        ));
    }

    #[test]
    fn embedding_inputs_and_encoding() {
        assert_eq!(
            embedding_inputs(&body(json!({"input": "a"}))).unwrap(),
            vec!["a"]
        );
        assert_eq!(
            embedding_inputs(&body(json!({"input": ["a", "b"]}))).unwrap(),
            vec!["a", "b"]
        );
        assert!(embedding_inputs(&body(json!({"input": [1, 2]}))).is_err());
        assert!(embedding_inputs(&body(json!({"input": []}))).is_err());
        let encoded = base64_floats(&[json!(1.0), json!(-2.0)]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()
        );
    }
}
