//! Writes usage records to the record store without putting the write on the client's critical path.
//!
//! * `background` (the `qnp serve` process, which lives on): records go through a channel to one writer
//!   task that inserts them in batches. `shutdown` drains it.
//! * `inline` (Lambda, which freezes the process once an invocation returns): `record` awaits the insert,
//!   and the proxy calls it after the response's last byte was handed over but before the invocation
//!   ends, so nothing is lost to a frozen process.
//!
//! No row is lost while the record store is down or slow: a write that fails (three attempts of at most
//! [`WRITE_TIMEOUT`] each) puts its rows in the **outbox**, which lives in the counter store (SQLite
//! beside the counters for `qnp serve`, the DynamoDB counters table on Lambda: a store that must be up
//! for any call to be served). Once one write has failed, later rows go straight to the outbox until a
//! delivery succeeds, so calls never queue behind a dead store. Held rows are delivered, oldest first,
//! and released: by the background writer every [`DRAIN_EVERY`] (and once at start, for rows a previous
//! run left), by a Lambda invocation whose own write succeeded after its instance held rows, and by the
//! retention function on every run (rows other instances left). Inserts are idempotent by request id,
//! so a row delivered twice is stored once.
//!
//! Bounded: one process holds at most [`MAX_HELD_ROWS`] undelivered rows (about 500 bytes each). Past
//! that it stops admitting calls (503 with Retry-After, from [`UsageLog::accepting`]) until a delivery
//! drains it: no call is served that could not be billed. A row that cannot be held either (both stores
//! down at once) is lost, with an error log; its call's log line still carries all of its metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::refusals::Refusals;
use crate::store::{CounterStore, UsageStore};
use crate::usage::UsageRecord;

const BATCH: usize = 512;
const QUEUE: usize = 65_536;

/// How often the background writer stores the summaries of finished minutes' refusals.
const REFUSAL_FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How long one insert may take before it counts as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the background writer tries to deliver held rows.
pub const DRAIN_EVERY: Duration = Duration::from_secs(5);
/// The most undelivered rows one process holds before it stops admitting calls.
pub const MAX_HELD_ROWS: u64 = 100_000;
/// Rows delivered per outbox read.
const DRAIN_BATCH: usize = 500;
/// What one Lambda invocation delivers at most after its own write, so its duration stays bounded.
const INLINE_DRAIN_ROWS: usize = 500;

#[derive(Clone)]
pub struct UsageLog {
    mode: Mode,
    refusals: Arc<Refusals>,
    outbox: Arc<Outbox>,
}

#[derive(Clone)]
enum Mode {
    Inline,
    Background(mpsc::Sender<UsageRecord>),
}

/// The record store and the outbox behind it, and what this process knows of their state.
pub struct Outbox {
    records: Arc<dyn UsageStore>,
    counters: Arc<dyn CounterStore>,
    /// Rows this process held and has not seen delivered.
    held: AtomicU64,
    /// A write failed and no delivery has succeeded since: new rows go straight to the outbox.
    store_down: AtomicBool,
}

impl Outbox {
    pub fn new(records: Arc<dyn UsageStore>, counters: Arc<dyn CounterStore>) -> Arc<Outbox> {
        Arc::new(Outbox {
            records,
            counters,
            held: AtomicU64::new(0),
            store_down: AtomicBool::new(false),
        })
    }

    /// Rows this process holds undelivered.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Writes `rows` to the record store, or holds them when it will not take them.
    async fn write(&self, rows: &[UsageRecord]) {
        if !self.store_down.load(Ordering::Relaxed) {
            if write_with_retry(self.records.as_ref(), rows).await {
                return;
            }
            self.store_down.store(true, Ordering::Relaxed);
        }
        self.hold(rows).await;
    }

    async fn hold(&self, rows: &[UsageRecord]) {
        match tokio::time::timeout(WRITE_TIMEOUT, self.counters.hold_usage(rows)).await {
            Ok(Ok(())) => {
                let held = self.held.fetch_add(rows.len() as u64, Ordering::Relaxed);
                tracing::warn!(
                    rows = rows.len(),
                    held = held + rows.len() as u64,
                    "the record store is unavailable; usage rows held in the outbox"
                );
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, rows = rows.len(), "usage rows could not be held and are lost")
            }
            Err(_) => tracing::error!(
                rows = rows.len(),
                "holding usage rows timed out; they are lost"
            ),
        }
    }

    /// Delivers held rows (at most `limit`, oldest first) to the record store and releases them. Returns
    /// how many were delivered; stops at the first failure (the store is still down).
    pub async fn deliver(&self, limit: usize) -> anyhow::Result<u64> {
        let mut delivered = 0u64;
        while (delivered as usize) < limit {
            let batch = DRAIN_BATCH.min(limit - delivered as usize);
            let rows = self.counters.held_usage(batch).await?;
            if rows.is_empty() {
                self.held.store(0, Ordering::Relaxed);
                self.store_down.store(false, Ordering::Relaxed);
                break;
            }
            match tokio::time::timeout(WRITE_TIMEOUT, self.records.insert_usage(&rows)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.context("delivering held usage rows")),
                Err(_) => anyhow::bail!("delivering held usage rows timed out"),
            }
            self.store_down.store(false, Ordering::Relaxed);
            let ids: Vec<String> = rows.iter().map(|r| r.request_id.clone()).collect();
            self.counters.release_usage(&ids).await?;
            let n = rows.len() as u64;
            let _ = self
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                    Some(h.saturating_sub(n))
                });
            delivered += n;
            if rows.len() < batch {
                self.held.store(0, Ordering::Relaxed);
                break;
            }
        }
        if delivered > 0 {
            tracing::info!(
                rows = delivered,
                "held usage rows delivered to the record store"
            );
        }
        Ok(delivered)
    }
}

