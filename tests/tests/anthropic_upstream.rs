//! `anthropic/` models through the OpenAI-compatible API: requests translated to Anthropic Messages,
//! replies and streams translated back, usage from Anthropic's own accounting (cache reads and writes
//! priced at their own rates), and Anthropic's errors mapped, against a mock speaking Anthropic's wire
//! format.

use qnp_tests::mock_anthropic::MockAnthropic;
use qnp_tests::{MockOpenAi, TestGateway, UPSTREAM_KEY, test_env};
use serde_json::{Value, json};

struct Setup {
    _dir: tempfile::TempDir,
    _openai: MockOpenAi,
    upstream: MockAnthropic,
    gateway: TestGateway,
    key: String,
}

async fn setup(email: &str) -> Setup {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let openai = MockOpenAi::start().await;
    let upstream = MockAnthropic::start().await;
    let mut env = test_env(dir.path(), &openai);
    env.set("QNP_ANTHROPIC_BASE_URL", upstream.url());
    env.set("ANTHROPIC_API_KEY", UPSTREAM_KEY);
    let gateway = TestGateway::start(&env).await;
    let key = gateway.create_key(email, "free").await;
    Setup {
        _dir: dir,
        _openai: openai,
        upstream,
        gateway,
        key,
    }
}

impl Setup {
    async fn chat(&self, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", self.gateway.url))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn a_chat_completion_is_translated_both_ways_and_priced_with_cache_rates() {
    let s = setup("claude@example.com").await;
    let response = s
        .chat(json!({"model": "anthropic/claude-sonnet-5-5", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}], "temperature": 0.2}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "anthropic/claude-sonnet-5-5");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 6 + 4 + 2);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

    let sent = &s.upstream.received()[0];
    assert_eq!(
        sent.authorization.as_deref(),
        Some(UPSTREAM_KEY),
        "x-api-key is the operator's credential"
    );
    assert_eq!(sent.body["model"], "claude-sonnet-5-5");
    assert_eq!(
        sent.body["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi there"}]}])
    );
    assert!(sent.body["max_tokens"].as_u64().unwrap() > 0);

    let row = &s.gateway.usage_rows("claude@example.com", 1).await[0];
    assert_eq!(
        (row.provider.as_str(), row.model.as_str()),
        ("anthropic", "anthropic/claude-sonnet-5-5")
    );
    assert_eq!(
        (
            row.usage.prompt_tokens,
            row.usage.cached_tokens,
            row.usage.cache_write_tokens,
            row.usage.completion_tokens
        ),
        (12, 4, 2, 3)
    );
    let model = qnp_shared::catalog::Catalog::bundled()
        .get("anthropic/claude-sonnet-5-5")
        .unwrap()
        .clone();
    let expected = (6.0 * model.input_per_mtok
        + 4.0 * model.cached_input_per_mtok.unwrap()
        + 2.0 * model.cache_write_per_mtok.unwrap()
        + 3.0 * model.output_per_mtok)
        / 1e6;
    assert!(
        (row.cost_usd - expected).abs() < 1e-12,
        "{} vs {expected}",
        row.cost_usd
    );
}

#[tokio::test]
async fn a_stream_is_translated_to_openai_chunks_and_metered() {
    let s = setup("stream@example.com").await;
    let text = s
        .chat(json!({"model": "anthropic/claude-sonnet-5-5", "stream": true, "messages": [{"role": "user", "content": "one two"}]}))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks = sse(&text);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"
                && c.get("usage").is_none_or(Value::is_null)),
        "no usage chunk unless asked"
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "echo: one two");
    assert_eq!(
        chunks
            .iter()
            .rev()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str()),
        Some("stop")
    );
    let row = &s.gateway.usage_rows("stream@example.com", 1).await[0];
    assert!(row.streamed && row.ttft_ms.is_some());
    assert_eq!(
        (row.usage.prompt_tokens, row.usage.completion_tokens),
        (6 + 6, 3)
    );
    assert!(row.error_type.is_none());
}

