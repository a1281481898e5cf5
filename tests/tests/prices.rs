//! Exact prices over real HTTP: the service tier a request selects (and the one the answer reports) is
//! the one billed, cache writes are billed by their retention, images by a per-image fee, Anthropic's
//! fast mode at its own rates; a tier or setting the catalog has no price for is refused before anything
//! goes upstream. Each row's cost is checked against a hand computation from the provider's published
//! rates (written out here, not read from the catalog), and against the rates the row records.

use qnp_shared::pricing::ServiceTier;
use qnp_shared::usage::UsageRecord;
use qnp_tests::mock_anthropic::MockAnthropic;
use qnp_tests::{MockOpenAi, TestGateway, UPSTREAM_KEY, test_env};
use serde_json::{Value, json};

struct World {
    gateway: TestGateway,
    openai: MockOpenAi,
    anthropic: MockAnthropic,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let openai = MockOpenAi::start().await;
    let anthropic = MockAnthropic::start().await;
    let mut env = test_env(dir.path(), &openai);
    env.set("QNP_ANTHROPIC_BASE_URL", anthropic.url());
    env.set("ANTHROPIC_API_KEY", UPSTREAM_KEY);
    let gateway = TestGateway::start(&env).await;
    World {
        gateway,
        openai,
        anthropic,
        _dir: dir,
    }
}

impl World {
    async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Option<f64>, Value) {
        let response = qnp_tests::http_client()
            .post(format!("{}{path}", self.gateway.url))
            .bearer_auth(key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let cost = response
            .headers()
            .get("x-qnp-cost-usd")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        (status, cost, response.json().await.unwrap_or(Value::Null))
    }

    async fn chat(&self, key: &str, body: Value) -> (u16, Option<f64>, Value) {
        self.post(key, "/v1/chat/completions", body).await
    }
}

