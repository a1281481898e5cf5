//! Benchmark: memory while exporting 200k usage rows, through `qnp serve`'s HTTP stack and through the
//! Lambda streaming adapter. Memory is flat when the peak RSS during an export stays far below the size
//! of the export itself (the rows are never all in memory).
//!
//!     cargo run --release -p qnp-tests --example export_memory [-- ROWS]
//!
//! Prints a markdown table. RSS is sampled every 5 ms from /proc/self/status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::StreamExt;
use lambda_http::tower::{Service, ServiceExt};
use qnp_shared::config::{Config, Env};
use qnp_shared::sessions::Sessions;
use qnp_shared::store::Stores;
use qnp_shared::usage::{TokenUsage, UsageRecord};
use time::OffsetDateTime;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Samples RSS on a thread until dropped; `peak()` is the highest seen.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start() -> Sampler {
        let peak = Arc::new(AtomicU64::new(rss_kb()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kb(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        Sampler { peak, stop }
    }

    fn peak_mb(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("QNP_DATA_DIR", dir.path().display().to_string()),
        (
            "QNP_SESSION_SECRET",
            "bench-secret-0123456789abcdef".to_string(),
        ),
    ]);
    let config = Config::from_env(&env).unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let account = stores
        .records
        .account_for_email("bench@example.com", "free")
        .await
        .unwrap();
    let start = OffsetDateTime::now_utc() - time::Duration::days(20);
    let seed = std::time::Instant::now();
    for batch in 0..rows.div_ceil(5000) {
        let chunk: Vec<UsageRecord> = (batch * 5000..((batch + 1) * 5000).min(rows))
            .map(|i| UsageRecord {
                timestamp: start + time::Duration::milliseconds(i as i64 * 7),
                request_id: format!("req_{i:08}_{}", "x".repeat(24)),
                account_id: account.id.clone(),
                api_key_id: "benchkey00000000".into(),
                endpoint: "/v1/chat/completions".into(),
                provider: "openai".into(),
                model: "openai/gpt-4o-mini".into(),
                streamed: i % 2 == 0,
                status: 200,
                usage: TokenUsage {
                    prompt_tokens: 1200,
                    completion_tokens: 340,
                    cached_tokens: 128,
                    cache_write_tokens: 0,
                    cache_write_1h_tokens: 0,
                    web_search_calls: 0,
                    reasoning_tokens: 0,
                    estimated: false,
                    input_images: 0,
                    service_tier: None,
                },
                latency_ms: 812,
                ttft_ms: Some(210),
                cost_usd: 0.000384,
                price_version: "2026-11-27".into(),
                error_type: None,
                source_ip: Some("203.0.113.7".into()),
                count: 1,
                rates: None,
                output_cap_tokens: None,
            })
            .collect();
        stores.records.insert_usage(&chunk).await.unwrap();
    }
    eprintln!("seeded {rows} rows in {:?}", seed.elapsed());
    let session =
        Sessions::new(b"bench-secret-0123456789abcdef").issue(&account, OffsetDateTime::now_utc());
    let cookie = format!("__Host-qnp_session={session}");

    let catalog = Arc::new(qnp_shared::catalog::Catalog::bundled());
    let plans = Arc::new(qnp_shared::plans::Plans::bundled());
    let usage =
        qnp_shared::usage_log::UsageLog::inline(stores.records.clone(), stores.counters.clone());
    let app = qnp::app::build(
        &config,
        &stores,
        usage,
        catalog,
        plans,
        "http://127.0.0.1",
        "bench-secret-0123456789abcdef",
    )
    .expect("the gateway's configuration");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/usage/export.csv", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app.clone()).await.unwrap() });

    let baseline = rss_kb() as f64 / 1024.0;
    // Through qnp serve's HTTP stack, read as a stream by the client.
    let sampler = Sampler::start();
    let response = reqwest::Client::new()
        .get(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let mut body = response.bytes_stream();
    let (mut http_bytes, mut http_lines) = (0usize, 0usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        http_bytes += chunk.len();
        http_lines += chunk.iter().filter(|&&b| b == b'\n').count();
    }
    let http_peak = sampler.peak_mb();
    drop(sampler);

    // Through the Lambda response-streaming adapter, as the export function URL serves it.
    let web = Arc::new(qnp_shared::web::WebAuth {
        sessions: Sessions::new(b"bench-secret-0123456789abcdef"),
        records: stores.records.clone(),
        public_origin: "https://qnp.example.com".into(),
    });
    let router = qnp_export::router(Arc::new(qnp_export::Export::new(
        web,
        std::time::Duration::from_secs(30),
    )));
    let event = serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/usage/export.csv", "rawQueryString": "",
        "cookies": [cookie], "headers": {"host": "x.lambda-url.us-east-1.on.aws"},
        "requestContext": {"accountId": "anonymous", "apiId": "x", "domainName": "x.lambda-url.us-east-1.on.aws",
            "domainPrefix": "x", "http": {"method": "GET", "path": "/usage/export.csv", "protocol": "HTTP/1.1",
            "sourceIp": "203.0.113.7", "userAgent": "bench"}, "requestId": "r", "routeKey": "$default",
            "stage": "$default", "time": "27/Nov/2026:00:00:00 +0000", "timeEpoch": 1795737600000u64},
        "isBase64Encoded": false
    });
    let sampler = Sampler::start();
    let mut adapter = lambda_http::StreamAdapter::from(router);
    let response = adapter
        .ready()
        .await
        .unwrap()
        .call(lambda_http::LambdaEvent::new(
            serde_json::from_value(event).unwrap(),
            lambda_http::Context::default(),
        ))
        .await
        .unwrap();
    let mut stream = response.stream;
    let (mut lambda_bytes, mut frames) = (0usize, 0usize);
    while let Some(frame) = stream.next().await {
        lambda_bytes += frame.unwrap().len();
        frames += 1;
    }
    let lambda_peak = sampler.peak_mb();
    drop(sampler);

    assert_eq!(http_lines, rows + 1, "every row exported");
    assert_eq!(http_bytes, lambda_bytes, "same bytes both ways");
    let size = http_bytes as f64 / 1_048_576.0;
    println!(
        "| export of {rows} rows ({size:.1} MB of CSV) | RSS before | peak RSS during | growth | growth / export size |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| through `qnp serve` (HTTP, streamed) | {baseline:.1} MB | {http_peak:.1} MB | {:.1} MB | {:.0}% |",
        http_peak - baseline,
        100.0 * (http_peak - baseline) / size
    );
    println!(
        "| through the Lambda streaming adapter ({frames} frames) | {baseline:.1} MB | {lambda_peak:.1} MB | {:.1} MB | {:.0}% |",
        lambda_peak - baseline,
        100.0 * (lambda_peak - baseline) / size
    );
}
