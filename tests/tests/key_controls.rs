//! Per-key controls and rotation end to end, over real HTTP: set at creation and changed later through
//! `/keys` with a session, enforced by the proxy (expiry, model allowlist, requests per minute, monthly
//! spend limit), each refusal naming its control; exact under a concurrent burst on the embedded store
//! and on the production adapters (MongoDB records, DynamoDB counters); a rotated key's old secret
//! working through its grace period and not after.

use qnp_shared::sessions::{SESSION_COOKIE, Sessions};
use qnp_tests::{MockOpenAi, TestGateway, test_env};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The session secret `TestGateway` falls back to when none is configured.
const SESSION_SECRET: &str = "test-session-secret-0123456789abcdef";

struct World {
    _dir: tempfile::TempDir,
    _upstream: MockOpenAi,
    gateway: TestGateway,
    http: reqwest::Client,
}

async fn world(production: bool) -> World {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let env = test_env(dir.path(), &upstream);
    let gateway = if production {
        TestGateway::production(env).await
    } else {
        TestGateway::start(&env).await
    };
    World {
        _dir: dir,
        _upstream: upstream,
        gateway,
        http: qnp_tests::http_client(),
    }
}

/// A signed-in user of the dashboard: a session cookie for the account with this email.
struct User {
    cookie: String,
}

impl World {
    async fn user(&self, email: &str) -> User {
        let account = self
            .gateway
            .stores
            .records
            .account_for_email(email, "free")
            .await
            .unwrap();
        let token =
            Sessions::new(SESSION_SECRET.as_bytes()).issue(&account, OffsetDateTime::now_utc());
        User {
            cookie: format!("{SESSION_COOKIE}={token}"),
        }
    }

