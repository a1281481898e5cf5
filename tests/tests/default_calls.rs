//! The free plan admits the calls SDKs and agents make by default (no `max_tokens`): a fresh key on the
//! bundled free plan (20 requests and 40,000 tokens a minute, $1 a month) calls every chat model of the
//! bundled catalog three times in a row and three times at once, and none is refused. Models whose
//! worst case at their own output limit is more than the month can spare get an output limit instead,
//! carried upstream and announced in `x-qnp-max-output-tokens`.

use qnp_shared::catalog::{Catalog, ModelKind};
use qnp_tests::mock_anthropic::MockAnthropic;
use qnp_tests::mock_gemini::MockGemini;
use qnp_tests::{MockOpenAi, TestGateway, UPSTREAM_KEY, test_env};
use serde_json::{Value, json};

async fn call(gateway: &TestGateway, key: &str, model: &str) -> (u16, Option<u64>, Value) {
    let response = qnp_tests::http_client()
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let capped = response
        .headers()
        .get("x-qnp-max-output-tokens")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, capped, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_fresh_free_key_makes_default_calls_to_every_chat_model() {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let openai = MockOpenAi::start().await;
    let anthropic = MockAnthropic::start().await;
    let gemini = MockGemini::start().await;
    let mut env = test_env(dir.path(), &openai);
    env.set("QNP_PLANS", qnp_shared::plans::BUNDLED);
    env.set("QNP_ANTHROPIC_BASE_URL", anthropic.url());
    env.set("ANTHROPIC_API_KEY", UPSTREAM_KEY);
    env.set("QNP_GEMINI_BASE_URL", gemini.url());
    env.set("GEMINI_API_KEY", UPSTREAM_KEY);
    let gateway = TestGateway::start(&env).await;
    qnp_tests::avoid_minute_boundary().await;
    let catalog = Catalog::bundled();
    let chat_models: Vec<_> = catalog
        .models()
        .iter()
        .filter(|m| m.kind == ModelKind::Chat)
        .collect();
    assert!(chat_models.len() >= 10);
    let mut caps = Vec::new();
    for model in chat_models {
        // A fresh account per model: its own month of the free plan's cap.
        let email = format!("free-{}@example.com", model.id.replace('/', "-"));
        let key = gateway.create_key(&email, "free").await;
        let mut results = Vec::new();
        for _ in 0..3 {
            results.push(call(&gateway, &key, &model.id).await);
        }
        results.extend(
            futures_util::future::join_all((0..3).map(|_| call(&gateway, &key, &model.id))).await,
        );
        for (status, capped, body) in &results {
            assert_eq!(*status, 200, "{}: {body}", model.id);
            if let Some(cap) = capped {
                // At least the gateway's floor for a usable answer (1,024), at most the model's limit.
                assert!(
                    (1024..=model.output_limit()).contains(cap),
                    "{}: {cap}",
                    model.id
                );
                caps.push((model.clone(), *cap));
            }
        }
    }
    assert!(
        !caps.is_empty(),
        "the dearer models' worst case is more than the free plan can spare"
    );
    // A capped call carries its limit upstream, where the provider enforces it.
    for (model, cap) in caps.iter().filter(|(m, _)| m.id.starts_with("openai/")) {
        assert!(
            openai
                .received()
                .iter()
                .any(|r| r.body["model"] == model.upstream_model
                    && r.body["max_completion_tokens"] == *cap),
            "{}: {cap}",
            model.id
        );
    }
    for (model, cap) in caps.iter().filter(|(m, _)| m.id.starts_with("anthropic/")) {
        assert!(
            anthropic
                .received()
                .iter()
                .any(|r| r.body["model"] == model.upstream_model && r.body["max_tokens"] == *cap),
            "{}: {cap}",
            model.id
        );
    }
    // The usage row records the limit the gateway set, as the header announced it.
    for (model, cap) in &caps {
        let email = format!("free-{}@example.com", model.id.replace('/', "-"));
        let rows = gateway.usage_rows(&email, 6).await;
        assert!(
            rows.iter().any(|r| r.output_cap_tokens == Some(*cap)),
            "{}: no row records the output cap {cap}: {:?}",
            model.id,
            rows.iter().map(|r| r.output_cap_tokens).collect::<Vec<_>>()
        );
    }
    gateway.stop().await;
}