/// A hand computation: per-million rates for fresh input, cache reads, cache writes and output.
fn by_hand(row: &UsageRecord, input: f64, cached: f64, write: f64, output: f64) -> f64 {
    let u = &row.usage;
    let fresh = u.prompt_tokens - u.cached_tokens - u.cache_write_tokens;
    (fresh as f64 * input
        + u.cached_tokens as f64 * cached
        + u.cache_write_tokens as f64 * write
        + u.completion_tokens as f64 * output)
        / 1e6
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there, price me"}]})
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn the_tier_a_request_selects_and_its_answer_reports_is_the_tier_billed() {
    let w = world().await;
    let email = "tiers@example.com";
    let key = w.gateway.create_key(email, "free").await;

    // gpt-6-luna on flex: half the standard rates ($0.05 / $0.005 / $0.25 per million).
    let (status, header, body) = w
        .chat(
            &key,
            with(hello("openai/gpt-6-luna"), json!({"service_tier": "flex"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        w.openai.received().last().unwrap().body["service_tier"],
        "flex"
    );
    // gpt-6.1-terra asked for `priority` (Fast mode's old name): the answer reports `fast`, billed 2×.
    let (status, _, _) = w
        .chat(
            &key,
            with(
                hello("openai/gpt-6.1-terra"),
                json!({"service_tier": "priority"}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    // Asked for fast, served (the answer says) at the default tier: billed standard.
    let (status, _, _) = w
        .chat(
            &key,
            with(
                hello("openai/gpt-6.1-terra"),
                json!({"service_tier": "fast", "metadata": {"mock_served_tier": "default"}}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    // Streamed on flex: the final chunk's cost and the row agree.
    let response = qnp_tests::http_client()
        .post(format!("{}/v1/chat/completions", w.gateway.url))
        .bearer_auth(&key)
        .json(&with(
            hello("openai/gpt-6-luna"),
            json!({"service_tier": "flex", "stream": true, "stream_options": {"include_usage": true}}),
        ))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let streamed_cost = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v["usage"]["cost"].as_f64())
        .expect("the usage chunk carries the cost");

    let rows = w.gateway.usage_rows(email, 4).await;
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by_key(|r| r.timestamp);
    let [flex, fast, downgraded, streamed] = rows.as_slice() else {
        panic!("{rows:#?}")
    };
    let rates = flex.rates.unwrap();
    assert_eq!(rates.service_tier, ServiceTier::Flex);
    assert!(!rates.long_context);
    let expected = by_hand(flex, 0.05, 0.005, 0.0625, 0.25);
    assert!(
        close(flex.cost_usd, expected),
        "{} vs {expected}",
        flex.cost_usd
    );
    assert!(close(header.unwrap(), flex.cost_usd));
    assert!(close(
        body["usage"]["cost"].as_f64().unwrap(),
        flex.cost_usd
    ));

    assert_eq!(fast.rates.unwrap().service_tier, ServiceTier::Fast);
    assert!(close(fast.cost_usd, by_hand(fast, 2.0, 0.1, 2.5, 10.0)));
    assert_eq!(
        downgraded.rates.unwrap().service_tier,
        ServiceTier::Standard
    );
    assert!(close(
        downgraded.cost_usd,
        by_hand(downgraded, 1.0, 0.05, 1.25, 5.0)
    ));
    assert!(streamed.streamed);
    assert_eq!(streamed.rates.unwrap().service_tier, ServiceTier::Flex);
    assert!(close(streamed.cost_usd, streamed_cost));
    assert!(close(
        streamed.cost_usd,
        by_hand(streamed, 0.05, 0.005, 0.0625, 0.25)
    ));

    // A tier the model is not sold at, and a tier no model is: refused, nothing sent upstream.
    let sent = w.openai.received().len();
    for (model, tier) in [
        ("openai/gpt-6.2-sol", "flex"),
        ("openai/gpt-4o-mini", "fast"),
    ] {
        let (status, _, body) = w
            .chat(&key, with(hello(model), json!({"service_tier": tier})))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], "service_tier");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(model) && message.contains(tier),
            "{message}"
        );
    }
    let (status, _, body) = w
        .chat(
            &key,
            with(hello("openai/gpt-6-luna"), json!({"service_tier": "scale"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "service_tier");
    assert_eq!(w.openai.received().len(), sent);
    w.gateway.stop().await;
}

#[tokio::test]
async fn cache_writes_are_billed_by_their_retention_and_images_by_their_fee() {
    let w = world().await;
    let email = "cache@example.com";
    let key = w.gateway.create_key(email, "free").await;
    let writes = json!({"metadata": {"mock_cache_write_tokens": "4"}});
    // Default (in-memory) retention: writes at 1.25× input ($1.25 per million on gpt-6.1-terra).
    let (status, _, body) = w
        .chat(&key, with(hello("openai/gpt-6.1-terra"), writes.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    // Extended retention: every write at 2.5× input ($2.50).
    let (status, _, body) = w
        .chat(
            &key,
            with(
                with(hello("openai/gpt-6.1-terra"), writes),
                json!({"prompt_cache_retention": "24h"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Two images on a model with a $0.01 per-image fee (and $1 / $2 per million tokens).
    let image =
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}});
    let (status, _, body) = w
        .chat(
            &key,
            json!({"model": "openai/mock-vision", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "two pictures"}, image, image]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut rows = w.gateway.usage_rows(email, 3).await;
    rows.sort_by_key(|r| r.timestamp);
    let [short, long, vision] = rows.as_slice() else {
        panic!("{rows:#?}")
    };
    assert_eq!(short.usage.cache_write_tokens, 4);
    assert_eq!(short.usage.cache_write_1h_tokens, 0);
    assert!(close(short.cost_usd, by_hand(short, 1.0, 0.05, 1.25, 5.0)));
    assert_eq!(long.usage.cache_write_1h_tokens, 4);
    assert!(close(long.cost_usd, by_hand(long, 1.0, 0.05, 2.5, 5.0)));
    assert_eq!(long.rates.unwrap().cache_write_1h_per_mtok, 2.5);
    assert_eq!(vision.usage.input_images, 2);
    assert!(close(
        vision.cost_usd,
        by_hand(vision, 1.0, 1.0, 1.0, 2.0) + 2.0 * 0.01
    ));
    assert_eq!(vision.rates.unwrap().input_per_image_usd, 0.01);
    w.gateway.stop().await;
}

#[tokio::test]
async fn anthropic_fast_mode_is_billed_at_its_rates_and_region_pinning_is_refused() {
    let w = world().await;
    let email = "speed@example.com";
    let key = w.gateway.create_key(email, "free").await;
    let message = |model: &str, extra: Value| {
        with(
            json!({"model": model, "max_tokens": 64,
                   "messages": [{"role": "user", "content": "hello there, price me"}]}),
            extra,
        )
    };
    let (status, _, body) = w
        .post(
            &key,
            "/v1/messages",
            message("anthropic/claude-opus-5-5", json!({"speed": "fast"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(w.anthropic.received().last().unwrap().body["speed"], "fast");
    let rows = w.gateway.usage_rows(email, 1).await;
    let row = &rows[0];
    assert_eq!(row.rates.unwrap().service_tier, ServiceTier::Fast);
    // Opus 5.5 fast mode: $8 in, $0.40 cache reads, $10 cache writes, $40 out (twice standard).
    assert!(
        close(row.cost_usd, by_hand(row, 8.0, 0.4, 10.0, 40.0)),
        "{row:?}"
    );

    let sent = w.anthropic.received().len();
    let (status, _, body) = w
        .post(
            &key,
            "/v1/messages",
            message("anthropic/claude-sonnet-5-5", json!({"speed": "fast"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("fast"));
    let (status, _, body) = w
        .post(
            &key,
            "/v1/messages",
            message("anthropic/claude-opus-5-5", json!({"inference_geo": "us"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inference_geo")
    );
    assert_eq!(w.anthropic.received().len(), sent);
    w.gateway.stop().await;
}
