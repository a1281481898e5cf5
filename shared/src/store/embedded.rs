//! The embedded store: one SQLite database in the data directory holding records and counters, so
//! `qnp serve` works on a bare machine and keeps its data across restarts.
//!
//! Statements are short and run under a connection's mutex on the calling thread: a counter update or a
//! key read costs microseconds, less than handing it to another thread would. The mutex also makes the
//! bounded increment trivially atomic. Exports read on a blocking thread through their own connection
//! (WAL lets readers run beside the writer) and stream rows out through a bounded channel.
//!
//! Counters live in their own file (`counters.sqlite3`) so the per-request counter update never waits
//! behind a batch of usage inserts, and WAL checkpoints (the only step that fsyncs) run on a background
//! thread instead of inside whichever request's commit happened to cross the threshold.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::EventClaim;
use super::{
    AccountStore, BillingStore, CounterOutcome, CounterStore, Erased, ErasureStore, IdentityStore,
    KeyStore, StripeEventStore, UsageStore, UsageTotals,
};
use crate::accounts::{
    Account, ApiKeyRecord, Identity, PreviousSecret, ProfileChange, ProfileUpdate, deleted_email,
    normalize_email,
};
use crate::key_controls::KeyControls;
use crate::subscription::Billing;
use crate::usage::{TokenUsage, UsageRecord};

/// Schema migrations of `qnp.sqlite3`, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
    SCHEMA_V9,
];

/// The rates a row was priced at (JSON), the output limit the spend cap set, and the images billed
/// per image.
const SCHEMA_V9: &str = r#"
ALTER TABLE usage ADD COLUMN rates TEXT;
ALTER TABLE usage ADD COLUMN output_cap_tokens INTEGER;
ALTER TABLE usage ADD COLUMN input_images INTEGER NOT NULL DEFAULT 0;
"#;

/// Per-key controls and the rotated-out secret still in its grace period (both JSON, read whole).
const SCHEMA_V8: &str = r#"
ALTER TABLE api_keys ADD COLUMN controls TEXT;
ALTER TABLE api_keys ADD COLUMN previous TEXT;
"#;

/// Hosted web searches a call ran (priced per call).
const SCHEMA_V7: &str = r#"
ALTER TABLE usage ADD COLUMN web_search_calls INTEGER NOT NULL DEFAULT 0;
"#;

/// 1-hour cache writes (priced on their own), and rows that stand for several refusals of one minute.
const SCHEMA_V6: &str = r#"
ALTER TABLE usage ADD COLUMN cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
"#;

/// Billing: the account's Stripe state (JSON, written by compare-and-set on its version), its customer id
/// as a column so deliveries can find the account, and the processed-event ledger for idempotency.
const SCHEMA_V5: &str = r#"
ALTER TABLE accounts ADD COLUMN billing TEXT;
ALTER TABLE accounts ADD COLUMN billing_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN stripe_customer_id TEXT;
CREATE UNIQUE INDEX accounts_by_stripe_customer ON accounts (stripe_customer_id);
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    claimed_at INTEGER NOT NULL,
    completed_at INTEGER
);
CREATE INDEX stripe_events_by_claim ON stripe_events (claimed_at);
"#;

/// Usage rows say when their token counts are the gateway's estimate.
const SCHEMA_V4: &str = "ALTER TABLE usage ADD COLUMN tokens_estimated INTEGER NOT NULL DEFAULT 0;";

/// Counters moved to their own file.
const SCHEMA_V3: &str = "DROP TABLE IF EXISTS counters;";

