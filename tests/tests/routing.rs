//! Fallbacks and retries before the first byte, none after it, and usage recorded from the provider's
//! own count when the client hangs up mid-stream.

use futures_util::StreamExt;
use qnp_tests::{MockOpenAi, TestGateway, test_env};
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
    let gateway = TestGateway::start(&test_env(dir.path(), &upstream)).await;
    let key = gateway.create_key(email, "free").await;
    Setup {
        _dir: dir,
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

    fn calls_to(&self, upstream_model: &str) -> usize {
        self.upstream
            .received()
            .iter()
            .filter(|r| r.body["model"] == upstream_model)
            .count()
    }
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn a_client_fallback_list_is_tried_in_order_after_retries() {
    let s = setup("fallback@example.com").await;
    let mut body = ask("openai/mock-500");
    body["models"] = json!(["openai/gpt-4o-mini"]);
    let response = s.chat(body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(
        s.calls_to("mock-500"),
        2,
        "the failing model was retried once before falling back"
    );
    assert_eq!(s.calls_to("gpt-4o-mini"), 1);
    assert!(
        s.upstream
            .received()
            .iter()
            .all(|r| r.body.get("models").is_none()),
        "the fallback list stays in the gateway"
    );
    let row = &s.gateway.usage_rows("fallback@example.com", 1).await[0];
    assert_eq!(
        row.model, "openai/gpt-4o-mini",
        "the row names the model that answered"
    );
    assert_eq!(row.status, 200);
}

#[tokio::test]
async fn an_operator_fallback_route_and_a_transient_failure_are_both_absorbed() {
    let s = setup("route@example.com").await;
    assert_eq!(s.chat(ask("openai/mock-500-routed")).await.status(), 200);
    assert_eq!(s.calls_to("gpt-4o-mini"), 1);
    // Fails on its first request, succeeds on the retry.
    assert_eq!(s.chat(ask("openai/mock-flaky")).await.status(), 200);
    assert_eq!(s.calls_to("mock-flaky"), 2);
    // Nothing to fall back to: the last error is reported, after the retries.
    let response = s.chat(ask("openai/mock-500")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(s.calls_to("mock-500"), 2 + 2);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_unknown_fallbacks_are_refused() {
    let s = setup("noretry@example.com").await;
    assert_eq!(s.chat(ask("openai/mock-400")).await.status(), 400);
    assert_eq!(s.calls_to("mock-400"), 1);
    // The upstream refusing the gateway's own credential is not retried either.
    assert_eq!(s.chat(ask("openai/mock-401")).await.status(), 502);
    assert_eq!(s.calls_to("mock-401"), 1);
    let mut body = ask("openai/gpt-4o-mini");
    body["models"] = json!(["openai/nope"]);
    let response = s.chat(body).await;
    assert_eq!(response.status(), 404);
    assert!(s.upstream.received().is_empty() || s.calls_to("gpt-4o-mini") == 0);
}

#[tokio::test]
async fn a_stream_that_fails_after_its_first_byte_is_not_retried() {
    let s = setup("midstream@example.com").await;
    let mut body = ask("openai/mock-drop");
    body["messages"][0]["content"] = json!("alpha beta gamma");
    body["stream"] = json!(true);
    body["models"] = json!(["openai/gpt-4o-mini"]);
    let text = s.chat(body).await.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    assert_eq!(s.calls_to("mock-drop"), 1);
    assert_eq!(
        s.calls_to("gpt-4o-mini"),
        0,
        "no fallback once bytes reached the client"
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_is_still_billed_from_the_provider_usage() {
    let s = setup("hangup@example.com").await;
    let mut body = ask("openai/mock-slowstream");
    body["messages"][0]["content"] = json!("one two three four five six seven eight");
    body["stream"] = json!(true);
    let response = s.chat(body).await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream); // the client goes away after the first chunk
    let row = &s.gateway.usage_rows("hangup@example.com", 1).await[0];
    assert_eq!(row.error_type.as_deref(), Some("client_disconnected"));
    assert_eq!(
        row.usage.completion_tokens, 9,
        "the provider's final count, read after the client left"
    );
    assert_eq!(row.usage.prompt_tokens, 15);
    assert!(row.cost_usd > 0.0);
}

#[tokio::test]
async fn usage_a_provider_does_not_report_is_estimated_and_flagged() {
    let s = setup("estimate@example.com").await;
    assert_eq!(s.chat(ask("openai/mock-nousage")).await.status(), 200);
    let mut streamed = ask("openai/mock-nousage");
    streamed["stream"] = json!(true);
    let text = s.chat(streamed).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(s.chat(ask("openai/gpt-4o-mini")).await.status(), 200);
    let rows = s.gateway.usage_rows("estimate@example.com", 3).await;
    let (estimated, counted): (Vec<_>, Vec<_>) =
        rows.iter().partition(|r| r.model == "openai/mock-nousage");
    assert!(
        estimated.iter().all(|r| r.usage.estimated
            && r.usage.prompt_tokens > 0
            && r.usage.completion_tokens > 0
            && r.cost_usd > 0.0),
        "{estimated:?}"
    );
    assert!(
        counted.iter().all(|r| !r.usage.estimated),
        "a provider's own count is never marked as an estimate"
    );
}
