//! How exports reach the client without letting clients that never read hold the process's resources.
//!
//! An export reads the store through a cursor (on the embedded store, a blocking thread with its own
//! SQLite connection). A client that opens exports and never reads them would otherwise keep each one's
//! thread and file open for as long as it likes. So:
//! * at most [`PER_ACCOUNT`] exports run at once per account and [`OVERALL`] per process; more get a 429
//!   with `Retry-After`;
//! * the rows are pulled by a task of their own into a small buffer, and if the client takes no bytes
//!   for the stall time (`QNP_EXPORT_STALL_SECS`, 30 s), the export is abandoned: the cursor and its thread are released, and the response
//!   ends with an error, so the client sees a failed transfer, never a silently short file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use qnp_shared::GatewayError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Exports one account may run at once (a download and a retry of it).
pub const PER_ACCOUNT: usize = 2;
/// Exports one process runs at once.
pub const OVERALL: usize = 16;
/// Chunks buffered between the cursor and the client.
const BUFFERED: usize = 2;

/// The running exports, per process.
pub struct Transfers {
    overall: Arc<Semaphore>,
    per_account: Arc<Mutex<HashMap<String, usize>>>,
    stall: Duration,
}

/// One running export's place; given back when the export ends, however it ends.
pub struct Slot {
    _overall: OwnedSemaphorePermit,
    per_account: Arc<Mutex<HashMap<String, usize>>>,
    account_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.per_account.lock().expect("export slots");
        if let Some(n) = running.get_mut(&self.account_id) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.account_id);
            }
        }
    }
}

fn busy(message: &str) -> GatewayError {
    GatewayError::Busy {
        message: message.into(),
        retry_after_secs: 10,
    }
}

impl Transfers {
    pub fn new(stall: Duration) -> Transfers {
        Transfers {
            overall: Arc::new(Semaphore::new(OVERALL)),
            per_account: Arc::default(),
            stall,
        }
    }

    /// A place for one more export of this account, or a 429 saying to retry.
    pub fn slot(&self, account_id: &str) -> Result<Slot, GatewayError> {
        let overall = self.overall.clone().try_acquire_owned().map_err(|_| {
            busy("the gateway is running as many exports as it can; retry in a few seconds")
        })?;
        let mut running = self.per_account.lock().expect("export slots");
        let n = running.entry(account_id.to_owned()).or_default();
        if *n >= PER_ACCOUNT {
            return Err(busy(&format!(
                "{PER_ACCOUNT} exports of this account are already running; let them finish first"
            )));
        }
        *n += 1;
        Ok(Slot {
            _overall: overall,
            per_account: self.per_account.clone(),
            account_id: account_id.to_owned(),
        })
    }

    /// The export's bytes as a response body, produced by a task that gives up (and releases the
    /// cursor) when the client stops taking them. The slot is held until the export ends.
    pub fn body(&self, slot: Slot, mut chunks: BoxStream<'static, std::io::Result<Bytes>>) -> Body {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(BUFFERED);
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let stall = self.stall;
        tokio::spawn(async move {
            let _slot = slot;
            while let Some(chunk) = chunks.next().await {
                let failed = chunk.is_err();
                match tx.send_timeout(chunk, stall).await {
                    Ok(()) if failed => return,
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                        tracing::warn!(?stall, "export abandoned: the client stopped reading");
                        return;
                    }
                    // The client went away.
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => return,
                }
            }
            done.store(true, Ordering::Release);
        });
        Body::from_stream(async_stream::stream! {
            while let Some(chunk) = rx.recv().await {
                yield chunk;
            }
            if !finished.load(Ordering::Acquire) {
                // The producer gave up: end the transfer visibly broken, not as a complete file.
                yield Err(std::io::Error::other("the export was abandoned"));
            }
        })
    }
}
