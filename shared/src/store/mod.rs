//! Storage ports: durable records (accounts, identities, keys, usage, erasure, billing, Stripe events),
//! one small trait each, and atomic counters (rate limits, budgets). Callers depend on the ports they
//! use; `RecordStore` is all record ports at once, what each adapter implements.
//!
//! Production uses MongoDB for records and DynamoDB for counters; the embedded SQLite store serves both
//! when neither is configured. Every adapter passes the same contract suite (tests/tests/store_contract.rs).

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use time::OffsetDateTime;

use crate::accounts::{
    Account, ApiKeyRecord, Identity, PreviousSecret, ProfileChange, ProfileUpdate,
};
use crate::config::Config;
use crate::key_controls::KeyControls;
use crate::subscription::Billing;
use crate::usage::UsageRecord;

pub mod dynamo;
pub mod embedded;
pub mod mongo;

/// Every record port at once: what an adapter implements and what `Stores::records` holds. Callers
/// take the narrowest port they use; an `Arc<dyn RecordStore>` coerces to any of them.
pub trait RecordStore:
    AccountStore
    + IdentityStore
    + KeyStore
    + UsageStore
    + ErasureStore
    + BillingStore
    + StripeEventStore
{
}

impl<
    T: AccountStore
        + IdentityStore
        + KeyStore
        + UsageStore
        + ErasureStore
        + BillingStore
        + StripeEventStore
        + ?Sized,
> RecordStore for T
{
}

/// Accounts: created on first sign-in, corrected, restricted, deleted on request.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// The account with this email, created on the default `plan` if there is none. Safe under races: two
    /// concurrent calls for a new email end with one account.
    async fn account_for_email(&self, email: &str, plan: &str) -> anyhow::Result<Account>;

    async fn account(&self, account_id: &str) -> anyhow::Result<Option<Account>>;

    async fn account_by_email(&self, email: &str) -> anyhow::Result<Option<Account>>;

    async fn set_plan(&self, account_id: &str, plan: &str) -> anyhow::Result<()>;

    async fn update_profile(
        &self,
        account_id: &str,
        change: &ProfileChange,
    ) -> anyhow::Result<ProfileUpdate>;

    /// Sets or lifts the GDPR restriction of processing; false if there is no such account.
    async fn set_restricted(&self, account_id: &str, restricted: bool) -> anyhow::Result<bool>;

    /// Invalidates every session issued so far (logout everywhere).
    async fn bump_session_version(&self, account_id: &str) -> anyhow::Result<()>;

    /// Records the user's deletion request and takes effect at once: sessions are invalidated, keys
    /// revoked and sign-in identities unlinked (so signing in again starts a new account). The retention
    /// cleaner erases the rest.
    async fn request_deletion(&self, account_id: &str, at: OffsetDateTime) -> anyhow::Result<()>;
}

/// Sign-in identities (provider + subject) and the accounts they belong to.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    async fn identity(&self, provider: &str, subject: &str) -> anyhow::Result<Option<Identity>>;

    /// Links (or refreshes the email of) a sign-in identity.
    async fn link_identity(&self, identity: &Identity) -> anyhow::Result<()>;

    async fn identities_for_account(&self, account_id: &str) -> anyhow::Result<Vec<Identity>>;
}

/// API key records (bcrypt hashes, never secrets).
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert_key(&self, key: &ApiKeyRecord) -> anyhow::Result<()>;

    /// Inserts the key only while its account has fewer than `max_active` unrevoked keys, atomically:
    /// concurrent creations can never pass the limit. False when the account is at it.
    async fn insert_key_within(&self, key: &ApiKeyRecord, max_active: u64) -> anyhow::Result<bool>;

    async fn key(&self, key_id: &str) -> anyhow::Result<Option<ApiKeyRecord>>;

    /// The account's keys, revoked ones included, oldest first.
    async fn keys_for_account(&self, account_id: &str) -> anyhow::Result<Vec<ApiKeyRecord>>;

    /// Writes the key's name and controls (both whole); false if there is no such key.
    async fn update_key(
        &self,
        key_id: &str,
        name: Option<&str>,
        controls: &KeyControls,
    ) -> anyhow::Result<bool>;

    /// Gives the key a new secret (`new_hash`), keeping the one it had as `previous` (whose `hash` must
    /// be the stored hash: compare-and-set, so of two concurrent rotations one wins). False if the key
    /// is missing, revoked, or was rotated meanwhile.
    async fn rotate_key(
        &self,
        key_id: &str,
        new_hash: &str,
        previous: &PreviousSecret,
    ) -> anyhow::Result<bool>;

    /// Marks the key revoked; false if there is no such key or it was already revoked.
    async fn revoke_key(&self, key_id: &str, at: OffsetDateTime) -> anyhow::Result<bool>;

    async fn touch_key(&self, key_id: &str, at: OffsetDateTime) -> anyhow::Result<()>;
}

