//! `qnp serve`'s HTTP listener: the router behind hyper, with the limits a public socket needs so that
//! clients that send slowly, never finish or open connections by the hundred cannot lock others out.
//!
//! * A request's headers must arrive within `header_timeout`, which is also how long a kept-alive
//!   connection may sit idle between requests (hyper's header-read timer runs from the moment the
//!   connection waits for a request).
//! * A request's whole body must arrive within `body_timeout`; past it the body fails and the handler
//!   answers 408.
//! * At most `max_connections` connections are served at once (new ones wait in the kernel's backlog),
//!   and at most `max_connections_per_ip` from one address (more are closed at once).
//! * On shutdown, no new connection is accepted and those open get `shutdown_grace` to finish.
//!
//! On Lambda none of this applies: API Gateway and the function URL hold the client connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use qnp_shared::config::ServerLimits;
use qnp_shared::error::BodyTimedOut;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// A request body that fails once its deadline has passed. The timer is armed only if the body is not
/// already there when first read: most requests' bodies arrive with their headers and never need one.
struct DeadlineBody {
    inner: Incoming,
    /// When the headers were in; the body is due `limit` later.
    started: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let due = self.started + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One address's connection, counted until it is dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<AddressSlot> {
        let mut open = self.0.lock().expect("connection table");
        let count = open.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().expect("connection table");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish for at most
/// `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // HTTP/1.1 only: detecting HTTP/2's preface would read from the socket before the header timer
    // starts, so a client that connects and sends nothing would be held forever. HTTP/2 and TLS end at
    // the load balancer or edge in front of a public deployment.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = per_address.take(peer.ip(), limits.max_connections_per_ip) else {
            tracing::warn!(peer = %peer.ip(), "too many connections from one address; closing the newest");
            drop(tcp);
            continue;
        };
        // Streams are written event by event; without TCP_NODELAY, Nagle's algorithm holds a small
        // write back until the client's delayed ACK (~40 ms) arrives.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        // The router as this connection's service: the peer address for `ConnectInfo`, and the body's
        // deadline, which starts once the headers are in.
        let app = app.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(|inner| {
                Body::new(DeadlineBody {
                    inner,
                    started: tokio::time::Instant::now(),
                    timer: None,
                    limit: body_timeout,
                })
            });
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop((slot, permit));
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "connections still open after the shutdown grace period; closing them"
        );
    }
}
