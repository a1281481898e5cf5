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

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::accounts::{ApiKeyRecord, PreviousSecret};
use crate::error::GatewayError;
use crate::store::{AccountStore, KeyStore};

pub use crate::ids::{KEY_PREFIX, random_token};

const KEY_ID_LEN: usize = 16;
const SECRET_LEN: usize = 40;
/// Entries kept for wrong secrets, so guessing against a known key id cannot make us run bcrypt in a loop.
const MAX_REJECTED: usize = 10_000;
/// How long a wrong secret is remembered as wrong (whatever the cache's TTL): it is never checked with
/// bcrypt twice in this window.
const REJECTED_FOR: Duration = Duration::from_secs(600);
/// Failed verifications allowed per key id, and per client address, in a minute before further attempts
/// are refused without running bcrypt. A legitimate client fails at most a few times (a typo, a rotated
/// key); a guesser is held to this many bcrypt runs a minute for each key id and each address it uses.
pub const FAILURES_PER_KEY_PER_MINUTE: u32 = 10;
pub const FAILURES_PER_SOURCE_PER_MINUTE: u32 = 30;
/// Entries the failure counters keep before old minutes are dropped.
const MAX_FAILURE_ENTRIES: usize = 100_000;

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
            controls: Default::default(),
            previous: None,
        },
    })
}

pub use crate::config::MAX_ROTATION_GRACE;

/// A key's new secret: the plaintext (shown once), its hash, and the old secret kept for the grace
/// period.
pub struct Rotation {
    pub plaintext: String,
    pub new_hash: String,
    pub previous: PreviousSecret,
}

