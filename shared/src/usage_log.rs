//! Writes usage records to the record store without putting the write on the client's critical path.
//!
//! * `background` (the `qnp serve` process, which lives on): records go through a channel to one writer
//!   task that inserts them in batches. `shutdown` drains it.
//! * `inline` (Lambda, which freezes the process once an invocation returns): `record` awaits the insert,
//!   and the proxy calls it after the response's last byte was handed over but before the invocation
//!   ends, so nothing is lost to a frozen process.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::refusals::Refusals;
use crate::store::UsageStore;
use crate::usage::UsageRecord;

const BATCH: usize = 512;
const QUEUE: usize = 65_536;

/// How often the background writer stores the summaries of finished minutes' refusals.
const REFUSAL_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone)]
pub struct UsageLog {
    mode: Mode,
    refusals: Arc<Refusals>,
}

#[derive(Clone)]
enum Mode {
    Inline(Arc<dyn UsageStore>),
    Background(mpsc::Sender<UsageRecord>),
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
    pub fn inline(store: Arc<dyn UsageStore>) -> UsageLog {
        UsageLog {
            mode: Mode::Inline(store),
            refusals: Arc::default(),
        }
    }

    pub fn background(store: Arc<dyn UsageStore>) -> (UsageLog, UsageWriter) {
        let (tx, mut rx) = mpsc::channel::<UsageRecord>(QUEUE);
        let refusals = Arc::<Refusals>::default();
        let summaries = refusals.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut tick = tokio::time::interval(REFUSAL_FLUSH_EVERY);
            loop {
                tokio::select! {
                    received = rx.recv_many(&mut batch, BATCH) => {
                        if received == 0 {
                            break;
                        }
                    }
                    _ = tick.tick() => {
                        batch.extend(summaries.finished(OffsetDateTime::now_utc(), false));
                    }
                }
                if !batch.is_empty() {
                    write_with_retry(store.as_ref(), &batch).await;
                    batch.clear();
                }
            }
        });
        (
            UsageLog {
                mode: Mode::Background(tx),
                refusals,
            },
            UsageWriter { task },
        )
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
        matches!(self.mode, Mode::Inline(_))
    }

    pub async fn record(&self, row: UsageRecord) {
        match &self.mode {
            Mode::Inline(store) => {
                write_with_retry(store.as_ref(), std::slice::from_ref(&row)).await
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

/// Inserts are idempotent by request id, so retrying a write that may have landed is safe.
async fn write_with_retry(store: &dyn UsageStore, rows: &[UsageRecord]) {
    for attempt in 0..3u32 {
        match store.insert_usage(rows).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, rows = rows.len(), "writing usage failed");
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    tracing::error!(rows = rows.len(), "usage records could not be written");
}
