//! imsbridge: an authenticating SOAP reverse proxy for moving Adobe Campaign integrations from
//! session tokens to IMS technical accounts.
//!
//! A legacy caller keeps sending what it sends today (`login/password` in the
//! `<sessiontoken>`); imsbridge recognises it, refuses strangers before a byte goes upstream,
//! empties every copy of the credential, adds `Authorization: Bearer <token>` of the caller's
//! technical account, and streams the request to Campaign and the answer back. See
//! `design.md` for the whole design.
//!
//! # Layout
//!
//! The data path reads off the file list, in request order:
//!
//! - `server.rs`: listeners, accept loop, graceful shutdown;
//! - `proxy.rs` (+ `proxy/`): the request pipeline, stage by stage; the bodies; the one
//!   mapping from error to answer;
//! - `soap.rs` (+ `soap/`): finds the method and the session token in the body prefix,
//!   splices it out, writes Campaign-shaped faults;
//! - `carriers.rs`: the other places a session token travels (cookie, headers);
//! - `callers.rs`: who is calling, argon2 verification, modes;
//! - `ims.rs` (+ `ims/`): token sources and the per-profile token cache;
//! - `upstream.rs`: the pooled client to Campaign and the header policy;
//! - `admin.rs`: `/healthz`, `/readyz`;
//! - `check.rs`: `imsbridge check`, a token per profile and a probe call before cutting over;
//! - `import.rs`: `imsbridge import-nlserver`, seed 000's `-setimsjwtauth` string to a profile;
//! - `config.rs` (+ `config/`): TOML → validated [`config::Config`]; secrets; durations;
//! - `secret.rs`: the wrapper that keeps secrets out of logs;
//! - `demo.rs` (+ `demo/`): the stand-in IMS and Campaign, used by `imsbridge demo` and by the
//!   integration tests.

#![forbid(unsafe_code)]

pub mod admin;
pub mod callers;
pub mod carriers;
pub mod check;
pub mod config;
pub mod demo;
pub mod import;
pub mod ims;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod soap;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use config::Config;
use proxy::Proxy;

/// The sockets `run` serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    pub proxy: TcpListener,
    /// `/healthz`, `/readyz`.
    pub admin: Option<TcpListener>,
}

/// Runs the proxy until `shutdown` completes, then drains in-flight requests.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), upstream::TlsSetupError> {
    let proxy = Arc::new(Proxy::new(&config)?);
    let (stop, stopped) = watch::channel(false);
    let admin = listeners.admin.map(|listener| {
        let proxy = proxy.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(server::serve(
            listener,
            None,
            Arc::default(),
            move |_, request| std::future::ready(admin::handle(&proxy, &request)),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ))
    });
    let handler = move |peer, request| {
        let proxy = proxy.clone();
        async move { proxy.handle(peer, request).await }
    };
    server::serve(listeners.proxy, None, Arc::default(), handler, async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stop.send(true);
    })
    .await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    Ok(())
}
