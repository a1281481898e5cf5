//! One contract, every adapter: the embedded SQLite store, MongoDB (on SecantusDB) and DynamoDB counters
//! (on dynalite) must behave identically for everything the gateway relies on.

use std::sync::Arc;

use futures_util::TryStreamExt;
use qnp_shared::store::{AccountStore, CounterOutcome, CounterStore, RecordStore};
use qnp_shared::usage::{TokenUsage, UsageRecord};
use time::{Duration, OffsetDateTime};

async fn embedded() -> (
    tempfile::TempDir,
    Arc<qnp_shared::store::embedded::EmbeddedStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(qnp_shared::store::embedded::EmbeddedStore::open(dir.path()).unwrap());
    (dir, store)
}

async fn mongo() -> Arc<dyn RecordStore> {
    let uri = qnp_tests::required_env("QNP_TEST_MONGODB_URI");
    Arc::new(
        qnp_shared::store::mongo::MongoStore::connect(&uri, &qnp_tests::unique("qnp_test"))
            .await
            .expect("connect to SecantusDB"),
    )
}

async fn dynamo() -> Arc<dyn CounterStore> {
    let (client, table) = qnp_tests::dynalite_table().await;
    Arc::new(qnp_shared::store::dynamo::DynamoCounters::new(
        client, &table,
    ))
}

fn usage_row(account: &str, key: &str, request_id: &str, ts: OffsetDateTime) -> UsageRecord {
    UsageRecord {
        timestamp: ts,
        request_id: request_id.into(),
        account_id: account.into(),
        api_key_id: key.into(),
        endpoint: "/v1/chat/completions".into(),
        provider: "openai".into(),
        model: "openai/gpt-4o-mini".into(),
        streamed: true,
        status: 200,
        usage: TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 20,
            cached_tokens: 3,
            cache_write_tokens: 1,
            cache_write_1h_tokens: 1,
            web_search_calls: 2,
            reasoning_tokens: 4,
            estimated: false,
            input_images: 0,
            service_tier: None,
        },
        latency_ms: 1234,
        ttft_ms: Some(56),
        cost_usd: 0.000123,
        price_version: "2026-11-27".into(),
        error_type: None,
        source_ip: Some("203.0.113.7".into()),
        count: 1,
        rates: None,
        output_cap_tokens: None,
    }
}

/// Millisecond precision is what every store keeps.
fn ms(ts: OffsetDateTime) -> OffsetDateTime {
    ts.replace_nanosecond(ts.millisecond() as u32 * 1_000_000)
        .unwrap()
}