/// `counters.sqlite3`: rate-limit and budget counters, ephemeral by nature.
const COUNTERS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS counters_by_expiry ON counters (expires_at);
CREATE TABLE IF NOT EXISTS usage_outbox (
    request_id TEXT PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    row TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_outbox_by_time ON usage_outbox (timestamp);
"#;

/// How often the background thread moves WAL content into the database files.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT,
    plan TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    restricted INTEGER NOT NULL DEFAULT 0,
    deletion_requested_at INTEGER
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_account ON api_keys (account_id, created_at);
CREATE TABLE IF NOT EXISTS usage (
    request_id TEXT PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    streamed INTEGER NOT NULL,
    status INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    cost_usd REAL NOT NULL,
    price_version TEXT NOT NULL,
    error_type TEXT,
    source_ip TEXT
);
CREATE INDEX IF NOT EXISTS usage_by_account_time ON usage (account_id, timestamp);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (timestamp);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS counters_by_expiry ON counters (expires_at);
CREATE TABLE IF NOT EXISTS usage_outbox (
    request_id TEXT PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    row TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_outbox_by_time ON usage_outbox (timestamp);
"#;

/// Accounts: sign-in identities and server-side session invalidation.
const SCHEMA_V2: &str = r#"
ALTER TABLE accounts ADD COLUMN session_version INTEGER NOT NULL DEFAULT 0;
CREATE TABLE identities (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    account_id TEXT NOT NULL,
    email TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX identities_by_account ON identities (account_id);
"#;

/// Expired counters are swept once per this many counter updates (DynamoDB's TTL does it there).
const SWEEP_EVERY: u64 = 4096;

pub struct EmbeddedStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    counters: Mutex<Connection>,
    counter_updates: std::sync::atomic::AtomicU64,
    /// The checkpoint thread runs while this is alive.
    _alive: std::sync::Arc<()>,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // WAL: readers never block the writer. NORMAL sync: committed data survives a process crash, and a
    // power loss can lose at most the last few transactions, which for usage metadata is the right trade
    // against an fsync per request.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoints run on the background thread (see `spawn_checkpointer`), never in a request's commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Checkpoints both files periodically until the store is dropped. PASSIVE never blocks a writer.
fn spawn_checkpointer(paths: Vec<PathBuf>, alive: std::sync::Weak<()>) {
    std::thread::Builder::new()
        .name("qnp-sqlite-checkpoint".into())
        .spawn(move || {
            let conns: Vec<Connection> = paths
                .iter()
                .filter_map(|p| open_connection(p).ok())
                .collect();
            while alive.upgrade().is_some() {
                std::thread::sleep(CHECKPOINT_EVERY);
                for conn in &conns {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "SQLite checkpoint failed");
                    }
                }
            }
        })
        .expect("spawn the checkpoint thread");
}

fn millis(ts: OffsetDateTime) -> i64 {
    (ts.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl EmbeddedStore {
    /// Opens (creating if needed) `qnp.sqlite3` in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<EmbeddedStore> {
        if !data_dir.exists() {
            // Key hashes and usage metadata live here: only the owner may read them.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        }
        let path = data_dir.join("qnp.sqlite3");
        let conn = open_connection(&path)
            .with_context(|| format!("opening the embedded store {}", path.display()))?;
        migrate(&conn).context("migrating the embedded schema")?;
        let counters_path = data_dir.join("counters.sqlite3");
        let counters = open_connection(&counters_path)
            .with_context(|| format!("opening the embedded store {}", counters_path.display()))?;
        counters
            .execute_batch(COUNTERS_SCHEMA)
            .context("creating the counters schema")?;
        let alive = std::sync::Arc::new(());
        spawn_checkpointer(
            vec![path.clone(), counters_path],
            std::sync::Arc::downgrade(&alive),
        );
        let store = EmbeddedStore {
            path,
            conn: Mutex::new(conn),
            counters: Mutex::new(counters),
            counter_updates: std::sync::atomic::AtomicU64::new(0),
            _alive: alive,
        };
        store.sweep_counters()?;
        Ok(store)
    }

    /// Removes counters past their expiry. Correctness never depends on it: a counter's key names its
    /// window, so an expired one is never consulted; this only keeps the table small.
    fn sweep_counters(&self) -> anyhow::Result<usize> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.with_counters(|conn| conn.execute("DELETE FROM counters WHERE expires_at < ?1", [now]))
    }

    fn with_counters<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> anyhow::Result<T> {
        let conn = self.counters.lock().expect("embedded counters lock");
        Ok(f(&conn)?)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let conn = self.conn.lock().expect("embedded store lock");
        Ok(f(&conn)?)
    }

    /// The one row of `sql` (`?1` bound to `param`), if there is one.
    fn one<T>(
        &self,
        sql: &str,
        param: &str,
        from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        self.with(|conn| conn.query_row(sql, [param], from_row).optional())
    }
}

fn is_unique_violation(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<rusqlite::Error>(),
        Some(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let applied: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            version + 1
        ))?;
    }
    Ok(())
}

