//! imsbridge: an authenticating SOAP reverse proxy for moving Adobe Campaign integrations from
//! session tokens to IMS technical accounts.
//!
//! A legacy caller keeps sending what it sends today (`login/password` in the
//! `<sessiontoken>`); imsbridge recognises it, refuses strangers before a byte goes upstream,
//! empties every copy of the credential, adds `Authorization: Bearer <token>` of the caller's
//! technical account, and streams the request to Campaign and the answer back.
//! `docs/architecture.md` has the data path, the invariants, and what each module owns and may
//! import.
//!
//! # Layout
//!
//! The data path reads off the file list, in request order:
//!
//! - `server.rs`: listeners, accept loop, graceful shutdown;
//! - `proxy.rs` (+ `proxy/`): the request pipeline as a list of phases, its side roads in
//!   rooms of their own (shadow copies, Campaign's other pages, the client behind trusted
//!   proxies); the one mapping from error to answer; the log record;
//! - `soap.rs` (+ `soap/`): finds the method and the credential's places in the body prefix,
//!   applies edits to it, writes Campaign-shaped faults and Logon answers;
//! - `carriers.rs` (+ `carriers/`): where a legacy credential travels: every copy read, the one
//!   Campaign authenticates on chosen, every copy taken out;
//! - `callers.rs` (+ `callers/`): who is calling, modes; the argon2 verification;
//!   `clock.rs`: the time of day, which tests can move;
//! - `sessions.rs`: the session tokens imsbridge issues at Logon;
//! - `ims.rs` (+ `ims/`): token sources and the per-profile token cache;
//! - `upstream.rs` (+ `upstream/`): the pooled client to Campaign and the header policy;
//! - `body.rs` (+ `body/`): the bodies both ways, their limits and timers, the replay buffer;
//! - `headers.rs`: hop-by-hop fields; `connect.rs`: outgoing TCP and TLS, error chains;
//! - `admin.rs` (+ `admin/`): `/healthz`, `/readyz`, `/metrics`, `/inventory`, and the page `/`;
//!   `metrics.rs`: what they count; `inventory.rs` (+ `inventory/`): every legacy login seen,
//!   and `imsbridge inventory`;
//! - `access.rs`: the access line, written off `tracing`'s formatter, into `logbuf.rs`'s
//!   buffer, written out every 50 ms; `telemetry.rs`: traces
//!   over OTLP; `reload.rs`: `SIGHUP` and the watched config file; `notify.rs`: systemd;
//! - `tls.rs` (+ `tls/`): TLS and mTLS on the listener; what a client certificate names, read
//!   with x509-parser, and the subjects and names callers are bound to;
//! - `check.rs`: `imsbridge check`, a token per profile and a probe call before cutting over;
//! - `import.rs`: `imsbridge import-nlserver`, nlserver's `-setimsjwtauth` string to a profile;
//! - `config.rs` (+ `config/`): TOML → validated [`config::Config`]; secrets; durations;
//! - `secret.rs` (+ `secret/`): the wrappers that keep secrets out of logs;
//! - `dates.rs`: UTC dates without a calendar crate;
//! - `demo.rs` (+ `demo/`): the stand-in IMS and Campaign, used by `imsbridge demo` and by the
//!   integration tests.

#![forbid(unsafe_code)]

mod access;
mod admin;
mod body;
mod callers;
mod carriers;
mod check;
pub mod clock;
pub mod config;
mod connect;
mod cutover;
mod dates;
pub mod demo;
mod h1;
mod headers;
mod import;
mod ims;
mod inventory;
mod logbuf;
mod metrics;
mod notify;
mod proxy;
mod reload;
mod secret;
mod server;
mod sessions;
mod soap;
mod state;
mod telemetry;
mod tls;
mod upstream;
mod workers;

pub use workers::bind as bind_workers;

