//! MongoDB (Atlas in production) for durable records, through the official driver.
//!
//! Documents use `_id` = the record's natural id (account id, key id, request id), so lookups are by
//! primary key and a retried usage write is a harmless duplicate-key error. A TTL index on usage
//! timestamps is a backstop for the retention cleaner, which never depends on it.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use mongodb::bson::{DateTime, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, IndexModel};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    AccountStore, BillingStore, Erased, ErasureStore, EventClaim, IdentityStore, KeyStore,
    StripeEventStore, UsageStore, UsageTotals,
};
use crate::accounts::{
    Account, ApiKeyRecord, Identity, PreviousSecret, ProfileChange, ProfileUpdate, deleted_email,
    normalize_email,
};
use crate::key_controls::KeyControls;
use crate::pricing::AppliedRates;
use crate::subscription::Billing;
use crate::usage::{TokenUsage, UsageRecord};

const DUPLICATE_KEY: i32 = 11000;
/// Usage older than this is removed by the TTL monitor if the cleaner has not run.
const USAGE_TTL_BACKSTOP: Duration = Duration::from_secs(31 * 24 * 3600);

fn to_bson(ts: OffsetDateTime) -> DateTime {
    DateTime::from_millis((ts.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn from_bson(ts: DateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ts.timestamp_millis() as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountDoc {
    #[serde(rename = "_id")]
    id: String,
    email: String,
    name: Option<String>,
    plan: String,
    created_at: DateTime,
    restricted: bool,
    deletion_requested_at: Option<DateTime>,
    #[serde(default)]
    session_version: i64,
    /// Absent on accounts created before billing existed: read as the default.
    #[serde(default)]
    billing: Option<Billing>,
}

impl From<AccountDoc> for Account {
    fn from(d: AccountDoc) -> Account {
        Account {
            id: d.id,
            email: d.email,
            name: d.name,
            plan: d.plan,
            created_at: from_bson(d.created_at),
            restricted: d.restricted,
            deletion_requested_at: d.deletion_requested_at.map(from_bson),
            session_version: d.session_version,
            billing: d.billing.unwrap_or_default(),
        }
    }
}

/// A Stripe event this gateway has seen: `_id` is the event id, so a second claim is a duplicate key.
#[derive(Debug, Serialize, Deserialize)]
struct StripeEventDoc {
    #[serde(rename = "_id")]
    id: String,
    claimed_at: DateTime,
    completed_at: Option<DateTime>,
}

/// `_id` is `provider:subject`, so the identity is unique by construction.
#[derive(Debug, Serialize, Deserialize)]
struct IdentityDoc {
    #[serde(rename = "_id")]
    id: String,
    provider: String,
    subject: String,
    account_id: String,
    email: Option<String>,
    created_at: DateTime,
}

fn identity_id(provider: &str, subject: &str) -> String {
    format!("{provider}:{subject}")
}

impl From<IdentityDoc> for Identity {
    fn from(d: IdentityDoc) -> Identity {
        Identity {
            provider: d.provider,
            subject: d.subject,
            account_id: d.account_id,
            email: d.email,
            created_at: from_bson(d.created_at),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyDoc {
    #[serde(rename = "_id")]
    key_id: String,
    account_id: String,
    name: Option<String>,
    hash: String,
    created_at: DateTime,
    revoked_at: Option<DateTime>,
    last_used_at: Option<DateTime>,
    /// Absent on keys that never had controls (and on keys made before they existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    controls: Option<ControlsDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<PreviousDoc>,
}

/// A key's controls with BSON dates, so an operator's query can compare them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ControlsDoc {
    #[serde(default)]
    expires_at: Option<DateTime>,
    #[serde(default)]
    monthly_spend_limit_usd: Option<f64>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    requests_per_minute: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PreviousDoc {
    hash: String,
    rotated_at: DateTime,
    valid_until: DateTime,
}

impl ControlsDoc {
    fn of(c: &KeyControls) -> Option<ControlsDoc> {
        (!c.is_empty()).then(|| ControlsDoc {
            expires_at: c.expires_at.map(to_bson),
            monthly_spend_limit_usd: c.monthly_spend_limit_usd,
            models: c.models.clone(),
            requests_per_minute: c.requests_per_minute.map(|n| n.min(i64::MAX as u64) as i64),
        })
    }

    fn controls(self) -> KeyControls {
        KeyControls {
            expires_at: self.expires_at.map(from_bson),
            monthly_spend_limit_usd: self.monthly_spend_limit_usd,
            models: self.models,
            requests_per_minute: self.requests_per_minute.map(|n| n.max(0) as u64),
        }
    }
}

impl PreviousDoc {
    fn of(p: &PreviousSecret) -> PreviousDoc {
        PreviousDoc {
            hash: p.hash.clone(),
            rotated_at: to_bson(p.rotated_at),
            valid_until: to_bson(p.valid_until),
        }
    }
}

impl From<KeyDoc> for ApiKeyRecord {
    fn from(d: KeyDoc) -> ApiKeyRecord {
        ApiKeyRecord {
            controls: d.controls.map(ControlsDoc::controls).unwrap_or_default(),
            previous: d.previous.map(|p| PreviousSecret {
                hash: p.hash,
                rotated_at: from_bson(p.rotated_at),
                valid_until: from_bson(p.valid_until),
            }),
            key_id: d.key_id,
            account_id: d.account_id,
            name: d.name,
            hash: d.hash,
            created_at: from_bson(d.created_at),
            revoked_at: d.revoked_at.map(from_bson),
            last_used_at: d.last_used_at.map(from_bson),
        }
    }
}

impl From<&ApiKeyRecord> for KeyDoc {
    fn from(k: &ApiKeyRecord) -> KeyDoc {
        KeyDoc {
            key_id: k.key_id.clone(),
            account_id: k.account_id.clone(),
            name: k.name.clone(),
            hash: k.hash.clone(),
            created_at: to_bson(k.created_at),
            revoked_at: k.revoked_at.map(to_bson),
            last_used_at: k.last_used_at.map(to_bson),
            controls: ControlsDoc::of(&k.controls),
            previous: k.previous.as_ref().map(PreviousDoc::of),
        }
    }
}

/// BSON has no unsigned integers; counts are stored as i64.
#[derive(Debug, Serialize, Deserialize)]
struct UsageDoc {
    #[serde(rename = "_id")]
    request_id: String,
    timestamp: DateTime,
    account_id: String,
    api_key_id: String,
    endpoint: String,
    provider: String,
    model: String,
    streamed: bool,
    status: i32,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    cache_write_tokens: i64,
    reasoning_tokens: i64,
    latency_ms: i64,
    ttft_ms: Option<i64>,
    cost_usd: f64,
    price_version: String,
    error_type: Option<String>,
    source_ip: Option<String>,
    #[serde(default)]
    tokens_estimated: bool,
    #[serde(default)]
    cache_write_1h_tokens: i64,
    #[serde(default)]
    web_search_calls: i64,
    #[serde(default)]
    input_images: i64,
    /// The rates the cost was computed at (absent on rows with no model, and on older rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rates: Option<AppliedRates>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_cap_tokens: Option<i64>,
    /// Refusals of one minute stored as one row (absent on ordinary rows: 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    count: i64,
}

fn one() -> i64 {
    1
}

fn is_one(n: &i64) -> bool {
    *n == 1
}

impl From<&UsageRecord> for UsageDoc {
    fn from(r: &UsageRecord) -> UsageDoc {
        UsageDoc {
            request_id: r.request_id.clone(),
            timestamp: to_bson(r.timestamp),
            account_id: r.account_id.clone(),
            api_key_id: r.api_key_id.clone(),
            endpoint: r.endpoint.clone(),
            provider: r.provider.clone(),
            model: r.model.clone(),
            streamed: r.streamed,
            status: r.status.into(),
            prompt_tokens: r.usage.prompt_tokens as i64,
            completion_tokens: r.usage.completion_tokens as i64,
            cached_tokens: r.usage.cached_tokens as i64,
            cache_write_tokens: r.usage.cache_write_tokens as i64,
            reasoning_tokens: r.usage.reasoning_tokens as i64,
            latency_ms: r.latency_ms as i64,
            ttft_ms: r.ttft_ms.map(|t| t as i64),
            cost_usd: r.cost_usd,
            price_version: r.price_version.clone(),
            error_type: r.error_type.clone(),
            source_ip: r.source_ip.clone(),
            tokens_estimated: r.usage.estimated,
            cache_write_1h_tokens: r.usage.cache_write_1h_tokens as i64,
            web_search_calls: r.usage.web_search_calls as i64,
            input_images: r.usage.input_images as i64,
            rates: r.rates,
            output_cap_tokens: r.output_cap_tokens.map(|t| t as i64),
            count: r.count as i64,
        }
    }
}

impl From<UsageDoc> for UsageRecord {
    fn from(d: UsageDoc) -> UsageRecord {
        UsageRecord {
            timestamp: from_bson(d.timestamp),
            request_id: d.request_id,
            account_id: d.account_id,
            api_key_id: d.api_key_id,
            endpoint: d.endpoint,
            provider: d.provider,
            model: d.model,
            streamed: d.streamed,
            status: d.status.clamp(0, u16::MAX as i32) as u16,
            usage: TokenUsage {
                prompt_tokens: d.prompt_tokens.max(0) as u64,
                completion_tokens: d.completion_tokens.max(0) as u64,
                cached_tokens: d.cached_tokens.max(0) as u64,
                cache_write_tokens: d.cache_write_tokens.max(0) as u64,
                reasoning_tokens: d.reasoning_tokens.max(0) as u64,
                estimated: d.tokens_estimated,
                cache_write_1h_tokens: d.cache_write_1h_tokens.max(0) as u64,
                web_search_calls: d.web_search_calls.max(0) as u64,
                input_images: d.input_images.max(0) as u64,
                service_tier: None,
            },
            rates: d.rates,
            output_cap_tokens: d.output_cap_tokens.map(|t| t.max(0) as u64),
            count: d.count.max(1) as u64,
            latency_ms: d.latency_ms.max(0) as u64,
            ttft_ms: d.ttft_ms.map(|t| t.max(0) as u64),
            cost_usd: d.cost_usd,
            price_version: d.price_version,
            error_type: d.error_type,
            source_ip: d.source_ip,
        }
    }
}

impl MongoStore {
    /// Accounts count their unrevoked keys in `active_keys`, so the cap can be taken atomically. One made
    /// before the counter existed gets it from a count of its keys, once.
    async fn active_keys_counted(&self, account_id: &str) -> anyhow::Result<()> {
        let counted = self
            .accounts
            .count_documents(doc! {"_id": account_id, "active_keys": {"$exists": true}})
            .await?;
        if counted == 0 {
            let active = self
                .keys
                .count_documents(doc! {"account_id": account_id, "revoked_at": null})
                .await? as i64;
            self.accounts
                .update_one(
                    doc! {"_id": account_id, "active_keys": {"$exists": false}},
                    doc! {"$set": {"active_keys": active}},
                )
                .await?;
        }
        Ok(())
    }

    /// Inserts a key whose slot was already counted; gives the slot back if the insert fails.
    async fn insert_counted_key(&self, key: &ApiKeyRecord) -> anyhow::Result<()> {
        if let Err(e) = self.keys.insert_one(KeyDoc::from(key)).await {
            self.accounts
                .update_one(
                    doc! {"_id": &key.account_id, "active_keys": {"$gt": 0_i64}},
                    doc! {"$inc": {"active_keys": -1_i64}},
                )
                .await?;
            return Err(e.into());
        }
        Ok(())
    }
}

pub struct MongoStore {
    accounts: Collection<AccountDoc>,
    identities: Collection<IdentityDoc>,
    keys: Collection<KeyDoc>,
    usage: Collection<UsageDoc>,
    stripe_events: Collection<StripeEventDoc>,
}

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().all(|w| w.code == DUPLICATE_KEY)),
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

impl MongoStore {
    /// Connects and makes sure the indexes exist (idempotent; runs once per cold start).
    pub async fn connect(uri: &str, db: &str) -> anyhow::Result<MongoStore> {
        let client = Client::with_uri_str(uri)
            .await
            .context("connecting to MongoDB (QNP_MONGODB_URI)")?;
        let db = client.database(db);
        let store = MongoStore {
            accounts: db.collection("accounts"),
            identities: db.collection("identities"),
            keys: db.collection("api_keys"),
            usage: db.collection("usage"),
            stripe_events: db.collection("stripe_events"),
        };
        store.ensure_indexes().await?;
        Ok(store)
    }

    async fn ensure_indexes(&self) -> anyhow::Result<()> {
        let unique = IndexOptions::builder().unique(true).build();
        self.accounts
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"email": 1})
                    .options(unique)
                    .build(),
            )
            .await
            .context("creating the accounts email index")?;
        self.keys
            .create_index(IndexModel::builder().keys(doc! {"account_id": 1}).build())
            .await
            .context("creating the api_keys account index")?;
        self.identities
            .create_index(IndexModel::builder().keys(doc! {"account_id": 1}).build())
            .await
            .context("creating the identities account index")?;
        self.accounts
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"billing.stripe_customer_id": 1})
                    .build(),
            )
            .await
            .context("creating the accounts Stripe customer index")?;
        self.usage
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"account_id": 1, "timestamp": 1})
                    .build(),
            )
            .await
            .context("creating the usage account index")?;
        self.usage
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"timestamp": 1})
                    .options(
                        IndexOptions::builder()
                            .expire_after(USAGE_TTL_BACKSTOP)
                            .build(),
                    )
                    .build(),
            )
            .await
            .context("creating the usage TTL index")?;
        Ok(())
    }
}

