//! Exports cannot be used to exhaust the gateway: clients that open exports and never read them are
//! held to a few per account, their exports are abandoned (cursor and thread released) after the stall
//! time, and the transfer visibly fails instead of ending as a short file; meanwhile the rest of the
//! gateway (key creation, which needs the blocking pool for bcrypt) keeps answering at once.

use std::time::{Duration, Instant};

use qnp_shared::sessions::{SESSION_COOKIE, Sessions};
use qnp_shared::usage::{TokenUsage, UsageRecord};
use qnp_tests::{MockOpenAi, TestGateway};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "export-bounds-session-secret-0123456789";

async fn gateway() -> (TestGateway, MockOpenAi, tempfile::TempDir, String) {
    qnp_tests::init_tracing();
    let upstream = MockOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = qnp_tests::test_env(dir.path(), &upstream);
    env.set("QNP_SESSION_SECRET", SECRET);
    env.set("QNP_EXPORT_STALL_SECS", "1");
    let gateway = TestGateway::start(&env).await;
    let account = gateway
        .stores
        .records
        .account_for_email("hoarder@example.com", "free")
        .await
        .unwrap();
    // Enough rows that an export is far larger than the sockets' buffers.
    let now = OffsetDateTime::now_utc();
    let rows: Vec<UsageRecord> = (0..30_000)
        .map(|i| UsageRecord {
            timestamp: now - time::Duration::seconds(i),
            request_id: format!("req_{i:08}_{}", "x".repeat(24)),
            account_id: account.id.clone(),
            api_key_id: "kid0000000000000".into(),
            endpoint: "/v1/chat/completions".into(),
            provider: "openai".into(),
            model: "openai/gpt-4o-mini".into(),
            streamed: false,
            status: 200,
            usage: TokenUsage {
                prompt_tokens: 100,
                completion_tokens: 20,
                ..TokenUsage::default()
            },
            latency_ms: 10,
            ttft_ms: None,
            cost_usd: 0.0001,
            price_version: "v".into(),
            error_type: None,
            source_ip: Some("203.0.113.9".into()),
            count: 1,
            rates: None,
            output_cap_tokens: None,
        })
        .collect();
    gateway.stores.records.insert_usage(&rows).await.unwrap();
    let session = Sessions::new(SECRET.as_bytes()).issue(&account, now);
    (gateway, upstream, dir, session)
}

/// Starts an export on a raw socket and never reads it.
async fn stalled_export(gateway: &TestGateway, session: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(gateway.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: qnp\r\nCookie: {SESSION_COOKIE}={session}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn exports_nobody_reads_are_bounded_and_abandoned() {
    let (gateway, _upstream, _dir, session) = gateway().await;
    let http = reqwest::Client::new();
    let cookie = format!("{SESSION_COOKIE}={session}");
    let mut stalled = vec![
        stalled_export(&gateway, &session, "/usage/export.csv").await,
        stalled_export(&gateway, &session, "/account/export").await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third at the same time is refused, with when to retry.
    let third = http
        .get(format!("{}/usage/export.csv", gateway.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    // The gateway's other work is not held up.
    let started = Instant::now();
    let created = http
        .post(format!("{}/keys", gateway.url))
        .header("cookie", &cookie)
        .header("origin", &gateway.url)
        .json(&serde_json::json!({"name": "while exporting"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // After the stall time the stalled exports are abandoned: their transfers end broken (no final
    // chunk), and their places are free again.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    for stream in &mut stalled {
        let mut received = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
        assert!(read.is_ok(), "the abandoned transfer was closed");
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{}",
            &text[..80.min(text.len())]
        );
        assert!(
            !text.ends_with("0\r\n\r\n"),
            "an abandoned export must not look complete"
        );
    }
    let whole = http
        .get(format!("{}/usage/export.csv", gateway.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    let text = whole.text().await.unwrap();
    assert_eq!(text.lines().count(), 30_001, "header and every row");
    gateway.stop().await;
}
