//! Data rights and retention, each on the embedded store and on MongoDB (SecantusDB) + DynamoDB
//! (dynalite): the CSV and JSON exports over HTTP, the usage summary, and the retention cleaner's
//! boundaries, completeness, idempotence and dry run.

use std::sync::Arc;

use futures_util::TryStreamExt;
use qnp_shared::accounts::Identity;
use qnp_shared::config::Config;
use qnp_shared::retention::Cleaner;
use qnp_shared::sessions::{SESSION_COOKIE, Sessions};
use qnp_shared::store::Stores;
use qnp_shared::usage::{TokenUsage, UsageRecord};
use qnp_tests::{MockOpenAi, TestGateway, test_env};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const SECRET: &str = "export-test-session-secret-0123456789";

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    Cloud,
}

struct World {
    _dir: tempfile::TempDir,
    _upstream: MockOpenAi,
    gateway: TestGateway,
    backend: Backend,
    mongo_db: Option<String>,
    dynamo_table: Option<(aws_sdk_dynamodb::Client, String)>,
}

async fn world(backend: Backend) -> World {
    qnp_tests::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockOpenAi::start().await;
    let mut env = test_env(dir.path(), &upstream);
    env.set("QNP_SESSION_SECRET", SECRET);
    let (stores, mongo_db, dynamo_table, config) = match backend {
        Backend::Embedded => {
            let config = Config::from_env(&env).unwrap();
            (
                Stores::from_config(&config).await.unwrap(),
                None,
                None,
                config,
            )
        }
        Backend::Cloud => {
            let db = qnp_tests::unique("qnp_export");
            env.set(
                "QNP_MONGODB_URI",
                qnp_tests::required_env("QNP_TEST_MONGODB_URI"),
            );
            env.set("QNP_MONGODB_DB", &db);
            let config = Config::from_env(&env).unwrap();
            let records = Arc::new(
                qnp_shared::store::mongo::MongoStore::connect(
                    config.mongodb_uri.as_deref().unwrap(),
                    &db,
                )
                .await
                .unwrap(),
            );
            let (client, table) = qnp_tests::dynalite_table().await;
            let counters = Arc::new(qnp_shared::store::dynamo::DynamoCounters::new(
                client.clone(),
                &table,
            ));
            (
                Stores::new(records, counters),
                Some(db),
                Some((client, table)),
                config,
            )
        }
    };
    let gateway = TestGateway::start_with(config, stores).await;
    World {
        _dir: dir,
        _upstream: upstream,
        gateway,
        backend,
        mongo_db,
        dynamo_table,
    }
}

