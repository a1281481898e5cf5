//! API keys: generation, parsing, and verification with a bounded-lifetime cache.
//!
//! A key reads `qnp_<key id>_<secret>`. The key id is public and is how the record is found; only a
//! bcrypt hash of the secret is stored. bcrypt is deliberately slow (hundreds of ms at cost 12), so a warm
//! process runs it once per key and afterwards compares a SHA-256 digest of the presented secret against
//! the one it verified. Cache entries are re-read from the store after `ttl` (at most 60 s), which is how a
//! revocation, a plan change or a restriction reaches a warm process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::accounts::ApiKeyRecord;
use crate::error::GatewayError;
use crate::store::RecordStore;

pub const KEY_PREFIX: &str = "qnp_";
const KEY_ID_LEN: usize = 16;
const SECRET_LEN: usize = 40;
/// Entries kept for wrong secrets, so guessing against a known key id cannot make us run bcrypt in a loop.
const MAX_REJECTED: usize = 10_000;

pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A freshly generated key: the plaintext is shown to the user once and then dropped.
pub struct NewKey {
    pub plaintext: String,
    pub record: ApiKeyRecord,
}

/// Creates a key for an account, hashing its secret with bcrypt at `cost`.
pub fn generate(
    account_id: &str,
    name: Option<String>,
    cost: u32,
    now: OffsetDateTime,
) -> anyhow::Result<NewKey> {
    let key_id = random_token(KEY_ID_LEN).to_lowercase();
    let secret = random_token(SECRET_LEN);
    let hash = bcrypt::hash(&secret, cost)?;
    Ok(NewKey {
        plaintext: format!("{KEY_PREFIX}{key_id}_{secret}"),
        record: ApiKeyRecord {
            key_id,
            account_id: account_id.into(),
            name,
            hash,
            created_at: now,
            revoked_at: None,
            last_used_at: None,
        },
    })
}

/// Splits a presented key into (key id, secret) when it has the right shape.
pub fn parse(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let well_formed = key_id.len() == KEY_ID_LEN
        && secret.len() == SECRET_LEN
        && key_id.bytes().all(|b| b.is_ascii_alphanumeric())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    well_formed.then_some((key_id, secret))
}

/// What a verified key is allowed to do, as of its last read from the store.
#[derive(Debug, Clone)]
pub struct AuthorizedKey {
    pub key_id: String,
    pub account_id: String,
    /// The account's own plan; a live subscription in `billing` overrides it (see `plan_in_force`).
    pub plan: String,
    pub restricted: bool,
    pub billing: crate::billing::Billing,
}

impl AuthorizedKey {
    /// The plan whose limits apply at `now`, computed per request so that a grace period or a
    /// cancellation ends exactly on time.
    pub fn plan_in_force<'a>(
        &self,
        plans: &'a crate::plans::Plans,
        now: OffsetDateTime,
        grace: time::Duration,
    ) -> &'a crate::plans::Plan {
        self.billing.plan_in_force(plans, &self.plan, now, grace)
    }
}

struct CachedKey {
    secret_digest: [u8; 32],
    /// The stored hash the digest was verified against; a changed hash means verify again.
    bcrypt_hash: String,
    key: Arc<AuthorizedKey>,
    checked_at: Instant,
    /// Set when the account changed in this process: the next use reads the store again, but keeps the
    /// verified digest, so no bcrypt runs for it.
    stale: bool,
}

