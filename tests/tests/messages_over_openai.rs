//! `openai/` models through the Anthropic Messages API (`/v1/messages`): the request is translated to a
//! Chat Completions request, the reply (whole or streamed) back to Anthropic's message and named events,
//! and usage comes from OpenAI's own counts, against the mock OpenAI upstream.

use qnp_tests::{MockOpenAi, TestGateway, UPSTREAM_KEY, test_env};
use serde_json::{Value, json};

struct Setup {
    _dir: tempfile::TempDir,
    upstream: MockOpenAi,
    gateway: TestGateway,
    key: String,
}

async fn setup(email: &str) -> Setup {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let env = test_env(dir.path(), &upstream);
    let gateway = TestGateway::start(&env).await;
    let key = gateway.create_key(email, "free").await;
    Setup {
        _dir: dir,
        upstream,
        gateway,
        key,
    }
}

impl Setup {
    async fn messages(&self, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/v1/messages", self.gateway.url))
            .header("x-api-key", &self.key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

/// Named SSE events as (name, data), checking the framing and that each `type` matches its name.
fn events(text: &str) -> Vec<(String, Value)> {
    assert!(text.ends_with("\n\n"), "{text}");
    text.split_terminator("\n\n")
        .map(|event| {
            let (head, data) = event.split_once('\n').unwrap_or_else(|| panic!("{event}"));
            let name = head.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str(), "{event}");
            (name, data)
        })
        .collect()
}

fn ask(stream: bool) -> Value {
    json!({"model": "openai/gpt-4o-mini", "max_tokens": 100, "system": "Be brief.", "stream": stream,
        "messages": [{"role": "user", "content": "hello there"}]})
}

/// Takes the gateway's `cost` and `price_version` out of a usage object (for comparing the rest with the
/// provider's figures), returning the cost.
fn without_cost(usage: &mut Value) -> f64 {
    let usage = usage.as_object_mut().expect("a usage object");
    assert!(usage.remove("price_version").is_some_and(|v| v.is_string()));
    usage
        .remove("cost")
        .and_then(|c| c.as_f64())
        .expect("a cost")
}

// The mock counts prompt tokens as words in all messages + 7 ("Be brief." + "hello there" → 11, of
// which it reports 2 cached), completion tokens as words in "echo: hello there" (3), 1 of them reasoning.

#[tokio::test]
async fn a_message_is_translated_both_ways_and_metered() {
    let s = setup("bridge@example.com").await;
    let response = s.messages(&ask(false)).await;
    assert_eq!(response.status(), 200);
    let mut message: Value = response.json().await.unwrap();
    let cost = without_cost(&mut message["usage"]);
    assert!(cost > 0.0, "the answer says what it cost");
    assert_eq!(
        message,
        json!({"id": "msg_chatcmpl-mock123", "type": "message", "role": "assistant", "model": "openai/gpt-4o-mini",
            "content": [{"type": "text", "text": "echo: hello there"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 9, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0, "output_tokens": 3}})
    );

    let sent = &s.upstream.received()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(
        sent.body,
        json!({"model": "gpt-4o-mini", "max_tokens": 100, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]})
    );

    let row = &s.gateway.usage_rows("bridge@example.com", 1).await[0];
    assert_eq!(row.endpoint, "/v1/messages");
    assert_eq!(
        (row.provider.as_str(), row.model.as_str()),
        ("openai", "openai/gpt-4o-mini")
    );
    assert_eq!(
        (
            row.usage.prompt_tokens,
            row.usage.cached_tokens,
            row.usage.completion_tokens,
            row.usage.reasoning_tokens,
            row.usage.estimated
        ),
        (11, 2, 3, 1, false)
    );
    assert!(!row.streamed && row.status == 200 && row.cost_usd > 0.0);
}

#[tokio::test]
async fn a_stream_becomes_anthropic_events_and_is_metered() {
    let s = setup("bridge-stream@example.com").await;
    let response = s.messages(&ask(true)).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text().await.unwrap();
    let events = events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{text}"
    );
    let start = &events[0].1["message"];
    assert_eq!(start["id"], "msg_chatcmpl-mock123");
    assert_eq!(start["model"], "openai/gpt-4o-mini");
    assert_eq!(start["content"], json!([]));
    assert!(
        start["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "the prompt's size is known from the start, as Anthropic reports it: {start}"
    );
    assert_eq!(
        events[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    let content: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["index"], 0);
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(content, "echo: hello there");
    let mut delta = events[events.len() - 2].1.clone();
    assert!(
        without_cost(&mut delta["usage"]) > 0.0,
        "message_delta says what it cost"
    );
    assert_eq!(
        &delta,
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"input_tokens": 9, "output_tokens": 3, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0}})
    );

    let sent = &s.upstream.received()[0];
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(sent.body["max_tokens"], 100);
    assert_eq!(sent.body["messages"][0]["role"], "system");

    let row = &s.gateway.usage_rows("bridge-stream@example.com", 1).await[0];
    assert_eq!(row.endpoint, "/v1/messages");
    assert!(row.streamed && row.ttft_ms.is_some());
    assert!(row.error_type.is_none(), "{row:?}");
    assert_eq!(
        (
            row.usage.prompt_tokens,
            row.usage.cached_tokens,
            row.usage.completion_tokens,
            row.usage.estimated
        ),
        (11, 2, 3, false)
    );
}

#[tokio::test]
async fn a_tool_use_round_trip_is_translated_to_openai_tool_messages() {
    let s = setup("bridge-tools@example.com").await;
    let body = json!({"model": "openai/gpt-4o-mini", "max_tokens": 50,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C sunny"},
                {"type": "text", "text": "And tomorrow?"}]}],
        "tools": [{"name": "get_weather", "description": "Get weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "tool_choice": {"type": "auto"}, "stop_sequences": ["END"], "temperature": 0.5, "top_k": 3});
    let response = s.messages(&body).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "echo: And tomorrow?"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");

    let sent = &s.upstream.received()[0].body;
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "toolu_01A", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C sunny"},
            {"role": "user", "content": "And tomorrow?"}])
    );
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Get weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["temperature"], 0.5);
    assert!(sent.get("top_k").is_none() && sent.get("stream").is_none());
    s.gateway.usage_rows("bridge-tools@example.com", 1).await;
}

#[tokio::test]
async fn upstream_failures_answer_in_anthropic_shape() {
    let s = setup("bridge-errors@example.com").await;
    let mut rejected = ask(false);
    rejected["model"] = json!("openai/mock-400");
    let response = s.messages(&rejected).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens is too large")
    );

    let mut dropped = ask(true);
    dropped["model"] = json!("openai/mock-drop");
    dropped["messages"][0]["content"] = json!("one two three");
    let text = s.messages(&dropped).await.text().await.unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(
        text.contains("event: error\ndata: {\"type\":\"error\",\"error\":{"),
        "{text}"
    );
    assert!(!text.contains("message_stop"), "{text}");
    let rows = s.gateway.usage_rows("bridge-errors@example.com", 2).await;
    assert!(
        rows.iter()
            .any(|r| r.streamed && r.endpoint == "/v1/messages" && r.error_type.is_some()),
        "{rows:?}"
    );
}
