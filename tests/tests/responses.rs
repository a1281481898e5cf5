//! `/v1/responses` end to end over real HTTP: `openai/` models passed through to the mock's own
//! Responses endpoint (whole and streamed, usage from the terminal event), `anthropic/` and `google/`
//! models and chat-only OpenAI-compatible servers served by translation, and every stateful or unpriced
//! request refused before anything goes upstream.

use qnp_tests::mock_anthropic::MockAnthropic;
use qnp_tests::mock_gemini::MockGemini;
use qnp_tests::{MockOpenAi, TestGateway, UPSTREAM_KEY, test_env};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A chat-only OpenAI-compatible server (the same mock, reached through chat completions).
const CHAT_ONLY_MODEL: &str = r#"{"id":"openai/local-llama","provider":"openai","upstream_model":"llama-3","kind":"chat","context_length":8000,"input_per_mtok":1.0,"output_per_mtok":2.0,"responses_api":false}"#;

struct Setup {
    _dir: tempfile::TempDir,
    openai: MockOpenAi,
    anthropic: MockAnthropic,
    gemini: MockGemini,
    gateway: TestGateway,
    key: String,
    email: String,
}

async fn setup(email: &str) -> Setup {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let openai = MockOpenAi::start().await;
    let anthropic = MockAnthropic::start().await;
    let gemini = MockGemini::start().await;
    let mut env = test_env(dir.path(), &openai);
    let models = qnp_tests::TEST_MODELS.replacen(
        "\"models\":[",
        &format!("\"models\":[{CHAT_ONLY_MODEL},"),
        1,
    );
    std::fs::write(dir.path().join("models.json"), models).unwrap();
    env.set("QNP_ANTHROPIC_BASE_URL", anthropic.url());
    env.set("ANTHROPIC_API_KEY", UPSTREAM_KEY);
    env.set("QNP_GEMINI_BASE_URL", gemini.url());
    env.set("GEMINI_API_KEY", UPSTREAM_KEY);
    let gateway = TestGateway::start(&env).await;
    let key = gateway.create_key(email, "free").await;
    Setup {
        _dir: dir,
        openai,
        anthropic,
        gemini,
        gateway,
        key,
        email: email.to_owned(),
    }
}

impl Setup {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.gateway.url))
            .bearer_auth(&self.key)
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// A Responses stream as (event name, data) pairs; every event is named and its data says the same.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e
                .strip_prefix("event: ")
                .and_then(|e| e.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("a named event: {e}"));
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name);
            (name.to_owned(), data)
        })
        .collect()
}

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn openai_models_pass_through_whole_with_store_forced_off_and_are_metered() {
    let s = setup("resp-whole@example.com").await;
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "openai/gpt-4o-mini", "input": "hello there", "store": true,
                "instructions": "be brief", "metadata": {"run": "1"}}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["output"][0]["content"][0]["text"], "echo: hello there");
    let sent = s.openai.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/responses");
    assert_eq!(sent[0].body["model"], "gpt-4o-mini");
    assert_eq!(
        sent[0].body["store"], false,
        "QNP never lets the upstream store"
    );
    assert_eq!(
        sent[0].body["metadata"],
        json!({"run": "1"}),
        "the rest passes through"
    );

    let rows = s.gateway.usage_rows(&s.email, 1).await;
    let row = &rows[0];
    assert_eq!(row.endpoint, "/v1/responses");
    assert_eq!(row.model, "openai/gpt-4o-mini");
    assert_eq!(row.status, 200);
    assert!(!row.streamed);
    // input: 2 words + 7; output: "echo: hello there" is 3 words; cached and reasoning as reported.
    assert_eq!(
        (
            row.usage.prompt_tokens,
            row.usage.completion_tokens,
            row.usage.cached_tokens,
            row.usage.reasoning_tokens,
            row.usage.estimated
        ),
        (9, 3, 2, 1, false)
    );
    assert!(row.cost_usd > 0.0);
}

