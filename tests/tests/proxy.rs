//! The OpenAI-compatible API end to end over real HTTP: client → gateway (embedded store) → mock upstream.

use futures_util::StreamExt;
use qnp_tests::{MockOpenAi, TestGateway, init_tracing, test_env};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Setup {
    _dir: tempfile::TempDir,
    upstream: MockOpenAi,
    gateway: TestGateway,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let gateway = TestGateway::start(&test_env(dir.path(), &upstream)).await;
    Setup {
        _dir: dir,
        upstream,
        gateway,
        http: qnp_tests::http_client(),
    }
}

impl Setup {
    fn post(&self, path: &str, key: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.gateway.url))
            .bearer_auth(key)
            .json(&body)
    }
}

fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]})
}

async fn error_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert!(
        body["error"]["message"].is_string(),
        "OpenAI error shape: {body}"
    );
    assert!(
        body["error"]["type"].is_string(),
        "OpenAI error shape: {body}"
    );
    (status, body)
}

/// Reads an SSE body to the end, returning each event's data payload.
async fn sse_events(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn chat_completion_is_forwarded_metered_and_priced() {
    let s = setup().await;
    let key = s.gateway.create_key("alice@example.com", "free").await;
    let response = s
        .post(
            "/v1/chat/completions",
            &key,
            chat_body("openai/gpt-4o-mini", "hello there"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-limit-requests"], "1000");
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "999");
    assert!(
        response.headers()["x-ratelimit-reset-requests"]
            .to_str()
            .unwrap()
            .ends_with('s')
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let cost_header: f64 = response.headers()["x-qnp-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let version_header = response.headers()["x-qnp-price-version"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: hello there"
    );
    assert_eq!(body["usage"]["prompt_tokens"], 11);
    assert_eq!(
        body["model"], "openai/gpt-4o-mini",
        "the answer names the model asked for, not the upstream's name for it"
    );

    // The upstream saw its own model name and credential, never the client's key.
    let received = s.upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body["model"], "gpt-4o-mini");
    assert_eq!(received[0].body["messages"][1]["content"], "hello there");
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {}", qnp_tests::UPSTREAM_KEY).as_str())
    );
    assert!(received[0].body.get("stream_options").is_none());

    let rows = s.gateway.usage_rows("alice@example.com", 1).await;
    let row = &rows[0];
    assert_eq!(row.request_id, request_id);
    assert_eq!(row.endpoint, "/v1/chat/completions");
    assert_eq!(
        (row.provider.as_str(), row.model.as_str()),
        ("openai", "openai/gpt-4o-mini")
    );
    assert!(!row.streamed);
    assert_eq!(row.status, 200);
    assert_eq!(row.usage.prompt_tokens, 11);
    assert_eq!(row.usage.completion_tokens, 3);
    assert_eq!(row.usage.cached_tokens, 2);
    assert_eq!(row.usage.reasoning_tokens, 1);
    assert_eq!(row.source_ip.as_deref(), Some("127.0.0.1"));
    assert!(row.ttft_ms.is_none());
    assert!(row.error_type.is_none());
    let model = qnp_shared::catalog::Catalog::bundled()
        .get("openai/gpt-4o-mini")
        .unwrap()
        .clone();
    let expected = (9.0 * model.input_per_mtok
        + 2.0 * model.cached_input_per_mtok.unwrap()
        + 3.0 * model.output_per_mtok)
        / 1e6;
    assert!(
        (row.cost_usd - expected).abs() < 1e-12,
        "{} vs {expected}",
        row.cost_usd
    );
    assert!(
        row.price_version.starts_with("2026-"),
        "{}",
        row.price_version
    );
    // The answer told the caller the same cost, in its usage and in headers.
    // The same figure (JSON numbers are read back to within an ulp).
    assert!((body["usage"]["cost"].as_f64().unwrap() - row.cost_usd).abs() <= 1e-15);
    assert_eq!(body["usage"]["price_version"], row.price_version.as_str());
    assert!((cost_header - row.cost_usd).abs() <= 1e-15);
    assert_eq!(version_header, row.price_version);

    // The call's row by its request id, for its own account only.
    let lookup = |key: String, query: String| {
        let http = s.http.clone();
        let url = format!("{}/v1/generation{query}", s.gateway.url);
        async move { http.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let found = lookup(key.clone(), format!("?id={request_id}")).await;
    assert_eq!(found.status(), 200);
    let generation: Value = found.json().await.unwrap();
    let data = &generation["data"];
    assert_eq!(data["id"], request_id.as_str());
    assert_eq!(data["model"], "openai/gpt-4o-mini");
    assert_eq!(data["tokens_prompt"], 11);
    assert_eq!(data["tokens_completion"], 3);
    assert_eq!(data["tokens_cached"], 2);
    assert_eq!(data["total_cost"].as_f64().unwrap(), row.cost_usd);
    assert_eq!(data["streamed"], false);
    assert_eq!(data["cancelled"], false);
    assert!(data["latency_ms"].is_u64());
    let other = s.gateway.create_key("mallory@example.com", "free").await;
    let (status, _) = error_of(lookup(other, format!("?id={request_id}")).await).await;
    assert_eq!(status, 404, "another account's call is not found");
    let (status, body) = error_of(lookup(key.clone(), String::new()).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "id");
    let (status, _) = error_of(lookup(key.clone(), "?id=req_unknown".into()).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn stream_without_usage_request_is_metered_but_usage_chunk_is_withheld() {
    let s = setup().await;
    let key = s.gateway.create_key("bob@example.com", "free").await;
    let mut body = chat_body("openai/gpt-4o-mini", "one two three");
    body["stream"] = json!(true);
    let response = s
        .post("/v1/chat/completions", &key, body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(response).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c["usage"].is_null()),
        "no usage reaches a client that did not ask"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: one two three");

    // The gateway asked the upstream for usage anyway.
    assert_eq!(
        s.upstream.received()[0].body["stream_options"]["include_usage"],
        true
    );
    let row = &s.gateway.usage_rows("bob@example.com", 1).await[0];
    assert!(row.streamed);
    assert_eq!(row.usage.prompt_tokens, 12);
    assert_eq!(row.usage.completion_tokens, 4);
    assert!(row.ttft_ms.is_some());
    assert!(row.ttft_ms.unwrap() <= row.latency_ms);
    assert!(row.cost_usd > 0.0);
}

#[tokio::test]
async fn stream_with_usage_request_passes_the_usage_chunk() {
    let s = setup().await;
    let key = s.gateway.create_key("carol@example.com", "free").await;
    let mut body = chat_body("openai/gpt-4o-mini", "a b");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true, "include_obfuscation": false});
    let events = sse_events(
        s.post("/v1/chat/completions", &key, body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 11);
    let row = &s.gateway.usage_rows("carol@example.com", 1).await[0];
    assert_eq!(row.usage.completion_tokens, 3);
    assert!((usage_chunk["usage"]["cost"].as_f64().unwrap() - row.cost_usd).abs() <= 1e-15);
    assert_eq!(usage_chunk["model"], "openai/gpt-4o-mini");
    assert_eq!(
        s.upstream.received()[0].body["stream_options"],
        json!({"include_usage": true, "include_obfuscation": false}),
        "the client's other stream options survive"
    );
}

#[tokio::test]
async fn stream_chunks_arrive_before_the_upstream_finishes() {
    let s = setup().await;
    let key = s.gateway.create_key("dave@example.com", "free").await;
    let mut body = chat_body("openai/mock-endless", "go");
    body["stream"] = json!(true);
    let response = s
        .post("/v1/chat/completions", &key, body)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    // The upstream never finishes; seeing several chunks proves they are forwarded as they arrive.
    let mut seen = 0;
    while seen < 4 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(2), stream.next())
            .await
            .expect("a chunk within 2 s")
            .unwrap()
            .unwrap();
        seen += chunk.windows(6).filter(|w| w == b"data: ").count();
    }
    drop(stream);
    // The client went away; the call is still recorded, and says so.
    let row = &s.gateway.usage_rows("dave@example.com", 1).await[0];
    assert_eq!(row.error_type.as_deref(), Some("client_disconnected"));
    assert!(row.streamed);
}

#[tokio::test]
async fn a_client_that_hangs_up_is_billed_for_what_was_generated_after() {
    let s = setup().await;
    let key = s.gateway.create_key("quitter@example.com", "free").await;
    let mut body = chat_body("openai/mock-chatty", "talk");
    body["stream"] = json!(true);
    let response = s
        .post("/v1/chat/completions", &key, body)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(std::time::Duration::from_secs(2), stream.next())
        .await
        .expect("a chunk within 2 s");
    assert!(first.is_some());
    let hung_up = std::time::Instant::now();
    drop(stream);
    // The upstream keeps generating 40 bytes of text every 10 ms and never reports usage; the gateway
    // reads on for its drain time (1 s here), then stops, and bills everything read: about 100 chunks
    // of ten tokens' worth each, not the one chunk the client saw (nor the chunks' JSON framing).
    let row = &s.gateway.usage_rows("quitter@example.com", 1).await[0];
    assert!(
        hung_up.elapsed() < std::time::Duration::from_secs(4),
        "the drain is bounded"
    );
    assert_eq!(row.error_type.as_deref(), Some("client_disconnected"));
    assert!(
        row.usage.estimated,
        "no provider count: an estimate, flagged"
    );
    assert!(
        (400..=1_500).contains(&row.usage.completion_tokens),
        "billed {} completion tokens",
        row.usage.completion_tokens
    );
    assert!(row.cost_usd > 0.0);
}

#[tokio::test]
async fn embeddings_and_models() {
    let s = setup().await;
    let key = s.gateway.create_key("erin@example.com", "free").await;
    let response = s
        .post(
            "/v1/embeddings",
            &key,
            json!({"model": "openai/text-embedding-3-small", "input": ["a b c", "d"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        s.upstream.received()[0].body["model"],
        "text-embedding-3-small"
    );
    let row = &s.gateway.usage_rows("erin@example.com", 1).await[0];
    assert_eq!(row.endpoint, "/v1/embeddings");
    assert_eq!(row.usage.prompt_tokens, 4);
    assert!(row.cost_usd > 0.0);

    let response = s
        .http
        .get(format!("{}/v1/models", s.gateway.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .contains_key("x-ratelimit-remaining-requests")
    );
    let list: Value = response.json().await.unwrap();
    let models = list["data"].as_array().unwrap();
    let gpt = models
        .iter()
        .find(|m| m["id"] == "openai/gpt-4o-mini")
        .unwrap();
    assert!(gpt["context_length"].as_u64().unwrap() > 0);
    assert!(gpt["pricing"]["input"].as_f64().unwrap() > 0.0);
    // A model with tiers and a long-context rule lists both, so a client can see what a field costs.
    let luna = models
        .iter()
        .find(|m| m["id"] == "openai/gpt-6-luna")
        .unwrap();
    assert_eq!(
        luna["pricing"]["service_tiers"]["flex"]["input_per_mtok"],
        0.05
    );
    assert_eq!(
        luna["pricing"]["long_context"]["above_prompt_tokens"],
        272_000
    );
    // Only OpenAI has a credential here: models that could only answer 503 are not offered.
    for (prefix, listed) in [("openai/", true), ("anthropic/", false), ("google/", false)] {
        assert_eq!(
            models
                .iter()
                .any(|m| m["id"].as_str().unwrap().starts_with(prefix)),
            listed,
            "{prefix}"
        );
    }
    // `models.retrieve`: by id (a slash in the path, or encoded), alias or bare name.
    for path in ["openai/gpt-4o-mini", "openai%2Fgpt-4o-mini", "gpt-4o-mini"] {
        let response = s
            .http
            .get(format!("{}/v1/models/{path}", s.gateway.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let model: Value = response.json().await.unwrap();
        assert_eq!(model["id"], "openai/gpt-4o-mini", "{path}");
        assert_eq!(model["object"], "model");
    }
    for path in ["openai/gpt-9-imaginary", "google/gemini-2.5-flash"] {
        let (status, body) = error_of(
            s.http
                .get(format!("{}/v1/models/{path}", s.gateway.url))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "model_not_found");
    }
    // A bare name works wherever a model is named, and the row records the catalog's id.
    let response = s
        .post(
            "/v1/chat/completions",
            &key,
            chat_body("gpt-4o-mini", "bare name"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], "gpt-4o-mini", "answered as asked");
    assert_eq!(
        s.upstream.received().last().unwrap().body["model"],
        "gpt-4o-mini"
    );
    let rows = s.gateway.usage_rows("erin@example.com", 2).await;
    assert!(
        rows.iter()
            .any(|r| r.endpoint == "/v1/chat/completions" && r.model == "openai/gpt-4o-mini")
    );
    let unauthenticated = s
        .http
        .get(format!("{}/v1/models", s.gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_are_never_forwarded() {
    let s = setup().await;
    let key = s.gateway.create_key("frank@example.com", "free").await;
    let url = format!("{}/v1/chat/completions", s.gateway.url);

    let malformed = s
        .http
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(r#"{"model": "openai/gpt-4o-mini", "messages": ["#)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(malformed).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let (status, body) = error_of(
        s.post(
            "/v1/chat/completions",
            &key,
            json!({"model": "openai/gpt-4o-mini"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "messages");

    let (status, body) = error_of(
        s.post(
            "/v1/chat/completions",
            &key,
            json!({"messages": [{"role":"user","content":"x"}]}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "model");

    let mut wrong_type = chat_body("openai/gpt-4o-mini", "x");
    wrong_type["stream"] = json!("yes");
    let (status, body) = error_of(
        s.post("/v1/chat/completions", &key, wrong_type)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "stream");

    let (status, body) = error_of(
        s.post(
            "/v1/chat/completions",
            &key,
            chat_body("openai/gpt-9-imaginary", "x"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "as OpenAI answers a model that does not exist");
    // A model name is input: the error names it, but never more than 200 characters of it.
    let long = format!("openai/{}", "x".repeat(100_000));
    let (status, long_body) = error_of(
        s.post("/v1/chat/completions", &key, chat_body(&long, "x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(long_body["error"]["message"].as_str().unwrap().len() < 500);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GET /v1/models")
    );

    let (status, _) = error_of(
        s.post(
            "/v1/chat/completions",
            &key,
            chat_body("openai/text-embedding-3-small", "x"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = error_of(
        s.post(
            "/v1/embeddings",
            &key,
            json!({"model": "openai/text-embedding-3-small"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "input");

    // Over the configured limit (8 MiB by default): refused before any upstream call.
    let huge = "x".repeat(9 * 1024 * 1024);
    let (status, body) = error_of(
        s.post(
            "/v1/chat/completions",
            &key,
            chat_body("openai/gpt-4o-mini", &huge),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["type"], "request_too_large");

    let (status, _) = error_of(
        s.http
            .get(format!("{}/v1/nope", s.gateway.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = error_of(s.http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, 405);

    assert!(
        s.upstream.received().is_empty(),
        "nothing invalid reached the upstream"
    );
    // Refusals after authentication are metered as failures with their error type.
    let rows = s.gateway.usage_calls("frank@example.com", 9).await;
    assert!(
        rows.iter()
            .all(|r| r.status >= 400 && r.error_type.is_some() && r.cost_usd == 0.0)
    );
    assert!(
        rows.iter()
            .any(|r| r.status == 413 && r.error_type.as_deref() == Some("request_too_large"))
    );
}

#[tokio::test]
async fn a_storm_of_refusals_costs_bounded_storage_and_is_still_counted() {
    let s = setup().await;
    qnp_tests::avoid_minute_boundary().await;
    let key = s.gateway.create_key("storm@example.com", "tiny").await;
    let body = chat_body("openai/gpt-4o-mini", "hi");
    // 5 requests a minute: 300 at once are 5 answers and 295 refusals.
    let statuses: Vec<u16> = futures_util::future::join_all(
        (0..300).map(|_| s.post("/v1/chat/completions", &key, body.clone()).send()),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap().status().as_u16())
    .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 295);
    // Stored: the five calls, the first refusal, and one row summing up the rest of the minute's.
    let rows = s.gateway.usage_calls("storm@example.com", 300).await;
    assert_eq!(rows.len(), 7, "{rows:#?}");
    let refused: Vec<_> = rows.iter().filter(|r| r.status == 429).collect();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused.iter().map(|r| r.count).sum::<u64>(), 295);
    assert!(
        refused
            .iter()
            .all(|r| r.error_type.as_deref() == Some("rate_limit_exceeded"))
    );
    // The dashboard's totals count every call.
    let account = s
        .gateway
        .stores
        .records
        .account_by_email("storm@example.com")
        .await
        .unwrap()
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let totals = s
        .gateway
        .stores
        .records
        .usage_totals(
            &account.id,
            None,
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(totals.iter().map(|t| t.requests).sum::<u64>(), 300);
}

#[tokio::test]
async fn an_upstream_rate_limit_reaches_the_client_without_the_providers_words() {
    let s = setup().await;
    let key = s.gateway.create_key("limited@example.com", "free").await;
    let response = s
        .post(
            "/v1/chat/completions",
            &key,
            chat_body("openai/mock-429", "hi"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "7");
    let (status, body) = error_of(response).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "upstream_rate_limited");
    let text = body.to_string();
    assert!(
        !text.contains("org-OPERATOR123") && !text.contains("200000"),
        "{text}"
    );
    let row = &s.gateway.usage_rows("limited@example.com", 1).await[0];
    assert_eq!(row.error_type.as_deref(), Some("upstream_rate_limited"));
}

#[tokio::test]
async fn missing_bad_and_revoked_keys_get_401() {
    let s = setup().await;
    let body = chat_body("openai/gpt-4o-mini", "x");
    let (status, err) = error_of(
        s.http
            .post(format!("{}/v1/chat/completions", s.gateway.url))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(err["error"]["message"].as_str().unwrap().contains("Bearer"));

    for bad in [
        "sk-not-ours",
        "qnp_abcdefghijklmnop_0123456789012345678901234567890123456789",
    ] {
        let (status, err) = error_of(
            s.post("/v1/chat/completions", bad, body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(err["error"]["code"], "invalid_api_key");
    }
    // Right key id, wrong secret.
    let key = s.gateway.create_key("gina@example.com", "free").await;
    let forged = format!("{}{}", &key[..key.len() - 4], "AAAA");
    let (status, _) = error_of(
        s.post("/v1/chat/completions", &forged, body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        s.post("/v1/chat/completions", &key, body.clone())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(s.upstream.received().len() == 1);
}

#[tokio::test]
async fn revocation_reaches_a_warm_process_within_the_cache_lifetime() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let mut env = test_env(dir.path(), &upstream);
    env.set("QNP_KEY_CACHE_SECS", "1");
    let gateway = TestGateway::start(&env).await;
    let http = qnp_tests::http_client();
    let key = gateway.create_key("hank@example.com", "free").await;
    let send = || {
        http.post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(&key)
            .json(&chat_body("openai/gpt-4o-mini", "x"))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let (key_id, _) = qnp_shared::keys::parse(&key).unwrap();
    assert!(
        gateway
            .stores
            .records
            .revoke_key(key_id, time::OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, err) = error_of(send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"]["code"], "revoked_api_key");
}

#[tokio::test]
async fn rate_limit_admits_exactly_the_plan_under_a_concurrent_burst() {
    let s = setup().await;
    let key = s.gateway.create_key("ivy@example.com", "tiny").await;
    let body = chat_body("openai/gpt-4o-mini", "x");
    qnp_tests::avoid_minute_boundary().await;
    let responses = futures_util::future::join_all(
        (0..12).map(|_| s.post("/v1/chat/completions", &key, body.clone()).send()),
    )
    .await;
    let mut ok = 0;
    let mut limited = 0;
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                let retry: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                // Sliding window: once this minute has ended, its requests still count in proportion,
                // so the first free slot is up to one slot's worth (60 s / 5) after the minute ends.
                assert!((1..=72).contains(&retry), "{retry}");
                assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "0");
                assert_eq!(response.headers()["x-ratelimit-limit-requests"], "5");
                let (_, err) = error_of(response).await;
                assert_eq!(err["error"]["type"], "rate_limit_exceeded");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (5, 7));
    assert_eq!(s.upstream.received().len(), ok);
}

#[tokio::test]
async fn upstream_failures_map_to_clear_statuses_without_upstream_detail() {
    let s = setup().await;
    let key = s.gateway.create_key("jack@example.com", "free").await;

    let (status, body) = error_of(
        s.post(
            "/v1/chat/completions",
            &key,
            chat_body("openai/mock-400", "x"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens is too large")
    );
    assert_eq!(body["error"]["code"], "invalid_value");

    for model in ["openai/mock-500", "openai/mock-401"] {
        let response = s
            .post("/v1/chat/completions", &key, chat_body(model, "x"))
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"]["type"], "upstream_error", "{model}");
        for secret in ["hunter2", "sk-", "stack trace", "Incorrect API key"] {
            assert!(!text.contains(secret), "{model} leaked {secret}: {text}");
        }
    }
    let (status, body) = error_of(
        s.post(
            "/v1/chat/completions",
            &key,
            chat_body("openai/mock-slow", "x"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["type"], "upstream_timeout");

    let rows = s.gateway.usage_rows("jack@example.com", 4).await;
    let statuses: Vec<u16> = rows.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 502).count(), 2);
    assert!(statuses.contains(&400) && statuses.contains(&504));
}

#[tokio::test]
async fn a_stream_that_drops_mid_way_ends_with_an_error_event_and_is_recorded() {
    let s = setup().await;
    let key = s.gateway.create_key("kate@example.com", "free").await;
    let mut body = chat_body("openai/mock-drop", "alpha beta gamma delta");
    body["stream"] = json!(true);
    let response = s
        .post("/v1/chat/completions", &key, body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error");
    assert!(
        events.len() >= 3,
        "content before the drop was forwarded: {events:?}"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let row = &s.gateway.usage_rows("kate@example.com", 1).await[0];
    assert_eq!(row.error_type.as_deref(), Some("upstream_error"));
    assert!(row.ttft_ms.is_some());
}

#[tokio::test]
async fn providers_without_credentials_answer_503_naming_the_variable() {
    let s = setup().await;
    let key = s.gateway.create_key("liam@example.com", "free").await;
    let model = qnp_shared::catalog::Catalog::bundled()
        .models()
        .iter()
        .find(|m| m.provider == qnp_shared::catalog::ProviderKind::Anthropic)
        .unwrap()
        .id
        .clone();
    let (status, body) = error_of(
        s.post("/v1/chat/completions", &key, chat_body(&model, "x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ANTHROPIC_API_KEY")
    );
}

#[tokio::test]
async fn a_burst_of_first_requests_verifies_the_key_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let config = qnp_shared::config::Config::from_env(&test_env(dir.path(), &upstream)).unwrap();
    let stores = qnp_shared::store::Stores::from_config(&config)
        .await
        .unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    let counting = qnp_shared::store::Stores {
        keys: Arc::new(qnp_tests::CountingKeyReads {
            inner: stores.keys.clone(),
            reads: reads.clone(),
        }),
        ..stores.clone()
    };
    let gateway = TestGateway::start_with(config, counting).await;
    let key = gateway.create_key("mia@example.com", "free").await;
    let http = qnp_tests::http_client();
    let responses = futures_util::future::join_all((0..40).map(|_| {
        http.get(format!("{}/v1/models", gateway.url))
            .bearer_auth(&key)
            .send()
    }))
    .await;
    assert!(responses.into_iter().all(|r| r.unwrap().status() == 200));
    // One store read (and so one bcrypt) for 40 concurrent first requests; the rest hit the cache.
    assert_eq!(reads.load(Ordering::SeqCst), 1);
}
