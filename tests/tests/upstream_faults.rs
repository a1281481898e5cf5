//! Upstream faults are contained: an SSE line that never ends, a whole body that never ends and events
//! that are not JSON each give the client a clean answer (an error event or status in its dialect; on the
//! chat route, which forwards OpenAI's events byte for byte, the answer as the upstream sent it), the
//! call a usage row, and the process a bounded buffer
//! (`sse::MAX_EVENT_BYTES` per stream, `upstream::MAX_REPLY_BYTES` per whole reply). Resets, stalls and
//! slow drips are covered in proxy.rs and slow_clients.rs.

use qnp_tests::{MockOpenAi, TestGateway, test_env};
use serde_json::{Value, json};

struct World {
    gateway: TestGateway,
    _upstream: MockOpenAi,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let mut env = test_env(dir.path(), &upstream);
    // A stream may run two seconds here, so one that drips forever is cut within the test.
    env.set("QNP_UPSTREAM_STREAM_MAX_SECS", "2");
    let gateway = TestGateway::start(&env).await;
    World {
        gateway,
        _upstream: upstream,
        _dir: dir,
    }
}

async fn post(w: &World, key: &str, path: &str, body: Value) -> (u16, String) {
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        qnp_tests::http_client()
            .post(format!("{}{path}", w.gateway.url))
            .bearer_auth(key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send(),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap();
    let status = response.status().as_u16();
    let text = tokio::time::timeout(std::time::Duration::from_secs(60), response.text())
        .await
        .expect("the body ends")
        .unwrap();
    (status, text)
}

#[tokio::test]
async fn an_endless_line_or_body_is_cut_with_a_clean_error_and_billed() {
    let w = world().await;
    let email = "faults@example.com";
    let key = w.gateway.create_key(email, "free").await;

    // A stream whose third event never ends: the client has the first words, then an error event.
    let (status, text) = post(
        &w,
        &key,
        "/v1/chat/completions",
        json!({"model": "openai/mock-longline", "stream": true,
               "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("\"content\":\"echo:\""),
        "{}",
        &text[..text.len().min(500)]
    );
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .unwrap();
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["type"], "upstream_error", "{last}");
    // Nothing of the endless line reached the client.
    assert!(text.len() < 10_000, "{} bytes", text.len());

    // A whole answer whose body never ends: 502, not a process that fills its memory.
    let (status, text) = post(
        &w,
        &key,
        "/v1/chat/completions",
        json!({"model": "openai/mock-bigbody", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 502, "{}", &text[..text.len().min(300)]);
    assert!(text.contains("upstream_error"));

    let rows = w.gateway.usage_rows(email, 2).await;
    for row in &rows {
        assert_eq!(row.error_type.as_deref(), Some("upstream_error"), "{row:?}");
    }
    let streamed = rows.iter().find(|r| r.streamed).unwrap();
    // Billed for what the client was given: the prompt and the words before the cut, estimated.
    assert!(streamed.usage.completion_tokens > 0, "{streamed:?}");
    w.gateway.stop().await;
}

#[tokio::test]
async fn events_that_are_not_json_end_a_translated_stream_cleanly() {
    let w = world().await;
    let email = "garbage@example.com";
    let key = w.gateway.create_key(email, "free").await;
    // Through the Anthropic dialect, which parses every chunk to translate it.
    let (status, text) = post(
        &w,
        &key,
        "/v1/messages",
        json!({"model": "openai/mock-garbage", "max_tokens": 64, "stream": true,
               "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // What came before the bad event, then Anthropic's own error event: never a torn or hung stream.
    assert!(text.contains("echo:"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\n"), "{text}");
    let error: Value = serde_json::from_str(last.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(error["error"]["type"], "api_error");
    // Passed through as OpenAI wrote them on the chat route: the answer still ends and is metered.
    let (status, text) = post(
        &w,
        &key,
        "/v1/chat/completions",
        json!({"model": "openai/mock-garbage", "stream": true,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let rows = w.gateway.usage_rows(email, 2).await;
    let translated = rows.iter().find(|r| r.endpoint == "/v1/messages").unwrap();
    assert_eq!(
        translated.error_type.as_deref(),
        Some("upstream_error"),
        "{translated:?}"
    );
    assert!(
        translated.usage.total() > 0,
        "billed for what was used: {translated:?}"
    );
    let passed = rows
        .iter()
        .find(|r| r.endpoint == "/v1/chat/completions")
        .unwrap();
    assert_eq!(
        (passed.status, passed.error_type.as_deref()),
        (200, None),
        "{passed:?}"
    );
    assert!(
        !passed.usage.estimated && passed.usage.total() > 0,
        "{passed:?}"
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn a_stream_that_drips_forever_is_cut_at_its_time_limit() {
    let w = world().await;
    let email = "endless@example.com";
    let key = w.gateway.create_key(email, "free").await;
    let started = std::time::Instant::now();
    let (status, text) = post(
        &w,
        &key,
        "/v1/chat/completions",
        json!({"model": "openai/mock-endless", "stream": true,
               "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(6),
        "{took:?}"
    );
    assert!(
        text.contains(" more"),
        "the chunks before the cut arrived: {text}"
    );
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .next_back()
        .unwrap();
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["type"], "upstream_timeout", "{last}");
    let row = &w.gateway.usage_rows(email, 1).await[0];
    assert_eq!(row.error_type.as_deref(), Some("upstream_timeout"));
    assert!(
        row.usage.completion_tokens > 0,
        "billed for what was sent: {row:?}"
    );
    w.gateway.stop().await;
}
