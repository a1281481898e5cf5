//! The export and retention functions as Lambda runs them: API Gateway v2 events for the exports (the
//! CSV through the streaming adapter, frame by frame) and the EventBridge scheduled event for the
//! cleaner.

use std::sync::Arc;

use futures_util::StreamExt;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Service, ServiceExt};
use lambda_http::{Context, LambdaEvent};
use qnp_shared::config::{Config, Env};
use qnp_shared::retention::Cleaner;
use qnp_shared::sessions::Sessions;
use qnp_shared::store::Stores;
use qnp_shared::usage::{TokenUsage, UsageRecord};
use qnp_shared::web::{WebAuth, origin_of};
use qnp_tests::event_fixture;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;

const SECRET: &str = "lambda-export-session-secret-0123456789";

fn row(account: &str, id: &str, ts: OffsetDateTime) -> UsageRecord {
    UsageRecord {
        timestamp: ts,
        request_id: id.into(),
        account_id: account.into(),
        api_key_id: "kid".into(),
        endpoint: "/v1/embeddings".into(),
        provider: "openai".into(),
        model: "openai/text-embedding-3-small".into(),
        streamed: false,
        status: 200,
        usage: TokenUsage {
            prompt_tokens: 3,
            ..Default::default()
        },
        latency_ms: 9,
        ttft_ms: None,
        cost_usd: 0.00000006,
        price_version: "v".into(),
        error_type: None,
        source_ip: None,
        count: 1,
        rates: None,
        output_cap_tokens: None,
    }
}

fn event(name: &str, session: &str) -> LambdaEvent<LambdaRequest> {
    let text = event_fixture(name, "").replace("REPLACE_WITH_SESSION", session);
    LambdaEvent::new(
        serde_json::from_str(&text).expect("a valid Lambda HTTP event"),
        Context::default(),
    )
}

#[tokio::test]
async fn export_events_answer_and_the_csv_streams_in_frames() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([("QNP_DATA_DIR", dir.path().display().to_string())]);
    let config = Config::from_env(&env).unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let account = stores
        .records
        .account_for_email("lambda-export@example.com", "free")
        .await
        .unwrap();
    let rows: Vec<UsageRecord> = (0..1200)
        .map(|i| {
            row(
                &account.id,
                &format!("req_{i:05}"),
                datetime!(2026-11-15 00:00 UTC) + time::Duration::seconds(i),
            )
        })
        .collect();
    stores.records.insert_usage(&rows).await.unwrap();
    let web = Arc::new(WebAuth {
        sessions: Sessions::new(SECRET.as_bytes()),
        records: stores.records.clone(),
        public_origin: origin_of("https://qnp.example.com"),
    });
    let router = qnp_shared::web::with_fallbacks(qnp_export::router(Arc::new(
        qnp_export::Export::new(web, std::time::Duration::from_secs(30)),
    )));
    let session = Sessions::new(SECRET.as_bytes()).issue(&account, OffsetDateTime::now_utc());

    let mut buffered = lambda_http::Adapter::from(router.clone());
    let summary = buffered
        .ready()
        .await
        .unwrap()
        .call(event("export/usage-summary.json", &session))
        .await
        .unwrap();
    let summary = serde_json::to_value(&summary).unwrap();
    assert_eq!(summary["statusCode"], 200, "{summary}");
    let body: Value = serde_json::from_str(summary["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["requests"], 1200);

    let mut streaming = lambda_http::StreamAdapter::from(router.clone());
    let response = streaming
        .ready()
        .await
        .unwrap()
        .call(event("export/usage-export-csv.json", &session))
        .await
        .unwrap();
    assert_eq!(response.metadata_prelude.status_code, 200);
    assert!(
        response.metadata_prelude.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut body = response.stream;
    let mut frames = 0;
    let mut csv = Vec::new();
    while let Some(frame) = body.next().await {
        frames += 1;
        csv.extend_from_slice(&frame.unwrap());
    }
    assert!(
        frames >= 3,
        "streamed in chunks, not one buffer: {frames} frames"
    );
    let text = String::from_utf8(csv).unwrap();
    assert_eq!(text.lines().count(), 1201);
    assert!(text.starts_with("timestamp,request_id,"));

    let response = streaming
        .ready()
        .await
        .unwrap()
        .call(event("export/account-export.json", &session))
        .await
        .unwrap();
    assert_eq!(response.metadata_prelude.status_code, 200);
    let mut json = Vec::new();
    let mut body = response.stream;
    while let Some(frame) = body.next().await {
        json.extend_from_slice(&frame.unwrap());
    }
    let doc: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(doc["usage"].as_array().unwrap().len(), 1200);
}

#[tokio::test]
async fn the_scheduled_event_runs_a_retention_pass() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_env(&Env::from_pairs([(
        "QNP_DATA_DIR",
        dir.path().display().to_string(),
    )]))
    .unwrap();
    let stores = Stores::from_config(&config).await.unwrap();
    let account = stores
        .records
        .account_for_email("old@example.com", "free")
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    stores
        .records
        .insert_usage(&[
            row(&account.id, "req_old", now - time::Duration::days(31)),
            row(&account.id, "req_new", now - time::Duration::days(29)),
        ])
        .await
        .unwrap();
    let scheduled: aws_lambda_events::eventbridge::EventBridgeEvent =
        serde_json::from_str(&event_fixture("retention/scheduled-event.json", ""))
            .expect("an EventBridge scheduled event");
    let cleaner = Cleaner {
        records: stores.records.clone(),
        counters: stores.counters.clone(),
        stripe: None,
        budget: std::time::Duration::from_secs(60),
        usage_days: qnp_shared::retention::USAGE_RETENTION_DAYS,
    };
    let report = qnp_retention::handle(&cleaner, scheduled).await.unwrap();
    assert_eq!(report["expired_usage_rows"], 1);
    assert_eq!(report["complete"], true);
}