pub struct KeyVerifier {
    store: Arc<dyn RecordStore>,
    ttl: Duration,
    cache: RwLock<HashMap<String, CachedKey>>,
    rejected: Mutex<HashMap<[u8; 32], Instant>>,
    /// One verification at a time per key id, so a burst of first requests runs bcrypt once, not N times.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl KeyVerifier {
    pub fn new(store: Arc<dyn RecordStore>, ttl: Duration) -> KeyVerifier {
        KeyVerifier {
            store,
            ttl,
            cache: RwLock::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The warm path: a cache hit costs one SHA-256 and a constant-time compare.
    fn cached(&self, key_id: &str, secret_digest: &[u8; 32]) -> Option<Arc<AuthorizedKey>> {
        let cache = self.cache.read().expect("key cache lock");
        let entry = cache.get(key_id)?;
        let fresh = !entry.stale && entry.checked_at.elapsed() < self.ttl;
        let same = bool::from(entry.secret_digest.ct_eq(secret_digest));
        (fresh && same).then(|| entry.key.clone())
    }

    pub async fn verify(&self, presented: &str) -> Result<Arc<AuthorizedKey>, GatewayError> {
        let (key_id, secret) = parse(presented).ok_or(GatewayError::InvalidKey)?;
        let secret_digest = digest(secret);
        if let Some(key) = self.cached(key_id, &secret_digest) {
            return Ok(key);
        }
        if self.recently_rejected(&secret_digest) {
            return Err(GatewayError::InvalidKey);
        }
        let gate = {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock");
            in_flight.entry(key_id.to_owned()).or_default().clone()
        };
        let _turn = gate.lock().await;
        // Another request may have verified this key while we waited for our turn.
        if let Some(key) = self.cached(key_id, &secret_digest) {
            return Ok(key);
        }
        let result = self.refresh(key_id, secret, secret_digest).await;
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .remove(key_id);
        result
    }

    /// Reads the key and its account from the store and (only if this secret was not verified against
    /// this hash before) checks the secret with bcrypt.
    async fn refresh(
        &self,
        key_id: &str,
        secret: &str,
        secret_digest: [u8; 32],
    ) -> Result<Arc<AuthorizedKey>, GatewayError> {
        let record = self
            .store
            .key(key_id)
            .await
            .map_err(GatewayError::internal)?;
        let Some(record) = record else {
            self.forget(key_id);
            return Err(GatewayError::InvalidKey);
        };
        if record.revoked_at.is_some() {
            self.forget(key_id);
            return Err(GatewayError::RevokedKey);
        }
        let account = self
            .store
            .account(&record.account_id)
            .await
            .map_err(GatewayError::internal)?;
        let Some(account) = account.filter(|a| a.is_active()) else {
            self.forget(key_id);
            return Err(GatewayError::InvalidKey);
        };

        let already_verified = {
            let cache = self.cache.read().expect("key cache lock");
            cache.get(key_id).is_some_and(|e| {
                e.bcrypt_hash == record.hash && bool::from(e.secret_digest.ct_eq(&secret_digest))
            })
        };
        if !already_verified {
            let hash = record.hash.clone();
            let secret = secret.to_owned();
            let ok = tokio::task::spawn_blocking(move || bcrypt::verify(secret, &hash))
                .await
                .map_err(GatewayError::internal)?
                .unwrap_or(false);
            if !ok {
                self.remember_rejected(secret_digest);
                return Err(GatewayError::InvalidKey);
            }
        }

        let key = Arc::new(AuthorizedKey {
            key_id: record.key_id.clone(),
            account_id: account.id.clone(),
            plan: account.plan.clone(),
            restricted: account.restricted,
            billing: account.billing.clone(),
        });
        self.cache.write().expect("key cache lock").insert(
            key_id.to_owned(),
            CachedKey {
                secret_digest,
                bcrypt_hash: record.hash,
                key: key.clone(),
                checked_at: Instant::now(),
                stale: false,
            },
        );
        // "Last used" is dashboard information with minute resolution; it is refreshed with the cache
        // entry and never delays the request.
        let store = self.store.clone();
        let key_id = key_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&key_id, OffsetDateTime::now_utc()).await {
                tracing::warn!(error = %e, key_id, "could not record key last use");
            }
        });
        Ok(key)
    }

    /// Drops a key from the cache: its next use reads the store again (a revocation in this process).
    pub fn forget(&self, key_id: &str) {
        self.cache.write().expect("key cache lock").remove(key_id);
    }

    /// Makes every cached key of an account be read from the store on its next use (restriction,
    /// deletion, a plan change in this process), without verifying its secret with bcrypt again.
    pub fn forget_account(&self, account_id: &str) {
        for entry in self.cache.write().expect("key cache lock").values_mut() {
            if entry.key.account_id == account_id {
                entry.stale = true;
            }
        }
    }

    fn recently_rejected(&self, secret_digest: &[u8; 32]) -> bool {
        let rejected = self.rejected.lock().expect("rejected lock");
        rejected
            .get(secret_digest)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    fn remember_rejected(&self, secret_digest: [u8; 32]) {
        let mut rejected = self.rejected.lock().expect("rejected lock");
        if rejected.len() >= MAX_REJECTED {
            rejected.retain(|_, at| at.elapsed() < self.ttl);
            if rejected.len() >= MAX_REJECTED {
                rejected.clear();
            }
        }
        rejected.insert(secret_digest, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_only_the_secret() {
        let now = OffsetDateTime::now_utc();
        let key = generate("acct_1", Some("ci".into()), 4, now).unwrap();
        let (key_id, secret) = parse(&key.plaintext).unwrap();
        assert_eq!(key_id, key.record.key_id);
        assert!(!key.record.hash.contains(secret));
        assert!(bcrypt::verify(secret, &key.record.hash).unwrap());
        assert!(key.plaintext.starts_with(&key.record.prefix()));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in [
            "",
            "sk-abc",
            "qnp_short_secret",
            "qnp_abcdefghijklmnop_tooshort",
            "qnp_abcdefghijklmnop_0123456789012345678901234567890123456789x",
            "qnp_abcdefghijklmno!_0123456789012345678901234567890123456789",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(parse("qnp_abcdefghijklmnop_0123456789012345678901234567890123456789").is_some());
    }
}
