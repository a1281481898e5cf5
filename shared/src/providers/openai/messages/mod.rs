//! `/v1/messages` served by an OpenAI-format upstream: an Anthropic Messages request is translated into a
//! Chat Completions request, and the reply (whole or streamed) back into an Anthropic `message` or
//! Anthropic's named SSE events, so Anthropic-speaking clients (the `anthropic` SDKs, Claude Code) can
//! use `openai/` models.
//!
//! Translation parses the request's messages (it must restructure them); nothing here logs or keeps their
//! content. Usage comes from OpenAI's own accounting: its `prompt_tokens` include cached tokens while
//! Anthropic's `input_tokens` exclude them, so `input_tokens = prompt_tokens - cached_tokens` and the
//! cached share is reported as `cache_read_input_tokens`.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::Model;
use crate::conversation::Answer;
use crate::dialects::anthropic_messages::{self, EventEncoder};
use crate::dialects::openai_chat::{self, ChunkDecoder};
use crate::error::GatewayError;
use crate::providers::sse::{self, Translate, UpstreamEvents};
use crate::providers::{RequestBody, StreamItem, bad};
use crate::usage::TokenUsage;

mod reply;
mod request;
mod stream;
pub use reply::to_message;
pub use request::{ChatTranslation, ToolNames, to_chat_request};
pub use stream::{StreamTranslator, message_stream};

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::catalog::Catalog;

    fn model() -> Model {
        (**Catalog::bundled().get("openai/gpt-4o-mini").unwrap()).clone()
    }

    fn body(value: Value) -> RequestBody {
        RequestBody::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn structured_output_becomes_response_format_and_max_tokens_is_clamped() {
        let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]});
        for field in [
            json!({"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
            json!({"output_format": {"type": "json_schema", "schema": schema}}),
        ] {
            let mut request = json!({"model": "openai/gpt-4o-mini", "max_tokens": 32000,
                "messages": [{"role": "user", "content": "ok?"}]});
            request
                .as_object_mut()
                .unwrap()
                .extend(field.as_object().unwrap().clone());
            let out = to_chat_request(&body(request), &model(), false)
                .unwrap()
                .body;
            assert_eq!(
                out["response_format"],
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}})
            );
            assert_eq!(out["max_tokens"], model().output_limit());
        }
        let err = to_chat_request(
            &body(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                "output_config": {"format": {"type": "yaml"}}})),
            &model(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("yaml"));
    }

    #[test]
    fn requests_translate_system_history_tools_and_parameters() {
        let request = body(json!({"model": "openai/gpt-4o-mini", "max_tokens": 256,
            "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Use tools."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}, {"type": "text", "text": "sunny"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": true},
                    {"type": "text", "text": "And tomorrow?"}]}],
            "tools": [{"name": "get_weather", "description": "Get weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "temperature": 0.3, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END", ""],
            "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 2048}}));
        let out = to_chat_request(&request, &model(), false).unwrap().body;
        assert_eq!(
            out,
            json!({
                "model": "gpt-4o-mini", "max_tokens": 256, "temperature": 0.3, "top_p": 0.9, "stop": ["END"],
                "messages": [
                    {"role": "system", "content": "You are terse.\nUse tools."},
                    {"role": "user", "content": [{"type": "text", "text": "What's in this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "18C\nsunny"},
                    {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
                    {"role": "user", "content": "And tomorrow?"}],
                "tools": [
                    {"type": "function", "function": {"name": "get_weather", "description": "Get weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                    {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": false,
            })
        );
    }

    #[test]
    fn streams_ask_for_usage_and_tool_choices_map() {
        let ask = |choice: Value| {
            body(
                json!({"max_tokens": 10, "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": choice}),
            )
        };
        let out = to_chat_request(&ask(json!({"type": "auto"})), &model(), true)
            .unwrap()
            .body;
        assert_eq!(out["stream"], true);
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
        assert_eq!(out["tool_choice"], "auto");
        assert_eq!(
            out["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        );
        for (choice, expected) in [
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
        ] {
            let out = to_chat_request(&ask(choice), &model(), false).unwrap().body;
            assert_eq!(out["tool_choice"], expected);
            assert!(out.get("stream").is_none() && out.get("stream_options").is_none());
        }
        // Without tools OpenAI refuses tool_choice: it is left out.
        let out = to_chat_request(
            &body(json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "any"}})),
            &model(),
            false,
        )
        .unwrap()
        .body;
        assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
    }

    #[test]
    fn long_tool_names_are_shortened_and_restored() {
        let long = format!("mcp__server__{}", "x".repeat(70));
        let request = body(json!({"max_tokens": 5,
            "messages": [{"role": "user", "content": "go"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": long, "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}],
            "tools": [{"name": long, "input_schema": {"type": "object"}}]}));
        let translated = to_chat_request(&request, &model(), false).unwrap();
        let short = translated.body["tools"][0]["function"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(short.len(), 64);
        assert_eq!(
            translated.body["messages"][1]["tool_calls"][0]["function"]["name"],
            short
        );
        let completion = json!({"id": "c", "choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": short, "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]});
        let (message, _) = to_message(&completion, &model(), &translated.tool_names).unwrap();
        assert_eq!(message["content"][0]["name"], long);
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (request, needle) in [
            (
                json!({"max_tokens": 5, "messages": [{"role": "wizard", "content": "x"}]}),
                "wizard",
            ),
            (json!({"max_tokens": 5, "messages": []}), "at least one"),
            (
                json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
                "image sources",
            ),
            (
                json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "web_search_20250305",
            ),
        ] {
            let err = to_chat_request(&body(request), &model(), false).unwrap_err();
            assert_eq!(err.status(), 400);
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn replies_translate_with_tool_use_and_usage() {
        let completion = json!({"id": "chatcmpl-abc", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Let me check.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "not json"}}]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165,
                "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 5}}});
        let (message, usage) = to_message(&completion, &model(), &ToolNames::default()).unwrap();
        assert_eq!(
            message,
            json!({"id": "msg_chatcmpl-abc", "type": "message", "role": "assistant", "model": "openai/gpt-4o-mini",
                "content": [{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0, "output_tokens": 45}})
        );
        assert_eq!(
            usage.unwrap(),
            TokenUsage {
                prompt_tokens: 120,
                completion_tokens: 45,
                cached_tokens: 100,
                cache_write_tokens: 0,
                cache_write_1h_tokens: 0,
                web_search_calls: 0,
                reasoning_tokens: 5,
                estimated: false,
                input_images: 0,
                service_tier: None,
            }
        );
        for (finish, reason) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("content_filter", "refusal"),
        ] {
            let completion = json!({"id": "x", "choices": [{"message": {"content": ""}, "finish_reason": finish}]});
            let (message, usage) =
                to_message(&completion, &model(), &ToolNames::default()).unwrap();
            assert_eq!(message["stop_reason"], reason);
            assert_eq!(message["content"], json!([]));
            assert!(usage.is_none());
        }
        assert!(to_message(&json!({"choices": []}), &model(), &ToolNames::default()).is_err());
    }

    fn openai_events() -> Vec<Value> {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null})
        };
        vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Checking"}), Value::Null),
            chunk(json!({"content": " now."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Par"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62, "prompt_tokens_details": {"cached_tokens": 8}}}),
        ]
    }

    fn sse_bytes(events: &[Value], done: bool) -> Vec<u8> {
        let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        if done {
            text.push_str("data: [DONE]\n\n");
        }
        text.into_bytes()
    }

    /// (event name, data) per item; panics on a failure.
    fn decode(items: &[StreamItem]) -> Vec<(String, Value)> {
        items
            .iter()
            .map(|item| match item {
                StreamItem::Event { bytes, .. } => {
                    let text = std::str::from_utf8(bytes).unwrap();
                    let (head, data) = text.split_once('\n').unwrap();
                    assert!(text.ends_with("\n\n"), "{text:?}");
                    let name = head.strip_prefix("event: ").unwrap().to_owned();
                    let data: Value =
                        serde_json::from_str(data.strip_prefix("data: ").unwrap().trim()).unwrap();
                    assert_eq!(data["type"], name.as_str());
                    (name, data)
                }
                StreamItem::Failed(e) => panic!("failed: {e}"),
            })
            .collect()
    }

    #[test]
    fn streams_translate_text_then_a_tool_call_with_final_usage() {
        let mut t = StreamTranslator::new(&model(), ToolNames::default(), 42);
        let mut framer = sse::SseFramer::default();
        let mut items = Vec::new();
        for event in framer.push(Bytes::from(sse_bytes(&openai_events(), true))) {
            items.extend(t.on_event(&event));
        }
        let events = decode(&items);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["id"], "msg_chatcmpl-9");
        assert_eq!(events[0].1["message"]["model"], "openai/gpt-4o-mini");
        assert_eq!(
            events[0].1["message"]["usage"]["input_tokens"], 42,
            "the prompt's estimate until the upstream counts"
        );
        assert_eq!(
            events[1].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(
            events[3].1["delta"],
            json!({"type": "text_delta", "text": " now."})
        );
        assert_eq!(events[4].1["index"], 0);
        assert_eq!(
            events[5].1,
            json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}})
        );
        let arguments: String = events[6..8]
            .iter()
            .map(|(_, d)| {
                assert_eq!(d["index"], 1);
                assert_eq!(d["delta"]["type"], "input_json_delta");
                d["delta"]["partial_json"].as_str().unwrap()
            })
            .collect();
        assert_eq!(arguments, "{\"city\": \"Paris\"}");
        assert_eq!(events[8].1["index"], 1);
        assert_eq!(
            events[9].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 42, "output_tokens": 12, "cache_read_input_tokens": 8, "cache_creation_input_tokens": 0}})
        );
        let metered: Vec<(usize, TokenUsage)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                StreamItem::Event { usage: Some(u), .. } => Some((i, *u)),
                _ => None,
            })
            .collect();
        assert_eq!(
            metered,
            [(
                9,
                TokenUsage {
                    prompt_tokens: 50,
                    completion_tokens: 12,
                    cached_tokens: 8,
                    cache_write_tokens: 0,
                    cache_write_1h_tokens: 0,
                    web_search_calls: 0,
                    reasoning_tokens: 0,
                    estimated: false,
                    input_images: 0,
                    service_tier: None,
                }
            )]
        );
        let lasts: Vec<bool> = items
            .iter()
            .map(|i| matches!(i, StreamItem::Event { last: true, .. }))
            .collect();
        assert_eq!(lasts.iter().filter(|l| **l).count(), 1);
        assert!(lasts[10]);
    }

    #[test]
    fn an_empty_stream_still_has_a_block() {
        let mut t = StreamTranslator::new(&model(), ToolNames::default(), 42);
        let mut items = t.on_event(b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        items.extend(t.on_event(b"data: [DONE]\n\n"));
        let events = decode(&items);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[3].1["delta"]["stop_reason"], "end_turn");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Whatever an OpenAI-compatible server answers, whole or as chunks (JSON or not, ended or
        /// not), becomes an Anthropic message, Anthropic events or a clean failure; never a panic.
        #[test]
        fn any_completion_or_chunks_translate(
            value in crate::test_support::arb_json(),
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            done in proptest::prelude::any::<bool>(),
        ) {
            let _ = to_message(&value, &model(), &ToolNames::default());
            let mut bytes = format!("data: {value}\n\ndata: ").into_bytes();
            bytes.extend_from_slice(&raw);
            bytes.extend_from_slice(if done { b"\n\ndata: [DONE]\n\n" } else { b"\n\n" });
            let items = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
                .block_on(run(vec![Ok(Bytes::from(bytes))]));
            proptest::prop_assert!(!items.is_empty());
        }
    }

    async fn run(parts: Vec<Result<Bytes, String>>) -> Vec<StreamItem> {
        let body = futures_util::stream::iter(parts);
        let translator = StreamTranslator::new(&model(), ToolNames::default(), 42);
        message_stream(
            body,
            translator,
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
        .collect()
        .await
    }

    #[tokio::test]
    async fn the_stream_survives_any_chunking_and_fails_on_errors_or_a_missing_done() {
        let whole = sse_bytes(&openai_events(), true);
        let expected = decode(&run(vec![Ok(Bytes::from(whole.clone()))]).await);
        for size in [1, 7, 64] {
            let parts = whole
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            assert_eq!(decode(&run(parts).await), expected, "chunk size {size}");
        }

        let cut = sse_bytes(&openai_events(), false);
        let items = run(vec![Ok(Bytes::from(cut.clone()))]).await;
        assert!(matches!(
            items.last(),
            Some(StreamItem::Failed(GatewayError::UpstreamFailed))
        ));
        assert!(
            !items
                .iter()
                .any(|i| matches!(i, StreamItem::Event { last: true, .. }))
        );

        let items = run(vec![
            Ok(Bytes::from(cut)),
            Err("connection reset".to_owned()),
        ])
        .await;
        assert!(matches!(
            items.last(),
            Some(StreamItem::Failed(GatewayError::UpstreamFailed))
        ));

        let items = run(vec![Ok(Bytes::from_static(
            b"data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n",
        ))])
        .await;
        assert_eq!(items.len(), 1);
        assert!(matches!(
            items[0],
            StreamItem::Failed(GatewayError::UpstreamFailed)
        ));
    }

    #[tokio::test]
    async fn an_idle_upstream_times_out() {
        let body = futures_util::stream::pending::<Result<Bytes, String>>();
        let translator = StreamTranslator::new(&model(), ToolNames::default(), 42);
        let items: Vec<StreamItem> = message_stream(
            body,
            translator,
            Duration::from_millis(20),
            Duration::from_secs(60),
        )
        .collect()
        .await;
        assert!(matches!(
            items.as_slice(),
            [StreamItem::Failed(GatewayError::UpstreamTimeout)]
        ));
    }
}
