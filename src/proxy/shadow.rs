//! Shadow comparison, a side road of the pipeline: a `shadow` caller's call of one of its
//! `shadow_actions` goes to Campaign unchanged (the caller gets that answer), and once the call
//! and the answer went through whole, a copy goes the `ims` way and the two answers are
//! compared (`soap/compare.rs`). What the comparison gave is counted per caller and action; a
//! mismatch is logged with digests, never a body.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, request};

use super::prefix::{self, Prefix};
use super::record::Record;
use super::{Proxy, ProxyError, finish};
use crate::body::{Lingering, Replay, ResponseBody, Tee, UpstreamBody};
use crate::callers::Caller;
use crate::carriers;
use crate::metrics::ShadowOutcome;
use crate::secret::Secret;
use crate::server::Peer;

/// Whether a call of a `shadow` caller gets a copy: its action is one of the caller's
/// `shadow_actions`, named alike by its `SOAPAction` and its method element (whichever of
/// the two Campaign goes by, nothing but a listed action is sent twice).
pub(super) fn shadowed(caller: &Caller, record: &Record, prefix: &Prefix<Lingering>) -> bool {
    let Some(action) = &record.action else {
        return false;
    };
    caller.shadows(action.as_str())
        && crate::soap::Action::of_method(&prefix.envelope.method).as_str() == action.as_str()
}

/// What a shadowed call's copy is made of, kept while the legacy call goes.
struct ShadowCopy {
    caller: Arc<str>,
    action: String,
    /// The password the call presented: checked before the copy goes.
    password: Secret,
    peer: Peer,
    profile: usize,
    /// The caller's request head, as it came.
    head: request::Parts,
    length: Option<u64>,
    /// The body prefix with the credential out.
    prefix: Vec<Bytes>,
    /// Bytes of the body the prefix stands for: the rest of the copy is what was sent past them.
    prefix_received: u64,
}

impl Proxy {
    /// Phase 4 of [`super::Way::Shadowed`]: the call goes to Campaign as it came, and the
    /// caller gets that answer; once both the call and the answer went through whole (within
    /// `retry_buffer_bytes`), a copy goes the `ims` way, its answer is compared with the legacy
    /// one, and the result is counted ([`Proxy::shadow_copy`]). At most
    /// `admin.shadow_max_in_flight` copies at once: past it, a call is forwarded without one.
    #[allow(clippy::too_many_arguments)] // the phase's inputs, as the other forwarding phases
    pub(super) async fn forward_shadowed(
        self: &Arc<Self>,
        caller: &Caller,
        password: Secret,
        parts: request::Parts,
        prefix: Prefix<Lingering>,
        declared: Option<u64>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let action = record
            .action
            .as_ref()
            .map_or("-", |a| a.as_str())
            .to_owned();
        let upstream = self.upstream_of(Some(caller));
        let limit = upstream.retry_buffer_bytes();
        let permit = match self.shadow_permits.clone().try_acquire_owned() {
            Ok(permit) if declared.is_none_or(|length| length <= limit) => permit,
            other => {
                let why = if other.is_ok() {
                    ShadowOutcome::TooLarge
                } else {
                    ShadowOutcome::Busy
                };
                self.metrics.shadow(&caller.name, &action, why);
                self.state.shadow(&caller.name, &action, why);
                return self
                    .forward_unchanged(upstream, parts, prefix, declared, peer, record)
                    .await;
            }
        };
        // The copy: every copy of the credential out of its body (and of its head, with the
        // technical account's Bearer in, once the password is checked).
        let edits = carriers::body_edits(&prefix.envelope);
        let copy = ShadowCopy {
            caller: caller.name.clone(),
            action,
            password,
            peer: peer.clone(),
            profile: caller.profile,
            head: parts.clone(),
            length: declared.map(|length| prefix::length_after(length, &edits)),
            prefix: prefix.chunks(&edits),
            prefix_received: prefix.received,
        };
        let kept = Replay::new(limit);
        let body = self
            .upstream_body(prefix, &[], declared, record)?
            .recording(kept.clone());
        let parts = self.prepare(parts, None, peer, declared);
        let response = self
            .campaign(upstream, Request::from_parts(parts, body), record)
            .await?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let mut body = ResponseBody::upstream(None, body, self.idle_timeout);
        let (tee, answer) = Tee::new(limit);
        body.tee(tee);
        let proxy = self.clone();
        tokio::spawn(async move {
            let outcome = proxy.shadow_copy(&copy, kept, status, answer).await;
            proxy.metrics.shadow(&copy.caller, &copy.action, outcome);
            proxy.state.shadow(&copy.caller, &copy.action, outcome);
            drop(permit);
        });
        Ok(finish(Response::from_parts(parts, body)))
    }

    /// The `ims` way's copy of a shadowed call, once the legacy call and its answer went through
    /// whole; what the comparison gave. A mismatch is logged with digests, never a body.
    async fn shadow_copy(
        &self,
        copy: &ShadowCopy,
        kept: Arc<std::sync::Mutex<Replay>>,
        status: http::StatusCode,
        answer: tokio::sync::oneshot::Receiver<Option<Vec<Bytes>>>,
    ) -> ShadowOutcome {
        let Ok(Some(legacy)) = answer.await else {
            return ShadowOutcome::Incomplete;
        };
        let Some(sent) = Replay::lock(&kept).take() else {
            return ShadowOutcome::Incomplete;
        };
        // Nothing unauthenticated goes the `ims` way, copies included.
        if !self
            .callers
            .verify_copy(&copy.caller, copy.password.expose(), copy.peer.addr.ip())
            .await
        {
            return ShadowOutcome::Unverified;
        }
        let profile = &self.profiles[copy.profile];
        let Ok(token) = self.token_of(profile).await else {
            return ShadowOutcome::Failed;
        };
        let head = self.ims_head(copy.head.clone(), &token, &copy.peer, copy.length);
        let mut chunks = copy.prefix.clone();
        chunks.extend(skip_bytes(sent, copy.prefix_received));
        let body = UpstreamBody::new(chunks, None, 0, u64::MAX, copy.length, self.idle_timeout);
        let upstream = &self.upstreams[profile.upstream];
        let Ok(response) = self
            .to_campaign(upstream, Request::from_parts(head, body))
            .await
        else {
            return ShadowOutcome::Failed;
        };
        let copy_status = response.status();
        let limit = upstream.retry_buffer_bytes() as usize;
        let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            limit,
        ))
        .await;
        let Ok(answered) = read else {
            return ShadowOutcome::TooLarge;
        };
        let legacy: Vec<u8> = legacy.concat();
        let (same, legacy_digest, ims_digest) = crate::soap::agree(&legacy, &answered.to_bytes());
        if same && status == copy_status {
            return ShadowOutcome::Match;
        }
        tracing::warn!(
            caller = %copy.caller,
            action = %copy.action,
            legacy_status = status.as_u16(),
            ims_status = copy_status.as_u16(),
            legacy_digest,
            ims_digest,
            "shadow copy: the ims way answered otherwise"
        );
        ShadowOutcome::Mismatch
    }
}

/// `chunks` less their first `skip` bytes.
fn skip_bytes(chunks: Vec<Bytes>, mut skip: u64) -> impl Iterator<Item = Bytes> {
    chunks.into_iter().filter_map(move |chunk| {
        let len = chunk.len() as u64;
        if skip >= len {
            skip -= len;
            return None;
        }
        let rest = chunk.slice(skip as usize..);
        skip = 0;
        Some(rest)
    })
}