/// Usage rows: written once per call, summed for the dashboard, streamed for exports.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Writes usage rows; rows whose request id is already stored are skipped, so a retried write is safe.
    async fn insert_usage(&self, rows: &[UsageRecord]) -> anyhow::Result<()>;

    /// The account's most recent usage rows, newest first, at most `limit`.
    async fn recent_usage(&self, account_id: &str, limit: u64) -> anyhow::Result<Vec<UsageRecord>>;

    /// The account's usage row for one request (`GET /v1/generation`); None when there is none, or it is
    /// another account's.
    async fn usage_of_request(
        &self,
        account_id: &str,
        request_id: &str,
    ) -> anyhow::Result<Option<UsageRecord>>;

    /// Per-day, per-model totals of the account's usage in `[from, to)` (of one of its keys only, when
    /// `key_id` is given), computed by the database.
    async fn usage_totals(
        &self,
        account_id: &str,
        key_id: Option<&str>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> anyhow::Result<Vec<UsageTotals>>;

    /// The account's usage rows with `from <= timestamp < to`, oldest first, streamed from a cursor.
    fn usage_for_account(
        &self,
        account_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> BoxStream<'static, anyhow::Result<UsageRecord>>;
}

/// What the retention cleaner removes: expired usage rows and accounts whose owners asked for deletion.
#[async_trait]
pub trait ErasureStore: Send + Sync {
    /// Deletes at most `limit` usage rows (of any account) with `timestamp < cutoff`; returns how many.
    async fn delete_usage_before(&self, cutoff: OffsetDateTime, limit: u64) -> anyhow::Result<u64>;

    async fn count_usage_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64>;

    /// Accounts whose owners asked for deletion, oldest request first, at most `limit`.
    async fn accounts_pending_erasure(&self, limit: u64) -> anyhow::Result<Vec<Account>>;

    /// Deletes at most `limit` of the account's usage rows; returns how many.
    async fn erase_usage_of(&self, account_id: &str, limit: u64) -> anyhow::Result<u64>;

    /// Deletes the account's keys, identities and the account itself (after its usage is gone).
    async fn erase_account(&self, account_id: &str) -> anyhow::Result<Erased>;

    /// Counts what erasing the account would remove, without removing anything.
    async fn count_account_data(&self, account_id: &str) -> anyhow::Result<Erased>;
}

/// An account's billing state, written by compare-and-set, and the account of a Stripe customer.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// Writes the account's billing state if its stored version is still `expected_version`
    /// (compare-and-set; `billing.version` is the new version). False if it changed meanwhile or there
    /// is no such account: the caller reads again and re-decides.
    async fn update_billing(
        &self,
        account_id: &str,
        expected_version: i64,
        billing: &Billing,
    ) -> anyhow::Result<bool>;

    async fn account_by_stripe_customer(
        &self,
        customer_id: &str,
    ) -> anyhow::Result<Option<Account>>;
}

/// Processed Stripe events, so each delivery takes effect once.
#[async_trait]
pub trait StripeEventStore: Send + Sync {
    /// Claims a Stripe event for processing, atomically: exactly one of concurrent deliveries of the same
    /// event gets `Claimed`. A claim older than `lease` that never completed (a crashed invocation) can
    /// be claimed again.
    async fn claim_stripe_event(
        &self,
        event_id: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
    ) -> anyhow::Result<EventClaim>;

    /// Marks a claimed event as processed: later deliveries of it are acknowledged without effect.
    async fn complete_stripe_event(
        &self,
        event_id: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// Gives up a claim after a failure that a retry may fix, so Stripe's retry is processed.
    async fn release_stripe_event(&self, event_id: &str) -> anyhow::Result<()>;

    /// Forgets events claimed before `cutoff` (Stripe stops retrying after three days).
    async fn delete_stripe_events_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64>;
}

/// One row of the dashboard's usage summary: an account's totals for one UTC day and one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsageTotals {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub model: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// What erasing one account removed from the record store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    pub usage_rows: u64,
    pub keys: u64,
    pub identities: u64,
    pub accounts: u64,
}

