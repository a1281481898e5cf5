//! Every field that changes what a call may cost is reserved for or refused, so no request shape spends
//! past a spend cap or a token limit: `n`, two output-limit fields at once, token counts near 2^64,
//! service tiers, hosted tools, audio, provider-stored files. Against an upstream that bills the most
//! each request allows, a concurrent burst of all of them together stays within the cap.

use qnp_tests::{MockOpenAi, TestGateway};
use serde_json::{Value, json};
use time::OffsetDateTime;

const PLANS: &str = r#"[
 {"name":"free","requests_per_minute":1000},
 {"name":"capped","requests_per_minute":100000,"monthly_spend_cap_usd":0.05},
 {"name":"small","requests_per_minute":100000,"monthly_spend_cap_usd":0.01},
 {"name":"metered","requests_per_minute":100000,"tokens_per_minute":1000}
]"#;

struct World {
    gateway: TestGateway,
    upstream: MockOpenAi,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn world() -> World {
    qnp_tests::init_tracing();
    let upstream = MockOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = qnp_tests::test_env(dir.path(), &upstream);
    env.set("QNP_PLANS", PLANS);
    let gateway = TestGateway::start(&env).await;
    World {
        gateway,
        upstream,
        _dir: dir,
        http: qnp_tests::http_client(),
    }
}

impl World {
    async fn call(&self, key: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/chat/completions", self.gateway.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn spent(&self, email: &str) -> f64 {
        let account = self
            .gateway
            .stores
            .records
            .account_by_email(email)
            .await
            .unwrap()
            .unwrap();
        qnp_shared::budget::Budget::new(self.gateway.stores.counters.clone())
            .spent(&account.id, OffsetDateTime::now_utc())
            .await
            .unwrap()
    }

