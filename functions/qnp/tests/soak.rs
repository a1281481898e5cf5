//! The soak: two `qnp serve` processes sharing SecantusDB and dynalite take mixed streamed and whole
//! calls at a fixed rate while the record store goes away for a while and the upstream's connections
//! are reset now and then (streams take 40 ms a word, so resets cut some mid-stream). At the end every call sent has its usage row (summed refusal rows count for
//! the calls they stand for), a limit shared by both processes admitted exactly its number, memory
//! stayed flat, and both processes exited 0 on SIGTERM.
//!
//! CI runs a short version (`QNP_SOAK_SECS`, default 20 s, with a 6 s outage); `benches/soak/run.sh`
//! runs the full one (600 s with a 60 s outage) and prints its report.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use qnp_shared::store::Stores;
use qnp_tests::faults::{Fault, FaultProxy};
use qnp_tests::{MockOpenAi, UPSTREAM_KEY, required_env};
use serde_json::json;

const QNP: &str = env!("CARGO_BIN_EXE_qnp");
const LIMITED_RPM: u64 = 7;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Serve {
    child: Child,
    url: String,
}

fn serve(dir: &std::path::Path, mongo: &str, db: &str, table: &str, upstream: &str) -> Serve {
    // The test catalog too: streamed calls use a model that takes 40 ms a word, so resets land
    // mid-stream.
    let models = dir.join("models.json");
    std::fs::write(&models, qnp_tests::TEST_MODELS).unwrap();
    let plans = json!([
        {"name": "free", "requests_per_minute": 20},
        {"name": "soak", "requests_per_minute": 1_000_000, "tokens_per_minute": 100_000_000u64,
         "monthly_spend_cap_usd": 10_000.0},
        {"name": "limited", "requests_per_minute": LIMITED_RPM},
    ]);
    let mut child = Command::new(QNP)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("QNP_DATA_DIR", dir)
        .env("QNP_SESSION_SECRET", "soak-session-secret-0123456789abcdef")
        .env("QNP_MONGODB_URI", mongo)
        .env("QNP_MONGODB_DB", db)
        .env("QNP_DYNAMODB_TABLE", table)
        .env(
            "AWS_ENDPOINT_URL_DYNAMODB",
            required_env("QNP_TEST_DYNAMODB_ENDPOINT"),
        )
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("QNP_PLANS", plans.to_string())
        .env("QNP_MODELS_FILE", &models)
        .env("QNP_OPENAI_BASE_URL", format!("{upstream}/v1"))
        .env("OPENAI_API_KEY", UPSTREAM_KEY)
        .env("QNP_SHUTDOWN_GRACE_SECS", "10")
        .env("RUST_LOG", "warn,qnp::serve=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qnp serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("qnp listening on ") {
                let _ = tx.send(
                    line[at + "qnp listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                );
            }
            if line.contains("ERROR") || line.contains("panicked") {
                eprintln!("qnp serve: {line}");
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("qnp serve announces its address");
    Serve { child, url }
}

/// What one call ended as, for the error mix.
async fn call(http: &reqwest::Client, url: &str, key: &str, stream: bool) -> String {
    let model = if stream {
        "openai/mock-slowstream"
    } else {
        "openai/gpt-4o-mini"
    };
    let body = json!({"model": model, "stream": stream,
                      "messages": [{"role": "user", "content": "soak one two three four five six"}]});
    let response = match http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return "connection_error".into(),
    };
    let status = response.status().as_u16();
    if status != 200 || !stream {
        let _ = response.bytes().await;
        return status.to_string();
    }
    let mut text = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => text.extend_from_slice(&bytes),
            Err(_) => return "stream_broken".into(),
        }
    }
    let text = String::from_utf8_lossy(&text);
    if text.trim_end().ends_with("data: [DONE]") {
        "200".into()
    } else {
        "200_stream_error_event".into()
    }
}

