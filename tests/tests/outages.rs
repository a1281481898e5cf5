//! Store outages, injected with a fault proxy between QNP and SecantusDB or dynalite:
//! * the record store down: every call is still served and billed; its usage row waits in the outbox
//!   (the counters table) and reaches MongoDB exactly once when it is back, on `qnp serve` (the
//!   background writer delivers) and on Lambda's inline path (the invocation holds, the retention run
//!   delivers); keys already verified keep working from the cache;
//! * the counter store down: calls fail closed with a 503 and Retry-After in the route's own error shape,
//!   within a bounded time, and work again when it is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use qnp_shared::store::CounterStore;
use qnp_tests::faults::{Fault, FaultProxy};
use qnp_tests::{MockOpenAi, TestGateway, required_env, test_env};
use serde_json::{Value, json};

/// SecantusDB's address from the suite's URI.
fn mongo_addr() -> SocketAddr {
    let uri = required_env("QNP_TEST_MONGODB_URI");
    let host = uri
        .trim_start_matches("mongodb://")
        .split('/')
        .next()
        .unwrap();
    host.parse().unwrap()
}

/// A MongoDB URI through `proxy` that gives up on an unreachable server quickly.
fn mongo_uri(proxy: &FaultProxy) -> String {
    format!(
        "mongodb://{}/?directConnection=true&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000",
        proxy.addr
    )
}

