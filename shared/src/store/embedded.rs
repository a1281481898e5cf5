//! The embedded store: one SQLite database in the data directory holding records and counters, so
//! `qnp serve` works on a bare machine and keeps its data across restarts.
//!
//! Statements are short and run under one connection's mutex on the calling thread: a counter update or a
//! key read costs microseconds, less than handing it to another thread would. The mutex also makes the
//! bounded increment trivially atomic. Exports read on a blocking thread through their own connection
//! (WAL lets readers run beside the writer) and stream rows out through a bounded channel.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::{CounterOutcome, CounterStore, RecordStore};
use crate::accounts::{Account, ApiKeyRecord, normalize_email};
use crate::usage::{TokenUsage, UsageRecord};

const SCHEMA: &str = r#"
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
"#;

/// Expired counters are swept once per this many counter updates (DynamoDB's TTL does it there).
const SWEEP_EVERY: u64 = 4096;

pub struct EmbeddedStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    counter_updates: std::sync::atomic::AtomicU64,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // WAL: readers never block the writer. NORMAL sync: committed data survives a process crash, and a
    // power loss can lose at most the last few transactions, which for usage metadata is the right trade
    // against an fsync per request.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
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
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join("qnp.sqlite3");
        let conn = open_connection(&path)
            .with_context(|| format!("opening the embedded store {}", path.display()))?;
        conn.execute_batch(SCHEMA)
            .context("creating the embedded schema")?;
        let store = EmbeddedStore {
            path,
            conn: Mutex::new(conn),
            counter_updates: std::sync::atomic::AtomicU64::new(0),
        };
        store.sweep_counters()?;
        Ok(store)
    }

    /// Removes counters past their expiry. Correctness never depends on it: a counter's key names its
    /// window, so an expired one is never consulted; this only keeps the table small.
    fn sweep_counters(&self) -> anyhow::Result<usize> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.with(|conn| conn.execute("DELETE FROM counters WHERE expires_at < ?1", [now]))
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let conn = self.conn.lock().expect("embedded store lock");
        Ok(f(&conn)?)
    }
}

const ACCOUNT_COLUMNS: &str =
    "id, email, name, plan, created_at, restricted, deletion_requested_at";

fn account_from_row(row: &Row) -> rusqlite::Result<Account> {
    Ok(Account {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        plan: row.get(3)?,
        created_at: from_millis(row.get(4)?),
        restricted: row.get(5)?,
        deletion_requested_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
    })
}

const KEY_COLUMNS: &str = "key_id, account_id, name, hash, created_at, revoked_at, last_used_at";

fn key_from_row(row: &Row) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
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
     reasoning_tokens, latency_ms, ttft_ms, cost_usd, price_version, error_type, source_ip";

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
        },
        latency_ms: row.get(14)?,
        ttft_ms: row.get(15)?,
        cost_usd: row.get(16)?,
        price_version: row.get(17)?,
        error_type: row.get(18)?,
        source_ip: row.get(19)?,
    })
}

#[async_trait]
impl RecordStore for EmbeddedStore {
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
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                [account_id],
                account_from_row,
            )
            .optional()
        })
    }

    async fn account_by_email(&self, email: &str) -> anyhow::Result<Option<Account>> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = ?1"),
                [normalize_email(email)],
                account_from_row,
            )
            .optional()
        })
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

    async fn insert_key(&self, key: &ApiKeyRecord) -> anyhow::Result<()> {
        self.with(|conn| {
            conn.execute(
                &format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    key.key_id,
                    key.account_id,
                    key.name,
                    key.hash,
                    millis(key.created_at),
                    key.revoked_at.map(millis),
                    key.last_used_at.map(millis)
                ],
            )
        })?;
        Ok(())
    }

    async fn key(&self, key_id: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1"),
                [key_id],
                key_from_row,
            )
            .optional()
        })
    }

    async fn keys_for_account(&self, account_id: &str) -> anyhow::Result<Vec<ApiKeyRecord>> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = ?1 ORDER BY created_at, key_id"
            ))?;
            stmt.query_map([account_id], key_from_row)?.collect()
        })
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

    async fn insert_usage(&self, rows: &[UsageRecord]) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().expect("embedded store lock");
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO usage ({USAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                 ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
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
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
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
impl CounterStore for EmbeddedStore {
    async fn add_within(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        expires_at: i64,
    ) -> anyhow::Result<CounterOutcome> {
        if amount > limit {
            return Ok(CounterOutcome::Refused);
        }
        let updates = self
            .counter_updates
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if updates % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep_counters()?;
        }
        let (amount, limit) = (amount as i64, limit.min(i64::MAX as u64) as i64);
        let value: Option<i64> = self.with(|conn| {
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

    async fn get(&self, key: &str) -> anyhow::Result<u64> {
        let value: Option<i64> = self.with(|conn| {
            conn.query_row("SELECT value FROM counters WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
        })?;
        Ok(value.unwrap_or(0) as u64)
    }
}
