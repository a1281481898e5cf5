//! The proxy as Lambda runs it: real-shaped API Gateway v2 and function-URL events from events/, parsed by
//! `lambda_http` and driven through its buffered and streaming adapters, with usage written inline.

use futures_util::StreamExt;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Service, ServiceExt};
use lambda_http::{Context, LambdaEvent};
use qnp_tests::{MockOpenAi, event_fixture, lambda_proxy, test_env, usage_rows};
use serde_json::Value;

fn event(name: &str, key: &str) -> LambdaEvent<LambdaRequest> {
    let payload: LambdaRequest =
        serde_json::from_str(&event_fixture(name, key)).expect("a valid Lambda HTTP event");
    LambdaEvent::new(payload, Context::default())
}

/// Calls the buffered adapter (`lambda_http::run`, used behind API Gateway) and returns the JSON response
/// API Gateway would receive.
async fn invoke(router: &axum::Router, name: &str, key: &str) -> Value {
    let mut adapter = lambda_http::Adapter::from(router.clone());
    let response = adapter
        .ready()
        .await
        .unwrap()
        .call(event(name, key))
        .await
        .unwrap();
    serde_json::to_value(&response).unwrap()
}

#[tokio::test]
async fn api_gateway_events_reach_the_proxy_with_routes_and_source_ip() {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let (router, stores) = lambda_proxy(&test_env(dir.path(), &upstream)).await;
    let key = qnp_tests::create_key(&stores, "lambda@example.com", "free").await;

    // The request fixture itself must parse the way API Gateway's payload does.
    let request = lambda_http::request::from_str(&event_fixture(
        "proxy/apigw-v2-chat-completions.json",
        &key,
    ))
    .unwrap();
    assert_eq!(request.uri().path(), "/v1/chat/completions");

    let response = invoke(&router, "proxy/apigw-v2-chat-completions.json", &key).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(response["headers"]["x-ratelimit-limit-requests"], "1000");

    // Written inline, before the invocation returned: no waiting needed.
    let rows = usage_rows(&stores, "lambda@example.com", 1).await;
    assert_eq!(rows[0].source_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(rows[0].usage.prompt_tokens, 8);

    let models = invoke(&router, "proxy/apigw-v2-models.json", &key).await;
    assert_eq!(models["statusCode"], 200);
    let embeddings = invoke(&router, "proxy/apigw-v2-embeddings.json", &key).await;
    assert_eq!(embeddings["statusCode"], 200, "{embeddings}");

    let malformed = invoke(&router, "proxy/apigw-v2-malformed-json.json", &key).await;
    assert_eq!(malformed["statusCode"], 400);
    let error: Value = serde_json::from_str(malformed["body"].as_str().unwrap()).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let unauthorized = invoke(&router, "proxy/apigw-v2-models.json", "qnp_wrong").await;
    assert_eq!(unauthorized["statusCode"], 401);
    assert_eq!(usage_rows(&stores, "lambda@example.com", 3).await.len(), 3);
}

#[tokio::test]
async fn function_url_streams_events_frame_by_frame_and_records_usage_before_ending() {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let (router, stores) = lambda_proxy(&test_env(dir.path(), &upstream)).await;
    let key = qnp_tests::create_key(&stores, "stream@example.com", "free").await;

    for fixture in [
        "proxy/function-url-chat-completions.json",
        "proxy/apigw-v2-chat-completions-stream.json",
    ] {
        let mut adapter = lambda_http::StreamAdapter::from(router.clone());
        let response = adapter
            .ready()
            .await
            .unwrap()
            .call(event(fixture, &key))
            .await
            .unwrap();
        assert_eq!(response.metadata_prelude.status_code, 200);
        assert_eq!(
            response.metadata_prelude.headers["content-type"],
            "text/event-stream"
        );
        let mut body = response.stream;
        let mut frames = Vec::new();
        while let Some(data) = body.next().await {
            frames.push(String::from_utf8(data.unwrap().to_vec()).unwrap());
        }
        assert!(
            frames.len() >= 4,
            "one frame per upstream event: {frames:?}"
        );
        assert_eq!(frames.last().unwrap(), "data: [DONE]\n\n");
        assert!(
            frames.iter().all(|f| !f.contains("\"usage\":{")),
            "usage chunk withheld: {frames:?}"
        );
    }
    let rows = usage_rows(&stores, "stream@example.com", 2).await;
    assert!(
        rows.iter()
            .all(|r| r.streamed && r.usage.completion_tokens == 2 && r.ttft_ms.is_some())
    );
}
