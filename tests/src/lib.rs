//! Test harness: a mock OpenAI upstream that speaks the real wire format, an in-process gateway on a real
//! socket, and clients for the stand-in servers that tests/run.sh starts (SecantusDB, dynalite, moto).

// Stripe's objects are large; `json!` needs more room to expand them.
#![recursion_limit = "512"]

use std::sync::{Arc, Mutex};

use qnp_shared::config::{Config, Env};
use qnp_shared::store::Stores;
use qnp_shared::usage::UsageRecord;
use time::OffsetDateTime;

pub mod identity;
pub mod mock_anthropic;
pub mod mock_gemini;
pub mod mock_openai;
mod mock_openai_responses;
pub mod mock_stripe;

pub use mock_openai::MockOpenAi;
pub mod faults;

/// The upstream credential the mock accepts; anything else gets the upstream's own 401.
pub const UPSTREAM_KEY: &str = "sk-upstream-test-credential";

/// Catalog entries whose upstream names make the mock misbehave in specific ways.
pub const TEST_MODELS: &str = r#"{"version":"test-1","models":[
 {"id":"openai/mock-400","provider":"openai","upstream_model":"mock-400","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-longline","provider":"openai","upstream_model":"mock-longline","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-bigbody","provider":"openai","upstream_model":"mock-bigbody","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-garbage","provider":"openai","upstream_model":"mock-garbage","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-vision","provider":"openai","upstream_model":"mock-vision","kind":"chat","context_length":100000,"input_per_mtok":1.0,"output_per_mtok":2.0,"input_per_image_usd":0.01},
 {"id":"openai/mock-401","provider":"openai","upstream_model":"mock-401","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-429","provider":"openai","upstream_model":"mock-429","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-500","provider":"openai","upstream_model":"mock-500","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-slow","provider":"openai","upstream_model":"mock-slow","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-drop","provider":"openai","upstream_model":"mock-drop","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-endless","provider":"openai","upstream_model":"mock-endless","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-nousage","provider":"openai","upstream_model":"mock-nousage","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-flaky","provider":"openai","upstream_model":"mock-flaky","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-slowstream","provider":"openai","upstream_model":"mock-slowstream","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-chatty","provider":"openai","upstream_model":"mock-chatty","kind":"chat","context_length":1000000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-greedy","provider":"openai","upstream_model":"mock-greedy","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"openai/mock-500-routed","provider":"openai","upstream_model":"mock-500","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0,"fallbacks":["openai/gpt-4o-mini"]},
 {"id":"anthropic/claude-mock-400","provider":"anthropic","upstream_model":"claude-mock-400","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"anthropic/claude-mock-529","provider":"anthropic","upstream_model":"claude-mock-529","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"anthropic/claude-mock-midstream","provider":"anthropic","upstream_model":"claude-mock-midstream","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"google/gemini-mock-400","provider":"google","upstream_model":"gemini-mock-400","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"google/gemini-mock-503","provider":"google","upstream_model":"gemini-mock-503","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0},
 {"id":"google/gemini-mock-midstream","provider":"google","upstream_model":"gemini-mock-midstream","kind":"chat","context_length":1000,"input_per_mtok":1.0,"output_per_mtok":2.0}
]}"#;

/// A plan small enough to exhaust in a test.
pub const TEST_PLANS: &str = r#"[
 {"name":"free","requests_per_minute":1000},
 {"name":"tiny","requests_per_minute":5},
 {"name":"unlimited","requests_per_minute":1000000000,"operator_only":true}
]"#;

