//! Building the proxy from a config: the Campaign instances and their pools, the IMS client,
//! one token cache (and its refresher) per profile, the callers.

use std::sync::Arc;
use std::time::Duration;

use super::prefix::{self, PrefixBudget};
use super::{Proxy, ProxyError};
use crate::callers::Callers;
use crate::config::{Config, Mode};
use crate::connect::{Egress, TlsSetupError, https_connector, system_roots};
use crate::ims::{ImsClient, Source, Token, TokenCache};
use crate::metrics::Metrics;
use crate::state::State;
use crate::upstream::Upstream;

/// A technical account at run time.
pub(crate) struct Profile {
    pub(crate) name: Arc<str>,
    pub(crate) tokens: TokenCache,
    /// An `ims` or `canary` caller uses it: `/readyz` waits for its first token.
    pub(crate) needed: bool,
    /// Its Campaign: an index into [`Proxy::upstreams`].
    pub(crate) upstream: usize,
}

impl Profile {
    /// A valid token, waiting up to `wait` when there is none (a cold start, a refetch).
    pub(super) async fn token(&self, wait: Duration) -> Result<Arc<Token>, ProxyError> {
        self.tokens
            .get(wait)
            .await
            .map_err(|reason| ProxyError::TokenUnavailable {
                profile: self.name.to_string(),
                reason,
            })
    }
}

impl Proxy {
    /// Builds the proxy and starts one token refresher per profile.
    pub(crate) fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        state: Arc<State>,
    ) -> Result<Proxy, TlsSetupError> {
        let system_roots = system_roots();
        let egress = Egress::new(
            config
                .egress
                .proxy
                .as_ref()
                .map(super::super::secret::Secret::expose),
            &config.egress.no_proxy,
        );
        let attempts = |upstream: &str, node: &str| metrics.attempts(upstream, node);
        let upstreams = config
            .all_upstreams()
            .map(|settings| {
                let first_byte = metrics.first_byte(&settings.name);
                Upstream::new(
                    settings,
                    &system_roots,
                    &egress,
                    &attempts,
                    first_byte,
                    config.server.worker_count(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // IMS is trusted on the system's roots and `ims.ca_file`'s.
        let ims_roots = [system_roots.as_slice(), &config.ims.extra_roots].concat();
        if config.ims.token_url.scheme() == Some(&http::uri::Scheme::HTTPS) && ims_roots.is_empty()
        {
            return Err(TlsSetupError::NoRoots("ims.token_url".to_owned()));
        }
        let ims = ImsClient::new(
            https_connector(&ims_roots, Some(config.ims.timeout), &egress)?,
            config.ims.timeout,
        );
        let profiles = config
            .profiles
            .iter()
            .enumerate()
            .map(|(index, profile)| {
                let name: Arc<str> = profile.name.as_str().into();
                let source = Source::for_profile(profile, &config.ims, ims.clone());
                let counters = metrics.fetches(&name);
                let needed = config
                    .callers
                    .iter()
                    .any(|c| c.profile == index && c.mode != Mode::Legacy);
                Profile {
                    tokens: TokenCache::spawn(name.clone(), source, counters),
                    name,
                    needed,
                    upstream: profile.upstream_index(),
                }
            })
            .collect();
        metrics.set_callers(
            config
                .callers
                .iter()
                .map(|c| (c.name.as_str(), c.mode.as_str())),
        );
        let callers = Callers::new(
            &config.callers,
            config.unknown_callers,
            config.sessions.as_ref(),
            config.canary_seed,
            config.server.password_limits,
            config.clock.clone(),
            &state,
        )
        .with_admin_password(config.admin.password.as_ref());
        metrics.inventory.configure(
            callers.iter().map(|c| (&*c.login, &c.name)),
            config.admin.inventory_max_logins,
        );
        Ok(Proxy {
            callers,
            profiles,
            upstreams,
            unknown_callers: config.unknown_callers,
            max_body_bytes: config.server.max_body_bytes,
            fault_status: config.server.fault_status,
            linger: config.server.linger,
            paths: config.server.paths.clone(),
            public_url: config.server.public_url.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            wsdl: config.wsdl.clone(),
            prefix_limits: prefix::Limits {
                max_prefix: config.server.max_prefix_bytes,
                max_body: config.server.max_body_bytes,
                idle: config.server.limits.idle_timeout,
                deadline: config.server.prefix_timeout,
            },
            prefix_budget: PrefixBudget::new(config.server.max_prefix_memory),
            idle_timeout: config.server.limits.idle_timeout,
            token_wait: config.ims.timeout,
            shadow_permits: Arc::new(tokio::sync::Semaphore::new(
                config.admin.shadow_max_in_flight,
            )),
            shadow_max_in_flight: config.admin.shadow_max_in_flight,
            cutover: config.cutover,
            state,
            traces: config.telemetry.is_some(),
            metrics,
        })
    }
}