    /// A same-origin request to the account API, as the dashboard makes it.
    async fn send(
        &self,
        user: &User,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.gateway.url))
            .header("cookie", &user.cookie)
            .header("origin", &self.gateway.url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, user: &User, settings: Value) -> Value {
        let (status, key) = self.send(user, Method::POST, "/keys", Some(settings)).await;
        assert_eq!(status, 201, "{key}");
        key
    }

    async fn patch(&self, user: &User, key: &Value, change: Value) -> (u16, Value) {
        let path = format!("/keys/{}", key["id"].as_str().unwrap());
        self.send(user, Method::PATCH, &path, Some(change)).await
    }

    /// A chat call with the key; the status, the headers and the body.
    async fn call(&self, key: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .post(format!("{}/v1/chat/completions", self.gateway.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn chat(&self, key: &str, model: &str) -> (u16, Value) {
        let (status, _, body) = self
            .call(
                key,
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        (status, body)
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.gateway.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn plaintext(key: &Value) -> String {
    key["key"].as_str().expect("the plaintext key").to_owned()
}

#[tokio::test]
async fn controls_are_set_at_creation_changed_and_cleared() {
    let w = world(false).await;
    let me = w.user("controls@example.com").await;
    let key = w
        .create(
            &me,
            json!({"name": "ci", "expires_at": "2030-01-31", "monthly_spend_limit_usd": 5,
                   "models": ["Anthropic/*", "openai/gpt-4o-mini"], "requests_per_minute": 30}),
        )
        .await;
    assert_eq!(key["name"], "ci");
    assert_eq!(key["expires_at"], "2030-01-31T00:00:00.000Z");
    assert_eq!(key["expired"], false);
    assert_eq!(key["monthly_spend_limit_usd"], 5.0);
    assert_eq!(key["spend_this_month_usd"], 0.0);
    assert_eq!(key["models"], json!(["anthropic/*", "openai/gpt-4o-mini"]));
    assert_eq!(key["requests_per_minute"], 30);
    assert_eq!(key["rotation"], Value::Null);
    assert!(key.get("hash").is_none());

    // A change touches only the fields it names; null clears one.
    let (status, changed) = w
        .patch(
            &me,
            &key,
            json!({"requests_per_minute": null, "models": ["google/*"]}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["name"], "ci", "an absent name is kept");
    assert_eq!(changed["requests_per_minute"], Value::Null);
    assert_eq!(changed["models"], json!(["google/*"]));
    assert_eq!(changed["monthly_spend_limit_usd"], 5.0);
    let (_, listed) = w.send(&me, Method::GET, "/keys", None).await;
    assert_eq!(listed["data"][0]["models"], json!(["google/*"]));

    // Bad values are refused with their field named, and change nothing.
    for (change, param) in [
        (json!({"expires_at": "2001-01-01"}), "expires_at"),
        (
            json!({"monthly_spend_limit_usd": -1}),
            "monthly_spend_limit_usd",
        ),
        (json!({"models": ["no spaces"]}), "models"),
        (json!({"requests_per_minute": 0}), "requests_per_minute"),
    ] {
        let (status, body) = w.patch(&me, &key, change.clone()).await;
        assert_eq!(status, 400, "{change}: {body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    let (status, body) = w.patch(&me, &key, json!({"rpm": 3})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("'rpm'"),
        "{body}"
    );
    let (status, _) = w
        .send(&me, Method::POST, "/keys", Some(json!({"models": "x"})))
        .await;
    assert_eq!(status, 400, "creation checks the same way");
    let (_, listed) = w.send(&me, Method::GET, "/keys", None).await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "no key was made"
    );
    assert_eq!(listed["data"][0]["models"], json!(["google/*"]));

    // Someone else's key is not found; a revoked key's controls cannot change.
    let other = w.user("other@example.com").await;
    let (status, _) = w.patch(&other, &key, json!({"name": "mine"})).await;
    assert_eq!(status, 404);
    let path = format!("/keys/{}", key["id"].as_str().unwrap());
    assert_eq!(w.send(&me, Method::DELETE, &path, None).await.0, 204);
    let (status, body) = w.patch(&me, &key, json!({"requests_per_minute": 3})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(w.patch(&me, &key, json!({"name": "old"})).await.0, 200);
    w.gateway.stop().await;
}

#[tokio::test]
async fn each_control_refuses_with_its_own_name() {
    let w = world(false).await;
    let me = w.user("refusals@example.com").await;

    // Model allowlist: the models list, a retrieve, a call and a fallback the client names.
    let key = w
        .create(
            &me,
            json!({"models": ["openai/gpt-4o*", "openai/mock-flaky"]}),
        )
        .await;
    let secret = plaintext(&key);
    let (status, list) = w.get(&secret, "/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"openai/gpt-4o-mini"), "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| id.starts_with("openai/gpt-4o") || *id == "openai/mock-flaky"),
        "{ids:?}"
    );
    let (status, body) = w.get(&secret, "/v1/models/openai/mock-400").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(w.chat(&secret, "openai/gpt-4o-mini").await.0, 200);
    let (status, body) = w.chat(&secret, "openai/mock-400").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert_eq!(body["error"]["param"], "model");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("model allowlist") && message.contains("'openai/gpt-4o*'"),
        "{message}"
    );
    let (status, _, body) = w
        .call(
            &secret,
            json!({"model": "openai/gpt-4o-mini", "models": ["openai/mock-500"],
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        status, 403,
        "a fallback the client names obeys the list too: {body}"
    );
    // Bare names and aliases resolve to the id the list is checked against.
    assert_eq!(w.chat(&secret, "mock-400").await.0, 403);

    // Requests per minute below the plan's (1,000): the key's own limit, named, with Retry-After.
    let key = w.create(&me, json!({"requests_per_minute": 2})).await;
    let secret = plaintext(&key);
    qnp_tests::avoid_minute_boundary().await;
    let (status, headers, _) = w
        .call(
            &secret,
            json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ratelimit-limit-requests"], "2");
    assert_eq!(w.chat(&secret, "openai/gpt-4o-mini").await.0, 200);
    let (status, headers, body) = w
        .call(
            &secret,
            json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "key_rate_limit_exceeded");
    assert!(headers.contains_key("retry-after"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this key's own limit"),
        "{body}"
    );

    // Expiry: works until the instant, refused from it on (whatever the key cache holds).
    let soon = OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let expires = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let key = w.create(&me, json!({"expires_at": expires})).await;
    let secret = plaintext(&key);
    assert_eq!(w.chat(&secret, "openai/gpt-4o-mini").await.0, 200);
    let wait = soon - OffsetDateTime::now_utc() + time::Duration::milliseconds(50);
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    let (status, body) = w.chat(&secret, "openai/gpt-4o-mini").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "key_expired");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired at")
    );
    let (_, listed) = w.send(&me, Method::GET, "/keys", None).await;
    let shown = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key["id"])
        .unwrap();
    assert_eq!(shown["expired"], true);
    // A later expiry brings it back at once (the change reaches the proxy's cache in this process).
    assert_eq!(w.patch(&me, &key, json!({"expires_at": null})).await.0, 200);
    assert_eq!(w.chat(&secret, "openai/gpt-4o-mini").await.0, 200);
    w.gateway.stop().await;
}

/// The key's spend this month as its limit counts it, in USD (reservations in flight included).
async fn key_spent(w: &World, key: &Value) -> f64 {
    qnp_shared::budget::Budget::new(w.gateway.stores.counters.clone())
        .key_spent(key["id"].as_str().unwrap(), OffsetDateTime::now_utc())
        .await
        .unwrap()
}

/// A streamed call that holds its reservation for about half a second (the mock sends a word every
/// 40 ms), read to its end; its status and error code.
async fn slow_call(w: &World, key: &str) -> (u16, Value) {
    let response = w
        .http
        .post(format!("{}/v1/chat/completions", w.gateway.url))
        .bearer_auth(key)
        .json(&json!({"model": "openai/mock-slowstream", "stream": true, "max_tokens": 2000,
                      "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let code = serde_json::from_str::<Value>(&text)
        .map(|v| v["error"]["code"].clone())
        .unwrap_or(Value::Null);
    (status, code)
}

/// Ten concurrent calls against a key limited to three and a half of their reservations: exactly three
/// run, seven are refused by the key's limit, and what the three spent stays within it. Then requests
/// per minute: fifteen at once against a limit of four admit exactly four.
async fn limits_are_exact_under_a_burst(w: &World) {
    let me = w.user("burst@example.com").await;
    // What one such call reserves, read while it is in flight.
    let probe = w
        .create(&me, json!({"monthly_spend_limit_usd": 1000}))
        .await;
    let probe_secret = plaintext(&probe);
    let in_flight = tokio::spawn({
        let (http, url, key) = (w.http.clone(), w.gateway.url.clone(), probe_secret.clone());
        async move {
            let response = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "openai/mock-slowstream", "stream": true, "max_tokens": 2000,
                              "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let reserved = key_spent(w, &probe).await;
    assert!(reserved > 0.0, "the call holds a reservation");
    in_flight.await.unwrap();

    let key = w
        .create(&me, json!({"monthly_spend_limit_usd": reserved * 3.5}))
        .await;
    let secret = plaintext(&key);
    let results = futures_util::future::join_all((0..10).map(|_| slow_call(w, &secret))).await;
    let admitted = results.iter().filter(|r| r.0 == 200).count();
    assert_eq!(admitted, 3, "{results:?}");
    for (status, code) in results.iter().filter(|r| r.0 != 200) {
        assert_eq!(
            (*status, code.as_str()),
            (402, Some("key_spend_limit_reached"))
        );
    }
    // Settled to what the three used: within the limit, and shown on the key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let spent = loop {
        let spent = key_spent(w, &key).await;
        if spent < reserved || std::time::Instant::now() > deadline {
            break spent;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        spent > 0.0 && spent < reserved,
        "settled: {spent} (one reservation {reserved})"
    );
    let (_, listed) = w.send(&me, Method::GET, "/keys", None).await;
    let shown = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key["id"])
        .unwrap()
        .clone();
    assert!((shown["spend_this_month_usd"].as_f64().unwrap() - spent).abs() < 1e-9);

    let key = w.create(&me, json!({"requests_per_minute": 4})).await;
    let secret = plaintext(&key);
    qnp_tests::avoid_minute_boundary().await;
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..15).map(|_| w.chat(&secret, "openai/gpt-4o-mini")))
            .await
            .into_iter()
            .map(|r| r.0)
            .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        11,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn key_limits_are_exact_under_a_burst_on_the_embedded_store() {
    let w = world(false).await;
    limits_are_exact_under_a_burst(&w).await;
    w.gateway.stop().await;
}

#[tokio::test]
async fn key_limits_are_exact_under_a_burst_on_mongodb_and_dynamodb() {
    let w = world(true).await;
    limits_are_exact_under_a_burst(&w).await;
    w.gateway.stop().await;
}

#[tokio::test]
async fn a_limit_set_mid_month_counts_what_the_key_spent_before() {
    let w = world(false).await;
    let me = w.user("midmonth@example.com").await;
    let key = w.create(&me, json!({})).await;
    let secret = plaintext(&key);
    for _ in 0..3 {
        assert_eq!(w.chat(&secret, "openai/gpt-4o-mini").await.0, 200);
    }
    let rows = w.gateway.usage_rows("midmonth@example.com", 3).await;
    let spent: f64 = rows.iter().map(|r| r.cost_usd).sum();
    assert!(spent > 0.0);
    // A limit just below what was spent: the month is over for this key at once.
    let (status, changed) = w
        .patch(&me, &key, json!({"monthly_spend_limit_usd": spent * 0.99}))
        .await;
    assert_eq!(status, 200, "{changed}");
    assert!((changed["spend_this_month_usd"].as_f64().unwrap() - spent).abs() < 1e-8);
    let (status, body) = w.chat(&secret, "openai/gpt-4o-mini").await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "key_spend_limit_reached");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this key's own monthly spend limit"),
        "{body}"
    );
    w.gateway.stop().await;
}

#[tokio::test]
async fn a_rotated_key_keeps_its_id_and_the_old_secret_works_through_the_grace_period() {
    let w = world(false).await;
    let me = w.user("rotate@example.com").await;
    let key = w.create(&me, json!({"name": "prod"})).await;
    let old = plaintext(&key);
    assert_eq!(w.chat(&old, "openai/gpt-4o-mini").await.0, 200);
    let path = format!("/keys/{}/rotate", key["id"].as_str().unwrap());

    // The default grace period is 24 hours.
    let (status, rotated) = w.send(&me, Method::POST, &path, None).await;
    assert_eq!(status, 200, "{rotated}");
    let new = plaintext(&rotated);
    assert_ne!(new, old);
    assert_eq!(rotated["id"], key["id"]);
    let (new_id, _) = qnp_shared::keys::parse(&new).unwrap();
    assert_eq!(new_id, key["id"].as_str().unwrap(), "the same key id");
    let until = OffsetDateTime::parse(
        rotated["rotation"]["previous_secret_valid_until"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let day = until - OffsetDateTime::now_utc();
    assert!(
        day > time::Duration::hours(23) && day <= time::Duration::hours(24),
        "{day}"
    );
    // Both secrets work during the grace period, and the rows are the one key's.
    assert_eq!(w.chat(&new, "openai/gpt-4o-mini").await.0, 200);
    assert_eq!(w.chat(&old, "openai/gpt-4o-mini").await.0, 200);
    let rows = w.gateway.usage_rows("rotate@example.com", 3).await;
    assert!(
        rows.iter()
            .all(|r| r.api_key_id == key["id"].as_str().unwrap())
    );

    // A rotation with a one-second grace: the previous new secret stops a second later; the one before
    // it (two rotations ago) stops at once.
    let (status, again) = w
        .send(
            &me,
            Method::POST,
            &path,
            Some(json!({"grace_period_hours": 1.0 / 3600.0})),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    let newest = plaintext(&again);
    assert_eq!(
        w.chat(&old, "openai/gpt-4o-mini").await.0,
        401,
        "two rotations ago"
    );
    assert_eq!(
        w.chat(&new, "openai/gpt-4o-mini").await.0,
        200,
        "in its grace period"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = w.chat(&new, "openai/gpt-4o-mini").await;
    assert_eq!(status, 401, "after its grace period: {body}");
    assert_eq!(w.chat(&newest, "openai/gpt-4o-mini").await.0, 200);

    // Bad grace periods and revoked keys are refused.
    let (status, body) = w
        .send(
            &me,
            Method::POST,
            &path,
            Some(json!({"grace_period_hours": 1000})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "grace_period_hours");
    let revoke = format!("/keys/{}", key["id"].as_str().unwrap());
    assert_eq!(w.send(&me, Method::DELETE, &revoke, None).await.0, 204);
    assert_eq!(w.send(&me, Method::POST, &path, None).await.0, 409);
    let other = w.user("thief@example.com").await;
    assert_eq!(w.send(&other, Method::POST, &path, None).await.0, 404);
    w.gateway.stop().await;
}