pub use secret::SigningKey;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A TLS client or server could not be set up.
    #[error(transparent)]
    Tls(#[from] connect::TlsSetupError),
    /// The state store (`[state]`) could not be opened.
    #[error(transparent)]
    State(#[from] state::StateOpenError),
    /// A worker's thread could not be started.
    #[error("cannot start the workers: {0}")]
    Workers(#[from] std::io::Error),
    /// A worker's thread ended while the others served: the process stops.
    #[error("{0}")]
    WorkerDied(String),
}

/// What the command line (`src/main.rs`) runs besides [`run_reloadable`]: its commands, the
/// log, traces and reloads.
pub mod cli {
    pub use crate::access::{Format as LogFormat, write_to as write_log_to};
    pub use crate::callers::{check_password, hash_password};
    pub use crate::check::{JWT_RETIRED, run as check};
    pub use crate::cutover::command::run as cutover;
    pub use crate::import::{parse as parse_nlserver, write_profile};
    pub use crate::inventory::command::{HASH_PLACEHOLDER, PASSWORD_ENV, run as inventory};
    pub use crate::logbuf::{LogGuard, start as start_log};
    pub use crate::reload::{Reload, reloads};
    pub use crate::telemetry::{TARGET as TRACES_TARGET, Traces};
}

/// What the fuzz target (`fuzz/`) reads envelopes with: the scanner, the watch of the rest
/// and the splice, as the proxy uses them.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::carriers::body_edits;
    pub use crate::soap::{Charset, Scanner, Tail, splice};
}

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use config::{Config, Limits, ServerSettings};
use metrics::Metrics;
use proxy::Proxy;
use server::Connections;
use state::State;

/// The sockets `run` serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// The callers' listener, or the workers' sockets.
    pub proxy: ProxyListeners,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`, `/inventory` and the page `/`.
    pub admin: Option<TcpListener>,
}

/// Where callers connect.
pub enum ProxyListeners {
    /// One listener, served on the runtime `run` is called on (the demo, tests).
    Here(TcpListener),
    /// A socket per worker, all bound to one address ([`workers::bind`]): each served by a
    /// current-thread runtime on a thread of its own (`server.workers`; the binary's way).
    Workers(Vec<std::net::TcpListener>),
}

impl From<TcpListener> for ProxyListeners {
    fn from(listener: TcpListener) -> ProxyListeners {
        ProxyListeners::Here(listener)
    }
}

impl ProxyListeners {
    /// The address callers connect to.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            ProxyListeners::Here(listener) => listener.local_addr(),
            ProxyListeners::Workers(sockets) => sockets
                .first()
                .ok_or_else(|| std::io::Error::other("no worker socket"))?
                .local_addr(),
        }
    }
}

/// Runs the proxy until `shutdown` completes, then drains in-flight requests.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let (_keep, reloads) = mpsc::channel(1);
    run_reloadable(listeners, config, shutdown, reloads).await
}

/// Says what a reload attempt gave: in the log, the metrics and to systemd.
fn reload_failed(metrics: &Metrics, error: &dyn std::fmt::Display) {
    tracing::error!(%error, "reload refused; the running config stays");
    metrics.reloaded(false);
    notify::notify(&format!(
        "READY=1\nSTATUS=serving; the last reload was refused: {error}"
    ));
}

/// [`run`], taking new configs from `reloads` (`SIGHUP` in the binary): each is put to work
/// for new requests once its profiles hold tokens (or IMS had its time to answer); requests
/// in flight finish on the config they started with. Settings of the listeners themselves
/// (`server.*`) and the state store (`[state]`) need a restart.
pub async fn run_reloadable(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    mut reloads: mpsc::Receiver<reload::Reload>,
) -> Result<(), StartError> {
    let limits = config.server.limits;
    let metrics = Arc::new(Metrics::new());
    let state = State::start(
        &config.state,
        config.admin.inventory_max_logins,
        config.clock.clone(),
        metrics.clone(),
    )
    .await?;
    if !config.server.admin_listen.ip().is_loopback() && config.admin.password.is_none() {
        tracing::warn!(
            admin_listen = %config.server.admin_listen,
            "the admin listener is not on loopback and has no [admin] password: anyone the network admits reads every caller's login, addresses and verdicts (GET /, /inventory, /cutover)"
        );
    }
    let (current, proxy) = watch::channel(Arc::new(Proxy::new(
        &config,
        metrics.clone(),
        state.clone(),
    )?));
    let tls = config
        .server
        .tls
        .as_ref()
        .map(|tls| watch::channel(TlsAcceptor::from(tls.config.clone())));
    let (tls_now, tls) = match tls {
        Some((now, receiver)) => (Some(now), Some(receiver)),
        None => (None, None),
    };
    let server = config.server;
    let running_state = config.state.clone();
    let reload_state = state.clone();
    let reloader = tokio::spawn(async move {
        while let Some(config) = reloads.recv().await {
            let config = match config {
                Ok(config) => config,
                Err(error) => {
                    reload_failed(&metrics, &error);
                    continue;
                }
            };
            warn_unapplied(&server, &config.server);
            if !same_store(&running_state, &config.state) {
                tracing::warn!(
                    "[state] changed in the reloaded config: it takes a restart to apply"
                );
            }
            match Proxy::new(&config, metrics.clone(), reload_state.clone()) {
                Ok(next) => {
                    next.warm_up(config.ims.timeout).await;
                    current.send_replace(Arc::new(next));
                    // New connections get the reloaded certificates.
                    if let (Some(now), Some(tls)) = (&tls_now, &config.server.tls) {
                        now.send_replace(TlsAcceptor::from(tls.config.clone()));
                    }
                    tracing::info!(
                        profiles = config.profiles.len(),
                        callers = config.callers.len(),
                        "config reloaded"
                    );
                    metrics.reloaded(true);
                    notify::ready("serving; config reloaded");
                }
                Err(error) => reload_failed(&metrics, &error),
            }
        }
    });
    let connections = Arc::new(Connections::default());
    let (stop, stopped) = watch::channel(false);
    let admin = listeners.admin.map(|listener| {
        let proxy = proxy.clone();
        let connections = connections.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(server::serve(
            listener,
            None,
            Arc::default(),
            // Probes and scrapers reach the admin listener directly, without a PROXY header.
            Limits {
                proxy_protocol: false,
                ..limits
            },
            move |peer: Arc<server::Peer>, request| {
                let proxy = proxy.borrow().clone();
                let connections = connections.clone();
                async move { admin::handle(&proxy, &connections, peer.addr.ip(), &request).await }
            },
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ))
    });
    let handler = move |peer, request| {
        let proxy = proxy.borrow().clone();
        // Boxed: hyper keeps the request's future in its connection state, and a future of a
        // few KB moved there by value showed in the profile (`bench/README.md`).
        Box::pin(async move { proxy.handle(peer, request).await })
    };
    let admission = server::Admission::new(&limits);
    let shutdown = async move {
        shutdown.await;
        notify::stopping();
        tracing::info!("shutting down: no new connections, finishing requests in flight");
    };
    let served = match listeners.proxy {
        ProxyListeners::Here(listener) => {
            // The listeners are bound (by the caller) and about to be served.
            notify::ready("serving");
            server::serve_admitted(
                listener,
                tls,
                connections,
                &admission,
                limits,
                handler,
                async {
                    shutdown.await;
                    let _ = stop.send(true);
                },
            )
            .await;
            Ok(())
        }
        ProxyListeners::Workers(sockets) => {
            let worker_stopped = stopped.clone();
            let mut workers = workers::spawn(sockets, move |_, listener| {
                let (tls, connections, admission, handler) = (
                    tls.clone(),
                    connections.clone(),
                    admission.clone(),
                    handler.clone(),
                );
                let mut stopped = worker_stopped.clone();
                async move {
                    server::serve_admitted(
                        listener,
                        tls,
                        connections,
                        &admission,
                        limits,
                        handler,
                        async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        },
                    )
                    .await;
                }
            })?;
            notify::ready("serving");
            let mut shutdown = std::pin::pin!(shutdown);
            let died = tokio::select! {
                () = &mut shutdown => None,
                died = workers.supervise(&stopped) => Some(died),
            };
            // Every worker stops accepting and finishes its requests in flight.
            let _ = stop.send(true);
            let served = match died {
                None => workers.supervise(&stopped).await,
                Some(Ok(())) => Ok(()),
                Some(Err(error)) => {
                    tracing::error!(%error, "a worker stopped; stopping the others");
                    notify::stopping();
                    let _ = workers.supervise(&stopped).await;
                    Err(error)
                }
            };
            workers.join().await;
            served.map_err(StartError::WorkerDied)
        }
    };
    reloader.abort();
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    // What waits is written before the process ends.
    state.shutdown().await;
    served
}

/// Whether two `[state]` tables name the same store, the same way.
fn same_store(running: &config::StateSettings, new: &config::StateSettings) -> bool {
    use config::StateBackend::{Memory, Redis, Sqlite};
    let backend = match (&running.backend, &new.backend) {
        (Memory, Memory) => true,
        (Sqlite { path: a }, Sqlite { path: b }) => a == b,
        (
            Redis {
                url: a,
                key_prefix: p,
            },
            Redis {
                url: b,
                key_prefix: q,
            },
        ) => a.expose() == b.expose() && p == q,
        _ => false,
    };
    backend
        && running.flush_interval == new.flush_interval
        && running.timeout == new.timeout
        && running.history_days == new.history_days
}

/// Says which changed settings a reload does not apply.
fn warn_unapplied(running: &ServerSettings, new: &ServerSettings) {
    let changed = [
        ("server.listen", running.listen != new.listen),
        (
            "server.admin_listen",
            running.admin_listen != new.admin_listen,
        ),
        ("server.workers", running.workers != new.workers),
        (
            "server.header_read_timeout",
            running.limits.header_read_timeout != new.limits.header_read_timeout,
        ),
        (
            "server.max_connections",
            running.limits.max_connections != new.limits.max_connections,
        ),
        (
            "server.max_connections_per_ip",
            running.limits.max_connections_per_ip != new.limits.max_connections_per_ip,
        ),
        (
            "server.http2_max_streams",
            running.limits.http2_max_streams != new.limits.http2_max_streams,
        ),
        (
            "server.shutdown_grace",
            running.limits.shutdown_grace != new.limits.shutdown_grace,
        ),
    ];
    for (key, _) in changed.iter().filter(|(_, changed)| *changed) {
        tracing::warn!(
            key,
            "changed in the reloaded config: it takes a restart to apply"
        );
    }
}