fn row(account: &str, key: &str, id: &str, ts: OffsetDateTime, model: &str) -> UsageRecord {
    UsageRecord {
        timestamp: ts,
        request_id: id.into(),
        account_id: account.into(),
        api_key_id: key.into(),
        endpoint: "/v1/chat/completions".into(),
        provider: "openai".into(),
        model: model.into(),
        streamed: false,
        status: 200,
        usage: TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 1,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            web_search_calls: 0,
            reasoning_tokens: 0,
            estimated: false,
            input_images: 0,
            service_tier: None,
        },
        latency_ms: 100,
        ttft_ms: None,
        cost_usd: 0.001,
        price_version: "v".into(),
        error_type: None,
        source_ip: Some("127.0.0.1".into()),
        count: 1,
        rates: None,
        output_cap_tokens: None,
    }
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url)
    }

    async fn session(&self, email: &str) -> (String, String) {
        let account = self
            .gateway
            .stores
            .records
            .account_for_email(email, "free")
            .await
            .unwrap();
        let token = Sessions::new(SECRET.as_bytes()).issue(&account, OffsetDateTime::now_utc());
        (account.id, format!("{SESSION_COOKIE}={token}"))
    }

    async fn get(&self, path: &str, cookie: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }

    /// Every document or row in every collection, table and the counters store, as text.
    async fn everything(&self) -> Vec<String> {
        let mut all = Vec::new();
        match self.backend {
            Backend::Embedded => {
                for file in ["qnp.sqlite3", "counters.sqlite3"] {
                    let conn = rusqlite::Connection::open(self.gateway.config.data_dir.join(file))
                        .unwrap();
                    let tables: Vec<String> = conn
                        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                        .unwrap()
                        .query_map([], |r| r.get(0))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    for table in tables {
                        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
                        let columns = stmt.column_count();
                        let rows: Vec<String> = stmt
                            .query_map([], |r| {
                                Ok((0..columns)
                                    .map(|i| match r.get_ref(i).unwrap() {
                                        rusqlite::types::ValueRef::Text(t) => {
                                            String::from_utf8_lossy(t).into_owned()
                                        }
                                        other => format!("{other:?}"),
                                    })
                                    .collect::<Vec<_>>()
                                    .join("|"))
                            })
                            .unwrap()
                            .map(Result::unwrap)
                            .collect();
                        all.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
                    }
                }
            }
            Backend::Cloud => {
                let client =
                    mongodb::Client::with_uri_str(qnp_tests::required_env("QNP_TEST_MONGODB_URI"))
                        .await
                        .unwrap();
                let db = client.database(self.mongo_db.as_ref().unwrap());
                for name in db.list_collection_names().await.unwrap() {
                    let docs: Vec<mongodb::bson::Document> = db
                        .collection::<mongodb::bson::Document>(&name)
                        .find(mongodb::bson::doc! {})
                        .await
                        .unwrap()
                        .try_collect()
                        .await
                        .unwrap();
                    all.extend(docs.into_iter().map(|d| format!("{name}: {d}")));
                }
                let (dynamo, table) = self.dynamo_table.as_ref().unwrap();
                let scan = dynamo.scan().table_name(table).send().await.unwrap();
                all.extend(scan.items().iter().map(|item| {
                    let sorted: std::collections::BTreeMap<_, _> = item.iter().collect();
                    format!("counters: {sorted:?}")
                }));
            }
        }
        all.sort();
        all
    }
}

async fn both<F, Fut>(test: F)
where
    F: Fn(World) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in [Backend::Embedded, Backend::Cloud] {
        eprintln!("-- {backend:?}");
        test(world(backend).await).await;
    }
}

