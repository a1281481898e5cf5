//! `google/` models through the OpenAI-compatible API: requests translated to Gemini's generateContent,
//! replies and SSE streams translated back, usage from Gemini's `usageMetadata` (cached tokens priced at
//! their own rate, thinking tokens billed as output), thought signatures carried through tool call ids,
//! embeddings through batchEmbedContents, and Gemini's errors mapped, against a mock speaking Gemini's
//! wire format.

use qnp_tests::mock_gemini::{CACHED_TOKENS, MockGemini, THOUGHT_SIGNATURE, THOUGHTS_TOKENS};
use qnp_tests::{MockOpenAi, TestGateway, UPSTREAM_KEY, test_env};
use serde_json::{Value, json};

struct Setup {
    _dir: tempfile::TempDir,
    _openai: MockOpenAi,
    upstream: MockGemini,
    gateway: TestGateway,
    key: String,
}

async fn setup(email: &str) -> Setup {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let openai = MockOpenAi::start().await;
    let upstream = MockGemini::start().await;
    let mut env = test_env(dir.path(), &openai);
    env.set("QNP_GEMINI_BASE_URL", upstream.url());
    env.set("GEMINI_API_KEY", UPSTREAM_KEY);
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
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.gateway.url))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", body).await
    }
}

fn sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn model(id: &str) -> qnp_shared::catalog::Model {
    (**qnp_shared::catalog::Catalog::bundled().get(id).unwrap()).clone()
}

#[tokio::test]
async fn a_chat_completion_is_translated_both_ways_and_priced_with_cache_and_thinking() {
    let s = setup("gemini@example.com").await;
    let response = s
        .chat(json!({"model": "google/gemini-2.5-flash", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}],
            "temperature": 0.2, "max_tokens": 64}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "google/gemini-2.5-flash");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // "echo: hi there" is 3 words: the mock's prompt is 3 + 3, its output 3 plus 2 thinking tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 6);
    assert_eq!(body["usage"]["completion_tokens"], 3 + THOUGHTS_TOKENS);
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        CACHED_TOKENS
    );
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        THOUGHTS_TOKENS
    );

    let sent = &s.upstream.received()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(UPSTREAM_KEY),
        "x-goog-api-key is the operator's credential"
    );
    assert_eq!(
        sent.body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        sent.body["contents"],
        json!([{"role": "user", "parts": [{"text": "hi there"}]}])
    );
    assert_eq!(
        sent.body["generationConfig"],
        json!({"temperature": 0.2, "maxOutputTokens": 64})
    );
    assert!(sent.body.get("model").is_none() && sent.body.get("messages").is_none());

    let row = &s.gateway.usage_rows("gemini@example.com", 1).await[0];
    assert_eq!(
        (row.provider.as_str(), row.model.as_str()),
        ("google", "google/gemini-2.5-flash")
    );
    assert_eq!(
        (
            row.usage.prompt_tokens,
            row.usage.cached_tokens,
            row.usage.completion_tokens,
            row.usage.reasoning_tokens
        ),
        (6, CACHED_TOKENS, 3 + THOUGHTS_TOKENS, THOUGHTS_TOKENS)
    );
    let model = model("google/gemini-2.5-flash");
    let expected = ((6 - CACHED_TOKENS) as f64 * model.input_per_mtok
        + CACHED_TOKENS as f64 * model.cached_input_per_mtok.unwrap()
        + (3 + THOUGHTS_TOKENS) as f64 * model.output_per_mtok)
        / 1e6;
    assert!(
        (row.cost_usd - expected).abs() < 1e-12,
        "{} vs {expected}",
        row.cost_usd
    );
}

