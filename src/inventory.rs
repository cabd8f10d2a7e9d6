//! Who calls: every legacy login a request presented (in a `login/password` session token, a
//! Logon, or a session imsbridge issued to a caller), configured or not, on every way; what it
//! called, from where, when, and how it went. What `GET /inventory` shows and the admin page
//! draws. Never a password, nor any other part of a credential than the login before its `/`.
//!
//! Bounded: configured callers' logins are always kept; of the others, at most
//! `admin.inventory_max_logins`, the least recently seen dropped first (an LRU list, so that a
//! flood of new logins costs each request the same). Each login keeps at most
//! [`MAX_ACTIONS`] actions and [`MAX_PEERS`] peers by name, counting the rest together.
//! One process-wide inventory: a reload keeps it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use lru::LruCache;
use serde::Serialize;

pub(crate) mod command;

/// Actions kept by name for a login; more are counted as `other_actions`.
pub(crate) const MAX_ACTIONS: usize = 16;
/// Peers kept by address for a login; more are counted as `other_peers`.
pub(crate) const MAX_PEERS: usize = 8;
/// Longest login and action kept; longer ones are cut (at a character boundary).
pub(crate) const MAX_NAME_BYTES: usize = 128;
/// The traffic of a configured caller is kept by minute, for this many minutes.
pub(crate) const MINUTES: usize = 60;

/// One request, as the inventory counts it.
pub(crate) struct Seen<'a> {
    pub login: &'a str,
    /// The configured caller whose login it is.
    pub caller: Option<&'a Arc<str>>,
    /// Its place among the configured callers, when known: counted without a lookup.
    pub index: Option<usize>,
    pub action: Option<&'a str>,
    pub peer: IpAddr,
    /// `ims`, `legacy`, `local` (answered here), `transparent` (no caller's), `refused`
    /// (before any way was taken).
    pub way: &'static str,
    /// `ok`, or why the proxy answered itself.
    pub outcome: &'static str,
    /// The way as the cut-over history counts it: `ims`, `canary` (a canary caller's `ims`
    /// share), `legacy`, `shadow` (a shadow caller's call), `transparent`.
    pub history_way: &'static str,
    /// `ok`, `refused` (by imsbridge, or by Campaign refusing the token), `failed`.
    pub history_outcome: &'static str,
    pub at: SystemTime,
}

/// What the bars of the page count, for a minute.
#[derive(Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq, Debug)]
pub(crate) struct Shares {
    pub ims: u64,
    pub legacy: u64,
    pub refused: u64,
}

impl Shares {
    fn add(&mut self, other: &Shares) {
        self.ims += other.ims;
        self.legacy += other.legacy;
        self.refused += other.refused;
    }

    pub(crate) fn total(&self) -> u64 {
        self.ims + self.legacy + self.refused
    }
}

#[derive(Clone, Default)]
struct Entry {
    caller: Option<Arc<str>>,
    first_seen: u64,
    last_seen: u64,
    actions: Vec<(Box<str>, u64)>,
    other_actions: u64,
    peers: Vec<(IpAddr, u64)>,
    other_peers: u64,
    /// `(way, outcome)`: count.
    counts: Vec<((&'static str, &'static str), u64)>,
    /// For configured callers: `(minute since the epoch, shares)`, by `minute % MINUTES`.
    minutes: Option<Box<[(u64, Shares); MINUTES]>>,
}