const ACCOUNT_COLUMNS: &str = "id, email, name, plan, created_at, restricted, deletion_requested_at, \
     session_version, billing, billing_version";

fn account_from_row(row: &Row) -> rusqlite::Result<Account> {
    let billing = match row.get::<_, Option<String>>(8)? {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e))
        })?,
        None => Billing::default(),
    };
    Ok(Account {
        billing: Billing {
            version: row.get(9)?,
            ..billing
        },
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        plan: row.get(3)?,
        created_at: from_millis(row.get(4)?),
        restricted: row.get(5)?,
        deletion_requested_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
        session_version: row.get(7)?,
    })
}

const IDENTITY_COLUMNS: &str = "provider, subject, account_id, email, created_at";

fn identity_from_row(row: &Row) -> rusqlite::Result<Identity> {
    Ok(Identity {
        provider: row.get(0)?,
        subject: row.get(1)?,
        account_id: row.get(2)?,
        email: row.get(3)?,
        created_at: from_millis(row.get(4)?),
    })
}

const KEY_COLUMNS: &str =
    "key_id, account_id, name, hash, created_at, revoked_at, last_used_at, controls, previous";

/// A JSON column read into its type; NULL is the type's default.
fn json_column<T: serde::de::DeserializeOwned + Default>(
    row: &Row,
    index: usize,
) -> rusqlite::Result<T> {
    match row.get::<_, Option<String>>(index)? {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        }),
    }
}

/// A value as its JSON column holds it: NULL for the type's default, so untouched rows stay NULL.
fn to_json_column<T: serde::Serialize + Default + PartialEq>(
    value: &T,
) -> anyhow::Result<Option<String>> {
    Ok(if *value == T::default() {
        None
    } else {
        Some(serde_json::to_string(value)?)
    })
}

fn key_from_row(row: &Row) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        controls: json_column(row, 7)?,
        previous: json_column(row, 8)?,
        key_id: row.get(0)?,
        account_id: row.get(1)?,
        name: row.get(2)?,
        hash: row.get(3)?,
        created_at: from_millis(row.get(4)?),
        revoked_at: row.get::<_, Option<i64>>(5)?.map(from_millis),
        last_used_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
    })
}

const USAGE_COLUMNS: &str = "request_id, timestamp, account_id, api_key_id, endpoint, provider, model, \
     streamed, status, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, \
     reasoning_tokens, latency_ms, ttft_ms, cost_usd, price_version, error_type, source_ip, \
     tokens_estimated, cache_write_1h_tokens, count, web_search_calls, rates, output_cap_tokens, \
     input_images";