/// A required address from tests/run.sh; the suite is meant to run through that script.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the suite with tests/run.sh, which starts the stand-in servers"
        )
    })
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Configuration for a gateway in front of `upstream`, with the test catalog and plans written to `dir`.
pub fn test_env(dir: &std::path::Path, upstream: &MockOpenAi) -> Env {
    let models = dir.join("models.json");
    std::fs::write(&models, TEST_MODELS).unwrap();
    let plans = dir.join("plans.json");
    std::fs::write(&plans, TEST_PLANS).unwrap();
    Env::from_pairs([
        ("QNP_DATA_DIR", dir.join("data").display().to_string()),
        ("QNP_OPENAI_BASE_URL", format!("{}/v1", upstream.url())),
        ("OPENAI_API_KEY", UPSTREAM_KEY.to_string()),
        ("QNP_MODELS_FILE", models.display().to_string()),
        ("QNP_PLANS_FILE", plans.display().to_string()),
        ("QNP_BCRYPT_COST", "4".to_string()),
        ("QNP_UPSTREAM_TIMEOUT_SECS", "2".to_string()),
        ("QNP_UPSTREAM_IDLE_TIMEOUT_SECS", "2".to_string()),
        ("QNP_RETRY_BUDGET_SECS", "5".to_string()),
        ("QNP_DISCONNECT_DRAIN_SECS", "1".to_string()),
    ])
}

/// The proxy router served on a real loopback socket, as `qnp serve` serves it.
pub struct TestGateway {
    pub url: String,
    pub stores: Stores,
    pub config: Config,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    writer: Option<(
        qnp_shared::usage_log::UsageWriter,
        qnp_shared::usage_log::UsageLog,
    )>,
}

impl TestGateway {
    pub async fn start(env: &Env) -> TestGateway {
        let config = Config::from_env(env).expect("test configuration");
        let stores = Stores::from_config(&config).await.expect("stores");
        TestGateway::start_with(config, stores).await
    }

    /// The gateway on its production adapters: records in MongoDB (SecantusDB, a database of its own)
    /// and counters in DynamoDB (dynalite, a table of its own).
    pub async fn production(env: Env) -> TestGateway {
        let (client, table) = dynalite_table().await;
        TestGateway::production_at(env, &required_env("QNP_TEST_MONGODB_URI"), client, &table).await
    }

    /// [`TestGateway::production`] on a given MongoDB URI and counters table (e.g. behind a
    /// [`faults::FaultProxy`]).
    pub async fn production_at(
        mut env: Env,
        mongodb_uri: &str,
        dynamo: aws_sdk_dynamodb::Client,
        table: &str,
    ) -> TestGateway {
        env.set("QNP_MONGODB_URI", mongodb_uri);
        env.set("QNP_MONGODB_DB", unique("qnp_prod"));
        let config = Config::from_env(&env).expect("test configuration");
        let records = Arc::new(
            qnp_shared::store::mongo::MongoStore::connect(
                config.mongodb_uri.as_deref().expect("set above"),
                &config.mongodb_db,
            )
            .await
            .expect("connect to SecantusDB"),
        );
        let counters = Arc::new(qnp_shared::store::dynamo::DynamoCounters::new(
            dynamo, table,
        ));
        TestGateway::start_with(config, Stores::new(records, counters)).await
    }