async fn records_contract(store: Arc<dyn RecordStore>) {
    // Accounts: created once per email, case-insensitively, even under concurrent first sign-ups.
    let results = futures_util::future::join_all((0..8).map(|i| {
        let store = store.clone();
        async move {
            store
                .account_for_email(
                    if i % 2 == 0 {
                        "Ann@Example.com"
                    } else {
                        "ann@example.com"
                    },
                    "free",
                )
                .await
        }
    }))
    .await;
    let ids: std::collections::HashSet<String> =
        results.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(ids.len(), 1, "one account per email");
    let ann = store
        .account_by_email("ANN@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann.email, "ann@example.com");
    assert_eq!(ann.plan, "free");
    assert!(ann.is_active() && !ann.restricted);
    assert_eq!(store.account(&ann.id).await.unwrap().unwrap(), ann);
    store.set_plan(&ann.id, "pro").await.unwrap();
    assert_eq!(store.account(&ann.id).await.unwrap().unwrap().plan, "pro");
    assert!(store.set_plan("acct_missing", "pro").await.is_err());
    assert!(store.account("acct_missing").await.unwrap().is_none());
    let ben = store
        .account_for_email("ben@example.com", "free")
        .await
        .unwrap();

    // Keys: found by id, listed per account oldest first, revoked once.
    let now = ms(OffsetDateTime::now_utc());
    let k1 = qnp_shared::keys::generate(&ann.id, Some("laptop, \"main\"".into()), 4, now)
        .unwrap()
        .record;
    let k2 = qnp_shared::keys::generate(&ann.id, None, 4, now + Duration::seconds(1))
        .unwrap()
        .record;
    let k3 = qnp_shared::keys::generate(&ben.id, None, 4, now)
        .unwrap()
        .record;
    for k in [&k1, &k2, &k3] {
        store.insert_key(k).await.unwrap();
    }
    assert!(store.insert_key(&k1).await.is_err(), "key ids are unique");
    assert_eq!(store.key(&k1.key_id).await.unwrap().unwrap(), k1);
    assert!(store.key("nope").await.unwrap().is_none());
    let listed = store.keys_for_account(&ann.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|k| &k.key_id).collect::<Vec<_>>(),
        vec![&k1.key_id, &k2.key_id]
    );
    store
        .touch_key(&k1.key_id, now + Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(
        store.key(&k1.key_id).await.unwrap().unwrap().last_used_at,
        Some(now + Duration::seconds(5))
    );
    let none = qnp_shared::key_controls::KeyControls::default();
    assert!(
        store
            .update_key(&k2.key_id, Some("renamed"), &none)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .key(&k2.key_id)
            .await
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("renamed")
    );
    // Controls round-trip whole, and clearing them leaves the key as it was made.
    let controls = qnp_shared::key_controls::KeyControls {
        expires_at: Some(now + Duration::days(30)),
        monthly_spend_limit_usd: Some(2.5),
        models: vec!["anthropic/*".into(), "openai/gpt-4o-mini".into()],
        requests_per_minute: Some(7),
    };
    assert!(
        store
            .update_key(&k2.key_id, Some("renamed"), &controls)
            .await
            .unwrap()
    );
    let stored = store.key(&k2.key_id).await.unwrap().unwrap();
    assert_eq!(stored.controls, controls);
    assert_eq!(
        store.keys_for_account(&ann.id).await.unwrap()[1].controls,
        controls
    );
    assert!(store.update_key(&k2.key_id, None, &none).await.unwrap());
    let stored = store.key(&k2.key_id).await.unwrap().unwrap();
    assert_eq!((stored.name, stored.controls), (None, none.clone()));
    assert!(!store.update_key("nope", Some("x"), &none).await.unwrap());

    // Rotation is a compare-and-set on the current hash: of two rotations from one state, one wins.
    let previous = qnp_shared::accounts::PreviousSecret {
        hash: k1.hash.clone(),
        rotated_at: now,
        valid_until: now + Duration::hours(24),
    };
    let outcomes = futures_util::future::join_all(
        ["$2b$04$first", "$2b$04$second"].map(|hash| store.rotate_key(&k1.key_id, hash, &previous)),
    )
    .await;
    assert_eq!(
        outcomes.iter().filter(|r| *r.as_ref().unwrap()).count(),
        1,
        "exactly one rotation wins"
    );
    let rotated = store.key(&k1.key_id).await.unwrap().unwrap();
    assert!(rotated.hash.starts_with("$2b$04$"));
    assert_ne!(rotated.hash, k1.hash);
    assert_eq!(rotated.previous, Some(previous.clone()));
    assert!(
        !store
            .rotate_key("nope", "$2b$04$x", &previous)
            .await
            .unwrap()
    );
    assert!(store.revoke_key(&k2.key_id, now).await.unwrap());
    assert!(
        !store.revoke_key(&k2.key_id, now).await.unwrap(),
        "revoking twice reports false"
    );
    assert!(!store.revoke_key("nope", now).await.unwrap());
    assert_eq!(
        store.key(&k2.key_id).await.unwrap().unwrap().revoked_at,
        Some(now)
    );

    // Usage: idempotent by request id, range [from, to), ordered, per account.
    let t0 = ms(OffsetDateTime::now_utc()) - Duration::hours(1);
    let mut rows: Vec<UsageRecord> = (0..5)
        .map(|i| {
            usage_row(
                &ann.id,
                &k1.key_id,
                &format!("req_{i}"),
                t0 + Duration::minutes(i),
            )
        })
        .collect();
    rows[1].usage.estimated = true; // the flag survives the round trip
    store.insert_usage(&rows[2..]).await.unwrap();
    store.insert_usage(&rows).await.unwrap();
    store
        .insert_usage(&[usage_row(&ben.id, &k3.key_id, "req_ben", t0)])
        .await
        .unwrap();
    let all: Vec<UsageRecord> = store
        .usage_for_account(&ann.id, t0 - Duration::days(1), t0 + Duration::days(1))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        all, rows,
        "all five rows once each, oldest first, fields intact"
    );
    let window: Vec<UsageRecord> = store
        .usage_for_account(
            &ann.id,
            t0 + Duration::minutes(1),
            t0 + Duration::minutes(3),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        window
            .iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
        vec!["req_1", "req_2"]
    );
    let bens: Vec<UsageRecord> = store
        .usage_for_account(&ben.id, t0 - Duration::days(1), t0 + Duration::days(1))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(bens.len(), 1);
    // The dashboard's recent calls: newest first, limited, only the account's own.
    let recent = store.recent_usage(&ann.id, 3).await.unwrap();
    let expected: Vec<UsageRecord> = rows.iter().rev().take(3).cloned().collect();
    assert_eq!(recent, expected);
    assert_eq!(store.recent_usage(&ben.id, 50).await.unwrap().len(), 1);
    // One call's row, for its own account only.
    assert_eq!(
        store.usage_of_request(&ann.id, "req_1").await.unwrap(),
        rows.iter().find(|r| r.request_id == "req_1").cloned()
    );
    assert_eq!(
        store.usage_of_request(&ben.id, "req_1").await.unwrap(),
        None
    );
    assert_eq!(
        store.usage_of_request(&ann.id, "req_none").await.unwrap(),
        None
    );
}