fn usage_from_row(row: &Row) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        request_id: row.get(0)?,
        timestamp: from_millis(row.get(1)?),
        account_id: row.get(2)?,
        api_key_id: row.get(3)?,
        endpoint: row.get(4)?,
        provider: row.get(5)?,
        model: row.get(6)?,
        streamed: row.get(7)?,
        status: row.get(8)?,
        usage: TokenUsage {
            prompt_tokens: row.get(9)?,
            completion_tokens: row.get(10)?,
            cached_tokens: row.get(11)?,
            cache_write_tokens: row.get(12)?,
            reasoning_tokens: row.get(13)?,
            estimated: row.get(20)?,
            cache_write_1h_tokens: row.get(21)?,
            web_search_calls: row.get(23)?,
            input_images: row.get(26)?,
            service_tier: None,
        },
        rates: json_column(row, 24)?,
        output_cap_tokens: row.get(25)?,
        count: row.get(22)?,
        latency_ms: row.get(14)?,
        ttft_ms: row.get(15)?,
        cost_usd: row.get(16)?,
        price_version: row.get(17)?,
        error_type: row.get(18)?,
        source_ip: row.get(19)?,
    })
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn account_for_email(&self, email: &str, plan: &str) -> anyhow::Result<Account> {
        let fresh = Account::new(email, plan, OffsetDateTime::now_utc());
        self.with(|conn| {
            conn.execute(
                "INSERT INTO accounts (id, email, plan, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (email) DO NOTHING",
                params![fresh.id, fresh.email, fresh.plan, millis(fresh.created_at)],
            )?;
            conn.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = ?1"),
                [&fresh.email],
                account_from_row,
            )
        })
    }

    async fn account(&self, account_id: &str) -> anyhow::Result<Option<Account>> {
        self.one(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
            account_id,
            account_from_row,
        )
    }

    async fn account_by_email(&self, email: &str) -> anyhow::Result<Option<Account>> {
        let email = normalize_email(email);
        self.one(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = ?1"),
            &email,
            account_from_row,
        )
    }

    async fn set_plan(&self, account_id: &str, plan: &str) -> anyhow::Result<()> {
        let changed = self.with(|conn| {
            conn.execute(
                "UPDATE accounts SET plan = ?2 WHERE id = ?1",
                params![account_id, plan],
            )
        })?;
        anyhow::ensure!(changed == 1, "no account {account_id}");
        Ok(())
    }

    async fn update_profile(
        &self,
        account_id: &str,
        change: &ProfileChange,
    ) -> anyhow::Result<ProfileUpdate> {
        let email = change.email.as_deref().map(normalize_email);
        let result = self.with(|conn| {
            conn.execute(
                "UPDATE accounts SET name = COALESCE(?2, name), email = COALESCE(?3, email)
                 WHERE id = ?1",
                params![account_id, change.name, email],
            )
        });
        match result {
            Ok(0) => Ok(ProfileUpdate::NotFound),
            Ok(_) => Ok(match self.account(account_id).await? {
                Some(account) => ProfileUpdate::Updated(Box::new(account)),
                None => ProfileUpdate::NotFound,
            }),
            Err(e) if is_unique_violation(&e) => Ok(ProfileUpdate::EmailTaken),
            Err(e) => Err(e),
        }
    }

    async fn set_restricted(&self, account_id: &str, restricted: bool) -> anyhow::Result<bool> {
        let changed = self.with(|conn| {
            conn.execute(
                "UPDATE accounts SET restricted = ?2 WHERE id = ?1",
                params![account_id, restricted],
            )
        })?;
        Ok(changed == 1)
    }

    async fn bump_session_version(&self, account_id: &str) -> anyhow::Result<()> {
        self.with(|conn| {
            conn.execute(
                "UPDATE accounts SET session_version = session_version + 1 WHERE id = ?1",
                [account_id],
            )
        })?;
        Ok(())
    }

    async fn request_deletion(&self, account_id: &str, at: OffsetDateTime) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().expect("embedded store lock");
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE accounts SET deletion_requested_at = COALESCE(deletion_requested_at, ?2),
             session_version = session_version + 1, email = ?3 WHERE id = ?1",
            params![account_id, millis(at), deleted_email(account_id)],
        )?;
        tx.execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE account_id = ?1 AND revoked_at IS NULL",
            params![account_id, millis(at)],
        )?;
        tx.execute("DELETE FROM identities WHERE account_id = ?1", [account_id])?;
        tx.commit()?;
        Ok(())
    }
}

#[async_trait]
impl IdentityStore for EmbeddedStore {
    async fn identity(&self, provider: &str, subject: &str) -> anyhow::Result<Option<Identity>> {
        self.with(|conn| {
            conn.query_row(
                &format!(
                    "SELECT {IDENTITY_COLUMNS} FROM identities WHERE provider = ?1 AND subject = ?2"
                ),
                [provider, subject],
                identity_from_row,
            )
            .optional()
        })
    }

    async fn link_identity(&self, identity: &Identity) -> anyhow::Result<()> {
        self.with(|conn| {
            conn.execute(
                &format!(
                    "INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (provider, subject) DO UPDATE SET email = excluded.email"
                ),
                params![
                    identity.provider,
                    identity.subject,
                    identity.account_id,
                    identity.email,
                    millis(identity.created_at)
                ],
            )
        })?;
        Ok(())
    }

