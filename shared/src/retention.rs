//! The retention cleaner: usage metadata is kept 30 days, and accounts whose owners asked for deletion
//! are erased completely (records and counters).
//!
//! It works in bounded batches, so a large backlog never holds much in memory or runs past its time
//! budget; every step is idempotent, so an interrupted run is finished by the next one. It never deletes
//! a usage row younger than 30 days: the cutoff is computed once from the injected `now`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use crate::limits::counter_prefixes_for_key;
use crate::store::{CounterStore, Erased, RecordStore};

pub const USAGE_RETENTION_DAYS: i64 = 30;
const BATCH: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// Usage rows older than this were (or, in a dry run, would be) deleted.
    #[serde(with = "time::serde::rfc3339")]
    pub cutoff: OffsetDateTime,
    pub dry_run: bool,
    pub expired_usage_rows: u64,
    pub accounts_erased: u64,
    /// What the erased accounts held, summed.
    pub erased: Erased,
    pub counters_erased: u64,
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
    /// Stop starting new batches after this long (a Lambda invocation has 15 minutes).
    pub budget: Duration,
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
        let cutoff = now - time::Duration::days(USAGE_RETENTION_DAYS);
        let mut report = Report {
            now,
            cutoff,
            dry_run,
            expired_usage_rows: 0,
            accounts_erased: 0,
            erased: Erased::default(),
            counters_erased: 0,
            complete: true,
        };

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
        loop {
            let Some(account) = pending.next() else {
                if dry_run {
                    break;
                }
                // Erased accounts leave the pending list, so the next page is the rest.
                let next = self.records.accounts_pending_erasure(100).await?;
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
            let prefixes: Vec<String> = keys
                .iter()
                .flat_map(|k| counter_prefixes_for_key(&k.key_id))
                .collect();
            if dry_run {
                report.counters_erased += self.counters.erase_prefixes(&prefixes, true).await?;
                report.add(self.records.count_account_data(&account.id).await?);
                report.accounts_erased += 1;
                continue;
            }
            // Counters first: once the account record is gone its key ids can no longer be found.
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
            complete = report.complete,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "retention pass"
        );
        Ok(report)
    }
}