/// Handle to the background writer; `shutdown` waits until every queued record is written.
pub struct UsageWriter {
    task: JoinHandle<()>,
}

impl UsageWriter {
    /// Stores what is left (this minute's refusal summaries too) and waits until every row is written.
    pub async fn shutdown(self, log: UsageLog) {
        log.flush_refusals().await;
        drop(log);
        let _ = self.task.await;
    }
}

impl UsageLog {
    pub fn inline(records: Arc<dyn UsageStore>, counters: Arc<dyn CounterStore>) -> UsageLog {
        UsageLog {
            mode: Mode::Inline,
            refusals: Arc::default(),
            outbox: Outbox::new(records, counters),
        }
    }

    pub fn background(
        records: Arc<dyn UsageStore>,
        counters: Arc<dyn CounterStore>,
    ) -> (UsageLog, UsageWriter) {
        let (tx, mut rx) = mpsc::channel::<UsageRecord>(QUEUE);
        let refusals = Arc::<Refusals>::default();
        let summaries = refusals.clone();
        let outbox = Outbox::new(records, counters);
        let writer = outbox.clone();
        let task = tokio::spawn(async move {
            // Rows a previous run (or another instance) left in the outbox.
            if let Err(e) = writer.deliver(usize::MAX).await {
                tracing::warn!(error = %e, "held usage rows not delivered yet");
            }
            let mut batch = Vec::with_capacity(BATCH);
            let mut tick = tokio::time::interval(REFUSAL_FLUSH_EVERY.min(DRAIN_EVERY));
            loop {
                tokio::select! {
                    received = rx.recv_many(&mut batch, BATCH) => {
                        if received == 0 {
                            break;
                        }
                    }
                    _ = tick.tick() => {
                        batch.extend(summaries.finished(OffsetDateTime::now_utc(), false));
                        if (writer.held() > 0 || writer.store_down.load(Ordering::Relaxed))
                            && let Err(e) = writer.deliver(usize::MAX).await
                        {
                            tracing::warn!(error = %e, held = writer.held(), "held usage rows not delivered yet");
                        }
                    }
                }
                if !batch.is_empty() {
                    writer.write(&batch).await;
                    batch.clear();
                }
            }
            // Shutting down: whatever is held stays in the outbox for the next start, unless the store
            // takes it now.
            if writer.held() > 0
                && let Err(e) = writer.deliver(usize::MAX).await
            {
                tracing::warn!(error = %e, held = writer.held(), "usage rows stay held for the next start");
            }
        });
        (
            UsageLog {
                mode: Mode::Background(tx),
                refusals,
                outbox,
            },
            UsageWriter { task },
        )
    }

    /// Whether calls may be admitted: false while this process holds as many undelivered rows as it
    /// may ([`MAX_HELD_ROWS`]).
    pub fn accepting(&self) -> bool {
        self.outbox.held() < MAX_HELD_ROWS
    }

    /// The outbox, for the retention function's delivery of rows other instances held.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Stores the summaries of every refusal tally now, the current minute's included.
    pub async fn flush_refusals(&self) {
        for row in self.refusals.finished(OffsetDateTime::now_utc(), true) {
            self.record(row).await;
        }
    }

    /// Records a call refused before it went upstream: the first of its kind this minute is stored at
    /// once, the rest are summed into one row when the minute ends (see `refusals`). Returns whether this
    /// one was stored (and is worth a log line).
    pub async fn record_refusal(&self, row: UsageRecord) -> bool {
        let now = row.timestamp;
        let stored = match self.refusals.count(row) {
            Some(first) => {
                self.record(first).await;
                true
            }
            None => false,
        };
        if self.is_inline() {
            // Lambda has no writer task: whichever invocation comes after a minute ends stores it.
            for summary in self.refusals.finished(now, false) {
                self.record(summary).await;
            }
        }
        stored
    }

    /// Whether `record` writes before returning (Lambda) rather than queueing.
    pub fn is_inline(&self) -> bool {
        matches!(self.mode, Mode::Inline)
    }

    pub async fn record(&self, row: UsageRecord) {
        match &self.mode {
            Mode::Inline => {
                let was_down = self.outbox.store_down.load(Ordering::Relaxed);
                self.outbox.write(std::slice::from_ref(&row)).await;
                // This instance held rows and the store may be back: deliver some, within this
                // invocation (a frozen process runs nothing in the background).
                if self.outbox.held() > 0
                    && (was_down || !self.outbox.store_down.load(Ordering::Relaxed))
                    && let Err(e) = self.outbox.deliver(INLINE_DRAIN_ROWS).await
                {
                    tracing::warn!(error = %e, "held usage rows not delivered yet");
                }
            }
            Mode::Background(tx) => {
                // A full queue means the store is far behind; wait for room rather than drop a record.
                if tx.send(row).await.is_err() {
                    tracing::error!("usage writer stopped; a usage record was lost");
                }
            }
        }
    }
}

/// Inserts are idempotent by request id, so retrying a write that may have landed is safe. Whether
/// the store took the rows.
async fn write_with_retry(store: &dyn UsageStore, rows: &[UsageRecord]) -> bool {
    for attempt in 0..3u32 {
        match tokio::time::timeout(WRITE_TIMEOUT, store.insert_usage(rows)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, attempt, rows = rows.len(), "writing usage failed");
            }
            Err(_) => tracing::warn!(attempt, rows = rows.len(), "writing usage timed out"),
        }
        if attempt < 2 {
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
    }
    false
}