    async fn identities_for_account(&self, account_id: &str) -> anyhow::Result<Vec<Identity>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {IDENTITY_COLUMNS} FROM identities WHERE account_id = ?1
                 ORDER BY created_at, provider"
            ))?;
            stmt.query_map([account_id], identity_from_row)?.collect()
        })
    }
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn insert_key(&self, key: &ApiKeyRecord) -> anyhow::Result<()> {
        // The bounded insert with no bound: one statement to keep.
        anyhow::ensure!(
            self.insert_key_within(key, u64::MAX).await?,
            "the key {} was not inserted",
            key.key_id
        );
        Ok(())
    }

    async fn insert_key_within(&self, key: &ApiKeyRecord, max_active: u64) -> anyhow::Result<bool> {
        let (controls, previous) = (
            to_json_column(&key.controls)?,
            to_json_column(&key.previous)?,
        );
        // One statement under the connection's lock: the count and the insert cannot interleave with
        // another creation.
        let inserted = self.with(|conn| {
            conn.execute(
                &format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS})
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?10
                     WHERE (SELECT COUNT(*) FROM api_keys WHERE account_id = ?2 AND revoked_at IS NULL) < ?8"
                ),
                params![
                    key.key_id,
                    key.account_id,
                    key.name,
                    key.hash,
                    millis(key.created_at),
                    key.revoked_at.map(millis),
                    key.last_used_at.map(millis),
                    max_active.min(i64::MAX as u64) as i64,
                    controls,
                    previous,
                ],
            )
        })?;
        Ok(inserted == 1)
    }

    async fn key(&self, key_id: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
        self.one(
            &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1"),
            key_id,
            key_from_row,
        )
    }

    async fn keys_for_account(&self, account_id: &str) -> anyhow::Result<Vec<ApiKeyRecord>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = ?1 ORDER BY created_at, key_id"
            ))?;
            stmt.query_map([account_id], key_from_row)?.collect()
        })
    }

    async fn update_key(
        &self,
        key_id: &str,
        name: Option<&str>,
        controls: &KeyControls,
    ) -> anyhow::Result<bool> {
        let controls = to_json_column(controls)?;
        let changed = self.with(|conn| {
            conn.execute(
                "UPDATE api_keys SET name = ?2, controls = ?3 WHERE key_id = ?1",
                params![key_id, name, controls],
            )
        })?;
        Ok(changed == 1)
    }

    async fn rotate_key(
        &self,
        key_id: &str,
        new_hash: &str,
        previous: &PreviousSecret,
    ) -> anyhow::Result<bool> {
        let json = serde_json::to_string(previous)?;
        let changed = self.with(|conn| {
            conn.execute(
                "UPDATE api_keys SET hash = ?2, previous = ?3
                 WHERE key_id = ?1 AND hash = ?4 AND revoked_at IS NULL",
                params![key_id, new_hash, json, previous.hash],
            )
        })?;
        Ok(changed == 1)
    }

    async fn revoke_key(&self, key_id: &str, at: OffsetDateTime) -> anyhow::Result<bool> {
        let changed = self.with(|conn| {
            conn.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                params![key_id, millis(at)],
            )
        })?;
        Ok(changed == 1)
    }

    async fn touch_key(&self, key_id: &str, at: OffsetDateTime) -> anyhow::Result<()> {
        self.with(|conn| {
            conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE key_id = ?1",
                params![key_id, millis(at)],
            )
        })?;
        Ok(())
    }
}

