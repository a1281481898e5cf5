//! The retention cleaner: usage metadata is kept 30 days, and accounts whose owners asked for deletion
//! are erased completely (records, counters, and the Stripe customer, which also ends any subscription).
//! The ledger of processed Stripe events is kept 30 days too (Stripe retries for three).
//!
//! It works in bounded batches, so a large backlog never holds much in memory or runs past its time
//! budget; every step is idempotent, so an interrupted run is finished by the next one. It never deletes
//! a usage row younger than 30 days: the cutoff is computed once from the injected `now`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use crate::billing::stripe_api::StripeApi;
use crate::limits::counter_prefixes_for_key;
use crate::store::{CounterStore, Erased, RecordStore};

pub use crate::retention_periods::{ERASURE_DAYS, STRIPE_EVENT_DAYS, USAGE_RETENTION_DAYS};
const BATCH: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// Usage rows older than this were (or, in a dry run, would be) deleted.
    #[serde(with = "time::serde::rfc3339")]
    pub cutoff: OffsetDateTime,
    pub dry_run: bool,
    /// Usage rows held in the outbox during a record-store outage, now delivered (rows any instance
    /// held; see `usage_log`).
    pub held_usage_rows_delivered: u64,
    pub expired_usage_rows: u64,
    pub accounts_erased: u64,
    /// What the erased accounts held, summed.
    pub erased: Erased,
    pub counters_erased: u64,
    /// Stripe customers of erased accounts deleted at Stripe (in a dry run: that would be).
    pub stripe_customers_deleted: u64,
    pub stripe_events_forgotten: u64,
    /// False when the time budget ran out first; the next run continues.
    pub complete: bool,
}

/// Where a run is, for progress bars.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Expired usage rows to delete in total (known before the first batch).
    ExpiredTotal(u64),
    ExpiredDeleted(u64),
    AccountErased,
}

pub struct Cleaner {
    pub records: Arc<dyn RecordStore>,
    pub counters: Arc<dyn CounterStore>,
    /// Deletes erased accounts' Stripe customers; `None` where billing is not configured.
    pub stripe: Option<StripeApi>,
    /// Stop starting new batches after this long (a Lambda invocation has 15 minutes).
    pub budget: Duration,
    /// Usage rows older than this many days are deleted (`Config::usage_retention_days`).
    pub usage_days: i64,
}

impl Report {
    fn add(&mut self, e: Erased) {
        self.erased.usage_rows += e.usage_rows;
        self.erased.keys += e.keys;
        self.erased.identities += e.identities;
        self.erased.accounts += e.accounts;
    }
}

impl Cleaner {
    pub async fn run(
        &self,
        now: OffsetDateTime,
        dry_run: bool,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        let in_budget = || started.elapsed() < self.budget;
        let cutoff = now - time::Duration::days(self.usage_days.clamp(1, USAGE_RETENTION_DAYS));
        let mut report = Report {
            now,
            cutoff,
            dry_run,
            held_usage_rows_delivered: 0,
            expired_usage_rows: 0,
            accounts_erased: 0,
            erased: Erased::default(),
            counters_erased: 0,
            stripe_customers_deleted: 0,
            stripe_events_forgotten: 0,
            complete: true,
        };

        // First, what instances held while the record store was down: those rows are billed usage.
        if !dry_run {
            let outbox = crate::usage_log::Outbox::new(self.records.clone(), self.counters.clone());
            report.held_usage_rows_delivered = outbox.deliver(usize::MAX).await?;
        }

        let expired = self.records.count_usage_before(cutoff).await?;
        progress(Progress::ExpiredTotal(expired));
        if dry_run {
            report.expired_usage_rows = expired;
        } else {
            loop {
                if !in_budget() {
                    report.complete = false;
                    break;
                }
                let deleted = self.records.delete_usage_before(cutoff, BATCH).await?;
                if deleted == 0 {
                    break;
                }
                report.expired_usage_rows += deleted;
                progress(Progress::ExpiredDeleted(deleted));
            }
        }

        let pending = self
            .records
            .accounts_pending_erasure(if dry_run { u64::MAX >> 1 } else { 100 })
            .await?;
        let mut pending = pending.into_iter();
        let mut left_pending = std::collections::HashSet::new();
        loop {
            let Some(account) = pending.next() else {
                if dry_run {
                    break;
                }
                // Erased accounts leave the pending list, so the next page is the rest (less those
                // left pending on purpose this run).
                let next: Vec<_> = self
                    .records
                    .accounts_pending_erasure(100)
                    .await?
                    .into_iter()
                    .filter(|a| !left_pending.contains(&a.id))
                    .collect();
                if next.is_empty() {
                    break;
                }
                pending = next.into_iter();
                continue;
            };
            if !in_budget() {
                report.complete = false;
                break;
            }
            let keys = self.records.keys_for_account(&account.id).await?;
            let key_ids: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
            let prefixes: Vec<String> = key_ids
                .iter()
                .flat_map(|k| counter_prefixes_for_key(k))
                .chain(crate::budget::counter_prefixes(&account.id, &key_ids))
                .collect();
            let customer = account.billing.stripe_customer_id.as_deref();
            if dry_run {
                report.stripe_customers_deleted += u64::from(customer.is_some());
                report.counters_erased += self.counters.erase_prefixes(&prefixes, true).await?;
                report.add(self.records.count_account_data(&account.id).await?);
                report.accounts_erased += 1;
                continue;
            }
            // The Stripe customer first: once the account record is gone its id can no longer be found.
            // Deleting it cancels any subscription at once, so nobody is billed for a deleted account.
            if let Some(customer) = customer {
                match &self.stripe {
                    Some(stripe) => {
                        if let Err(e) = stripe.delete_customer(customer).await {
                            // Left pending: the next run tries again, within the 30 days promised.
                            tracing::error!(account_id = %account.id, error = %e, "could not delete the Stripe customer; the account stays pending");
                            report.complete = false;
                            left_pending.insert(account.id.clone());
                            continue;
                        }
                        report.stripe_customers_deleted += 1;
                    }
                    None => tracing::warn!(
                        account_id = %account.id,
                        "the account has a Stripe customer but STRIPE_SECRET_KEY is not set: delete it in the Stripe dashboard"
                    ),
                }
            }
            // Counters next: once the account record is gone its key ids can no longer be found.
            report.counters_erased += self.counters.erase_prefixes(&prefixes, false).await?;
            let mut usage = 0;
            loop {
                let deleted = self.records.erase_usage_of(&account.id, BATCH).await?;
                usage += deleted;
                if deleted == 0 {
                    break;
                }
            }
            let mut erased = self.records.erase_account(&account.id).await?;
            erased.usage_rows += usage;
            report.add(erased);
            report.accounts_erased += 1;
            progress(Progress::AccountErased);
        }

        let events_cutoff = now - time::Duration::days(STRIPE_EVENT_DAYS);
        if !dry_run {
            report.stripe_events_forgotten = self
                .records
                .delete_stripe_events_before(events_cutoff)
                .await?;
        }

        tracing::info!(
            target: "qnp::retention",
            dry_run,
            cutoff = %crate::usage::format_timestamp(cutoff),
            expired_usage_rows = report.expired_usage_rows,
            accounts_erased = report.accounts_erased,
            erased_usage_rows = report.erased.usage_rows,
            erased_keys = report.erased.keys,
            erased_identities = report.erased.identities,
            counters_erased = report.counters_erased,
            stripe_customers_deleted = report.stripe_customers_deleted,
            stripe_events_forgotten = report.stripe_events_forgotten,
            complete = report.complete,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "retention pass"
        );
        Ok(report)
    }
}