#[tokio::test]
async fn a_stream_is_translated_to_openai_chunks_and_metered() {
    let s = setup("gstream@example.com").await;
    let text = s
        .chat(json!({"model": "google/gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "one two"}]}))
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
        "no usage chunk unless asked: {text}"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
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
    assert_eq!(
        s.upstream.received()[0].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let row = &s.gateway.usage_rows("gstream@example.com", 1).await[0];
    assert!(row.streamed && row.ttft_ms.is_some());
    assert_eq!(
        (
            row.usage.prompt_tokens,
            row.usage.completion_tokens,
            row.usage.cached_tokens
        ),
        (6, 3 + THOUGHTS_TOKENS, CACHED_TOKENS),
        "the last running usageMetadata is the call's"
    );
    assert!(row.error_type.is_none());
}

#[tokio::test]
async fn streamed_tool_calls_carry_the_thought_signature_back() {
    let s = setup("gtools@example.com").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}}]);
    let text = s
        .chat(json!({"model": "google/gemini-2.5-flash", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "weather?"}], "tools": tools, "tool_choice": "required"}))
        .await
        .text()
        .await
        .unwrap();
    let chunks = sse(&text);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "a Gemini function call arrives whole: {text}"
    );
    let call = calls[0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_"), "{id}");
    assert!(
        id.ends_with(&format!("__thought__{THOUGHT_SIGNATURE}")),
        "{id}"
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
        usage["usage"]["prompt_tokens"], 5,
        "\"echo: weather?\" is 2 words + 3"
    );
    assert_eq!(
        usage["usage"]["completion_tokens"],
        2 + THOUGHTS_TOKENS,
        "thinking tokens are output"
    );
    let sent = &s.upstream.received()[0].body;
    assert_eq!(
        sent["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );

    // The client sends the call back with its result: Gemini gets its signature on the same part, and
    // the function's name on the response.
    let response = s
        .chat(
            json!({"model": "google/gemini-2.5-flash", "tools": tools, "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": id, "content": "18C sunny"}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let sent = &s.upstream.received()[1].body;
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": THOUGHT_SIGNATURE}]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
            "response": {"content": "18C sunny"}}}]})
    );
    let rows = s.gateway.usage_rows("gtools@example.com", 2).await;
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.provider == "google")
    );
}

#[tokio::test]
async fn embeddings_use_batch_embed_contents_with_estimated_tokens() {
    let s = setup("gembed@example.com").await;
    let response = s
        .post(
            "/v1/embeddings",
            json!({"model": "google/gemini-embedding-001", "input": ["hello world", "abc"], "dimensions": 4}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "google/gemini-embedding-001");
    assert_eq!(
        body["data"],
        json!([
            {"object": "embedding", "index": 0, "embedding": [11.0, 0.5, -0.25, 0.0]},
            {"object": "embedding", "index": 1, "embedding": [3.0, 0.5, -0.25, 0.0]}])
    );
    assert_eq!(
        (
            &body["usage"]["prompt_tokens"],
            &body["usage"]["total_tokens"]
        ),
        (&json!(4), &json!(4)),
        "14 characters ≈ 4 tokens"
    );
    assert!(
        body["usage"]["cost"].as_f64().unwrap() > 0.0,
        "the answer says what it cost"
    );
    let sent = &s.upstream.received()[0];
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    assert_eq!(
        sent.body["requests"][1],
        json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "abc"}]}, "outputDimensionality": 4})
    );

    let response = s
        .post(
            "/v1/embeddings",
            json!({"model": "google/gemini-embedding-001", "input": "single", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["data"][0]["embedding"].is_string());

    let rows = s.gateway.usage_rows("gembed@example.com", 2).await;
    let row = rows.iter().find(|r| r.usage.prompt_tokens == 4).unwrap();
    assert_eq!(row.endpoint, "/v1/embeddings");
    let model = model("google/gemini-embedding-001");
    assert!((row.cost_usd - 4.0 * model.input_per_mtok / 1e6).abs() < 1e-12);
}

#[tokio::test]
async fn gemini_errors_map_to_the_openai_shape() {
    let s = setup("gerrors@example.com").await;
    let response = s.chat(json!({"model": "google/gemini-mock-400", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unknown name \"bogus\""),
        "{body}"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = s.chat(json!({"model": "google/gemini-mock-503", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "upstream_overloaded");

    let text = s
        .chat(json!({"model": "google/gemini-mock-midstream", "stream": true, "messages": [{"role": "user", "content": "a b c"}]}))
        .await
        .text()
        .await
        .unwrap();
    let chunks = sse(&text);
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "echo:");
    assert_eq!(
        chunks.last().unwrap()["error"]["type"],
        "upstream_error",
        "{text}"
    );
    assert!(!text.contains("[DONE]"));

    let response = s
        .chat(json!({"model": "google/gemini-2.5-flash", "messages": [
        {"role": "tool", "tool_call_id": "call_unknown", "content": "x"}]}))
        .await;
    assert_eq!(response.status(), 400, "a tool result without its call");

    let rows = s.gateway.usage_rows("gerrors@example.com", 4).await;
    assert!(
        rows.iter()
            .any(|r| r.streamed && r.error_type.as_deref() == Some("upstream_error"))
    );
    assert!(rows.iter().any(|r| r.status == 503));
}

#[tokio::test]
async fn without_a_gemini_key_google_models_answer_503_naming_the_variable() {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let openai = MockOpenAi::start().await;
    let gateway = TestGateway::start(&test_env(dir.path(), &openai)).await;
    let key = gateway.create_key("nogemini@example.com", "free").await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(&key)
        .json(&json!({"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GEMINI_API_KEY")
    );
}