#[async_trait]
impl UsageStore for EmbeddedStore {
    async fn insert_usage(&self, rows: &[UsageRecord]) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().expect("embedded store lock");
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO usage ({USAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                 ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)
                 ON CONFLICT (request_id) DO NOTHING"
            ))?;
            for r in rows {
                stmt.execute(params![
                    r.request_id,
                    millis(r.timestamp),
                    r.account_id,
                    r.api_key_id,
                    r.endpoint,
                    r.provider,
                    r.model,
                    r.streamed,
                    r.status,
                    r.usage.prompt_tokens,
                    r.usage.completion_tokens,
                    r.usage.cached_tokens,
                    r.usage.cache_write_tokens,
                    r.usage.reasoning_tokens,
                    r.latency_ms,
                    r.ttft_ms,
                    r.cost_usd,
                    r.price_version,
                    r.error_type,
                    r.source_ip,
                    r.usage.estimated,
                    r.usage.cache_write_1h_tokens,
                    r.count,
                    r.usage.web_search_calls,
                    to_json_column(&r.rates)?,
                    r.output_cap_tokens,
                    r.usage.input_images,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    async fn recent_usage(&self, account_id: &str, limit: u64) -> anyhow::Result<Vec<UsageRecord>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USAGE_COLUMNS} FROM usage WHERE account_id = ?1
                 ORDER BY timestamp DESC, request_id DESC LIMIT ?2"
            ))?;
            stmt.query_map(params![account_id, limit], usage_from_row)?
                .collect()
        })
    }

    async fn usage_of_request(
        &self,
        account_id: &str,
        request_id: &str,
    ) -> anyhow::Result<Option<UsageRecord>> {
        self.with(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {USAGE_COLUMNS} FROM usage WHERE request_id = ?1 AND account_id = ?2"
            ))?
            .query_row(params![request_id, account_id], usage_from_row)
            .optional()
        })
    }

    async fn usage_totals(
        &self,
        account_id: &str,
        key_id: Option<&str>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> anyhow::Result<Vec<UsageTotals>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT strftime('%Y-%m-%d', timestamp / 1000, 'unixepoch') AS day, model,
                        SUM(count), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd)
                 FROM usage WHERE account_id = ?1 AND timestamp >= ?2 AND timestamp < ?3
                 AND (?4 IS NULL OR api_key_id = ?4)
                 GROUP BY day, model ORDER BY day, model",
            )?;
            stmt.query_map(
                params![account_id, millis(from), millis(to), key_id],
                |row| {
                    Ok(UsageTotals {
                        day: row.get(0)?,
                        model: row.get(1)?,
                        requests: row.get(2)?,
                        prompt_tokens: row.get(3)?,
                        completion_tokens: row.get(4)?,
                        cost_usd: row.get(5)?,
                    })
                },
            )?
            .collect()
        })
    }

    fn usage_for_account(
        &self,
        account_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> BoxStream<'static, anyhow::Result<UsageRecord>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let path = self.path.clone();
        let account_id = account_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let result = (|| -> anyhow::Result<()> {
                let conn = open_connection(&path)?;
                let mut stmt = conn.prepare(&format!(
                    "SELECT {USAGE_COLUMNS} FROM usage WHERE account_id = ?1 AND timestamp >= ?2
                     AND timestamp < ?3 ORDER BY timestamp, request_id"
                ))?;
                let rows = stmt.query_map(
                    params![account_id, millis(from), millis(to)],
                    usage_from_row,
                )?;
                for row in rows {
                    if tx.blocking_send(row.map_err(Into::into)).is_err() {
                        break; // the reader went away
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}

#[async_trait]
impl ErasureStore for EmbeddedStore {
    async fn delete_usage_before(&self, cutoff: OffsetDateTime, limit: u64) -> anyhow::Result<u64> {
        let deleted = self.with(|conn| {
            conn.execute(
                "DELETE FROM usage WHERE rowid IN
                 (SELECT rowid FROM usage WHERE timestamp < ?1 LIMIT ?2)",
                params![millis(cutoff), limit],
            )
        })?;
        Ok(deleted as u64)
    }

    async fn count_usage_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64> {
        self.with(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM usage WHERE timestamp < ?1",
                [millis(cutoff)],
                |row| row.get(0),
            )
        })
    }

    async fn accounts_pending_erasure(&self, limit: u64) -> anyhow::Result<Vec<Account>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE deletion_requested_at IS NOT NULL
                 ORDER BY deletion_requested_at, id LIMIT ?1"
            ))?;
            stmt.query_map([limit], account_from_row)?.collect()
        })
    }

    async fn erase_usage_of(&self, account_id: &str, limit: u64) -> anyhow::Result<u64> {
        let deleted = self.with(|conn| {
            conn.execute(
                "DELETE FROM usage WHERE rowid IN
                 (SELECT rowid FROM usage WHERE account_id = ?1 LIMIT ?2)",
                params![account_id, limit],
            )
        })?;
        Ok(deleted as u64)
    }

    async fn erase_account(&self, account_id: &str) -> anyhow::Result<Erased> {
        let mut conn = self.conn.lock().expect("embedded store lock");
        let tx = conn.transaction()?;
        let erased = Erased {
            usage_rows: tx.execute("DELETE FROM usage WHERE account_id = ?1", [account_id])? as u64,
            keys: tx.execute("DELETE FROM api_keys WHERE account_id = ?1", [account_id])? as u64,
            identities: tx.execute("DELETE FROM identities WHERE account_id = ?1", [account_id])?
                as u64,
            accounts: tx.execute("DELETE FROM accounts WHERE id = ?1", [account_id])? as u64,
        };
        tx.commit()?;
        Ok(erased)
    }

    async fn count_account_data(&self, account_id: &str) -> anyhow::Result<Erased> {
        self.with(|conn| {
            let count = |sql: &str| -> rusqlite::Result<u64> {
                conn.query_row(sql, [account_id], |row| row.get(0))
            };
            Ok(Erased {
                usage_rows: count("SELECT COUNT(*) FROM usage WHERE account_id = ?1")?,
                keys: count("SELECT COUNT(*) FROM api_keys WHERE account_id = ?1")?,
                identities: count("SELECT COUNT(*) FROM identities WHERE account_id = ?1")?,
                accounts: count("SELECT COUNT(*) FROM accounts WHERE id = ?1")?,
            })
        })
    }
}