impl Entry {
    fn count(&mut self, seen: &Seen<'_>, now: u64) {
        if self.first_seen == 0 {
            self.first_seen = now;
        }
        self.last_seen = self.last_seen.max(now);
        if let Some(caller) = seen.caller {
            self.caller = Some(caller.clone());
        }
        if let Some(action) = seen.action {
            let action = cut(action);
            let full = self.actions.len() >= MAX_ACTIONS;
            match self.actions.iter_mut().find(|(a, _)| **a == *action) {
                Some((_, n)) => *n += 1,
                None if full => self.other_actions += 1,
                None => self.actions.push((action.into(), 1)),
            }
        }
        let full = self.peers.len() >= MAX_PEERS;
        match self.peers.iter_mut().find(|(p, _)| *p == seen.peer) {
            Some((_, n)) => *n += 1,
            None if full => self.other_peers += 1,
            None => self.peers.push((seen.peer, 1)),
        }
        let key = (seen.way, seen.outcome);
        match self.counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((key, 1)),
        }
        if let Some(minutes) = &mut self.minutes {
            let minute = now / 60;
            let slot = &mut minutes[(minute % MINUTES as u64) as usize];
            if slot.0 != minute {
                *slot = (minute, Shares::default());
            }
            match (seen.outcome, seen.way) {
                ("ok", "ims" | "local") => slot.1.ims += 1,
                ("ok", _) => slot.1.legacy += 1,
                _ => slot.1.refused += 1,
            }
        }
    }

    /// Its shares over the last hour, to `now`.
    fn last_hour(&self, now: u64) -> Shares {
        let mut total = Shares::default();
        let minute = now / 60;
        for (at, shares) in self.minutes.iter().flat_map(|m| m.iter()) {
            if *at + (MINUTES as u64) > minute {
                total.add(shares);
            }
        }
        total
    }

    fn report(&self, login: &str, now: u64) -> LoginReport {
        let mut actions: Vec<(String, u64)> = self
            .actions
            .iter()
            .map(|(a, n)| (a.to_string(), *n))
            .collect();
        actions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut peers: Vec<(String, u64)> = self
            .peers
            .iter()
            .map(|(p, n)| (p.to_string(), *n))
            .collect();
        peers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut counts: Vec<WayCount> = self
            .counts
            .iter()
            .map(|((way, outcome), n)| WayCount {
                way: (*way).to_owned(),
                outcome: (*outcome).to_owned(),
                requests: *n,
            })
            .collect();
        counts.sort_by(|a, b| (&a.way, &a.outcome).cmp(&(&b.way, &b.outcome)));
        LoginReport {
            login: login.to_owned(),
            caller: self.caller.as_deref().map(str::to_owned),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            requests: self.counts.iter().map(|(_, n)| n).sum(),
            actions: actions
                .into_iter()
                .map(|(action, requests)| Named {
                    name: action,
                    requests,
                })
                .collect(),
            other_actions: self.other_actions,
            peers: peers
                .into_iter()
                .map(|(peer, requests)| Named {
                    name: peer,
                    requests,
                })
                .collect(),
            other_peers: self.other_peers,
            counts,
            last_hour: self.minutes.as_ref().map(|_| self.last_hour(now)),
        }
    }
}

/// `text` cut to [`MAX_NAME_BYTES`] at a character boundary.
pub(crate) fn cut(text: &str) -> &str {
    if text.len() <= MAX_NAME_BYTES {
        return text;
    }
    let mut end = MAX_NAME_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) struct Inventory {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The logins of configured callers, in the config's order, kept whatever else comes.
    callers: Vec<(Box<str>, Entry)>,
    /// Where each is in `callers`.
    by_login: HashMap<Box<str>, usize>,
    /// The others, least recently seen first out.
    others: LruCache<Box<str>, Entry>,
    /// Logins dropped to keep within the bound, since start.
    dropped: u64,
}

impl Default for Inventory {
    fn default() -> Inventory {
        Inventory::new(crate::config::DEFAULT_INVENTORY_MAX_LOGINS as usize)
    }
}

impl Inventory {
    pub(crate) fn new(max_logins: usize) -> Inventory {
        Inventory {
            inner: Mutex::new(Inner {
                callers: Vec::new(),
                by_login: HashMap::new(),
                others: LruCache::new(NonZeroUsize::new(max_logins).unwrap_or(NonZeroUsize::MIN)),
                dropped: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configured callers' logins (after a start or a reload), and the bound on the others.
    pub(crate) fn configure<'a>(
        &self,
        callers: impl Iterator<Item = (&'a str, &'a Arc<str>)>,
        max_logins: usize,
    ) {
        let mut inner = self.lock();
        let mut previous: HashMap<Box<str>, Entry> = inner.callers.drain(..).collect();
        inner.by_login.clear();
        let mut kept = Vec::new();
        for (login, caller) in callers {
            let login = cut(login);
            let mut entry = previous
                .remove(login)
                .or_else(|| inner.others.pop(login))
                .unwrap_or_default();
            entry.caller = Some(caller.clone());
            if entry.minutes.is_none() {
                entry.minutes = Some(Box::new([(0, Shares::default()); MINUTES]));
            }
            inner.by_login.insert(Box::from(login), kept.len());
            kept.push((Box::from(login), entry));
        }
        // Callers no longer configured join the others, as logins seen.
        let gone = previous;
        inner.callers = kept;
        inner
            .others
            .resize(NonZeroUsize::new(max_logins).unwrap_or(NonZeroUsize::MIN));
        for (login, mut entry) in gone {
            entry.minutes = None;
            if entry.last_seen > 0 {
                inner.push_other(login, entry);
            }
        }
    }

    /// Counts one request.
    pub(crate) fn count(&self, seen: &Seen<'_>) {
        let now = seconds(seen.at);
        let login = cut(seen.login);
        let mut inner = self.lock();
        let inner = &mut *inner;
        // A caller's place, checked: a request of the config before a reload may finish after.
        let index = seen
            .index
            .filter(|&i| inner.callers.get(i).is_some_and(|(l, _)| **l == *login))
            .or_else(|| inner.by_login.get(login).copied());
        if let Some(index) = index {
            inner.callers[index].1.count(seen, now);
            return;
        }
        if let Some(entry) = inner.others.get_mut(login) {
            entry.count(seen, now);
            return;
        }
        let mut entry = Entry::default();
        entry.count(seen, now);
        inner.push_other(login.into(), entry);
    }

    /// Every login, most recently seen first.
    pub(crate) fn report(&self, at: SystemTime) -> Report {
        let now = seconds(at);
        let inner = self.lock();
        let mut logins: Vec<LoginReport> = inner
            .callers
            .iter()
            // A configured caller not seen yet is no login seen.
            .filter(|(_, entry)| entry.last_seen > 0)
            .map(|(login, entry)| entry.report(login, now))
            .chain(
                inner
                    .others
                    .iter()
                    .map(|(login, entry)| entry.report(login, now)),
            )
            .collect();
        logins.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.login.cmp(&b.login))
        });
        Report {
            profiles: Vec::new(),
            max_logins: inner.others.cap().get(),
            dropped: inner.dropped,
            logins,
            note: None,
        }
    }
}