/// Makes a new secret for the key, under the same id; the current one stays valid for `grace`.
pub fn rotate(
    record: &ApiKeyRecord,
    cost: u32,
    grace: time::Duration,
    now: OffsetDateTime,
) -> anyhow::Result<Rotation> {
    let secret = random_token(SECRET_LEN);
    Ok(Rotation {
        plaintext: format!("{KEY_PREFIX}{}_{secret}", record.key_id),
        new_hash: bcrypt::hash(&secret, cost)?,
        previous: PreviousSecret {
            hash: record.hash.clone(),
            rotated_at: now,
            valid_until: now + grace.clamp(time::Duration::ZERO, MAX_ROTATION_GRACE),
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
    pub billing: crate::subscription::Billing,
    /// The key's own controls (expiry, spend limit, allowlist, requests per minute).
    pub controls: crate::key_controls::KeyControls,
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

/// A secret verified with bcrypt once: its digest, the stored hash it matched (a changed hash means
/// verify again), and until when it is accepted (a rotated-out secret's grace period; None for the
/// key's current secret).
#[derive(Clone)]
struct VerifiedSecret {
    digest: [u8; 32],
    bcrypt_hash: String,
    until: Option<OffsetDateTime>,
}

impl VerifiedSecret {
    fn accepts(&self, digest: &[u8; 32], now: OffsetDateTime) -> bool {
        bool::from(self.digest.ct_eq(digest)) && self.until.is_none_or(|until| until > now)
    }
}

struct CachedKey {
    /// The key's secrets verified so far: during a rotation's grace period, the old and the new one,
    /// so clients on either are served without bcrypt.
    secrets: Vec<VerifiedSecret>,
    key: Arc<AuthorizedKey>,
    checked_at: Instant,
    /// Set when the account changed in this process: the next use reads the store again, but keeps the
    /// verified digest, so no bcrypt runs for it.
    stale: bool,
    /// The store could not be read when the entry was due for a refresh: it is served as it is until
    /// then (at most [`MAX_STALE`] after its last successful read), and the store tried again after.
    retry_at: Option<Instant>,
}

/// How long a verified key keeps working from the cache while the record store cannot be read: an
/// outage of the record store does not stop keys already in use. A revocation made meanwhile in another
/// process is not seen until the store is back (it cannot be read), so this stays short.
pub const MAX_STALE: Duration = Duration::from_secs(15 * 60);
/// How long a store read for key verification may take before the store counts as unavailable.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// While the store is unavailable, how often a cached key's refresh is tried again.
const STORE_RETRY: Duration = Duration::from_secs(5);

fn keys_unavailable() -> GatewayError {
    GatewayError::StoreUnavailable {
        message: "the gateway cannot verify API keys right now",
        retry_after_secs: STORE_RETRY.as_secs(),
    }
}

/// Failed verifications per key id and per client address in the current minute, checked before bcrypt
/// runs: an unauthenticated client cannot make the gateway spend more than a bounded amount of CPU on
/// guesses. Per process (each warm Lambda instance counts on its own).
#[derive(Default)]
struct FailureThrottle {
    /// (the minute, key id or address) -> failures in it.
    counts: Mutex<HashMap<(u64, String), u32>>,
}

fn this_minute() -> u64 {
    (OffsetDateTime::now_utc().unix_timestamp().max(0) / 60) as u64
}

impl FailureThrottle {
    fn allows(&self, key_id: &str, source: Option<std::net::IpAddr>) -> bool {
        let minute = this_minute();
        let counts = self.counts.lock().expect("failure throttle lock");
        let over = |name: String, limit: u32| {
            counts
                .get(&(minute, name))
                .is_some_and(|failures| *failures >= limit)
        };
        !over(format!("key:{key_id}"), FAILURES_PER_KEY_PER_MINUTE)
            && !source.is_some_and(|ip| over(format!("ip:{ip}"), FAILURES_PER_SOURCE_PER_MINUTE))
    }

    fn record(&self, key_id: &str, source: Option<std::net::IpAddr>) {
        let minute = this_minute();
        let mut counts = self.counts.lock().expect("failure throttle lock");
        if counts.len() >= MAX_FAILURE_ENTRIES {
            counts.retain(|(m, _), _| *m == minute);
        }
        for name in
            std::iter::once(format!("key:{key_id}")).chain(source.map(|ip| format!("ip:{ip}")))
        {
            let failures = counts.entry((minute, name)).or_default();
            *failures = failures.saturating_add(1);
        }
    }
}

pub struct KeyVerifier {
    /// The key records, and the accounts whose plan and restriction a key carries.
    keys: Arc<dyn KeyStore>,
    accounts: Arc<dyn AccountStore>,
    ttl: Duration,
    cache: RwLock<HashMap<String, CachedKey>>,
    /// Digests of whole presented keys (id and secret) refused, when, and whether because the secret was
    /// wrong (`false`) or the right secret's key is revoked (`true`).
    rejected: Mutex<HashMap<[u8; 32], (Instant, bool)>>,
    failures: FailureThrottle,
    /// bcrypt checks run so far, for operators' metrics and for tests that prove when none runs.
    bcrypt_runs: std::sync::atomic::AtomicU64,
    /// One verification at a time per key id, so a burst of first requests runs bcrypt once, not N times.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl KeyVerifier {
    pub fn new(
        keys: Arc<dyn KeyStore>,
        accounts: Arc<dyn AccountStore>,
        ttl: Duration,
    ) -> KeyVerifier {
        KeyVerifier {
            keys,
            accounts,
            ttl,
            cache: RwLock::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
            failures: FailureThrottle::default(),
            bcrypt_runs: Default::default(),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The warm path: a cache hit costs one SHA-256 and a constant-time compare or two. A rotated-out
    /// secret stops working the moment its grace period ends, whatever the cache's lifetime.
    fn cached(&self, key_id: &str, secret_digest: &[u8; 32]) -> Option<Arc<AuthorizedKey>> {
        let cache = self.cache.read().expect("key cache lock");
        let entry = cache.get(key_id)?;
        let age = entry.checked_at.elapsed();
        let fresh = !entry.stale
            && (age < self.ttl
                || (age < MAX_STALE && entry.retry_at.is_some_and(|t| Instant::now() < t)));
        if !fresh {
            return None;
        }
        let now = OffsetDateTime::now_utc();
        entry
            .secrets
            .iter()
            .any(|s| s.accepts(secret_digest, now))
            .then(|| entry.key.clone())
    }

    /// Verifies a presented key; `source` is the client's address, for throttling failed attempts.
    /// Every failure an attacker without the secret can cause (unknown id, wrong secret, revoked key,
    /// deleted account, throttled) is the same `InvalidKey`; only the secret's holder learns that a key
    /// was revoked.
    pub async fn verify(
        &self,
        presented: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<Arc<AuthorizedKey>, GatewayError> {
        let (key_id, secret) = parse(presented).ok_or(GatewayError::InvalidKey)?;
        let secret_digest = digest(secret);
        if let Some(key) = self.cached(key_id, &secret_digest) {
            return Ok(key);
        }
        let presented_digest = digest(presented);
        if let Some(err) = self.recently_rejected(&presented_digest) {
            return Err(err);
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
        let mut result = self
            .refresh(key_id, secret, secret_digest, presented_digest, source)
            .await;
        if matches!(result, Err(GatewayError::StoreUnavailable { .. }))
            && let Some(key) = self.serve_stale(key_id, &secret_digest)
        {
            result = Ok(key);
        }
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .remove(key_id);
        result
    }

    /// The cached key for this secret when the store cannot be read to refresh it: served until
    /// [`MAX_STALE`] after its last successful read, the store tried again every few seconds.
    fn serve_stale(&self, key_id: &str, secret_digest: &[u8; 32]) -> Option<Arc<AuthorizedKey>> {
        let mut cache = self.cache.write().expect("key cache lock");
        let entry = cache.get_mut(key_id)?;
        let now = OffsetDateTime::now_utc();
        if entry.stale
            || entry.checked_at.elapsed() >= MAX_STALE
            || !entry.secrets.iter().any(|s| s.accepts(secret_digest, now))
        {
            return None;
        }
        if entry.retry_at.is_none() {
            tracing::warn!(
                key_id,
                "the record store is unavailable; serving a verified key from the cache"
            );
        }
        entry.retry_at = Some(Instant::now() + STORE_RETRY);
        Some(entry.key.clone())
    }

    /// Reads the key and its account from the store and (only if this secret was not verified against
    /// this hash before) checks the secret with bcrypt.
    async fn refresh(
        &self,
        key_id: &str,
        secret: &str,
        secret_digest: [u8; 32],
        presented_digest: [u8; 32],
        source: Option<std::net::IpAddr>,
    ) -> Result<Arc<AuthorizedKey>, GatewayError> {
        let record = match tokio::time::timeout(STORE_TIMEOUT, self.keys.key(key_id)).await {
            Ok(Ok(record)) => record,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, key_id, "reading a key failed");
                return Err(keys_unavailable());
            }
            Err(_) => return Err(keys_unavailable()),
        };
        let Some(record) = record else {
            self.forget(key_id);
            return Err(GatewayError::InvalidKey);
        };

        // The secret is checked before anything about the key is told: an unknown, a revoked and a
        // mistyped key look the same to whoever lacks the secret. It may be the key's current secret or,
        // during a rotation's grace period, the one it replaced.
        let now = OffsetDateTime::now_utc();
        let mut hashes = vec![(record.hash.clone(), None)];
        if let Some(previous) = record.previous_in_grace(now) {
            hashes.push((previous.hash.clone(), Some(previous.valid_until)));
        }
        let known: Vec<VerifiedSecret> = {
            let cache = self.cache.read().expect("key cache lock");
            cache
                .get(key_id)
                .map(|e| {
                    e.secrets
                        .iter()
                        .filter_map(|s| {
                            let (_, until) = hashes.iter().find(|(h, _)| *h == s.bcrypt_hash)?;
                            Some(VerifiedSecret {
                                until: *until,
                                ..s.clone()
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let verified = match known
            .iter()
            .find(|s| bool::from(s.digest.ct_eq(&secret_digest)))
        {
            Some(secret) => secret.clone(),
            None => {
                if !self.failures.allows(key_id, source) {
                    tracing::warn!(key_id, source = ?source, "too many failed key verifications; refused without checking");
                    return Err(GatewayError::InvalidKey);
                }
                let Some(secret) = self.check_secret(secret, secret_digest, &hashes).await? else {
                    self.remember_rejected(presented_digest, false);
                    self.failures.record(key_id, source);
                    return Err(GatewayError::InvalidKey);
                };
                secret
            }
        };
        if record.revoked_at.is_some() {
            self.forget(key_id);
            // A script still using a revoked key is told so without bcrypt on every call.
            self.remember_rejected(presented_digest, true);
            return Err(GatewayError::RevokedKey);
        }
        let account =
            match tokio::time::timeout(STORE_TIMEOUT, self.accounts.account(&record.account_id))
                .await
            {
                Ok(Ok(account)) => account,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, key_id, "reading a key's account failed");
                    return Err(keys_unavailable());
                }
                Err(_) => return Err(keys_unavailable()),
            };
        let Some(account) = account.filter(|a| a.is_active()) else {
            self.forget(key_id);
            return Err(GatewayError::InvalidKey);
        };

        let key = Arc::new(AuthorizedKey {
            key_id: record.key_id.clone(),
            account_id: account.id.clone(),
            plan: account.plan.clone(),
            restricted: account.restricted,
            billing: account.billing.clone(),
            controls: record.controls.clone(),
        });
        // The other secret verified earlier stays verified while the record still accepts it.
        let this = verified.digest;
        let mut secrets = vec![verified];
        secrets.extend(known.into_iter().filter(|s| s.digest != this));
        self.cache.write().expect("key cache lock").insert(
            key_id.to_owned(),
            CachedKey {
                secrets,
                key: key.clone(),
                checked_at: Instant::now(),
                stale: false,
                retry_at: None,
            },
        );
        // "Last used" is dashboard information with minute resolution; it is refreshed with the cache
        // entry and never delays the request.
        let store = self.keys.clone();
        let key_id = key_id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&key_id, OffsetDateTime::now_utc()).await {
                tracing::warn!(error = %e, key_id, "could not record key last use");
            }
        });
        Ok(key)
    }

    /// Checks a secret with bcrypt against the key's accepted hashes (current first); the one it
    /// matched, if any.
    async fn check_secret(
        &self,
        secret: &str,
        digest: [u8; 32],
        hashes: &[(String, Option<OffsetDateTime>)],
    ) -> Result<Option<VerifiedSecret>, GatewayError> {
        for (hash, until) in hashes {
            let (hash_owned, secret) = (hash.clone(), secret.to_owned());
            self.bcrypt_runs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ok = tokio::task::spawn_blocking(move || bcrypt::verify(secret, &hash_owned))
                .await
                .map_err(GatewayError::internal)?
                .unwrap_or(false);
            if ok {
                return Ok(Some(VerifiedSecret {
                    digest,
                    bcrypt_hash: hash.clone(),
                    until: *until,
                }));
            }
        }
        Ok(None)
    }

    /// How many bcrypt checks this verifier has run.
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(std::sync::atomic::Ordering::Relaxed)
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

    fn recently_rejected(&self, presented_digest: &[u8; 32]) -> Option<GatewayError> {
        let rejected = self.rejected.lock().expect("rejected lock");
        let (at, revoked) = rejected.get(presented_digest)?;
        (at.elapsed() < REJECTED_FOR).then(|| {
            if *revoked {
                GatewayError::RevokedKey
            } else {
                GatewayError::InvalidKey
            }
        })
    }

    fn remember_rejected(&self, presented_digest: [u8; 32], revoked: bool) {
        let mut rejected = self.rejected.lock().expect("rejected lock");
        if rejected.len() >= MAX_REJECTED {
            rejected.retain(|_, (at, _)| at.elapsed() < REJECTED_FOR);
            if rejected.len() >= MAX_REJECTED {
                rejected.clear();
            }
        }
        rejected.insert(presented_digest, (Instant::now(), revoked));
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

    async fn verifier_with_key() -> (tempfile::TempDir, Arc<KeyVerifier>, NewKey) {
        use crate::store::{AccountStore, KeyStore};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let account = store
            .account_for_email("k@example.com", "free")
            .await
            .unwrap();
        let key = generate(&account.id, None, 4, OffsetDateTime::now_utc()).unwrap();
        store.insert_key(&key.record).await.unwrap();
        let verifier = Arc::new(KeyVerifier::new(
            store.clone(),
            store,
            Duration::from_secs(0),
        ));
        (dir, verifier, key)
    }

    fn wrong(key: &NewKey, n: usize) -> String {
        format!("{KEY_PREFIX}{}_{n:0>40}", key.record.key_id)
    }

    #[tokio::test]
    async fn guessing_secrets_is_throttled_before_bcrypt() {
        let (_dir, verifier, key) = verifier_with_key().await;
        let source: Option<std::net::IpAddr> = Some("198.51.100.7".parse().unwrap());
        for n in 0..50 {
            let err = verifier.verify(&wrong(&key, n), source).await.unwrap_err();
            assert!(matches!(err, GatewayError::InvalidKey));
        }
        // Ten guesses at this key id this minute ran bcrypt; the other forty were refused unchecked.
        assert_eq!(verifier.bcrypt_runs(), FAILURES_PER_KEY_PER_MINUTE as u64);
        // The same wrong secret again never runs bcrypt, whatever the cache's lifetime (0 here).
        verifier.verify(&wrong(&key, 0), None).await.unwrap_err();
        assert_eq!(verifier.bcrypt_runs(), FAILURES_PER_KEY_PER_MINUTE as u64);
    }

    #[tokio::test]
    async fn one_address_guessing_many_key_ids_is_throttled_too() {
        let (_dir, verifier, _key) = verifier_with_key().await;
        let account = verifier
            .accounts
            .account_for_email("m@example.com", "free")
            .await
            .unwrap();
        let source: Option<std::net::IpAddr> = Some("198.51.100.8".parse().unwrap());
        let mut keys = Vec::new();
        for _ in 0..10 {
            let key = generate(&account.id, None, 4, OffsetDateTime::now_utc()).unwrap();
            verifier.keys.insert_key(&key.record).await.unwrap();
            keys.push(key);
        }
        for (i, key) in keys.iter().enumerate() {
            for n in 0..5 {
                verifier
                    .verify(&wrong(key, i * 10 + n), source)
                    .await
                    .unwrap_err();
            }
        }
        assert_eq!(
            verifier.bcrypt_runs(),
            FAILURES_PER_SOURCE_PER_MINUTE as u64
        );
        // Another address is not held back by this one's guesses, and the right secret still works.
        verifier
            .verify(&keys[9].plaintext, Some("203.0.113.1".parse().unwrap()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_revoked_key_says_so_only_to_whoever_has_its_secret() {
        let (_dir, verifier, key) = verifier_with_key().await;
        verifier
            .keys
            .revoke_key(&key.record.key_id, OffsetDateTime::now_utc())
            .await
            .unwrap();
        let err = verifier.verify(&wrong(&key, 1), None).await.unwrap_err();
        assert!(matches!(err, GatewayError::InvalidKey), "{err}");
        let err = verifier.verify(&key.plaintext, None).await.unwrap_err();
        assert!(matches!(err, GatewayError::RevokedKey), "{err}");
        let runs = verifier.bcrypt_runs();
        // A script that keeps using the revoked key is answered without bcrypt each time.
        for _ in 0..5 {
            let err = verifier.verify(&key.plaintext, None).await.unwrap_err();
            assert!(matches!(err, GatewayError::RevokedKey));
        }
        assert_eq!(verifier.bcrypt_runs(), runs);
    }

    #[tokio::test]
    async fn both_secrets_of_a_rotating_key_are_served_without_bcrypt_once_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let account = store
            .account_for_email("r@example.com", "free")
            .await
            .unwrap();
        let key = generate(&account.id, None, 4, OffsetDateTime::now_utc()).unwrap();
        store.insert_key(&key.record).await.unwrap();
        // A long cache lifetime: only a rotation's end or a changed record makes it verify again.
        let verifier = KeyVerifier::new(store.clone(), store.clone(), Duration::from_secs(60));
        verifier.verify(&key.plaintext, None).await.unwrap();
        let now = OffsetDateTime::now_utc();
        let rotation = rotate(&key.record, 4, time::Duration::hours(1), now).unwrap();
        assert!(
            store
                .rotate_key(&key.record.key_id, &rotation.new_hash, &rotation.previous)
                .await
                .unwrap()
        );
        verifier.forget(&key.record.key_id);
        verifier.verify(&rotation.plaintext, None).await.unwrap();
        verifier.verify(&key.plaintext, None).await.unwrap();
        let runs = verifier.bcrypt_runs();
        for _ in 0..5 {
            verifier.verify(&rotation.plaintext, None).await.unwrap();
            verifier.verify(&key.plaintext, None).await.unwrap();
        }
        assert_eq!(
            verifier.bcrypt_runs(),
            runs,
            "warm calls on either secret run no bcrypt"
        );
    }
}