#[async_trait]
impl BillingStore for EmbeddedStore {
    async fn update_billing(
        &self,
        account_id: &str,
        expected_version: i64,
        billing: &Billing,
    ) -> anyhow::Result<bool> {
        let json = serde_json::to_string(billing)?;
        let changed = self.with(|conn| {
            conn.execute(
                "UPDATE accounts SET billing = ?3, billing_version = ?4, stripe_customer_id = ?5
                 WHERE id = ?1 AND billing_version = ?2",
                params![
                    account_id,
                    expected_version,
                    json,
                    billing.version,
                    billing.stripe_customer_id
                ],
            )
        })?;
        Ok(changed == 1)
    }

    async fn account_by_stripe_customer(
        &self,
        customer_id: &str,
    ) -> anyhow::Result<Option<Account>> {
        self.one(
            &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE stripe_customer_id = ?1"),
            customer_id,
            account_from_row,
        )
    }
}

#[async_trait]
impl StripeEventStore for EmbeddedStore {
    async fn claim_stripe_event(
        &self,
        event_id: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
    ) -> anyhow::Result<EventClaim> {
        let stale_before = millis(now) - lease.as_millis() as i64;
        let mut conn = self.conn.lock().expect("embedded store lock");
        let tx = conn.transaction()?;
        let existing: Option<(i64, Option<i64>)> = tx
            .query_row(
                "SELECT claimed_at, completed_at FROM stripe_events WHERE id = ?1",
                [event_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let claim = match existing {
            Some((_, Some(_))) => EventClaim::AlreadyProcessed,
            Some((claimed_at, None)) if claimed_at > stale_before => EventClaim::InProgress,
            Some(_) => {
                tx.execute(
                    "UPDATE stripe_events SET claimed_at = ?2 WHERE id = ?1",
                    params![event_id, millis(now)],
                )?;
                EventClaim::Claimed
            }
            None => {
                tx.execute(
                    "INSERT INTO stripe_events (id, claimed_at) VALUES (?1, ?2)",
                    params![event_id, millis(now)],
                )?;
                EventClaim::Claimed
            }
        };
        tx.commit()?;
        Ok(claim)
    }

    async fn complete_stripe_event(
        &self,
        event_id: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        self.with(|conn| {
            conn.execute(
                "UPDATE stripe_events SET completed_at = ?2 WHERE id = ?1",
                params![event_id, millis(now)],
            )
        })?;
        Ok(())
    }

    async fn release_stripe_event(&self, event_id: &str) -> anyhow::Result<()> {
        self.with(|conn| {
            conn.execute(
                "DELETE FROM stripe_events WHERE id = ?1 AND completed_at IS NULL",
                [event_id],
            )
        })?;
        Ok(())
    }

    async fn delete_stripe_events_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64> {
        let deleted = self.with(|conn| {
            conn.execute(
                "DELETE FROM stripe_events WHERE claimed_at < ?1",
                [millis(cutoff)],
            )
        })?;
        Ok(deleted as u64)
    }
}

#[async_trait]
impl CounterStore for EmbeddedStore {
    async fn add_within(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        expires_at: i64,
    ) -> anyhow::Result<CounterOutcome> {
        // SQLite integers are i64: a limit beyond that is as good as none, and an amount that passes the
        // limit is refused before it could be misread as a negative number.
        let limit = limit.min(i64::MAX as u64);
        if amount > limit {
            return Ok(CounterOutcome::Refused);
        }
        let updates = self
            .counter_updates
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if updates % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep_counters()?;
        }
        let (amount, limit) = (amount as i64, limit as i64);
        let value: Option<i64> = self.with_counters(|conn| {
            conn.prepare_cached(
                "INSERT INTO counters (key, value, expires_at) VALUES (?1, ?2, ?4)
                 ON CONFLICT (key) DO UPDATE SET value = value + ?2 WHERE value + ?2 <= ?3
                 RETURNING value",
            )?
            .query_row(params![key, amount, limit, expires_at], |row| row.get(0))
            .optional()
        })?;
        Ok(match value {
            Some(value) => CounterOutcome::Admitted {
                value: value as u64,
            },
            None => CounterOutcome::Refused,
        })
    }

    async fn adjust(&self, key: &str, delta: i64, expires_at: i64) -> anyhow::Result<i64> {
        self.with_counters(|conn| {
            conn.prepare_cached(
                "INSERT INTO counters (key, value, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = value + ?2
                 RETURNING value",
            )?
            .query_row(params![key, delta, expires_at], |row| row.get(0))
        })
    }

    async fn erase_prefixes(&self, prefixes: &[String], dry_run: bool) -> anyhow::Result<u64> {
        let mut total = 0;
        for prefix in prefixes {
            // A plain prefix comparison: account ids contain '_', which LIKE would treat as a wildcard.
            let len = prefix.chars().count() as i64;
            total += self.with_counters(|conn| {
                if dry_run {
                    conn.query_row(
                        "SELECT COUNT(*) FROM counters WHERE substr(key, 1, ?2) = ?1",
                        params![prefix, len],
                        |row| row.get::<_, u64>(0),
                    )
                } else {
                    conn.execute(
                        "DELETE FROM counters WHERE substr(key, 1, ?2) = ?1",
                        params![prefix, len],
                    )
                    .map(|n| n as u64)
                }
            })?;
        }
        Ok(total)
    }

    async fn get(&self, key: &str) -> anyhow::Result<u64> {
        let value: Option<i64> = self.with_counters(|conn| {
            conn.query_row("SELECT value FROM counters WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
        })?;
        Ok(value.unwrap_or(0).max(0) as u64)
    }

    async fn hold_usage(&self, rows: &[UsageRecord]) -> anyhow::Result<()> {
        let encoded = rows
            .iter()
            .map(|r| {
                Ok((
                    r.request_id.as_str(),
                    millis(r.timestamp),
                    serde_json::to_string(r)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut conn = self.counters.lock().expect("embedded counters lock");
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO usage_outbox (request_id, timestamp, row) VALUES (?1, ?2, ?3)
                 ON CONFLICT (request_id) DO NOTHING",
            )?;
            for (id, at, row) in &encoded {
                stmt.execute(params![id, at, row])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    async fn held_usage(&self, limit: usize) -> anyhow::Result<Vec<UsageRecord>> {
        let texts: Vec<String> = self.with_counters(|conn| {
            conn.prepare_cached(
                "SELECT row FROM usage_outbox ORDER BY timestamp, request_id LIMIT ?1",
            )?
            .query_map([limit as i64], |row| row.get(0))?
            .collect()
        })?;
        texts.iter().map(|t| Ok(serde_json::from_str(t)?)).collect()
    }

    async fn release_usage(&self, request_ids: &[String]) -> anyhow::Result<()> {
        let mut conn = self.counters.lock().expect("embedded counters lock");
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM usage_outbox WHERE request_id = ?1")?;
            for id in request_ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