#[tokio::test]
async fn streamed_tool_calls_and_requested_usage() {
    let s = setup("tools@example.com").await;
    let text = s
        .chat(json!({"model": "anthropic/claude-sonnet-5-5", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}))
        .await
        .text()
        .await
        .unwrap();
    let chunks = sse(&text);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["id"], "toolu_mock1");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(
        chunks
            .iter()
            .rev()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str()),
        Some("tool_calls")
    );
    let usage = chunks
        .iter()
        .find(|c| c["choices"] == json!([]))
        .expect("the usage chunk the client asked for");
    assert_eq!(
        usage["usage"]["prompt_tokens"],
        5 + 4 + 2,
        "\"echo: weather?\" is 2 words + 3, plus cache read 4 and write 2"
    );
    assert_eq!(
        s.upstream.received()[0].body["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
}

#[tokio::test]
async fn anthropic_errors_map_to_the_openai_shape() {
    let s = setup("errors@example.com").await;
    let response = s.chat(json!({"model": "anthropic/claude-mock-400", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be non-empty")
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = s.chat(json!({"model": "anthropic/claude-mock-529", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_overloaded");
    let overloaded = s
        .upstream
        .received()
        .iter()
        .filter(|r| r.body["model"] == "claude-mock-529")
        .count();
    assert_eq!(overloaded, 2, "a 529 is retried before giving up");

    let text = s
        .chat(json!({"model": "anthropic/claude-mock-midstream", "stream": true, "messages": [{"role": "user", "content": "a b c"}]}))
        .await
        .text()
        .await
        .unwrap();
    let chunks = sse(&text);
    assert_eq!(
        chunks.last().unwrap()["error"]["type"],
        "upstream_overloaded",
        "{text}"
    );
    assert!(!text.contains("[DONE]"));
    let rows = s.gateway.usage_rows("errors@example.com", 3).await;
    assert!(
        rows.iter()
            .any(|r| r.streamed && r.error_type.as_deref() == Some("upstream_overloaded"))
    );
    assert!(rows.iter().any(|r| r.status == 503));
}

async fn messages(s: &Setup, auth: (&str, &str), body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages", s.gateway.url))
        .header(auth.0, auth.1)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_messages_api_passes_anthropic_models_through_natively() {
    let s = setup("native@example.com").await;
    let body = json!({"model": "anthropic/claude-sonnet-5-5", "max_tokens": 100, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello there"}]});
    let response = messages(&s, ("x-api-key", &s.key), body.clone()).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], "echo: hello there");
    assert_eq!(
        message["usage"]["cache_read_input_tokens"], 4,
        "Anthropic's reply, unchanged"
    );
    let sent = &s.upstream.received()[0];
    assert_eq!(sent.body["model"], "claude-sonnet-5-5");
    assert_eq!(
        sent.body["system"], "Be brief.",
        "the request passes through but for the model"
    );

    // Streams pass through event by event, named as Anthropic names them; Bearer works too.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let auth = format!("Bearer {}", s.key);
    let text = messages(&s, ("authorization", &auth), streamed)
        .await
        .text()
        .await
        .unwrap();
    for name in [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "message_delta",
        "message_stop",
    ] {
        assert!(
            text.contains(&format!("event: {name}\n")),
            "{name} in {text}"
        );
    }
    let rows = s.gateway.usage_rows("native@example.com", 2).await;
    for row in &rows {
        assert_eq!(row.endpoint, "/v1/messages");
        assert_eq!(
            (
                row.usage.prompt_tokens,
                row.usage.cached_tokens,
                row.usage.cache_write_tokens
            ),
            (6 + 4 + 2, 4, 2)
        );
        assert_eq!(row.usage.completion_tokens, 3);
        assert!(row.cost_usd > 0.0);
    }
    assert!(rows.iter().any(|r| r.streamed && r.ttft_ms.is_some()));
}

#[tokio::test]
async fn the_messages_api_answers_errors_in_anthropic_shape() {
    let s = setup("shape@example.com").await;
    let ask = |model: &str| json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (
            Some("qnp_wrong"),
            ask("anthropic/claude-sonnet-5-5"),
            401,
            "authentication_error",
        ),
        (None, ask("anthropic/claude-nope"), 404, "not_found_error"),
        (
            None,
            json!({"model": "anthropic/claude-sonnet-5-5", "messages": []}),
            400,
            "invalid_request_error",
        ),
        (
            None,
            ask("anthropic/claude-mock-400"),
            400,
            "invalid_request_error",
        ),
        (
            None,
            ask("anthropic/claude-mock-529"),
            // Anthropic's own status for an overloaded API, which its clients back off on.
            529,
            "overloaded_error",
        ),
    ];
    for (key, body, status, kind) in cases {
        let key = key.unwrap_or(&s.key).to_owned();
        let response = messages(&s, ("x-api-key", &key), body.clone()).await;
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], kind, "{body}");
        assert!(error["error"]["message"].is_string());
    }
    let mut streamed = ask("anthropic/claude-mock-midstream");
    streamed["stream"] = json!(true);
    let text = messages(&s, ("x-api-key", &s.key), streamed)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\""
        ),
        "{text}"
    );
    // Four refusals after authentication, plus the stream: the stream's row records the failure.
    let rows = s.gateway.usage_rows("shape@example.com", 5).await;
    assert!(rows.iter().any(|r| r.endpoint == "/v1/messages"
        && r.streamed
        && r.error_type.as_deref() == Some("upstream_overloaded")));
}