async fn account_rights_contract(store: Arc<dyn RecordStore>) {
    use qnp_shared::accounts::{Identity, ProfileChange, ProfileUpdate};
    let now = ms(OffsetDateTime::now_utc());
    let cy = store
        .account_for_email("cy@example.com", "free")
        .await
        .unwrap();
    let dee = store
        .account_for_email("dee@example.com", "free")
        .await
        .unwrap();
    assert_eq!(cy.session_version, 0);

    // Identities: unique by provider + subject; relinking refreshes the email only.
    let identity = Identity {
        provider: "google".into(),
        subject: "sub-cy".into(),
        account_id: cy.id.clone(),
        email: Some("cy@example.com".into()),
        created_at: now,
    };
    store.link_identity(&identity).await.unwrap();
    store
        .link_identity(&Identity {
            email: Some("cy2@example.com".into()),
            account_id: dee.id.clone(),
            ..identity.clone()
        })
        .await
        .unwrap();
    let found = store.identity("google", "sub-cy").await.unwrap().unwrap();
    assert_eq!(
        found.account_id, cy.id,
        "an identity never moves to another account"
    );
    assert_eq!(found.email.as_deref(), Some("cy2@example.com"));
    assert!(store.identity("apple", "sub-cy").await.unwrap().is_none());
    store
        .link_identity(&Identity {
            provider: "apple".into(),
            subject: "sub-cy-apple".into(),
            created_at: now + Duration::seconds(1),
            ..identity.clone()
        })
        .await
        .unwrap();
    let all = store.identities_for_account(&cy.id).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.provider.as_str()).collect::<Vec<_>>(),
        vec!["google", "apple"]
    );

    // Profile: partial updates, email uniqueness.
    let change = ProfileChange {
        name: Some("Cy".into()),
        email: None,
    };
    let ProfileUpdate::Updated(updated) = store.update_profile(&cy.id, &change).await.unwrap()
    else {
        panic!("updated")
    };
    assert_eq!(
        (updated.name.as_deref(), updated.email.as_str()),
        (Some("Cy"), "cy@example.com")
    );
    let taken = ProfileChange {
        name: None,
        email: Some("DEE@example.com".into()),
    };
    assert_eq!(
        store.update_profile(&cy.id, &taken).await.unwrap(),
        ProfileUpdate::EmailTaken
    );
    assert_eq!(
        store.update_profile("acct_missing", &change).await.unwrap(),
        ProfileUpdate::NotFound
    );
    let moved = ProfileChange {
        name: None,
        email: Some("Cy.New@example.com".into()),
    };
    let ProfileUpdate::Updated(updated) = store.update_profile(&cy.id, &moved).await.unwrap()
    else {
        panic!("updated")
    };
    assert_eq!(updated.email, "cy.new@example.com");

    // Restriction and session versions.
    assert!(store.set_restricted(&cy.id, true).await.unwrap());
    assert!(store.account(&cy.id).await.unwrap().unwrap().restricted);
    assert!(store.set_restricted(&cy.id, false).await.unwrap());
    assert!(!store.set_restricted("acct_missing", true).await.unwrap());
    store.bump_session_version(&cy.id).await.unwrap();
    assert_eq!(
        store
            .account(&cy.id)
            .await
            .unwrap()
            .unwrap()
            .session_version,
        1
    );

    // Deletion: immediate effects, idempotent, other accounts untouched.
    let key = qnp_shared::keys::generate(&cy.id, None, 4, now)
        .unwrap()
        .record;
    store.insert_key(&key).await.unwrap();
    let dees = qnp_shared::keys::generate(&dee.id, None, 4, now)
        .unwrap()
        .record;
    store.insert_key(&dees).await.unwrap();
    let cy_email = store.account(&cy.id).await.unwrap().unwrap().email;
    store.request_deletion(&cy.id, now).await.unwrap();
    store
        .request_deletion(&cy.id, now + Duration::hours(1))
        .await
        .unwrap();
    let deleted = store.account(&cy.id).await.unwrap().unwrap();
    assert_eq!(
        deleted.deletion_requested_at,
        Some(now),
        "the first request's time stands"
    );
    assert!(!deleted.is_active());
    assert!(deleted.session_version >= 2);
    assert_eq!(deleted.email, qnp_shared::accounts::deleted_email(&cy.id));
    assert!(store.account_by_email(&cy_email).await.unwrap().is_none());
    assert!(
        store
            .key(&key.key_id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(
        store
            .identities_for_account(&cy.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .key(&dees.key_id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert!(store.account(&dee.id).await.unwrap().unwrap().is_active());
}

async fn counters_contract(counters: Arc<dyn CounterStore>) {
    let key = qnp_tests::unique("rpm");
    let exp = OffsetDateTime::now_utc().unix_timestamp() + 300;
    assert_eq!(counters.get(&key).await.unwrap(), 0);
    assert_eq!(
        counters.add_within(&key, 2, 5, exp).await.unwrap(),
        CounterOutcome::Admitted { value: 2 }
    );
    assert_eq!(
        counters.add_within(&key, 3, 5, exp).await.unwrap(),
        CounterOutcome::Admitted { value: 5 }
    );
    assert_eq!(
        counters.add_within(&key, 1, 5, exp).await.unwrap(),
        CounterOutcome::Refused
    );
    assert_eq!(
        counters.get(&key).await.unwrap(),
        5,
        "a refusal changes nothing"
    );
    assert_eq!(
        counters
            .add_within(&qnp_tests::unique("big"), 6, 5, exp)
            .await
            .unwrap(),
        CounterOutcome::Refused
    );

    // Exact under concurrency: 200 concurrent increments against a limit of 50 admit exactly 50, and each
    // admitted increment saw a distinct value.
    let key = qnp_tests::unique("burst");
    let outcomes = futures_util::future::join_all((0..200).map(|_| {
        let counters = counters.clone();
        let key = key.clone();
        async move { counters.add_within(&key, 1, 50, exp).await.unwrap() }
    }))
    .await;
    let mut values: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| match o {
            CounterOutcome::Admitted { value } => Some(*value),
            CounterOutcome::Refused => None,
        })
        .collect();
    values.sort();
    assert_eq!(values, (1..=50).collect::<Vec<_>>());
    assert_eq!(counters.get(&key).await.unwrap(), 50);
}

/// Billing state by compare-and-set, lookup by Stripe customer, and the processed-event ledger.
async fn billing_contract(store: Arc<dyn RecordStore>) {
    use qnp_shared::billing::{Billing, Subscription};
    use qnp_shared::store::EventClaim;
    let email = format!("{}@example.com", qnp_tests::unique("billing"));
    let account = store.account_for_email(&email, "free").await.unwrap();
    assert_eq!(account.billing, Billing::default());
    let customer = qnp_tests::unique("cus");
    let billing = Billing {
        stripe_customer_id: Some(customer.clone()),
        subscription: Some(Subscription {
            id: "sub_1".into(),
            price_id: "price_pro".into(),
            status: "active".into(),
            current_period_end: ms(OffsetDateTime::now_utc() + Duration::days(30))
                .replace_nanosecond(0)
                .unwrap(),
            cancel_at_period_end: true,
            as_of: 1_790_000_000,
        }),
        payment_failed_at: None,
        payment_as_of: Some(1_790_000_001),
        version: 1,
    };
    assert!(
        store
            .update_billing(&account.id, 0, &billing)
            .await
            .unwrap()
    );
    // A writer that read version 0 lost the race: its write is refused, nothing changes.
    let stale = Billing {
        version: 1,
        ..Billing::default()
    };
    assert!(!store.update_billing(&account.id, 0, &stale).await.unwrap());
    let found = store
        .account_by_stripe_customer(&customer)
        .await
        .unwrap()
        .expect("found by customer");
    assert_eq!(found.id, account.id);
    assert_eq!(found.billing, billing);
    assert!(
        store
            .account_by_stripe_customer("cus_nobody")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .update_billing("acct_missing", 0, &billing)
            .await
            .unwrap()
    );

    // Concurrent compare-and-set from the same version: exactly one wins.
    let wins = futures_util::future::join_all((0..8).map(|i| {
        let store = store.clone();
        let id = account.id.clone();
        let mut next = billing.clone();
        next.version = 2;
        next.payment_as_of = Some(i);
        async move { store.update_billing(&id, 1, &next).await.unwrap() }
    }))
    .await;
    assert_eq!(wins.iter().filter(|w| **w).count(), 1);

    // Event claims: one claim among concurrent deliveries; completion is final; a release lets a retry in.
    let now = OffsetDateTime::now_utc();
    let lease = std::time::Duration::from_secs(300);
    let event = qnp_tests::unique("evt");
    let claims = futures_util::future::join_all((0..6).map(|_| {
        let store = store.clone();
        let event = event.clone();
        async move { store.claim_stripe_event(&event, now, lease).await.unwrap() }
    }))
    .await;
    assert_eq!(
        claims.iter().filter(|c| **c == EventClaim::Claimed).count(),
        1
    );
    assert!(claims.iter().all(|c| *c != EventClaim::AlreadyProcessed));
    store.complete_stripe_event(&event, now).await.unwrap();
    assert_eq!(
        store.claim_stripe_event(&event, now, lease).await.unwrap(),
        EventClaim::AlreadyProcessed
    );
    store.release_stripe_event(&event).await.unwrap(); // completed events are never released
    assert_eq!(
        store.claim_stripe_event(&event, now, lease).await.unwrap(),
        EventClaim::AlreadyProcessed
    );
    let failed = qnp_tests::unique("evt");
    assert_eq!(
        store.claim_stripe_event(&failed, now, lease).await.unwrap(),
        EventClaim::Claimed
    );
    store.release_stripe_event(&failed).await.unwrap();
    assert_eq!(
        store.claim_stripe_event(&failed, now, lease).await.unwrap(),
        EventClaim::Claimed
    );
    // A claim whose invocation died is taken over once its lease has run out.
    let later = now + Duration::seconds(301);
    assert_eq!(
        store
            .claim_stripe_event(&failed, now + Duration::seconds(10), lease)
            .await
            .unwrap(),
        EventClaim::InProgress
    );
    assert_eq!(
        store
            .claim_stripe_event(&failed, later, lease)
            .await
            .unwrap(),
        EventClaim::Claimed
    );
    // The ledger is forgotten after retention.
    assert!(
        store
            .delete_stripe_events_before(later + Duration::seconds(1))
            .await
            .unwrap()
            >= 2
    );
    assert_eq!(
        store
            .claim_stripe_event(&event, later, lease)
            .await
            .unwrap(),
        EventClaim::Claimed
    );
}

/// Reservations: signed adjustments settle a counter, and erasing an account's prefixes is literal
/// (its id contains '_', which must not act as a wildcard).
async fn budget_counters_contract(counters: Arc<dyn CounterStore>) {
    let exp = OffsetDateTime::now_utc().unix_timestamp() + 600;
    let key = format!("spend#{}#2026-11", qnp_tests::unique("acct_x"));
    assert!(matches!(
        counters.add_within(&key, 700, 1000, exp).await.unwrap(),
        CounterOutcome::Admitted { value: 700 }
    ));
    assert_eq!(counters.adjust(&key, -650, exp).await.unwrap(), 50);
    assert_eq!(counters.get(&key).await.unwrap(), 50);
    assert_eq!(counters.adjust(&key, 25, exp).await.unwrap(), 75);
    assert_eq!(counters.get(&key).await.unwrap(), 75);
    // An adjustment can create the counter (a settle after the window's item was reclaimed).
    let fresh = format!("tpm#{}#0", qnp_tests::unique("k"));
    assert_eq!(counters.adjust(&fresh, 5, exp).await.unwrap(), 5);
    assert_eq!(counters.get(&fresh).await.unwrap(), 5);
    // Concurrent adjustments each see their own result: the values they return are all different and
    // the last is the sum, so a settle can tell exactly how far past a limit its own share took it.
    let shared_key = format!("tpm#{}#60", qnp_tests::unique("k"));
    let results =
        futures_util::future::join_all((0..20).map(|_| counters.adjust(&shared_key, 10, exp)))
            .await;
    let mut seen: Vec<i64> = results.into_iter().map(|r| r.unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).map(|i| i * 10).collect::<Vec<i64>>());

    let account = qnp_tests::unique("acct_erase");
    let lookalike = account.replacen('_', "X", 1);
    for k in [
        format!("spend#{account}#2026-11"),
        format!("spend#{lookalike}#2026-11"),
    ] {
        counters.add_within(&k, 1, 10, exp).await.unwrap();
    }
    let prefixes = vec![format!("spend#{account}#")];
    assert_eq!(counters.erase_prefixes(&prefixes, true).await.unwrap(), 1);
    assert_eq!(counters.erase_prefixes(&prefixes, false).await.unwrap(), 1);
    assert_eq!(
        counters
            .get(&format!("spend#{lookalike}#2026-11"))
            .await
            .unwrap(),
        1
    );
}

/// The active-key cap is taken atomically: of 70 concurrent creations under a cap of 50, exactly 50
/// succeed; a revocation frees a place; a deletion frees them all; and a refused creation stores nothing.
async fn key_cap_contract(store: Arc<dyn RecordStore>) {
    let account = store
        .account_for_email(&format!("{}@example.com", qnp_tests::unique("cap")), "free")
        .await
        .unwrap();
    // A key made the uncapped way (the operator's `qnp keys create`) takes a place too.
    let operator_key = qnp_shared::keys::generate(&account.id, None, 4, OffsetDateTime::now_utc())
        .unwrap()
        .record;
    store.insert_key(&operator_key).await.unwrap();
    let keys: Vec<_> = (0..70)
        .map(|_| {
            qnp_shared::keys::generate(&account.id, None, 4, OffsetDateTime::now_utc())
                .unwrap()
                .record
        })
        .collect();
    let results =
        futures_util::future::join_all(keys.iter().map(|k| store.insert_key_within(k, 50))).await;
    let created = results.iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(created, 49, "50 in all with the operator's key");
    let stored = store.keys_for_account(&account.id).await.unwrap();
    assert_eq!(stored.len(), 50, "refused creations store nothing");
    let extra = qnp_shared::keys::generate(&account.id, None, 4, OffsetDateTime::now_utc())
        .unwrap()
        .record;
    assert!(!store.insert_key_within(&extra, 50).await.unwrap());
    assert!(
        store
            .revoke_key(&operator_key.key_id, OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_key(&operator_key.key_id, OffsetDateTime::now_utc())
            .await
            .unwrap(),
        "revoking twice frees one place, not two"
    );
    assert!(store.insert_key_within(&extra, 50).await.unwrap());
    let another = qnp_shared::keys::generate(&account.id, None, 4, OffsetDateTime::now_utc())
        .unwrap()
        .record;
    assert!(!store.insert_key_within(&another, 50).await.unwrap());
}

#[tokio::test]
async fn embedded_store_passes_the_key_cap_contract() {
    let (_dir, store) = embedded().await;
    key_cap_contract(store).await;
}

#[tokio::test]
async fn mongodb_passes_the_key_cap_contract() {
    key_cap_contract(mongo().await).await;
}

#[tokio::test]
async fn embedded_store_passes_the_billing_contract() {
    let (_dir, store) = embedded().await;
    billing_contract(store).await;
}

#[tokio::test]
async fn mongodb_passes_the_billing_contract() {
    billing_contract(mongo().await).await;
}

#[tokio::test]
async fn embedded_store_passes_the_budget_counters_contract() {
    let (_dir, store) = embedded().await;
    budget_counters_contract(store).await;
}

#[tokio::test]
async fn dynamodb_passes_the_budget_counters_contract() {
    budget_counters_contract(dynamo().await).await;
}

#[tokio::test]
async fn embedded_store_passes_the_records_contract() {
    let (_dir, store) = embedded().await;
    records_contract(store).await;
}

#[tokio::test]
async fn embedded_store_passes_the_account_rights_contract() {
    let (_dir, store) = embedded().await;
    account_rights_contract(store).await;
}

#[tokio::test]
async fn mongodb_passes_the_account_rights_contract() {
    account_rights_contract(mongo().await).await;
}

/// The usage outbox: rows held whole (every field, the rates included), oldest first, once per request
/// id, until released.
async fn outbox_contract(counters: Arc<dyn CounterStore>) {
    let now = ms(OffsetDateTime::now_utc());
    let mut rows: Vec<UsageRecord> = (0..3)
        .map(|i| {
            usage_row(
                "acct_o",
                "k_o",
                &format!("req_o{i}"),
                now - time::Duration::seconds(i),
            )
        })
        .collect();
    rows[0].rates = Some(
        qnp_shared::catalog::Catalog::bundled()
            .get("openai/gpt-6-luna")
            .unwrap()
            .applied_rates(qnp_shared::pricing::ServiceTier::Flex, 10),
    );
    rows[1].output_cap_tokens = Some(2048);
    rows[2].count = 5;
    assert!(counters.held_usage(10).await.unwrap().is_empty());
    counters.hold_usage(&rows).await.unwrap();
    // Held again (a retried hold): still one of each.
    counters.hold_usage(&rows[..1]).await.unwrap();
    let held = counters.held_usage(10).await.unwrap();
    let oldest_first: Vec<UsageRecord> = rows.iter().rev().cloned().collect();
    assert_eq!(held, oldest_first);
    assert_eq!(counters.held_usage(2).await.unwrap(), oldest_first[..2]);
    counters
        .release_usage(&["req_o2".into(), "req_o1".into(), "req_unknown".into()])
        .await
        .unwrap();
    assert_eq!(
        counters.held_usage(10).await.unwrap(),
        vec![rows[0].clone()]
    );
    counters.release_usage(&["req_o0".into()]).await.unwrap();
    assert!(counters.held_usage(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn embedded_store_passes_the_outbox_contract() {
    let (_dir, store) = embedded().await;
    outbox_contract(store).await;
}

#[tokio::test]
async fn dynamodb_passes_the_outbox_contract() {
    outbox_contract(dynamo().await).await;
}

#[tokio::test]
async fn the_embedded_outbox_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let row = usage_row(
        "acct_r",
        "k_r",
        "req_restart",
        ms(OffsetDateTime::now_utc()),
    );
    {
        let store = qnp_shared::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
        store.hold_usage(std::slice::from_ref(&row)).await.unwrap();
    }
    let store = qnp_shared::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.held_usage(10).await.unwrap(), vec![row]);
}

#[tokio::test]
async fn embedded_store_passes_the_counters_contract() {
    let (_dir, store) = embedded().await;
    counters_contract(store).await;
}

#[tokio::test]
async fn mongodb_passes_the_records_contract() {
    records_contract(mongo().await).await;
}

#[tokio::test]
async fn dynamodb_passes_the_counters_contract() {
    counters_contract(dynamo().await).await;
}

#[tokio::test]
async fn embedded_store_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = qnp_shared::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
        store
            .account_for_email("keep@example.com", "free")
            .await
            .unwrap()
            .id
    };
    let store = qnp_shared::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(
        store
            .account_by_email("keep@example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        id
    );
}

/// The usage summary, the retention cleaner's deletions and the erasure of an account, method by method.
async fn usage_and_erasure_contract(store: Arc<dyn RecordStore>) {
    use qnp_shared::accounts::Identity;
    use time::macros::datetime;
    let eve = store
        .account_for_email("eve@example.com", "free")
        .await
        .unwrap();
    let fay = store
        .account_for_email("fay@example.com", "free")
        .await
        .unwrap();
    let day1 = datetime!(2026-03-01 10:00 UTC);
    let day2 = datetime!(2026-03-02 23:59:59.5 UTC);
    let mut rows = vec![
        usage_row(&eve.id, "k1", "u1", day1),
        usage_row(&eve.id, "k1", "u2", day1 + Duration::hours(1)),
        usage_row(&eve.id, "k3", "u3", day2),
        usage_row(&fay.id, "k2", "u4", day1),
    ];
    rows[1].model = "anthropic/claude-sonnet-5-5".into();
    // A row that sums up five refusals counts as five requests.
    rows[2].count = 5;
    rows[2].usage = TokenUsage::default();
    rows[2].cost_usd = 0.0;
    store.insert_usage(&rows).await.unwrap();

    // Totals: per UTC day and model, ordered by day then model, only the account's, only in range.
    let totals = store
        .usage_totals(
            &eve.id,
            None,
            day1 - Duration::days(1),
            day2 + Duration::days(1),
        )
        .await
        .unwrap();
    let shown: Vec<(&str, &str, u64, u64, u64)> = totals
        .iter()
        .map(|t| {
            (
                t.day.as_str(),
                t.model.as_str(),
                t.requests,
                t.prompt_tokens,
                t.completion_tokens,
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("2026-03-01", "anthropic/claude-sonnet-5-5", 1, 10, 20),
            ("2026-03-01", "openai/gpt-4o-mini", 1, 10, 20),
            ("2026-03-02", "openai/gpt-4o-mini", 5, 0, 0),
        ]
    );
    assert!((totals[1].cost_usd - 0.000123).abs() < 1e-12);
    let only_day2 = store
        .usage_totals(
            &eve.id,
            None,
            datetime!(2026-03-02 00:00 UTC),
            day2 + Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(only_day2.len(), 1);
    // One key's totals: only its rows (the day-2 row is another key's).
    let of_key = store
        .usage_totals(
            &eve.id,
            Some("k1"),
            day1 - Duration::days(1),
            day2 + Duration::days(1),
        )
        .await
        .unwrap();
    assert_eq!(of_key.iter().map(|t| t.requests).sum::<u64>(), 2);
    assert!(
        store
            .usage_totals(&eve.id, Some("k2"), day1, day2 + Duration::days(1))
            .await
            .unwrap()
            .is_empty(),
        "another account's key finds nothing"
    );
    assert!(
        store
            .usage_totals(
                &eve.id,
                None,
                day2 + Duration::seconds(1),
                day2 + Duration::days(9)
            )
            .await
            .unwrap()
            .is_empty(),
        "the end of the range is exclusive"
    );

    // Retention: counts and deletes rows strictly before the cutoff, of every account, in batches.
    let cutoff = datetime!(2026-03-02 00:00 UTC);
    assert_eq!(store.count_usage_before(cutoff).await.unwrap(), 3);
    assert_eq!(store.delete_usage_before(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.count_usage_before(cutoff).await.unwrap(), 1);
    assert_eq!(store.delete_usage_before(cutoff, 10).await.unwrap(), 1);
    assert_eq!(store.delete_usage_before(cutoff, 10).await.unwrap(), 0);
    assert_eq!(
        store
            .count_usage_before(day2 + Duration::days(1))
            .await
            .unwrap(),
        1,
        "the row after the cutoff stays"
    );

    // Erasure: pending accounts oldest request first; counting removes nothing; erasing removes it all.
    let key = qnp_shared::keys::generate(&fay.id, None, 4, ms(OffsetDateTime::now_utc())).unwrap();
    store.insert_key(&key.record).await.unwrap();
    store
        .link_identity(&Identity {
            provider: "google".into(),
            subject: "sub-fay".into(),
            account_id: fay.id.clone(),
            email: Some("fay@example.com".into()),
            created_at: ms(OffsetDateTime::now_utc()),
        })
        .await
        .unwrap();
    store
        .insert_usage(&[
            usage_row(&fay.id, "k2", "u5", day2),
            usage_row(&fay.id, "k2", "u6", day2),
        ])
        .await
        .unwrap();
    assert!(store.accounts_pending_erasure(10).await.unwrap().is_empty());
    store
        .request_deletion(&eve.id, datetime!(2026-03-05 00:00 UTC))
        .await
        .unwrap();
    store
        .request_deletion(&fay.id, datetime!(2026-03-04 00:00 UTC))
        .await
        .unwrap();
    let pending: Vec<String> = store
        .accounts_pending_erasure(10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, vec![fay.id.clone(), eve.id.clone()]);
    assert_eq!(store.accounts_pending_erasure(1).await.unwrap().len(), 1);

    let before = store.count_account_data(&fay.id).await.unwrap();
    assert_eq!(
        (before.usage_rows, before.keys, before.accounts),
        (2, 1, 1),
        "{before:?}"
    );
    assert_eq!(store.count_account_data(&fay.id).await.unwrap(), before);
    assert_eq!(store.erase_usage_of(&fay.id, 1).await.unwrap(), 1);
    assert_eq!(
        store.count_account_data(&fay.id).await.unwrap().usage_rows,
        1
    );
    let erased = store.erase_account(&fay.id).await.unwrap();
    assert_eq!(
        (erased.usage_rows, erased.keys, erased.accounts),
        (1, 1, 1),
        "{erased:?}"
    );
    assert_eq!(erased.identities, before.identities);
    assert!(store.account(&fay.id).await.unwrap().is_none());
    assert!(store.key(&key.record.key_id).await.unwrap().is_none());
    assert!(store.identity("google", "sub-fay").await.unwrap().is_none());
    assert_eq!(
        store.count_account_data(&fay.id).await.unwrap(),
        qnp_shared::store::Erased::default()
    );
    // The other account is untouched.
    assert!(store.account(&eve.id).await.unwrap().is_some());
    assert_eq!(
        store.count_account_data(&eve.id).await.unwrap().usage_rows,
        1
    );
}

#[tokio::test]
async fn embedded_store_passes_the_usage_and_erasure_contract() {
    let (_dir, store) = embedded().await;
    usage_and_erasure_contract(store).await;
}

#[tokio::test]
async fn mongodb_passes_the_usage_and_erasure_contract() {
    usage_and_erasure_contract(mongo().await).await;
}