    pub async fn start_with(config: Config, stores: Stores) -> TestGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestGateway::start_on(listener, config, stores).await
    }

    /// Serves on a listener the caller bound already, for tests that must know the gateway's address
    /// before it is configured (an identity provider's redirect URIs name it).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        config: Config,
        stores: Stores,
    ) -> TestGateway {
        let catalog =
            Arc::new(qnp_shared::catalog::Catalog::load(config.models_file.as_deref()).unwrap());
        let plans = Arc::new(qnp_shared::plans::Plans::from_config(&config).unwrap());
        let (usage, writer) = qnp_shared::usage_log::UsageLog::background(
            stores.records.clone(),
            stores.counters.clone(),
        );
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let public_url = config.public_url.clone().unwrap_or_else(|| url.clone());
        let secret = config
            .session_secret
            .clone()
            .unwrap_or_else(|| "test-session-secret-0123456789abcdef".into());
        let app = qnp::app::build(
            &config,
            &stores,
            usage.clone(),
            catalog,
            plans,
            &public_url,
            &secret,
        )
        .expect("the gateway's configuration");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limits = config.server;
        // The same listener `qnp serve` runs: its timeouts and connection limits are under test too.
        let server = tokio::spawn(async move {
            qnp::listener::serve(listener, app, limits, async {
                let _ = rx.await;
            })
            .await;
        });
        TestGateway {
            url,
            stores,
            config,
            shutdown: Some(tx),
            server: Some(server),
            writer: Some((writer, usage)),
        }
    }

    /// Creates an account (if needed) on `plan` and a key for it; returns the plaintext key.
    pub async fn create_key(&self, email: &str, plan: &str) -> String {
        create_key(&self.stores, email, plan).await
    }

    /// The account's usage rows, waiting until `count` have been written (writes are asynchronous).
    pub async fn usage_rows(&self, email: &str, count: usize) -> Vec<UsageRecord> {
        usage_rows(&self.stores, email, count).await
    }

    /// The account's usage rows once they stand for `calls` calls: refusals summed up per key and minute
    /// are stored first (as at the end of their minute).
    pub async fn usage_calls(&self, email: &str, calls: u64) -> Vec<UsageRecord> {
        if let Some((_, usage)) = &self.writer {
            usage.flush_refusals().await;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let rows = usage_rows_now(&self.stores, email).await;
            let total: u64 = rows.iter().map(|r| r.count).sum();
            if total >= calls || std::time::Instant::now() > deadline {
                assert_eq!(total, calls, "calls recorded for {email}: {rows:#?}");
                return rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stops serving and flushes the usage writer.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some((writer, usage)) = self.writer.take() {
            writer.shutdown(usage).await;
        }
    }
}

pub async fn create_key(stores: &Stores, email: &str, plan: &str) -> String {
    let account = stores.records.account_for_email(email, plan).await.unwrap();
    if account.plan != plan {
        stores.records.set_plan(&account.id, plan).await.unwrap();
    }
    let key = qnp_shared::keys::generate(
        &account.id,
        Some("test".into()),
        4,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    stores.records.insert_key(&key.record).await.unwrap();
    key.plaintext
}

/// The account's usage rows of the last day, as stored right now.
pub async fn usage_rows_now(stores: &Stores, email: &str) -> Vec<UsageRecord> {
    use futures_util::TryStreamExt;
    let account = stores
        .records
        .account_by_email(email)
        .await
        .unwrap()
        .expect("account exists");
    let now = OffsetDateTime::now_utc();
    stores
        .records
        .usage_for_account(
            &account.id,
            now - time::Duration::days(1),
            now + time::Duration::days(1),
        )
        .try_collect()
        .await
        .unwrap()
}

pub async fn usage_rows(stores: &Stores, email: &str, count: usize) -> Vec<UsageRecord> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let rows = usage_rows_now(stores, email).await;
        if rows.len() >= count || std::time::Instant::now() > deadline {
            assert_eq!(rows.len(), count, "usage rows for {email}: {rows:#?}");
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A unique name for per-test databases and tables.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A DynamoDB client for dynalite at `endpoint` (e.g. through a fault proxy).
pub async fn dynamo_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
}

/// A DynamoDB client for dynalite, and a fresh counters table shaped like template.yaml's.
pub async fn dynalite_table() -> (aws_sdk_dynamodb::Client, String) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let endpoint = required_env("QNP_TEST_DYNAMODB_ENDPOINT");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = unique("counters");
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(qnp_shared::store::dynamo::KEY_ATTRIBUTE)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(qnp_shared::store::dynamo::KEY_ATTRIBUTE)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create the counters table on dynalite");
    // Like DynamoDB, dynalite answers CreateTable before the table is usable: wait for ACTIVE.
    for _ in 0..200 {
        let described = client
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap();
        let status = described.table().and_then(|t| t.table_status());
        if status == Some(&aws_sdk_dynamodb::types::TableStatus::Active) {
            return (client, table);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the counters table {table} never became ACTIVE");
}

/// Recorded calls, shared between a mock server and the test that inspects them.
pub type Recorder<T> = Arc<Mutex<Vec<T>>>;

/// Waits until the current one-minute rate-limit window has at least 10 s left, so a burst cannot
/// straddle two windows.
/// An HTTP client for talking to `qnp serve`: it drops pooled connections idle for 5 s, before the
/// server's 10 s keep-alive limit closes them, so a test that waits (for a minute boundary, an expiry)
/// never sends on a connection the server is closing at that moment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("a reqwest client")
}

pub async fn avoid_minute_boundary() {
    let second = OffsetDateTime::now_utc().second();
    if second >= 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second as u64)).await;
    }
}