impl Inner {
    fn push_other(&mut self, login: Box<str>, entry: Entry) {
        // Only logins not there are pushed: anything handed back was dropped.
        if self.others.push(login, entry).is_some() {
            self.dropped += 1;
        }
    }
}

/// `GET /inventory`.
#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub(crate) struct Report {
    /// The profiles of the running config (a caller skeleton names one).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Logins kept beside the configured callers' ones.
    pub max_logins: usize,
    /// Logins dropped to keep within it.
    pub dropped: u64,
    pub logins: Vec<LoginReport>,
    /// Why it is not the whole fleet's, when it is not (the state store did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Serialize, serde::Deserialize, Debug, Clone, Default)]
pub(crate) struct LoginReport {
    pub login: String,
    /// The configured caller whose login it is; `None`: no caller owns it.
    pub caller: Option<String>,
    /// Seconds since the Unix epoch.
    pub first_seen: u64,
    pub last_seen: u64,
    pub requests: u64,
    /// Most called first.
    pub actions: Vec<Named>,
    pub other_actions: u64,
    pub peers: Vec<Named>,
    pub other_peers: u64,
    pub counts: Vec<WayCount>,
    /// Configured callers: the last hour's requests by share.
    pub last_hour: Option<Shares>,
}

#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub name: String,
    pub requests: u64,
}

#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct WayCount {
    pub way: String,
    pub outcome: String,
    pub requests: u64,
}

impl Report {
    /// Several replicas' inventories as one: counts added, first and last seen widened.
    pub(crate) fn merge(reports: impl IntoIterator<Item = Report>) -> Report {
        let mut merged: Vec<LoginReport> = Vec::new();
        let mut max_logins = 0;
        let mut dropped = 0;
        let mut profiles: Vec<String> = Vec::new();
        for report in reports {
            for profile in report.profiles {
                if !profiles.contains(&profile) {
                    profiles.push(profile);
                }
            }
            max_logins = max_logins.max(report.max_logins);
            dropped += report.dropped;
            for login in report.logins {
                match merged.iter_mut().find(|m| m.login == login.login) {
                    Some(into) => into.absorb(login),
                    None => merged.push(login),
                }
            }
        }
        merged.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.login.cmp(&b.login))
        });
        Report {
            profiles,
            max_logins,
            dropped,
            logins: merged,
            note: None,
        }
    }
}

impl LoginReport {
    fn absorb(&mut self, other: LoginReport) {
        if self.caller.is_none() {
            self.caller = other.caller;
        }
        self.first_seen = match (self.first_seen, other.first_seen) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
        self.requests += other.requests;
        add_named(&mut self.actions, other.actions);
        self.other_actions += other.other_actions;
        add_named(&mut self.peers, other.peers);
        self.other_peers += other.other_peers;
        for count in other.counts {
            match self
                .counts
                .iter_mut()
                .find(|c| c.way == count.way && c.outcome == count.outcome)
            {
                Some(into) => into.requests += count.requests,
                None => self.counts.push(count),
            }
        }
        self.last_hour = match (self.last_hour, other.last_hour) {
            (Some(mut a), Some(b)) => {
                a.add(&b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
    }
}

fn add_named(into: &mut Vec<Named>, from: Vec<Named>) {
    for named in from {
        match into.iter_mut().find(|n| n.name == named.name) {
            Some(existing) => existing.requests += named.requests,
            None => into.push(named),
        }
    }
    into.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.name.cmp(&b.name))
    });
}

#[cfg(test)]
mod tests;