#[tokio::test]
async fn openai_streams_are_forwarded_event_for_event_and_billed_from_the_terminal_event() {
    let s = setup("resp-stream@example.com").await;
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "openai/gpt-4o-mini", "stream": true,
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "stream me please"}]}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = events(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert!(names.contains(&"response.output_item.done"));
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(
            data["sequence_number"], i,
            "the upstream's numbering, unchanged"
        );
    }
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "echo: stream me please");
    let (_, completed) = events.last().unwrap();
    assert_eq!(
        completed["response"]["model"], "openai/gpt-4o-mini",
        "the model asked for, not the upstream's name"
    );
    let terminal_cost = completed["response"]["usage"]["cost"].as_f64().unwrap();
    let row = &s.gateway.usage_rows(&s.email, 1).await[0];
    assert!(row.streamed);
    assert_eq!(row.endpoint, "/v1/responses");
    assert_eq!(
        (row.usage.prompt_tokens, row.usage.completion_tokens),
        (10, 4)
    );
    assert!(!row.usage.estimated);
    assert!(row.ttft_ms.is_some());
    // The same figure (JSON numbers are read back to within an ulp).
    assert!(
        (terminal_cost - row.cost_usd).abs() <= 1e-15,
        "the terminal event says what the call cost: {terminal_cost} vs {}",
        row.cost_usd
    );
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_one_response_failed_event_and_is_recorded() {
    let s = setup("resp-drop@example.com").await;
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "openai/mock-drop", "stream": true, "input": "one two three four five"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let events = events(&response.text().await.unwrap());
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "response.failed");
    assert_eq!(
        data["sequence_number"],
        events.len() - 1,
        "numbered after what was sent"
    );
    assert_eq!(data["response"]["status"], "failed");
    assert!(data["response"]["error"]["message"].is_string());
    assert_eq!(
        events
            .iter()
            .filter(|(n, _)| n.starts_with("response.completed") || n == "response.failed")
            .count(),
        1,
        "exactly one terminal event"
    );
    let row = &s.gateway.usage_rows(&s.email, 1).await[0];
    assert_eq!(row.error_type.as_deref(), Some("upstream_error"));
    assert!(
        row.usage.estimated,
        "billed by an estimate of what was generated"
    );
}

#[tokio::test]
async fn an_openai_stream_without_usage_is_billed_by_estimate_from_the_deltas() {
    let s = setup("resp-nousage@example.com").await;
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "openai/mock-nousage", "stream": true, "input": "count these words"}),
        )
        .await;
    let events = events(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap().0, "response.completed");
    let row = &s.gateway.usage_rows(&s.email, 1).await[0];
    assert!(row.usage.estimated);
    // "echo: count these words" is 23 bytes of deltas: about six tokens, not the four copies of it the
    // done and terminal events repeat.
    assert!(
        (5..=7).contains(&row.usage.completion_tokens),
        "{:?}",
        row.usage
    );
}

#[tokio::test]
async fn anthropic_models_are_translated_whole_and_streamed_with_a_tool_round_trip() {
    let s = setup("resp-claude@example.com").await;
    let tools = json!([{"type": "function", "name": "exec_command", "description": "Run a command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}]);
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "anthropic/claude-sonnet-5-5", "stream": true, "instructions": "Be brief.",
                "input": [{"role": "user", "content": "list the files"}], "tools": tools, "max_output_tokens": 200}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let events = events(&response.text().await.unwrap());
    let (last, completed) = events.last().unwrap();
    assert_eq!(last, "response.completed");
    let call = completed["response"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .cloned()
        .expect("the mock calls the tool");
    assert_eq!(call["name"], "exec_command");
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "response.output_item.done" && d["item"]["type"] == "function_call"),
        "Codex reads calls from output_item.done"
    );
    let sent = &s.anthropic.received()[0];
    assert_eq!(sent.body["system"][0]["text"], "Be brief.");
    assert_eq!(sent.body["max_tokens"], 200);
    assert_eq!(sent.body["tools"][0]["name"], "exec_command");

    // The tool's output goes back; the history carries the call.
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "anthropic/claude-sonnet-5-5", "max_output_tokens": 200, "tools": tools, "input": [
                {"role": "user", "content": "list the files"},
                {"type": "function_call", "call_id": call["call_id"], "name": "exec_command", "arguments": call["arguments"]},
                {"type": "function_call_output", "call_id": call["call_id"], "output": "a.txt b.txt"}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["model"], "anthropic/claude-sonnet-5-5");
    let sent = &s.anthropic.received()[1];
    let messages = sent.body["messages"].as_array().unwrap();
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], call["call_id"]);

    let rows = s.gateway.usage_rows(&s.email, 2).await;
    assert!(rows.iter().all(|r| r.endpoint == "/v1/responses"
        && r.model == "anthropic/claude-sonnet-5-5"
        && !r.usage.estimated
        && r.usage.prompt_tokens > 0));
}

#[tokio::test]
async fn google_models_and_chat_only_servers_are_translated_too() {
    let s = setup("resp-gemini@example.com").await;
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "google/gemini-2.5-flash", "input": "hi gemini"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["text"], "echo: hi gemini");
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(s.gemini.received().len(), 1);

    let response = s
        .post(
            "/v1/responses",
            json!({"model": "openai/local-llama", "input": "hi llama", "stream": true}),
        )
        .await;
    let events = events(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap().0, "response.completed");
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "echo: hi llama");
    let sent = s.openai.received();
    assert_eq!(
        sent[0].path, "/v1/chat/completions",
        "a chat-only server gets chat"
    );
    assert_eq!(sent[0].body["model"], "llama-3");
    let rows = s.gateway.usage_rows(&s.email, 2).await;
    assert!(rows.iter().all(|r| !r.usage.estimated));
}

