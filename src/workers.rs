//! A worker per core (`server.workers`): each a current-thread runtime on a thread of its own,
//! serving a listening socket of its own (every worker's bound to the same address with
//! `SO_REUSEPORT`: the kernel spreads new connections over them) and holding its own
//! connections to Campaign (`upstream/pool.rs` keeps one pool a worker). A request lives on
//! the worker that accepted its connection, from the first byte to the last: nothing is
//! stolen by another thread, nothing wakes one.
//!
//! What the workers share is what must be the process's: the config (swapped at reload), the
//! token cache, the remembered password verdicts and the argon2 threads, the metrics, the
//! state store, and the connection limits. The control runtime (the one `run` is called on)
//! keeps the rest: the admin listener, reloads, IMS token refreshes, the state store's
//! flushes, signals.
//!
//! A worker whose thread ends before the shutdown (a panic that escaped its runtime) takes
//! the process down ([`Workers::supervise`]): serving on with fewer workers would hide it.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};

thread_local! {
    /// The worker this thread is.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running this thread: 0 off the workers (the control runtime, a
/// proxy served on the caller's runtime).
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Binds `workers` listening sockets to `addr`, each with `SO_REUSEPORT` so that all of them
/// hold the same address (port 0: the port the first one got). Called within a tokio runtime;
/// each worker takes one over ([`spawn`]).
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut bound = Vec::with_capacity(workers);
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let socket = match at {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(at)?;
        let listener = socket.listen(1024)?;
        at = listener.local_addr()?;
        bound.push(listener.into_std()?);
    }
    Ok(bound)
}

/// How a worker's thread ended.
#[derive(Debug)]
struct Ended {
    index: usize,
    /// It panicked (rather than returned after the shutdown).
    panicked: bool,
}

/// Sends how its thread ended when dropped: last thing the thread does, however it ends.
struct EndGuard {
    index: usize,
    ended: mpsc::UnboundedSender<Ended>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let _ = self.ended.send(Ended {
            index: self.index,
            panicked: std::thread::panicking(),
        });
    }
}

/// The running workers.
pub(crate) struct Workers {
    threads: Vec<JoinHandle<()>>,
    /// Workers whose end has not been heard of yet.
    running: usize,
    ended: mpsc::UnboundedReceiver<Ended>,
}

/// Starts a worker per socket: a thread running a current-thread runtime that serves the
/// socket with `serve(index, listener)` until that future completes.
pub(crate) fn spawn<S, F>(sockets: Vec<std::net::TcpListener>, serve: S) -> io::Result<Workers>
where
    S: Fn(usize, TcpListener) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let (sender, ended) = mpsc::unbounded_channel();
    let mut threads = Vec::with_capacity(sockets.len());
    for (index, socket) in sockets.into_iter().enumerate() {
        let serve = serve.clone();
        let guard = EndGuard {
            index,
            ended: sender.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("imsbridge-worker-{index}"))
            .spawn(move || {
                let _guard = guard;
                INDEX.with(|i| i.set(index));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("worker {index}: no runtime: {e}"));
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(socket)
                        .unwrap_or_else(|e| panic!("worker {index}: its socket: {e}"));
                    serve(index, listener).await;
                });
            })?;
        threads.push(thread);
    }
    Ok(Workers {
        running: threads.len(),
        threads,
        ended,
    })
}

impl Workers {
    /// Waits until every worker has ended. A worker that ends while `stopping` is still false
    /// is an error: `Err` names it at once (the others still run: the caller stops them and
    /// calls [`Workers::join`]).
    pub(crate) async fn supervise(
        &mut self,
        stopping: &watch::Receiver<bool>,
    ) -> Result<(), String> {
        while self.running > 0 {
            let Some(ended) = self.ended.recv().await else {
                break;
            };
            self.running -= 1;
            if !*stopping.borrow() {
                let how = if ended.panicked { "panicked" } else { "ended" };
                return Err(format!(
                    "worker {} {how} while serving; the process stops rather than serve on with fewer workers",
                    ended.index
                ));
            }
        }
        Ok(())
    }

    /// Waits for every worker's thread to end (after a shutdown).
    pub(crate) async fn join(self) {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