    /// The month's spend counter once every settlement has landed: equal to the rows' costs.
    async fn settled_spend(&self, email: &str, calls: usize) -> f64 {
        let billed: f64 = self
            .gateway
            .usage_calls(email, calls as u64)
            .await
            .iter()
            .map(|r| r.cost_usd)
            .sum();
        let mut spent = 0.0;
        for _ in 0..200 {
            spent = self.spent(email).await;
            if (spent - billed).abs() < 1e-7 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            (spent - billed).abs() < 1e-7,
            "counter {spent} vs rows {billed}"
        );
        spent
    }
}

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "openai/mock-greedy",
        "messages": [{"role": "user", "content": "count to a thousand"}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn n_choices_are_reserved_for_each_choice() {
    let w = world().await;
    let key = w.gateway.create_key("n@example.com", "small").await;
    // 128 choices of 1,000 tokens at $2/M would cost $0.256, far past the $0.01 cap: refused up front
    // (today's code reserved one choice and let it spend 128x).
    let (status, body) = w.call(&key, chat(json!({"n": 128}))).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "spend_cap_reached");
    // Two choices of 100 tokens fit, and the reservation covered what the upstream billed.
    let (status, body) = w.call(&key, chat(json!({"n": 2, "max_tokens": 100}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 200);
    let spent = w.settled_spend("n@example.com", 2).await;
    assert!(spent > 0.0004 && spent <= 0.01, "{spent}");
    for n in [0, 129, 1_000_000] {
        let (status, body) = w.call(&key, chat(json!({"n": n}))).await;
        assert_eq!(status, 400, "n={n}: {body}");
        assert_eq!(body["error"]["param"], "n");
    }
    w.gateway.stop().await;
}

#[tokio::test]
async fn the_larger_of_two_output_limits_is_reserved() {
    let w = world().await;
    qnp_tests::avoid_minute_boundary().await;
    let key = w.gateway.create_key("fields@example.com", "metered").await;
    // 1,000 tokens a minute: max_completion_tokens 0 beside max_tokens 900 must count 900, and a second
    // such call in the same minute does not fit (today's code reserved 0 for both).
    let body = chat(json!({"max_completion_tokens": 0, "max_tokens": 900}));
    let (status, reply) = w.call(&key, body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 900);
    let (status, reply) = w.call(&key, body).await;
    assert_eq!(status, 429, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn a_default_call_is_admitted_and_what_it_used_past_the_minute_carries_into_the_next() {
    let w = world().await;
    qnp_tests::avoid_minute_boundary().await;
    let email = "carry@example.com";
    let key = w.gateway.create_key(email, "metered").await;
    // No max_tokens: admitted on its prompt alone (not the model's 1,000-token output limit), then it
    // generates 1,000 tokens, past the 1,000 a minute.
    let (status, reply) = w.call(&key, chat(json!({}))).await;
    assert_eq!(status, 200, "{reply}");
    let row = w.gateway.usage_rows(email, 1).await.remove(0);
    let used = row.usage.total();
    assert!(used > 1_000, "{used}");
    // The minute holds exactly its limit, the excess waits in the next one (settling is asynchronous).
    let window = OffsetDateTime::now_utc().unix_timestamp().div_euclid(60) * 60;
    let counter = |start: i64| format!("tpm#{}#{start}", row.api_key_id);
    let counters = w.gateway.stores.counters.clone();
    let mut seen = (0, 0);
    for _ in 0..200 {
        seen = (
            counters.get(&counter(window)).await.unwrap(),
            counters.get(&counter(window + 60)).await.unwrap(),
        );
        if seen == (1_000, used - 1_000) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, (1_000, used - 1_000));
    // The full minute refuses the next call, with the time to wait.
    let (status, reply) = w.call(&key, chat(json!({}))).await;
    assert_eq!(status, 429, "{reply}");
    w.gateway.stop().await;
}

#[tokio::test]
async fn an_excess_larger_than_a_minute_fills_minutes_in_turn() {
    // Straight against the counters: a settle that used three and a half minutes' worth of tokens leaves
    // this minute and the next two full and half a minute in the third.
    let dir = tempfile::tempdir().unwrap();
    let counters: std::sync::Arc<dyn qnp_shared::store::CounterStore> =
        std::sync::Arc::new(qnp_shared::store::embedded::EmbeddedStore::open(dir.path()).unwrap());
    let budget = qnp_shared::budget::Budget::new(counters.clone());
    let plan: qnp_shared::plans::Plan = serde_json::from_value(json!(
        {"name": "m", "requests_per_minute": 10, "tokens_per_minute": 1000}
    ))
    .unwrap();
    let now = OffsetDateTime::now_utc();
    let worst = qnp_shared::budget::WorstCase {
        tokens: 100,
        cost_usd: 0.0,
        max_tokens_given: false,
    };
    let reservation = budget
        .reserve("k_long", "acct_long", &plan, None, worst, now)
        .await
        .unwrap();
    budget.settle(&reservation, 3_500, 0.0).await;
    let window = now.unix_timestamp().div_euclid(60) * 60;
    let current = OffsetDateTime::now_utc().unix_timestamp().div_euclid(60) * 60;
    let mut values = Vec::new();
    for start in [
        window,
        current + 60,
        current + 120,
        current + 180,
        current + 240,
    ] {
        values.push(counters.get(&format!("tpm#k_long#{start}")).await.unwrap());
    }
    assert_eq!(values, [1_000, 1_000, 1_000, 500, 0]);
}

#[tokio::test]
async fn token_counts_near_two_to_the_64_are_refused_not_wrapped() {
    let w = world().await;
    let key = w.gateway.create_key("huge@example.com", "metered").await;
    for (field, value) in [
        ("max_tokens", json!(u64::MAX)),
        ("max_tokens", json!(u64::MAX - 5)),
        ("max_completion_tokens", json!(1u64 << 63)),
        ("max_tokens", json!(4_294_967_296u64)),
        ("max_tokens", json!(-1)),
        ("max_tokens", json!(1e30)),
    ] {
        let (status, body) = w.call(&key, chat(json!({ field: value }))).await;
        assert_eq!(status, 400, "{field}={value}: {body}");
        assert_eq!(body["error"]["param"], field, "{body}");
    }
    // Nothing reached the upstream and nothing was reserved.
    assert!(w.upstream.received().is_empty());
    w.gateway.stop().await;
}

#[tokio::test]
async fn fields_the_catalog_cannot_price_are_refused_before_the_upstream() {
    let w = world().await;
    let key = w.gateway.create_key("unpriced@example.com", "free").await;
    let cases = [
        (json!({"service_tier": "priority"}), "service_tier"),
        (json!({"service_tier": "flex"}), "service_tier"),
        (json!({"service_tier": "scale"}), "service_tier"),
        (
            json!({"web_search_options": {"search_context_size": "high"}}),
            "web_search_options",
        ),
        (
            json!({"tools": [{"type": "web_search_preview"}]}),
            "tools[0]",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "file_search"}]}),
            "tools[1]",
        ),
        (
            json!({"audio": {"voice": "alloy", "format": "wav"}}),
            "audio",
        ),
        (json!({"modalities": ["text", "audio"]}), "modalities"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]}),
            "messages[0].content[0]",
        ),
    ];
    for (extra, param) in cases {
        let (status, body) = w.call(&key, chat(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["param"], param, "{extra}: {body}");
    }
    // What the catalog prices still passes: default tiers, function tools, inline images and files.
    for extra in [
        json!({"service_tier": "default"}),
        json!({"service_tier": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERg=="}}]}]}),
    ] {
        let (status, body) = w.call(&key, chat(extra.clone())).await;
        assert_eq!(status, 200, "{extra}: {body}");
    }
    assert_eq!(w.upstream.received().len(), 3);
    w.gateway.stop().await;
}

#[tokio::test]
async fn images_and_documents_are_reserved_at_their_allowance() {
    let w = world().await;
    let key = w.gateway.create_key("images@example.com", "small").await;
    // One document may be billed as 300,000 prompt tokens: $0.30 at $1/M, past the $0.01 cap.
    let document = json!({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERg=="}}]}]});
    let (status, body) = w.call(&key, chat(document)).await;
    assert_eq!(status, 402, "{body}");
    // An image's allowance (6,000 tokens, $0.006) plus a short answer fits.
    let image = json!({"max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let (status, body) = w.call(&key, chat(image)).await;
    assert_eq!(status, 200, "{body}");
    w.gateway.stop().await;
}

#[tokio::test]
async fn a_concurrent_burst_of_every_shape_never_spends_past_the_cap() {
    let w = world().await;
    let email = "burst@example.com";
    let key = w.gateway.create_key(email, "capped").await;
    let shapes = [
        json!({"n": 8, "max_tokens": 300}),
        json!({"max_completion_tokens": 0, "max_tokens": 1000}),
        json!({"max_tokens": 0, "max_completion_tokens": 800}),
        json!({"n": 3}),
        json!({}),
        json!({"max_tokens": u64::MAX}),
        json!({"service_tier": "priority", "max_tokens": 10}),
        json!({"tools": [{"type": "web_search"}]}),
        json!({"n": 128, "max_tokens": 1000}),
        json!({"prediction": {"type": "content", "content": "word word word word"}, "max_tokens": 500}),
    ];
    let requests: Vec<Value> = (0..60)
        .map(|i| chat(shapes[i % shapes.len()].clone()))
        .collect();
    let results =
        futures_util::future::join_all(requests.into_iter().map(|body| w.call(&key, body))).await;
    let admitted = results.iter().filter(|r| r.0 == 200).count();
    for (status, body) in &results {
        assert!(
            [200, 400, 402].contains(status),
            "only answers, refusals for the field or for the cap: {status} {body}"
        );
    }
    assert!(admitted >= 1, "{results:?}");
    assert!(results.iter().any(|r| r.0 == 402), "the cap was reached");
    // The upstream billed the most each admitted call allowed, and the settled spend is still within
    // the cap: every reservation was a true upper bound.
    let spent = w.settled_spend(email, results.len()).await;
    assert!(spent <= 0.05, "spent {spent} of a $0.05 cap");
    assert!(spent > 0.02, "the burst used most of the cap: {spent}");
    w.gateway.stop().await;
}