impl MongoStore {
    /// Deletes at most `limit` usage documents matching `filter`, so one call stays bounded in time.
    async fn delete_usage_batch(
        &self,
        filter: mongodb::bson::Document,
        limit: u64,
    ) -> anyhow::Result<u64> {
        let ids: Vec<mongodb::bson::Bson> = self
            .usage
            .clone_with_type::<mongodb::bson::Document>()
            .find(filter)
            .projection(doc! {"_id": 1})
            .limit(limit as i64)
            .await?
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self
            .usage
            .delete_many(doc! {"_id": {"$in": ids}})
            .await?
            .deleted_count)
    }
}

/// Deletes every document of the account in `collection`; returns how many.
async fn delete_of_account<T: Send + Sync>(
    collection: &mongodb::Collection<T>,
    account_id: &str,
) -> anyhow::Result<u64> {
    Ok(collection
        .delete_many(doc! {"account_id": account_id})
        .await?
        .deleted_count)
}

#[async_trait]
impl AccountStore for MongoStore {
    async fn account_for_email(&self, email: &str, plan: &str) -> anyhow::Result<Account> {
        let fresh = Account::new(email, plan, OffsetDateTime::now_utc());
        let upsert = self
            .accounts
            .find_one_and_update(
                doc! {"email": &fresh.email},
                doc! {"$setOnInsert": {
                    "_id": &fresh.id, "name": null, "plan": &fresh.plan,
                    "created_at": to_bson(fresh.created_at), "restricted": false,
                    "deletion_requested_at": null, "session_version": 0_i64,
                    "billing": mongodb::bson::to_bson(&fresh.billing)?,
                }},
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match upsert {
            Ok(Some(doc)) => Ok(doc.into()),
            // Two upserts raced and the other inserted first: the unique index refused ours; read theirs.
            Ok(None) => self.account_by_email(&fresh.email).await?.context("upsert"),
            Err(e) if is_duplicate_key(&e) => self
                .account_by_email(&fresh.email)
                .await?
                .context("account vanished after a duplicate-key race"),
            Err(e) => Err(e.into()),
        }
    }

    async fn account(&self, account_id: &str) -> anyhow::Result<Option<Account>> {
        Ok(self
            .accounts
            .find_one(doc! {"_id": account_id})
            .await?
            .map(Into::into))
    }

    async fn account_by_email(&self, email: &str) -> anyhow::Result<Option<Account>> {
        Ok(self
            .accounts
            .find_one(doc! {"email": normalize_email(email)})
            .await?
            .map(Into::into))
    }

    async fn set_plan(&self, account_id: &str, plan: &str) -> anyhow::Result<()> {
        let result = self
            .accounts
            .update_one(doc! {"_id": account_id}, doc! {"$set": {"plan": plan}})
            .await?;
        anyhow::ensure!(result.matched_count == 1, "no account {account_id}");
        Ok(())
    }

    async fn update_profile(
        &self,
        account_id: &str,
        change: &ProfileChange,
    ) -> anyhow::Result<ProfileUpdate> {
        let mut set = mongodb::bson::Document::new();
        if let Some(name) = &change.name {
            set.insert("name", name);
        }
        if let Some(email) = &change.email {
            set.insert("email", normalize_email(email));
        }
        if set.is_empty() {
            return Ok(match self.account(account_id).await? {
                Some(account) => ProfileUpdate::Updated(Box::new(account)),
                None => ProfileUpdate::NotFound,
            });
        }
        let updated = self
            .accounts
            .find_one_and_update(doc! {"_id": account_id}, doc! {"$set": set})
            .return_document(ReturnDocument::After)
            .await;
        match updated {
            Ok(Some(doc)) => Ok(ProfileUpdate::Updated(Box::new(doc.into()))),
            Ok(None) => Ok(ProfileUpdate::NotFound),
            Err(e) if is_duplicate_key(&e) => Ok(ProfileUpdate::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn set_restricted(&self, account_id: &str, restricted: bool) -> anyhow::Result<bool> {
        let result = self
            .accounts
            .update_one(
                doc! {"_id": account_id},
                doc! {"$set": {"restricted": restricted}},
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn bump_session_version(&self, account_id: &str) -> anyhow::Result<()> {
        self.accounts
            .update_one(
                doc! {"_id": account_id},
                doc! {"$inc": {"session_version": 1_i64}},
            )
            .await?;
        Ok(())
    }

    async fn request_deletion(&self, account_id: &str, at: OffsetDateTime) -> anyhow::Result<()> {
        // Each step is idempotent, so a retry after a partial failure completes the request.
        self.accounts
            .update_one(
                doc! {"_id": account_id, "deletion_requested_at": null},
                doc! {"$set": {"deletion_requested_at": to_bson(at)}},
            )
            .await?;
        self.accounts
            .update_one(
                doc! {"_id": account_id},
                doc! {"$set": {"email": deleted_email(account_id)}},
            )
            .await?;
        self.bump_session_version(account_id).await?;
        self.keys
            .update_many(
                doc! {"account_id": account_id, "revoked_at": null},
                doc! {"$set": {"revoked_at": to_bson(at)}},
            )
            .await?;
        self.accounts
            .update_one(
                doc! {"_id": account_id},
                doc! {"$set": {"active_keys": 0_i64}},
            )
            .await?;
        self.identities
            .delete_many(doc! {"account_id": account_id})
            .await?;
        Ok(())
    }
}

#[async_trait]
impl IdentityStore for MongoStore {
    async fn identity(&self, provider: &str, subject: &str) -> anyhow::Result<Option<Identity>> {
        Ok(self
            .identities
            .find_one(doc! {"_id": identity_id(provider, subject)})
            .await?
            .map(Into::into))
    }

    async fn link_identity(&self, identity: &Identity) -> anyhow::Result<()> {
        self.identities
            .update_one(
                doc! {"_id": identity_id(&identity.provider, &identity.subject)},
                doc! {
                    "$set": {"email": &identity.email},
                    "$setOnInsert": {
                        "provider": &identity.provider, "subject": &identity.subject,
                        "account_id": &identity.account_id,
                        "created_at": to_bson(identity.created_at),
                    },
                },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn identities_for_account(&self, account_id: &str) -> anyhow::Result<Vec<Identity>> {
        let docs: Vec<IdentityDoc> = self
            .identities
            .find(doc! {"account_id": account_id})
            .sort(doc! {"created_at": 1, "_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }
}

#[async_trait]
impl KeyStore for MongoStore {
    async fn insert_key(&self, key: &ApiKeyRecord) -> anyhow::Result<()> {
        self.active_keys_counted(&key.account_id).await?;
        self.accounts
            .update_one(
                doc! {"_id": &key.account_id},
                doc! {"$inc": {"active_keys": 1_i64}},
            )
            .await?;
        self.insert_counted_key(key).await
    }

    async fn insert_key_within(&self, key: &ApiKeyRecord, max_active: u64) -> anyhow::Result<bool> {
        self.active_keys_counted(&key.account_id).await?;
        // The account's counter is taken first, conditionally and atomically: of concurrent creations
        // at the limit, only as many as fit get a slot.
        let max = max_active.min(i64::MAX as u64) as i64;
        let slot = self
            .accounts
            .update_one(
                doc! {"_id": &key.account_id, "active_keys": {"$lt": max}},
                doc! {"$inc": {"active_keys": 1_i64}},
            )
            .await?;
        if slot.modified_count == 0 {
            return Ok(false);
        }
        self.insert_counted_key(key).await?;
        Ok(true)
    }

    async fn key(&self, key_id: &str) -> anyhow::Result<Option<ApiKeyRecord>> {
        Ok(self
            .keys
            .find_one(doc! {"_id": key_id})
            .await?
            .map(Into::into))
    }

    async fn keys_for_account(&self, account_id: &str) -> anyhow::Result<Vec<ApiKeyRecord>> {
        let docs: Vec<KeyDoc> = self
            .keys
            .find(doc! {"account_id": account_id})
            .sort(doc! {"created_at": 1, "_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }

    async fn update_key(
        &self,
        key_id: &str,
        name: Option<&str>,
        controls: &KeyControls,
    ) -> anyhow::Result<bool> {
        let update = match ControlsDoc::of(controls) {
            Some(doc) => doc! {"$set": {"name": name, "controls": mongodb::bson::to_bson(&doc)?}},
            None => doc! {"$set": {"name": name}, "$unset": {"controls": ""}},
        };
        let result = self.keys.update_one(doc! {"_id": key_id}, update).await?;
        Ok(result.matched_count == 1)
    }

    async fn rotate_key(
        &self,
        key_id: &str,
        new_hash: &str,
        previous: &PreviousSecret,
    ) -> anyhow::Result<bool> {
        let result = self
            .keys
            .update_one(
                doc! {"_id": key_id, "hash": &previous.hash, "revoked_at": null},
                doc! {"$set": {
                    "hash": new_hash,
                    "previous": mongodb::bson::to_bson(&PreviousDoc::of(previous))?,
                }},
            )
            .await?;
        Ok(result.modified_count == 1)
    }

    async fn revoke_key(&self, key_id: &str, at: OffsetDateTime) -> anyhow::Result<bool> {
        let revoked = self
            .keys
            .find_one_and_update(
                doc! {"_id": key_id, "revoked_at": null},
                doc! {"$set": {"revoked_at": to_bson(at)}},
            )
            .await?;
        let Some(key) = revoked else {
            return Ok(false);
        };
        // The key gives its slot back.
        self.accounts
            .update_one(
                doc! {"_id": &key.account_id, "active_keys": {"$gt": 0_i64}},
                doc! {"$inc": {"active_keys": -1_i64}},
            )
            .await?;
        Ok(true)
    }

    async fn touch_key(&self, key_id: &str, at: OffsetDateTime) -> anyhow::Result<()> {
        self.keys
            .update_one(
                doc! {"_id": key_id},
                doc! {"$set": {"last_used_at": to_bson(at)}},
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl UsageStore for MongoStore {
    async fn insert_usage(&self, rows: &[UsageRecord]) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let docs: Vec<UsageDoc> = rows.iter().map(UsageDoc::from).collect();
        match self.usage.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn recent_usage(&self, account_id: &str, limit: u64) -> anyhow::Result<Vec<UsageRecord>> {
        let docs: Vec<UsageDoc> = self
            .usage
            .find(doc! {"account_id": account_id})
            .sort(doc! {"timestamp": -1, "_id": -1})
            .limit(limit as i64)
            .await?
            .try_collect()
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }

    async fn usage_of_request(
        &self,
        account_id: &str,
        request_id: &str,
    ) -> anyhow::Result<Option<UsageRecord>> {
        let doc = self
            .usage
            .find_one(doc! {"_id": request_id, "account_id": account_id})
            .await?;
        Ok(doc.map(Into::into))
    }

    async fn usage_totals(
        &self,
        account_id: &str,
        key_id: Option<&str>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> anyhow::Result<Vec<UsageTotals>> {
        #[derive(Deserialize)]
        struct Group {
            #[serde(rename = "_id")]
            id: GroupId,
            requests: i64,
            prompt_tokens: i64,
            completion_tokens: i64,
            cost_usd: f64,
        }
        #[derive(Deserialize)]
        struct GroupId {
            day: DateTime,
            model: String,
        }
        let mut filter = doc! {"account_id": account_id, "timestamp": {"$gte": to_bson(from), "$lt": to_bson(to)}};
        if let Some(key_id) = key_id {
            filter.insert("api_key_id", key_id);
        }
        let pipeline = vec![
            doc! {"$match": filter},
            doc! {"$group": {
                "_id": {"day": {"$dateTrunc": {"date": "$timestamp", "unit": "day"}}, "model": "$model"},
                "requests": {"$sum": {"$ifNull": ["$count", 1_i64]}},
                "prompt_tokens": {"$sum": "$prompt_tokens"},
                "completion_tokens": {"$sum": "$completion_tokens"},
                "cost_usd": {"$sum": "$cost_usd"},
            }},
            doc! {"$sort": {"_id.day": 1, "_id.model": 1}},
        ];
        let mut cursor = self.usage.aggregate(pipeline).await?;
        let mut totals = Vec::new();
        while let Some(doc) = cursor.try_next().await? {
            let group: Group = mongodb::bson::from_document(doc)?;
            let day = from_bson(group.id.day).date();
            totals.push(UsageTotals {
                day: format!(
                    "{:04}-{:02}-{:02}",
                    day.year(),
                    u8::from(day.month()),
                    day.day()
                ),
                model: group.id.model,
                requests: group.requests.max(0) as u64,
                prompt_tokens: group.prompt_tokens.max(0) as u64,
                completion_tokens: group.completion_tokens.max(0) as u64,
                cost_usd: group.cost_usd,
            });
        }
        // Sorting by the grouped date then model is what the pipeline asked for; sort again in case a
        // server orders compound `_id`s differently.
        totals.sort_by(|a, b| {
            (a.day.as_str(), a.model.as_str()).cmp(&(b.day.as_str(), b.model.as_str()))
        });
        Ok(totals)
    }

    fn usage_for_account(
        &self,
        account_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> BoxStream<'static, anyhow::Result<UsageRecord>> {
        let usage = self.usage.clone();
        let filter = doc! {
            "account_id": account_id,
            "timestamp": {"$gte": to_bson(from), "$lt": to_bson(to)},
        };
        futures_util::stream::once(async move {
            usage
                .find(filter)
                .sort(doc! {"timestamp": 1, "_id": 1})
                .batch_size(1000)
                .await
        })
        .try_flatten()
        .map(|item| item.map(UsageRecord::from).map_err(anyhow::Error::from))
        .boxed()
    }
}

#[async_trait]
impl ErasureStore for MongoStore {
    async fn delete_usage_before(&self, cutoff: OffsetDateTime, limit: u64) -> anyhow::Result<u64> {
        self.delete_usage_batch(doc! {"timestamp": {"$lt": to_bson(cutoff)}}, limit)
            .await
    }

    async fn count_usage_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64> {
        Ok(self
            .usage
            .count_documents(doc! {"timestamp": {"$lt": to_bson(cutoff)}})
            .await?)
    }

    async fn accounts_pending_erasure(&self, limit: u64) -> anyhow::Result<Vec<Account>> {
        let docs: Vec<AccountDoc> = self
            .accounts
            .find(doc! {"deletion_requested_at": {"$ne": null}})
            .sort(doc! {"deletion_requested_at": 1, "_id": 1})
            .limit(limit as i64)
            .await?
            .try_collect()
            .await?;
        Ok(docs.into_iter().map(Into::into).collect())
    }

    async fn erase_usage_of(&self, account_id: &str, limit: u64) -> anyhow::Result<u64> {
        self.delete_usage_batch(doc! {"account_id": account_id}, limit)
            .await
    }

    async fn erase_account(&self, account_id: &str) -> anyhow::Result<Erased> {
        Ok(Erased {
            usage_rows: delete_of_account(&self.usage, account_id).await?,
            keys: delete_of_account(&self.keys, account_id).await?,
            identities: delete_of_account(&self.identities, account_id).await?,
            accounts: self
                .accounts
                .delete_one(doc! {"_id": account_id})
                .await?
                .deleted_count,
        })
    }

    async fn count_account_data(&self, account_id: &str) -> anyhow::Result<Erased> {
        let by_account = doc! {"account_id": account_id};
        Ok(Erased {
            usage_rows: self.usage.count_documents(by_account.clone()).await?,
            keys: self.keys.count_documents(by_account.clone()).await?,
            identities: self.identities.count_documents(by_account).await?,
            accounts: self
                .accounts
                .count_documents(doc! {"_id": account_id})
                .await?,
        })
    }
}

#[async_trait]
impl BillingStore for MongoStore {
    async fn update_billing(
        &self,
        account_id: &str,
        expected_version: i64,
        billing: &Billing,
    ) -> anyhow::Result<bool> {
        // Accounts from before billing have no `billing` field: that reads as version 0.
        let version_filter = if expected_version == 0 {
            doc! {"$in": [0_i64, null]}
        } else {
            doc! {"$eq": expected_version}
        };
        let result = self
            .accounts
            .update_one(
                doc! {"_id": account_id, "billing.version": version_filter},
                doc! {"$set": {"billing": mongodb::bson::to_bson(billing)?}},
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    async fn account_by_stripe_customer(
        &self,
        customer_id: &str,
    ) -> anyhow::Result<Option<Account>> {
        Ok(self
            .accounts
            .find_one(doc! {"billing.stripe_customer_id": customer_id})
            .await?
            .map(Into::into))
    }
}

#[async_trait]
impl StripeEventStore for MongoStore {
    async fn claim_stripe_event(
        &self,
        event_id: &str,
        now: OffsetDateTime,
        lease: Duration,
    ) -> anyhow::Result<EventClaim> {
        let fresh = StripeEventDoc {
            id: event_id.into(),
            claimed_at: to_bson(now),
            completed_at: None,
        };
        match self.stripe_events.insert_one(fresh).await {
            Ok(_) => return Ok(EventClaim::Claimed),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(existing) = self.stripe_events.find_one(doc! {"_id": event_id}).await? else {
            // Released between our insert and this read: the next delivery will process it.
            return Ok(EventClaim::InProgress);
        };
        if existing.completed_at.is_some() {
            return Ok(EventClaim::AlreadyProcessed);
        }
        if from_bson(existing.claimed_at) + lease > now {
            return Ok(EventClaim::InProgress);
        }
        // A stale claim from an invocation that never finished: take it over, if nobody else just did.
        let taken = self
            .stripe_events
            .update_one(
                doc! {"_id": event_id, "completed_at": null, "claimed_at": existing.claimed_at},
                doc! {"$set": {"claimed_at": to_bson(now)}},
            )
            .await?;
        Ok(if taken.modified_count == 1 {
            EventClaim::Claimed
        } else {
            EventClaim::InProgress
        })
    }

    async fn complete_stripe_event(
        &self,
        event_id: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        self.stripe_events
            .update_one(
                doc! {"_id": event_id},
                doc! {"$set": {"completed_at": to_bson(now)}},
            )
            .await?;
        Ok(())
    }

    async fn release_stripe_event(&self, event_id: &str) -> anyhow::Result<()> {
        self.stripe_events
            .delete_one(doc! {"_id": event_id, "completed_at": null})
            .await?;
        Ok(())
    }

    async fn delete_stripe_events_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64> {
        Ok(self
            .stripe_events
            .delete_many(doc! {"claimed_at": {"$lt": to_bson(cutoff)}})
            .await?
            .deleted_count)
    }
}
