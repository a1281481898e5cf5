//! Writes usage records to the record store without putting the write on the client's critical path.
//!
//! * `background` (the `qnp serve` process, which lives on): records go through a channel to one writer
//!   task that inserts them in batches. `shutdown` drains it.
//! * `inline` (Lambda, which freezes the process once an invocation returns): `record` awaits the insert,
//!   and the proxy calls it after the response's last byte was handed over but before the invocation
//!   ends, so nothing is lost to a frozen process.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::RecordStore;
use crate::usage::UsageRecord;

const BATCH: usize = 512;
const QUEUE: usize = 65_536;

#[derive(Clone)]
pub struct UsageLog {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Inline(Arc<dyn RecordStore>),
    Background(mpsc::Sender<UsageRecord>),
}

/// Handle to the background writer; `shutdown` waits until every queued record is written.
pub struct UsageWriter {
    task: JoinHandle<()>,
}

impl UsageWriter {
    pub async fn shutdown(self, log: UsageLog) {
        drop(log);
        let _ = self.task.await;
    }
}

impl UsageLog {
    pub fn inline(store: Arc<dyn RecordStore>) -> UsageLog {
        UsageLog {
            mode: Mode::Inline(store),
        }
    }

    pub fn background(store: Arc<dyn RecordStore>) -> (UsageLog, UsageWriter) {
        let (tx, mut rx) = mpsc::channel::<UsageRecord>(QUEUE);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                write_with_retry(store.as_ref(), &batch).await;
                batch.clear();
            }
        });
        (
            UsageLog {
                mode: Mode::Background(tx),
            },
            UsageWriter { task },
        )
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
async fn write_with_retry(store: &dyn RecordStore, rows: &[UsageRecord]) {
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