/// Whether a delivery of a Stripe event should be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClaim {
    /// This delivery processes the event.
    Claimed,
    /// Another delivery is processing it right now.
    InProgress,
    /// It was processed before.
    AlreadyProcessed,
}

/// How long one counter operation may take before the counter store counts as unavailable.
pub const COUNTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A counter operation a call's admission depends on, bounded in time: a counter store that fails or
/// does not answer refuses the call with a 503 and Retry-After, never skips a limit, never hangs.
pub async fn counter_op<T>(
    op: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Result<T, crate::GatewayError> {
    let unavailable = || crate::GatewayError::StoreUnavailable {
        message: "the gateway cannot check this key's limits right now",
        retry_after_secs: 2,
    };
    match tokio::time::timeout(COUNTER_TIMEOUT, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a counter operation failed");
            Err(unavailable())
        }
        Err(_) => {
            tracing::warn!("a counter operation timed out");
            Err(unavailable())
        }
    }
}

/// Result of an atomic bounded increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOutcome {
    /// The amount was added; `value` is the counter after the addition.
    Admitted { value: u64 },
    /// Adding the amount would have passed the limit; nothing changed.
    Refused,
}

#[async_trait]
pub trait CounterStore: Send + Sync {
    /// Atomically adds `amount` to the counter `key` if the result stays `<= limit`. `expires_at` (unix
    /// seconds) lets the store reclaim the counter later; correctness never depends on it having done so.
    async fn add_within(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        expires_at: i64,
    ) -> anyhow::Result<CounterOutcome>;
    /// Adds `delta` (which may be negative) without any limit: settles a reservation to the real amount.
    /// Returns the counter's value after this adjustment (atomically: concurrent adjustments each see
    /// their own result), so a settle can tell how far past its limit it took the counter.
    async fn adjust(&self, key: &str, delta: i64, expires_at: i64) -> anyhow::Result<i64>;
    /// The counter's value, 0 when absent.
    async fn get(&self, key: &str) -> anyhow::Result<u64>;
    /// Deletes every counter whose key starts with one of `prefixes` (an erased account's key ids);
    /// returns how many. With `dry_run`, only counts them.
    async fn erase_prefixes(&self, prefixes: &[String], dry_run: bool) -> anyhow::Result<u64>;

    /// The usage outbox: keeps rows the record store would not take, durably, until they are delivered
    /// and released. It lives beside the counters because that store must be up for any call to be
    /// served at all. Holding a row already held changes nothing (request ids are unique).
    async fn hold_usage(&self, rows: &[UsageRecord]) -> anyhow::Result<()>;
    /// Up to `limit` held rows, oldest first.
    async fn held_usage(&self, limit: usize) -> anyhow::Result<Vec<UsageRecord>>;
    /// Forgets held rows (once the record store has them).
    async fn release_usage(&self, request_ids: &[String]) -> anyhow::Result<()>;
}

/// The stores the functions run on, chosen by configuration.
#[derive(Clone)]
pub struct Stores {
    pub records: Arc<dyn RecordStore>,
    pub counters: Arc<dyn CounterStore>,
    /// The key records API keys are verified against on the proxy's hot path: the record store itself,
    /// unless something is put in front of it (a cache, or a test that counts reads).
    pub keys: Arc<dyn KeyStore>,
}

impl Stores {
    pub fn new(records: Arc<dyn RecordStore>, counters: Arc<dyn CounterStore>) -> Stores {
        Stores {
            keys: records.clone(),
            records,
            counters,
        }
    }

    /// MongoDB when `QNP_MONGODB_URI` is set, DynamoDB when `QNP_DYNAMODB_TABLE` is set, and the embedded
    /// store in `QNP_DATA_DIR` for whichever is not.
    pub async fn from_config(config: &Config) -> anyhow::Result<Stores> {
        let embedded = if config.mongodb_uri.is_none() || config.dynamodb_table.is_none() {
            Some(Arc::new(embedded::EmbeddedStore::open(&config.data_dir)?))
        } else {
            None
        };
        let records: Arc<dyn RecordStore> = match &config.mongodb_uri {
            Some(uri) => Arc::new(mongo::MongoStore::connect(uri, &config.mongodb_db).await?),
            None => embedded.clone().expect("embedded store opened"),
        };
        let counters: Arc<dyn CounterStore> = match &config.dynamodb_table {
            Some(table) => Arc::new(dynamo::DynamoCounters::from_env(table).await),
            None => embedded.expect("embedded store opened"),
        };
        Ok(Stores::new(records, counters))
    }
}
