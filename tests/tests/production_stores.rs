//! The gateway on its production adapters: records in MongoDB (SecantusDB) and counters in DynamoDB
//! (dynalite), over real HTTP, including the exactness of rate limits under a concurrent burst.

use qnp_tests::{MockOpenAi, TestGateway, test_env};
use serde_json::json;

async fn production_gateway(dir: &std::path::Path, upstream: &MockOpenAi) -> TestGateway {
    TestGateway::production(test_env(dir, upstream)).await
}

#[tokio::test]
async fn calls_are_metered_into_mongodb_and_limited_exactly_by_dynamodb() {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let gateway = production_gateway(dir.path(), &upstream).await;
    let http = qnp_tests::http_client();
    let url = format!("{}/v1/chat/completions", gateway.url);

    let key = gateway.create_key("prod@example.com", "free").await;
    let body =
        json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let response = http
        .post(&url)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "999");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = http
        .post(&url)
        .bearer_auth(&key)
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let rows = gateway.usage_rows("prod@example.com", 2).await;
    assert_eq!(rows.iter().filter(|r| r.streamed).count(), 1);
    assert!(
        rows.iter()
            .all(|r| r.usage.prompt_tokens == 8 && r.cost_usd > 0.0)
    );

    let tiny = gateway.create_key("tiny@example.com", "tiny").await;
    qnp_tests::avoid_minute_boundary().await;
    let statuses: Vec<u16> = futures_util::future::join_all(
        (0..15).map(|_| http.post(&url).bearer_auth(&tiny).json(&body).send()),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap().status().as_u16())
    .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        10,
        "{statuses:?}"
    );
    gateway.stop().await;
}