#[tokio::test]
async fn each_user_exports_only_their_own_rows() {
    both(|w| async move {
        let (alice, alice_cookie) = w.session("alice@example.com").await;
        let (bob, _) = w.session("bob@example.com").await;
        let now = OffsetDateTime::now_utc() - Duration::hours(1);
        let rows = [
            row(&alice, "ka", "req_a1", now, "openai/gpt-4o-mini"),
            row(&bob, "kb", "req_b1", now, "openai/gpt-4o-mini"),
            row(
                &alice,
                "ka",
                "req_a2",
                now + Duration::seconds(1),
                "openai/gpt-4o-mini",
            ),
        ];
        w.gateway.stores.records.insert_usage(&rows).await.unwrap();
        let response = w.get("/usage/export.csv", &alice_cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert!(
            response.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment")
        );
        let csv = response.text().await.unwrap();
        assert!(
            csv.contains("req_a1") && csv.contains("req_a2") && !csv.contains("req_b1"),
            "{csv}"
        );
        let json: Value = w
            .get("/account/export", &alice_cookie)
            .await
            .json()
            .await
            .unwrap();
        assert!(
            json["usage"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["account_id"] == alice.as_str())
        );
        assert_eq!(
            w.get("/usage/export.csv", "").await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            w.get("/account/export", "").await.status(),
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test]
async fn date_ranges_include_whole_days_and_bad_dates_name_the_field() {
    both(|w| async move {
        let (me, cookie) = w.session("range@example.com").await;
        let rows = [
            row(
                &me,
                "k",
                "req_before",
                datetime!(2026-11-09 23:59:59.999 UTC),
                "openai/gpt-4o-mini",
            ),
            row(
                &me,
                "k",
                "req_first",
                datetime!(2026-11-10 00:00:00.000 UTC),
                "openai/gpt-4o-mini",
            ),
            row(
                &me,
                "k",
                "req_last",
                datetime!(2026-11-11 23:59:59.999 UTC),
                "openai/gpt-4o-mini",
            ),
            row(
                &me,
                "k",
                "req_after",
                datetime!(2026-11-12 00:00:00.000 UTC),
                "openai/gpt-4o-mini",
            ),
        ];
        w.gateway.stores.records.insert_usage(&rows).await.unwrap();
        let response = w
            .get("/usage/export.csv?from=2026-11-10&to=2026-11-11", &cookie)
            .await;
        // The file is named by the days it holds: `to` is inclusive when given as a date.
        assert_eq!(
            response.headers()["content-disposition"],
            "attachment; filename=\"qnp-usage-2026-11-10-2026-11-11.csv\""
        );
        let csv = response.text().await.unwrap();
        let ids: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(ids, vec!["req_first", "req_last"]);
        let csv = w
            .get(
                "/usage/export.csv?from=2026-11-10T00:00:00.001Z&to=2026-11-12T00:00:00Z",
                &cookie,
            )
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(
            csv.lines().count(),
            2,
            "RFC 3339 bounds: from inclusive, to exclusive: {csv}"
        );
        for (query, field) in [
            ("from=yesterday", "from"),
            ("to=2026-02-30", "to"),
            ("from=2026-11-10&to=11/12/2026", "to"),
        ] {
            let response = w.get(&format!("/usage/export.csv?{query}"), &cookie).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["param"], field, "{query}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("'{field}'"))
            );
        }
        // Without a range: the last 30 days, so none of the November fixtures... unless today is close.
        let default = w
            .get("/usage/export.csv", &cookie)
            .await
            .text()
            .await
            .unwrap();
        let cutoff = OffsetDateTime::now_utc() - Duration::days(30);
        let expected = rows.iter().filter(|r| r.timestamp >= cutoff).count();
        assert_eq!(default.lines().count(), 1 + expected);
    })
    .await;
}

#[tokio::test]
async fn odd_names_are_escaped_as_csv() {
    both(|w| async move {
        let (me, cookie) = w.session("odd@example.com").await;
        let now = OffsetDateTime::now_utc() - Duration::minutes(5);
        let mut odd = row(&me, "k", "req_odd", now, "openai/odd,\"quoted\"\nmodel");
        odd.error_type = Some("upstream, \"weird\"".into());
        w.gateway.stores.records.insert_usage(&[odd]).await.unwrap();
        let csv = w
            .get("/usage/export.csv", &cookie)
            .await
            .text()
            .await
            .unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 1);
        assert_eq!(&records[0][5], "openai/odd,\"quoted\"\nmodel");
        assert_eq!(&records[0][15], "upstream, \"weird\"");
        assert_eq!(records[0].len(), 16);
    })
    .await;
}

#[tokio::test]
async fn usage_summary_totals_by_day_and_model() {
    both(|w| async move {
        let (me, cookie) = w.session("sum@example.com").await;
        let day1 = datetime!(2026-11-20 10:00 UTC);
        let day2 = datetime!(2026-11-21 23:59:59 UTC);
        w.gateway.stores.records.insert_usage(&[
            row(&me, "k", "r1", day1, "openai/gpt-4o-mini"),
            row(&me, "k", "r2", day1 + Duration::hours(1), "openai/gpt-4o-mini"),
            row(&me, "k", "r3", day1, "openai/text-embedding-3-small"),
            row(&me, "k", "r4", day2, "openai/gpt-4o-mini"),
        ]).await.unwrap();
        let summary: Value = w.get("/usage?from=2026-11-20&to=2026-11-21", &cookie).await.json().await.unwrap();
        assert_eq!(summary["requests"], 4);
        let totals = summary["totals"].as_array().unwrap();
        assert_eq!(totals.len(), 3);
        assert_eq!(totals[0], json!({"day": "2026-11-20", "model": "openai/gpt-4o-mini", "requests": 2, "prompt_tokens": 20, "completion_tokens": 10, "cost_usd": 0.002}));
        assert_eq!(summary["by_day"][1], json!({"day": "2026-11-21", "requests": 1, "tokens": 15, "cost_usd": 0.001}));
        assert_eq!(summary["by_model"][0]["requests"], 3);
        let bad = w.get("/usage?from=nope", &cookie).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    })
    .await;
}

#[tokio::test]
async fn the_account_export_holds_everything_written_and_no_secret() {
    both(|w| async move {
        let (me, cookie) = w.session("gdpr@example.com").await;
        let records = &w.gateway.stores.records;
        let now = OffsetDateTime::now_utc();
        records
            .link_identity(&Identity {
                provider: "google".into(),
                subject: "g-1".into(),
                account_id: me.clone(),
                email: Some("gdpr@example.com".into()),
                created_at: now,
            })
            .await
            .unwrap();
        let key = qnp_shared::keys::generate(&me, Some("ci".into()), 4, now).unwrap();
        records.insert_key(&key.record).await.unwrap();
        let rows: Vec<UsageRecord> = (0..25)
            .map(|i| {
                row(
                    &me,
                    &key.record.key_id,
                    &format!("req_{i:02}"),
                    now - Duration::minutes(30 - i),
                    "openai/gpt-4o-mini",
                )
            })
            .collect();
        records.insert_usage(&rows).await.unwrap();
        let billing = qnp_shared::billing::Billing {
            stripe_customer_id: Some("cus_export".into()),
            subscription: Some(qnp_shared::billing::Subscription {
                id: "sub_export".into(),
                price_id: "price_pro".into(),
                status: "active".into(),
                current_period_end: now + Duration::days(20),
                cancel_at_period_end: false,
                as_of: now.unix_timestamp(),
            }),
            version: 1,
            ..Default::default()
        };
        assert!(records.update_billing(&me, 0, &billing).await.unwrap());
        let response = w.get("/account/export", &cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        let doc: Value = serde_json::from_str(&text).expect("one valid JSON document");
        assert_eq!(doc["format"], "qnp-account-export/1");
        assert_eq!(doc["account"]["email"], "gdpr@example.com");
        assert_eq!(doc["identities"][0]["subject"], "g-1");
        assert_eq!(doc["api_keys"][0]["id"], key.record.key_id.as_str());
        assert_eq!(doc["api_keys"][0]["name"], "ci");
        assert_eq!(doc["billing"]["stripe_customer_id"], "cus_export");
        assert_eq!(doc["billing"]["subscription"]["status"], "active");
        assert_eq!(doc["billing"]["subscription"]["price_id"], "price_pro");
        let exported: Vec<UsageRecord> = serde_json::from_value(doc["usage"].clone()).unwrap();
        let mut expected = rows.clone();
        for r in &mut expected {
            r.timestamp = r
                .timestamp
                .replace_nanosecond(r.timestamp.millisecond() as u32 * 1_000_000)
                .unwrap();
        }
        assert_eq!(exported, expected, "every usage row, complete and in order");
        assert!(!text.contains(&key.record.hash), "no key hash");
        assert!(!text.contains("$2b$") && !text.contains("$2y$"));
    })
    .await;
}

fn cleaner(w: &World) -> Cleaner {
    Cleaner {
        records: w.gateway.stores.records.clone(),
        counters: w.gateway.stores.counters.clone(),
        stripe: None,
        budget: std::time::Duration::from_secs(60),
        usage_days: qnp_shared::retention::USAGE_RETENTION_DAYS,
    }
}

#[tokio::test]
async fn the_cleaner_keeps_thirty_days_to_the_second() {
    both(|w| async move {
        let (me, _) = w.session("boundary@example.com").await;
        let now = datetime!(2026-11-27 12:00:00 UTC);
        let thirty = Duration::days(30);
        w.gateway
            .stores
            .records
            .insert_usage(&[
                row(
                    &me,
                    "k",
                    "older_by_1s",
                    now - thirty - Duration::seconds(1),
                    "m",
                ),
                row(&me, "k", "exactly_30d", now - thirty, "m"),
                row(
                    &me,
                    "k",
                    "younger_by_1s",
                    now - thirty + Duration::seconds(1),
                    "m",
                ),
                row(&me, "k", "recent", now - Duration::hours(1), "m"),
            ])
            .await
            .unwrap();
        let dry = cleaner(&w).run(now, true, &|_| {}).await.unwrap();
        assert_eq!(dry.expired_usage_rows, 1);
        let report = cleaner(&w).run(now, false, &|_| {}).await.unwrap();
        assert_eq!(report.expired_usage_rows, 1);
        assert!(report.complete);
        let left: Vec<String> = w
            .gateway
            .stores
            .records
            .usage_for_account(&me, OffsetDateTime::UNIX_EPOCH, now + Duration::days(1))
            .map_ok(|r| r.request_id)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(left, vec!["exactly_30d", "younger_by_1s", "recent"]);
        let again = cleaner(&w).run(now, false, &|_| {}).await.unwrap();
        assert_eq!(
            (again.expired_usage_rows, again.accounts_erased),
            (0, 0),
            "a second pass finds nothing"
        );
    })
    .await;
}

#[tokio::test]
async fn deleted_accounts_are_erased_everywhere_and_dry_runs_change_nothing() {
    both(|w| async move {
        let (gone, cookie) = w.session("gone@example.com").await;
        let (kept, _) = w.session("kept@example.com").await;
        let records = &w.gateway.stores.records;
        let now = OffsetDateTime::now_utc();
        records.link_identity(&Identity { provider: "apple".into(), subject: "a-1".into(), account_id: gone.clone(), email: None, created_at: now }).await.unwrap();
        // Real traffic, so usage rows and rate-limit counters exist for both accounts' keys.
        let mut keys = Vec::new();
        for email in ["gone@example.com", "kept@example.com"] {
            let key = w.gateway.create_key(email, "free").await;
            let response = reqwest::Client::new().post(w.url("/v1/chat/completions")).bearer_auth(&key)
                .json(&json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
                .send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            keys.push(qnp_shared::keys::parse(&key).unwrap().0.to_owned());
        }
        w.gateway.usage_rows("gone@example.com", 1).await;
        w.gateway.usage_rows("kept@example.com", 1).await;
        let response = reqwest::Client::new().delete(w.url("/account")).header("cookie", &cookie).header("origin", &w.gateway.url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);

        let mentions = |all: &[String], needle: &str| all.iter().filter(|line| line.contains(needle)).count();
        let before = w.everything().await;
        assert!(mentions(&before, &gone) > 0 && mentions(&before, &keys[0]) > 0);

        let dry = cleaner(&w).run(now, true, &|_| {}).await.unwrap();
        assert_eq!(dry.accounts_erased, 1);
        assert!(dry.erased.usage_rows >= 1 && dry.erased.keys == 1 && dry.counters_erased >= 1, "{dry:?}");
        assert_eq!(w.everything().await, before, "a dry run changes nothing");

        let report = cleaner(&w).run(now, false, &|_| {}).await.unwrap();
        assert_eq!((report.accounts_erased, report.erased.keys, report.erased.accounts), (1, 1, 1));
        assert_eq!(report.erased.usage_rows, dry.erased.usage_rows);
        assert_eq!(report.counters_erased, dry.counters_erased);
        let after = w.everything().await;
        assert_eq!(mentions(&after, &gone), 0, "the account id is nowhere: {after:#?}");
        assert_eq!(mentions(&after, &keys[0]), 0, "its key id is nowhere (counters included)");
        assert_eq!(mentions(&after, "gone@example.com"), 0);
        assert!(mentions(&after, &kept) > 0 && mentions(&after, &keys[1]) > 0, "other accounts are untouched");

        let again = cleaner(&w).run(now, false, &|_| {}).await.unwrap();
        assert_eq!((again.accounts_erased, again.counters_erased, again.expired_usage_rows), (0, 0, 0));
    })
    .await;
}