async fn rows_for(stores: &Stores, account: &str) -> u64 {
    stores
        .records
        .recent_usage(account, 1_000_000)
        .await
        .map(|rows| rows.iter().map(|r| r.count).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_lose_no_row_and_keep_limits_exact_through_outages() {
    qnp_tests::init_tracing();
    let secs = env_secs("QNP_SOAK_SECS", 20);
    let outage = env_secs("QNP_SOAK_OUTAGE_SECS", 6).min(secs / 2);
    let rate = env_secs("QNP_SOAK_RATE", 20);

    let upstream = MockOpenAi::start().await;
    let upstream_addr: SocketAddr = upstream
        .url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let upstream_proxy = FaultProxy::start(upstream_addr).await;
    let mongo_direct = required_env("QNP_TEST_MONGODB_URI");
    let mongo_addr: SocketAddr = mongo_direct
        .trim_start_matches("mongodb://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mongo_proxy = FaultProxy::start(mongo_addr).await;
    let mongo = format!(
        "mongodb://{}/?directConnection=true&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000",
        mongo_proxy.addr
    );
    let db = qnp_tests::unique("qnp_soak");
    let (dynamo, table) = qnp_tests::dynalite_table().await;

    // The test's own view of the stores, for keys and the final count.
    let records = Arc::new(
        qnp_shared::store::mongo::MongoStore::connect(&mongo_direct, &db)
            .await
            .unwrap(),
    );
    let counters = Arc::new(qnp_shared::store::dynamo::DynamoCounters::new(
        dynamo, &table,
    ));
    let stores = Stores::new(records, counters);
    let load_key = qnp_tests::create_key(&stores, "soak-load@example.com", "soak").await;
    let limited_key = qnp_tests::create_key(&stores, "soak-limited@example.com", "limited").await;
    let load_account = stores
        .records
        .account_by_email("soak-load@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let limited_account = stores
        .records
        .account_by_email("soak-limited@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;

    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let upstream_url = format!("http://{}", upstream_proxy.addr);
    let mut gateways: Vec<Serve> = dirs
        .iter()
        .map(|d| serve(d.path(), &mongo, &db, &table, &upstream_url))
        .collect();
    let urls: Vec<String> = gateways.iter().map(|g| g.url.clone()).collect();
    let http = qnp_tests::http_client();
    // Warm each process's key cache, then measure memory.
    for url in &urls {
        for _ in 0..20 {
            call(&http, url, &load_key, false).await;
        }
    }
    let mut sent_load = 40u64;
    let rss_start: Vec<u64> = gateways.iter().map(|g| rss_kib(g.child.id())).collect();

    // A limit both processes share: a burst at the start of a minute, spread over both.
    qnp_tests::avoid_minute_boundary().await;
    let burst = 3 * LIMITED_RPM as usize;
    let outcomes = futures_util::future::join_all((0..burst).map(|i| {
        let (http, url, key) = (http.clone(), urls[i % 2].clone(), limited_key.clone());
        async move { call(&http, &url, &key, i.is_multiple_of(3)).await }
    }))
    .await;
    let admitted = outcomes.iter().filter(|o| o.starts_with("200")).count() as u64;
    let refused = outcomes.iter().filter(|o| *o == "429").count() as u64;

    // The load: `rate` calls a second, alternating processes, a third of them streamed.
    let mix: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let started = Instant::now();
    let outage_at = Duration::from_secs(secs / 3);
    let mut outage_started = false;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        if !outage_started && started.elapsed() >= outage_at {
            mongo_proxy.outage(Fault::Blackhole, Duration::from_secs(outage));
            outage_started = true;
        }
        // Now and then the upstream's connections are cut.
        if n % (rate * 5) == rate * 5 - 1 {
            upstream_proxy.outage(Fault::Reset, Duration::from_millis(150));
        }
        let (http, url, key, mix) = (
            http.clone(),
            urls[(n % 2) as usize].clone(),
            load_key.clone(),
            mix.clone(),
        );
        let stream = n.is_multiple_of(3);
        tasks.push(tokio::spawn(async move {
            let outcome = call(&http, &url, &key, stream).await;
            *mix.lock().unwrap().entry(outcome).or_default() += 1;
        }));
        n += 1;
    }
    for task in tasks {
        task.await.unwrap();
    }
    sent_load += n;
    let rss_end: Vec<u64> = gateways.iter().map(|g| rss_kib(g.child.id())).collect();

    // Both stop on SIGTERM, flushing what they queued.
    for g in &gateways {
        assert!(
            Command::new("kill")
                .args(["-TERM", &g.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
    for g in &mut gateways {
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = g.child.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "qnp serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(exit.success(), "qnp serve exited {exit:?}");
    }
    let stored_load = rows_for(&stores, &load_account).await;
    let stored_limited = rows_for(&stores, &limited_account).await;
    let held = qnp_shared::store::CounterStore::held_usage(stores.counters.as_ref(), 1_000_000)
        .await
        .unwrap()
        .len();

    let report = json!({
        "seconds": secs, "outage_seconds": outage, "rate_per_second": rate,
        "requests_sent": sent_load + burst as u64,
        "usage_rows_stored": stored_load + stored_limited,
        "rows_still_held": held,
        "limit": {"requests_per_minute": LIMITED_RPM, "burst": burst, "admitted": admitted, "refused": refused},
        "rss_kib": {"start": rss_start, "end": rss_end},
        "error_mix": *mix.lock().unwrap(),
    });
    println!("soak report: {report:#}");
    if let Ok(path) = std::env::var("QNP_SOAK_REPORT") {
        std::fs::write(path, format!("{report:#}\n")).unwrap();
    }
    assert_eq!(
        stored_load, sent_load,
        "every load call has its row: {report:#}"
    );
    assert_eq!(
        stored_limited, burst as u64,
        "every limited call has its row: {report:#}"
    );
    assert_eq!(held, 0, "nothing left in the outbox: {report:#}");
    assert_eq!(
        admitted, LIMITED_RPM,
        "exact across both processes: {report:#}"
    );
    assert_eq!(refused, burst as u64 - LIMITED_RPM, "{report:#}");
    for (start, end) in rss_start.iter().zip(&rss_end) {
        // Flat within 64 MiB: the outbox is in DynamoDB, queues and caches are bounded.
        assert!(
            *end < start + 64 * 1024,
            "RSS grew from {start} to {end} KiB: {report:#}"
        );
    }
}
