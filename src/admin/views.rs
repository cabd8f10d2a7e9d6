//! What the admin listener shows of the proxy: its profiles with their tokens, its callers,
//! and Campaign's nodes, read from the proxy's parts as they are now.

use crate::ims::{Readiness, TokenStatus};
use crate::proxy::Proxy;
use crate::upstream::{NodeHealth, Upstream};

/// A profile as `/readyz` sees it.
pub(super) struct ProfileHealth<'a> {
    pub(super) name: &'a str,
    /// An `ims` or `canary` caller uses it.
    pub(super) needed: bool,
    /// It held a token since the process started.
    pub(super) held_once: bool,
    pub(super) readiness: Readiness,
}

/// A profile, as the admin page shows it.
pub(super) struct ProfileView<'a> {
    pub(super) name: &'a str,
    /// The name of its Campaign instance.
    pub(super) upstream: &'a str,
    /// An `ims` or `canary` caller uses it.
    pub(super) needed: bool,
    pub(super) status: TokenStatus,
}

/// A configured caller, as the admin page shows it.
pub(super) struct CallerView<'a> {
    pub(super) name: &'a str,
    pub(super) login: &'a str,
    pub(super) mode: crate::config::Mode,
    pub(super) profile: &'a str,
}

/// Each profile with the state of its token, for the metrics.
pub(super) fn readiness(proxy: &Proxy) -> impl Iterator<Item = (&str, Readiness)> {
    proxy
        .profiles()
        .iter()
        .map(|p| (&*p.name, p.tokens.readiness()))
}

/// Each profile's part in `/readyz`: whether an `ims` or `canary` caller uses it, whether it
/// held a token since start, and its token now.
pub(super) fn health(proxy: &Proxy) -> impl Iterator<Item = ProfileHealth<'_>> {
    proxy.profiles().iter().map(|p| ProfileHealth {
        name: &p.name,
        needed: p.needed,
        held_once: p.tokens.held_once(),
        readiness: p.tokens.readiness(),
    })
}

/// Each profile as the admin page shows it.
pub(super) fn profiles(proxy: &Proxy) -> impl Iterator<Item = ProfileView<'_>> {
    proxy.profiles().iter().map(|p| ProfileView {
        name: &p.name,
        upstream: proxy.upstreams()[p.upstream].name(),
        needed: p.needed,
        status: p.tokens.status(),
    })
}

/// Each configured caller as the admin page shows it.
pub(super) fn callers(proxy: &Proxy) -> impl Iterator<Item = CallerView<'_>> {
    proxy.callers().iter().map(|c| CallerView {
        name: &c.name,
        login: &c.login,
        mode: c.mode,
        profile: &proxy.profiles()[c.profile].name,
    })
}

/// Each node of each Campaign instance, and its state now.
pub(super) fn nodes(proxy: &Proxy) -> impl Iterator<Item = NodeHealth<'_>> {
    proxy.upstreams().iter().flat_map(Upstream::health)
}