/// A key store that counts key reads, to prove how often the hot path goes to the store.
pub struct CountingKeyReads {
    pub inner: Arc<dyn qnp_shared::store::KeyStore>,
    pub reads: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl qnp_shared::store::KeyStore for CountingKeyReads {
    async fn insert_key(&self, key: &qnp_shared::accounts::ApiKeyRecord) -> anyhow::Result<()> {
        self.inner.insert_key(key).await
    }

    async fn insert_key_within(
        &self,
        key: &qnp_shared::accounts::ApiKeyRecord,
        max_active: u64,
    ) -> anyhow::Result<bool> {
        self.inner.insert_key_within(key, max_active).await
    }

    async fn key(
        &self,
        key_id: &str,
    ) -> anyhow::Result<Option<qnp_shared::accounts::ApiKeyRecord>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.key(key_id).await
    }

    async fn keys_for_account(
        &self,
        id: &str,
    ) -> anyhow::Result<Vec<qnp_shared::accounts::ApiKeyRecord>> {
        self.inner.keys_for_account(id).await
    }

    async fn update_key(
        &self,
        key_id: &str,
        name: Option<&str>,
        controls: &qnp_shared::key_controls::KeyControls,
    ) -> anyhow::Result<bool> {
        self.inner.update_key(key_id, name, controls).await
    }

    async fn rotate_key(
        &self,
        key_id: &str,
        new_hash: &str,
        previous: &qnp_shared::accounts::PreviousSecret,
    ) -> anyhow::Result<bool> {
        self.inner.rotate_key(key_id, new_hash, previous).await
    }

    async fn revoke_key(&self, key_id: &str, at: OffsetDateTime) -> anyhow::Result<bool> {
        self.inner.revoke_key(key_id, at).await
    }

    async fn touch_key(&self, key_id: &str, at: OffsetDateTime) -> anyhow::Result<()> {
        self.inner.touch_key(key_id, at).await
    }
}

/// The proxy router exactly as the Lambda `main` builds it (usage written inline, before the invocation
/// ends), for driving with real event payloads through `lambda_http`'s adapters.
pub async fn lambda_proxy(env: &Env) -> (axum::Router, Stores) {
    let config = Config::from_env(env).expect("test configuration");
    let stores = Stores::from_config(&config).await.expect("stores");
    let catalog =
        Arc::new(qnp_shared::catalog::Catalog::load(config.models_file.as_deref()).unwrap());
    let plans = Arc::new(qnp_shared::plans::Plans::from_config(&config).unwrap());
    let usage =
        qnp_shared::usage_log::UsageLog::inline(stores.records.clone(), stores.counters.clone());
    let proxy = Arc::new(qnp_proxy::Proxy::new(
        &config, &stores, usage, catalog, plans,
    ));
    (
        qnp_shared::web::with_fallbacks(qnp_proxy::router(proxy)),
        stores,
    )
}

/// An event fixture from events/, with the placeholder key replaced.
pub fn event_fixture(name: &str, key: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("REPLACE_WITH_KEY", key)
}
