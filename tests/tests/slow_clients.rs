//! `qnp serve`'s listener against clients that hold connections without finishing a request: a
//! half-sent request is closed, a half-sent body is answered 408, an idle kept-alive connection is
//! closed, and one address cannot hold more than its share of connections. Normal clients keep working
//! all the while.

use std::time::{Duration, Instant};

use qnp_tests::{MockOpenAi, TestGateway};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn gateway() -> (TestGateway, MockOpenAi, tempfile::TempDir) {
    qnp_tests::init_tracing();
    let upstream = MockOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = qnp_tests::test_env(dir.path(), &upstream);
    env.set("QNP_HEADER_TIMEOUT_SECS", "1");
    env.set("QNP_REQUEST_BODY_TIMEOUT_SECS", "1");
    env.set("QNP_MAX_CONNECTIONS_PER_IP", "20");
    let gateway = TestGateway::start(&env).await;
    (gateway, upstream, dir)
}

fn address(gateway: &TestGateway) -> String {
    gateway.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent and when it
/// closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&received).into_owned(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), None),
        }
    }
}

async fn healthy(gateway: &TestGateway, key: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(key)
        .json(&json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let (gateway, _upstream, _dir) = gateway().await;
    let key = gateway.create_key("slow@example.com", "free").await;
    let mut stream = TcpStream::connect(address(&gateway)).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: qnp\r\nContent-Type: appl")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let closed = closed.expect("the server never closed a half-sent request");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    healthy(&gateway, &key).await;
    gateway.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_one_that_never_speaks_too() {
    let (gateway, _upstream, _dir) = gateway().await;
    // Never sends a byte.
    let mut silent = TcpStream::connect(address(&gateway)).await.unwrap();
    // Sends one whole request, then keeps the connection open without another.
    let mut idle = TcpStream::connect(address(&gateway)).await.unwrap();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nHost: qnp\r\n\r\n")
        .await
        .unwrap();
    let (first, closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    assert!(
        closed.is_some_and(|c| c < Duration::from_secs(5)),
        "idle connection closed after {closed:?}"
    );
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(
        closed.is_some_and(|c| c < Duration::from_secs(5)),
        "silent connection closed after {closed:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_half_sent_body_gets_a_408_and_costs_no_upstream_call() {
    let (gateway, upstream, _dir) = gateway().await;
    let key = gateway.create_key("drip@example.com", "free").await;
    let mut stream = TcpStream::connect(address(&gateway)).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: qnp\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"model\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(closed.is_some(), "the connection stayed open");
    assert!(upstream.received().is_empty());
    healthy(&gateway, &key).await;
    gateway.stop().await;
}

#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    let (gateway, _upstream, _dir) = gateway().await;
    let key = gateway.create_key("hog@example.com", "free").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(address(&gateway)).await.unwrap());
    }
    // The 21st from the same address is closed at once, before it can send anything.
    let mut extra = TcpStream::connect(address(&gateway)).await.unwrap();
    let (_, closed) = read_until_closed(&mut extra, Duration::from_secs(3)).await;
    assert!(
        closed.is_some_and(|c| c < Duration::from_millis(900)),
        "{closed:?}"
    );
    // Once the held ones go (or time out), the address is served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    healthy(&gateway, &key).await;
    gateway.stop().await;
}
