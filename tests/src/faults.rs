//! A fault-injecting TCP proxy, placed between QNP and a server it talks to (SecantusDB, dynalite, a mock
//! upstream) so a test can make that server slow, unreachable or rude on a schedule, over real sockets.
//!
//! * `Pass`: bytes flow both ways, after `latency` per chunk when set.
//! * `Blackhole`: new connections are accepted and then hear nothing (what a partitioned network looks
//!   like); open connections stop forwarding.
//! * `Reset`: new connections are closed at once, and open ones are cut (the peer sees the connection
//!   end mid-exchange).
//! * `Bandwidth(bytes_per_sec)`: bytes flow, throttled.
//!
//! Switching the fault applies to connections already open, as a real outage would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Pass,
    Blackhole,
    Reset,
    Latency(Duration),
    Bandwidth(u64),
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: Arc<watch::Sender<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(Fault::Pass);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(connection(client, target, rx));
            }
        });
        FaultProxy {
            addr,
            fault: Arc::new(tx),
            task,
        }
    }

    /// The fault from now on, for new and open connections alike.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// `fault` for `duration`, then `Pass` again (in the background).
    pub fn outage(&self, fault: Fault, duration: Duration) {
        self.set(fault);
        let tx = self.fault.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            tx.send_replace(Fault::Pass);
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(client: TcpStream, target: SocketAddr, mut fault: watch::Receiver<Fault>) {
    let now = *fault.borrow_and_update();
    match now {
        Fault::Reset => {
            drop(client);
            return;
        }
        Fault::Blackhole => {
            // Hold the socket open and silent until the fault changes, then drop it.
            let _ = fault.changed().await;
            return;
        }
        _ => {}
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, fault.clone());
    let down = pump(server_read, client_write, fault);
    // Either direction ending ends the connection, as a proxy in the path would.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = fault.changed() => {
                match *fault.borrow() {
                    Fault::Reset => return,
                    _ => continue,
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Apply the fault in force for this chunk.
        loop {
            let current = *fault.borrow();
            match current {
                Fault::Pass => break,
                Fault::Latency(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Bandwidth(rate) => {
                    let secs = n as f64 / rate.max(1) as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    break;
                }
                Fault::Reset => return,
                Fault::Blackhole => {
                    // Hold the bytes until the outage ends; a reset meanwhile cuts the connection.
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
