//! What Claude Code and the `anthropic` SDKs rely on beyond `POST /v1/messages` itself: their
//! `anthropic-version` and `anthropic-beta` headers reaching Anthropic, `/v1/messages/count_tokens`,
//! Anthropic's error shape on every `/v1/messages*` answer (404 and 405 included) with 529 for an
//! overloaded upstream, and `max_tokens` clamped to the serving model's limit when translated.

use qnp_shared::catalog::Catalog;
use qnp_tests::mock_anthropic::MockAnthropic;
use qnp_tests::{MockOpenAi, TestGateway, UPSTREAM_KEY, test_env};
use reqwest::StatusCode;
use serde_json::{Value, json};

const BETAS: &str =
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27";

struct Setup {
    _dir: tempfile::TempDir,
    openai: MockOpenAi,
    anthropic: MockAnthropic,
    gateway: TestGateway,
    key: String,
    email: String,
}

async fn setup(email: &str) -> Setup {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let openai = MockOpenAi::start().await;
    let anthropic = MockAnthropic::start().await;
    let mut env = test_env(dir.path(), &openai);
    env.set("QNP_ANTHROPIC_BASE_URL", anthropic.url());
    env.set("ANTHROPIC_API_KEY", UPSTREAM_KEY);
    let gateway = TestGateway::start(&env).await;
    let key = gateway.create_key(email, "free").await;
    Setup {
        _dir: dir,
        openai,
        anthropic,
        gateway,
        key,
        email: email.to_owned(),
    }
}

impl Setup {
    /// A request as Claude Code sends it: `x-api-key`, the version and its betas.
    fn claude(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.gateway.url))
            .header("x-api-key", &self.key)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", BETAS)
    }
}

/// Anthropic's error shape, or a panic naming what came instead.
async fn anthropic_error(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    (
        status,
        body["error"]["type"].as_str().unwrap().to_owned(),
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_clients_version_and_betas_reach_anthropic() {
    let s = setup("betas@example.com").await;
    let response = s
        .claude(reqwest::Method::POST, "/v1/messages?beta=true")
        .json(
            &json!({"model": "anthropic/claude-sonnet-5-5", "max_tokens": 64, "stream": true,
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("message_stop"));
    let sent = &s.anthropic.received()[0];
    assert_eq!(sent.headers["anthropic-beta"], BETAS);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        sent.body["context_management"]["edits"][0]["type"], "clear_thinking_20251015",
        "beta body fields pass through"
    );
    assert!(
        sent.headers.get("x-api-key").unwrap() == UPSTREAM_KEY,
        "the operator's credential, never the client's key"
    );

    // A beta billed at rates the catalog cannot express is refused before anything goes upstream.
    let response = s
        .claude(reqwest::Method::POST, "/v1/messages")
        .header("anthropic-beta", "context-1m-2025-08-07")
        .json(
            &json!({"model": "anthropic/claude-sonnet-5-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    let (status, kind, message) = anthropic_error(response).await;
    assert_eq!(
        (status.as_u16(), kind.as_str()),
        (400, "invalid_request_error")
    );
    assert!(message.contains("context-1m-2025-08-07"), "{message}");
    assert_eq!(s.anthropic.received().len(), 1);
}

#[tokio::test]
async fn count_tokens_asks_anthropic_or_estimates_and_is_never_billed() {
    let s = setup("count@example.com").await;
    let body = json!({"model": "anthropic/claude-sonnet-5-5",
        "messages": [{"role": "user", "content": "how many tokens is this"}]});
    let response = s
        .claude(reqwest::Method::POST, "/v1/messages/count_tokens?beta=true")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let counted: Value = response.json().await.unwrap();
    assert_eq!(
        counted,
        json!({"input_tokens": 5 + 3}),
        "Anthropic's own count"
    );
    let sent = &s.anthropic.received()[0];
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.body["model"], "claude-sonnet-5-5");
    assert_eq!(sent.headers["anthropic-beta"], BETAS);

    let estimate_body = json!({"model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "how many tokens is this"}]});
    let response = s
        .claude(reqwest::Method::POST, "/v1/messages/count_tokens")
        .json(&estimate_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let estimated: Value = response.json().await.unwrap();
    let bytes = serde_json::to_vec(&estimate_body).unwrap().len();
    assert_eq!(
        estimated,
        json!({"input_tokens": qnp_shared::usage::TokenUsage::estimate(bytes, 0).prompt_tokens}),
        "the gateway's estimate (about four bytes a token), in Anthropic's shape"
    );
    assert!(
        s.openai.received().is_empty(),
        "OpenAI has no counting endpoint"
    );

    let rows = s.gateway.usage_rows(&s.email, 2).await;
    for row in &rows {
        assert_eq!(row.endpoint, "/v1/messages/count_tokens");
        assert_eq!(row.status, 200);
        assert_eq!(row.usage.total(), 0);
        assert_eq!(row.cost_usd, 0.0);
    }

    let (status, kind, _) = anthropic_error(
        s.claude(reqwest::Method::POST, "/v1/messages/count_tokens")
            .json(&json!({"model": "anthropic/claude-sonnet-5-5"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), kind.as_str()),
        (400, "invalid_request_error")
    );
    let (status, kind, _) = anthropic_error(
        reqwest::Client::new()
            .post(format!("{}/v1/messages/count_tokens", s.gateway.url))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), kind.as_str()),
        (401, "authentication_error")
    );
}

#[tokio::test]
async fn every_messages_answer_is_in_anthropics_shape_and_overload_is_529() {
    let s = setup("shapes@example.com").await;
    let (status, kind, _) = anthropic_error(
        s.claude(reqwest::Method::POST, "/v1/messages/batches")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status.as_u16(), kind.as_str()), (404, "not_found_error"));
    let (status, _, _) = anthropic_error(
        s.claude(reqwest::Method::GET, "/v1/messages")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status.as_u16(), 405);
    // Elsewhere a 404 stays in OpenAI's shape.
    let other = reqwest::Client::new()
        .get(format!("{}/v1/nothing-here", s.gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let body: Value = other.json().await.unwrap();
    assert!(body["error"]["message"].is_string() && body.get("type").is_none());

    let (status, kind, _) = anthropic_error(
        s.claude(reqwest::Method::POST, "/v1/messages")
            .json(
                &json!({"model": "anthropic/claude-mock-529", "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status.as_u16(), kind.as_str()), (529, "overloaded_error"));
}

#[tokio::test]
async fn max_tokens_above_the_serving_models_limit_is_clamped_when_translated() {
    let s = setup("clamp@example.com").await;
    let limit = Catalog::bundled()
        .get("openai/gpt-4o-mini")
        .unwrap()
        .output_limit();
    assert!(limit < 32_000);
    let response = s
        .claude(reqwest::Method::POST, "/v1/messages")
        .json(&json!({"model": "openai/gpt-4o-mini", "max_tokens": 32000,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let sent = &s.openai.received()[0];
    assert_eq!(sent.body["max_tokens"], limit);
}