async fn chat(url: &str, key: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let body = if path == "/v1/messages" {
        json!({"model": "openai/gpt-4o-mini", "max_tokens": 16,
               "messages": [{"role": "user", "content": "hello during an outage"}]})
    } else {
        json!({"model": "openai/gpt-4o-mini",
               "messages": [{"role": "user", "content": "hello during an outage"}]})
    };
    let response = qnp_tests::http_client()
        .post(format!("{url}{path}"))
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
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

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn qnp_serve_loses_no_usage_row_while_the_record_store_is_down() {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let mongo = FaultProxy::start(mongo_addr()).await;
    let (dynamo, table) = qnp_tests::dynalite_table().await;
    let mut env = test_env(dir.path(), &upstream);
    // A one-second key cache, so the outage outlasts it: keys in use are then served stale.
    env.set("QNP_KEY_CACHE_SECS", "1");
    let gateway = TestGateway::production_at(env, &mongo_uri(&mongo), dynamo.clone(), &table).await;
    let email = "outage@example.com";
    let key = gateway.create_key(email, "free").await;
    let unused = gateway.create_key("never-used@example.com", "free").await;
    // One call while all is well: the key is verified and cached.
    assert_eq!(
        chat(&gateway.url, &key, "/v1/chat/completions").await.0,
        200
    );
    gateway.usage_rows(email, 1).await;

    mongo.set(Fault::Blackhole);
    let started = Instant::now();
    for _ in 0..8 {
        let (status, _, body) = chat(&gateway.url, &key, "/v1/chat/completions").await;
        assert_eq!(status, 200, "served while MongoDB is unreachable: {body}");
    }
    // Served without waiting on the store for long: the cache verifies the key (past its lifetime, after
    // one bounded read of the store fails), usage is written behind.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, _, body) = chat(&gateway.url, &key, "/v1/chat/completions").await;
    assert_eq!(status, 200, "a key in use, past its cache lifetime: {body}");
    // A key never verified cannot be checked while the store is down: a clear 503, not a hang.
    let asked = Instant::now();
    let (status, headers, body) = chat(&gateway.url, &unused, "/v1/chat/completions").await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("verify API keys"), "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    let counters = qnp_shared::store::dynamo::DynamoCounters::new(dynamo.clone(), &table);
    wait_for(
        "9 rows held in the outbox",
        Duration::from_secs(20),
        || async { counters.held_usage(100).await.unwrap().len() == 9 },
    )
    .await;

    mongo.set(Fault::Pass);
    // Delivered within a drain period or two, each exactly once.
    wait_for("10 rows in MongoDB", Duration::from_secs(30), || async {
        qnp_tests::usage_rows_now(&gateway.stores, email)
            .await
            .len()
            >= 10
    })
    .await;
    let rows = gateway.usage_rows(email, 10).await;
    let mut ids: Vec<_> = rows.iter().map(|r| r.request_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "{rows:#?}");
    wait_for("the outbox emptied", Duration::from_secs(10), || async {
        counters.held_usage(100).await.unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gateway.usage_rows(email, 10).await.len(), 10);
    gateway.stop().await;
}

#[tokio::test]
async fn lambdas_hold_rows_in_the_counters_table_and_the_retention_run_delivers_them() {
    qnp_tests::init_tracing();
    let mongo = FaultProxy::start(mongo_addr()).await;
    let records: std::sync::Arc<dyn qnp_shared::store::RecordStore> = std::sync::Arc::new(
        qnp_shared::store::mongo::MongoStore::connect(
            &mongo_uri(&mongo),
            &qnp_tests::unique("qnp_outbox"),
        )
        .await
        .unwrap(),
    );
    let (dynamo, table) = qnp_tests::dynalite_table().await;
    let counters: std::sync::Arc<dyn CounterStore> = std::sync::Arc::new(
        qnp_shared::store::dynamo::DynamoCounters::new(dynamo, &table),
    );
    let log = qnp_shared::usage_log::UsageLog::inline(records.clone(), counters.clone());
    let account = records
        .account_for_email("lambda-outage@example.com", "free")
        .await
        .unwrap();
    let row = |i: u32| qnp_shared::usage::UsageRecord {
        timestamp: time::OffsetDateTime::now_utc(),
        request_id: format!("req_outage_{i}"),
        account_id: account.id.clone(),
        api_key_id: "k1".into(),
        endpoint: "/v1/chat/completions".into(),
        provider: "openai".into(),
        model: "openai/gpt-4o-mini".into(),
        streamed: false,
        status: 200,
        usage: Default::default(),
        latency_ms: 3,
        ttft_ms: None,
        cost_usd: 0.001,
        price_version: "t".into(),
        error_type: None,
        source_ip: None,
        rates: None,
        output_cap_tokens: None,
        count: 1,
    };

    mongo.set(Fault::Blackhole);
    let started = Instant::now();
    for i in 0..3 {
        log.record(row(i)).await;
    }
    // The first write waits out its attempts; the rest go straight to the outbox.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counters.held_usage(10).await.unwrap().len(), 3);
    // Another instance's invocation, with the store still down, holds its row too.
    let other = qnp_shared::usage_log::UsageLog::inline(records.clone(), counters.clone());
    other.record(row(3)).await;
    assert_eq!(counters.held_usage(10).await.unwrap().len(), 4);

    mongo.set(Fault::Pass);
    let cleaner = qnp_shared::retention::Cleaner {
        records: records.clone(),
        counters: counters.clone(),
        stripe: None,
        budget: Duration::from_secs(60),
        usage_days: 30,
    };
    let report = cleaner
        .run(time::OffsetDateTime::now_utc(), false, &|_| {})
        .await
        .unwrap();
    assert_eq!(report.held_usage_rows_delivered, 4);
    assert!(counters.held_usage(10).await.unwrap().is_empty());
    let stored = records.recent_usage(&account.id, 10).await.unwrap();
    assert_eq!(stored.len(), 4);
    // Delivering again (a second run, or a row delivered twice) stores nothing twice.
    counters.hold_usage(&[row(0)]).await.unwrap();
    let again = cleaner
        .run(time::OffsetDateTime::now_utc(), false, &|_| {})
        .await
        .unwrap();
    assert_eq!(again.held_usage_rows_delivered, 1);
    assert_eq!(
        records.recent_usage(&account.id, 10).await.unwrap().len(),
        4
    );
}

#[tokio::test]
async fn a_counter_store_outage_fails_closed_with_503_and_retry_after() {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let endpoint = required_env("QNP_TEST_DYNAMODB_ENDPOINT");
    let dynalite: SocketAddr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let (_, table) = qnp_tests::dynalite_table().await;
    let proxy = FaultProxy::start(dynalite).await;
    let dynamo = qnp_tests::dynamo_client(&format!("http://{}", proxy.addr)).await;
    let gateway = TestGateway::production_at(
        test_env(dir.path(), &upstream),
        &required_env("QNP_TEST_MONGODB_URI"),
        dynamo,
        &table,
    )
    .await;
    let key = gateway
        .create_key("counters-down@example.com", "free")
        .await;
    assert_eq!(
        chat(&gateway.url, &key, "/v1/chat/completions").await.0,
        200
    );
    let sent = upstream.received().len();

    for fault in [Fault::Blackhole, Fault::Reset] {
        proxy.set(fault);
        for path in ["/v1/chat/completions", "/v1/messages"] {
            let started = Instant::now();
            let (status, headers, body) = chat(&gateway.url, &key, path).await;
            let took = started.elapsed();
            assert_eq!(status, 503, "{fault:?} {path}: {body}");
            assert!(headers.contains_key("retry-after"), "{fault:?} {path}");
            // Bounded: the counter timeout, not the SDK's retries or a hang.
            assert!(took < Duration::from_secs(5), "{fault:?} {path}: {took:?}");
            let message = if path == "/v1/messages" {
                assert_eq!(body["type"], "error", "{body}");
                body["error"]["message"].as_str().unwrap().to_owned()
            } else {
                assert_eq!(body["error"]["type"], "service_unavailable", "{body}");
                body["error"]["message"].as_str().unwrap().to_owned()
            };
            assert!(message.contains("limits"), "{message}");
        }
    }
    // Nothing went upstream unmetered.
    assert_eq!(upstream.received().len(), sent);
    proxy.set(Fault::Pass);
    wait_for("calls served again", Duration::from_secs(15), || async {
        chat(&gateway.url, &key, "/v1/chat/completions").await.0 == 200
    })
    .await;
    gateway.stop().await;
}

/// A usage export whose store goes away mid-transfer ends as a broken transfer the client notices,
/// never as a complete-looking but short CSV; the retention cleaner, interrupted the same way, finishes
/// on its next run.
#[tokio::test]
async fn an_export_cut_by_a_store_outage_fails_visibly_and_an_interrupted_cleaner_resumes() {
    use qnp_shared::sessions::{SESSION_COOKIE, Sessions};
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let mongo = FaultProxy::start(mongo_addr()).await;
    let (dynamo, table) = qnp_tests::dynalite_table().await;
    let secret = "outage-test-session-secret-0123456789";
    let mut env = test_env(dir.path(), &upstream);
    env.set("QNP_SESSION_SECRET", secret);
    let gateway = TestGateway::production_at(env, &mongo_uri(&mongo), dynamo, &table).await;
    let account = gateway
        .stores
        .records
        .account_for_email("export-outage@example.com", "free")
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    // Many more than a cursor's first batch (101 documents), so the export reads on after the cut.
    let rows: Vec<_> = (0..1_000)
        .map(|i| qnp_shared::usage::UsageRecord {
            timestamp: now - time::Duration::seconds(i),
            request_id: format!("req_export_{i:05}"),
            account_id: account.id.clone(),
            api_key_id: "k1".into(),
            endpoint: "/v1/chat/completions".into(),
            provider: "openai".into(),
            model: "openai/gpt-4o-mini".into(),
            streamed: false,
            status: 200,
            usage: Default::default(),
            latency_ms: 3,
            ttft_ms: None,
            cost_usd: 0.001,
            price_version: "t".into(),
            error_type: None,
            source_ip: None,
            rates: None,
            output_cap_tokens: None,
            count: 1,
        })
        .collect();
    for chunk in rows.chunks(1_000) {
        gateway.stores.records.insert_usage(chunk).await.unwrap();
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}",
        Sessions::new(secret.as_bytes()).issue(&account, now)
    );
    let response = qnp_tests::http_client()
        .get(format!("{}/usage/export.csv", gateway.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    use futures_util::StreamExt;
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"timestamp,"));
    // The store goes away with the cursor open.
    mongo.set(Fault::Reset);
    let mut received = first.len();
    let mut broke = false;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .expect("no hang")
    {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "the transfer ended cleanly after {received} bytes");
    mongo.set(Fault::Pass);

    // The cleaner: its first pass fails when the store does, the next one finishes the job.
    let cleaner = qnp_shared::retention::Cleaner {
        records: gateway.stores.records.clone(),
        counters: gateway.stores.counters.clone(),
        stripe: None,
        budget: Duration::from_secs(60),
        usage_days: 30,
    };
    gateway
        .stores
        .records
        .request_deletion(&account.id, now)
        .await
        .unwrap();
    mongo.set(Fault::Reset);
    assert!(cleaner.run(now, false, &|_| {}).await.is_err());
    mongo.set(Fault::Pass);
    let report = cleaner.run(now, false, &|_| {}).await.unwrap();
    assert!(report.complete);
    assert_eq!(report.accounts_erased, 1, "{report:?}");
    assert!(
        gateway
            .stores
            .records
            .account(&account.id)
            .await
            .unwrap()
            .is_none(),
        "erased on the second run"
    );
    gateway.stop().await;
}