#[tokio::test]
async fn stateful_and_unpriced_requests_are_refused_before_anything_goes_upstream() {
    let s = setup("resp-refused@example.com").await;
    let cases = [
        (
            json!({"model": "openai/gpt-4o-mini", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
            "no conversation state",
        ),
        (
            json!({"model": "openai/gpt-4o-mini", "input": "x", "conversation": "conv_1"}),
            "conversation",
            "no conversation state",
        ),
        (
            json!({"model": "openai/gpt-4o-mini", "input": "x", "background": true}),
            "background",
            "stream the response",
        ),
        (
            json!({"model": "openai/gpt-4o-mini"}),
            "input",
            "whole conversation",
        ),
        (
            json!({"model": "anthropic/claude-sonnet-5-5", "input": "x", "tools": [{"type": "web_search", "external_web_access": false}]}),
            "tools",
            "web_search = \"disabled\"",
        ),
        (
            json!({"model": "openai/gpt-4o-mini", "input": "x", "tools": [{"type": "file_search"}]}),
            "tools[0]",
            "billed per call",
        ),
        (
            json!({"model": "openai/gpt-4o-mini", "input": "x", "service_tier": "priority"}),
            "service_tier",
            "service tier",
        ),
        (
            json!({"model": "anthropic/claude-sonnet-5-5", "input": [{"type": "custom_tool_call", "call_id": "c", "name": "p", "input": ""}]}),
            "input[0].type",
            "openai/ models",
        ),
    ];
    for (body, param, needle) in cases {
        let (status, error) = error_of(s.post("/v1/responses", body.clone()).await).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (status, error) = error_of(
        s.post(
            "/v1/responses",
            json!({"model": "openai/no-such-model", "input": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "model_not_found");
    let (status, _) = error_of(
        s.request(reqwest::Method::POST, "/v1/responses")
            .header("content-type", "application/json")
            .body("{\"model\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "malformed JSON");
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = s
            .request(method.clone(), "/v1/responses/resp_abc123")
            .send()
            .await
            .unwrap();
        let (status, error) = error_of(response).await;
        assert_eq!(status, 400, "{method}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no conversation state")
        );
    }
    let upgrade = s
        .request(reqwest::Method::GET, "/v1/responses")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), StatusCode::UPGRADE_REQUIRED);
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/v1/responses", s.gateway.url))
        .json(&json!({"model": "openai/gpt-4o-mini", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert!(s.openai.received().is_empty());
    assert!(s.anthropic.received().is_empty());
}

#[tokio::test]
async fn hosted_web_searches_are_bounded_counted_and_priced_per_call() {
    let s = setup("resp-search@example.com").await;
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "openai/gpt-4o-mini", "stream": true, "input": "search the web for rust",
                "tools": [{"type": "web_search"}]}),
        )
        .await;
    let events = events(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap().0, "response.completed");
    let sent = &s.openai.received()[0];
    assert_eq!(
        sent.body["max_tool_calls"], 10,
        "no more searches than were reserved for"
    );
    let row = &s.gateway.usage_rows(&s.email, 1).await[0];
    assert_eq!(row.usage.web_search_calls, 1);
    let model = qnp_shared::catalog::Catalog::bundled()
        .get("openai/gpt-4o-mini")
        .unwrap()
        .clone();
    let tokens_only = model.cost_usd(&qnp_shared::usage::TokenUsage {
        web_search_calls: 0,
        ..row.usage
    });
    let fee = model.web_search_per_call_usd.unwrap();
    assert!((row.cost_usd - tokens_only - fee).abs() < 1e-12, "{row:?}");

    // A client's own max_tool_calls is kept, and bounds the reservation.
    let response = s
        .post(
            "/v1/responses",
            json!({"model": "openai/gpt-4o-mini", "input": "search again", "max_tool_calls": 2,
                "tools": [{"type": "web_search_preview"}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["output"][0]["type"], "web_search_call");
    assert_eq!(s.openai.received()[1].body["max_tool_calls"], 2);
    let rows = s.gateway.usage_rows(&s.email, 2).await;
    assert!(rows.iter().all(|r| r.usage.web_search_calls == 1));
}

#[tokio::test]
async fn compaction_passes_through_for_openai_and_is_refused_clearly_elsewhere() {
    let s = setup("resp-compact@example.com").await;
    let response = s
        .post(
            "/v1/responses/compact",
            json!({"model": "openai/gpt-4o-mini", "input": [{"role": "user", "content": "long history"}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["output"][0]["type"], "compaction");
    let sent = s.openai.received();
    assert_eq!(sent[0].path, "/v1/responses/compact");
    assert_eq!(sent[0].body["model"], "gpt-4o-mini");
    let row = &s.gateway.usage_rows(&s.email, 1).await[0];
    assert_eq!(row.endpoint, "/v1/responses/compact");
    assert_eq!(
        (row.usage.prompt_tokens, row.usage.completion_tokens),
        (40, 8)
    );

    let (status, error) = error_of(
        s.post(
            "/v1/responses/compact",
            json!({"model": "anthropic/claude-sonnet-5-5", "input": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai/ models only")
    );
    assert!(s.anthropic.received().is_empty());
}
