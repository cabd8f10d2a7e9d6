//! The requests whose body the proxy does not read: Campaign's other pages of `server.paths`
//! (the WSDL, `ping.jsp`, `uploadFile.jsp`…), whose credential travels in the cookie, the
//! headers or the query, and, with `unknown_callers = "legacy"`, anything else, passed through.
//! A WSDL answer can have its `soap:address` pointed at the proxy (`server.public_url`).

use bytes::Bytes;
use http::{Method, Request, Response};

use super::record::{Record, Went};
use super::{Proxy, ProxyError, Way, declared_length};
use crate::body::{BodyError, Lingering, ResponseBody};
use crate::callers::{AuthError, Route};
use crate::carriers::{self, Credential};
use crate::config::{UnknownCallers, WSDL_PATH};
use crate::server::Peer;
use crate::upstream::UpstreamError;

/// A WSDL answer is read whole (up to this) to point its addresses at the proxy.
const MAX_WSDL_BYTES: usize = 32 * 1024 * 1024;

impl Proxy {
    /// Phase 4 of [`super::Admitted::PassThrough`]: a request the proxy does not read, to
    /// Campaign as it came, but without the credential of an `ims` caller (or copies that
    /// disagree): that never leaves the proxy, whatever the path.
    pub(super) async fn pass_through(
        &self,
        request: Request<Lingering>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        record.went(Went::PassedThrough);
        let (mut parts, body) = request.into_parts();
        let (claimed, owner) = match carriers::read(&parts.headers, parts.uri.query(), None) {
            Ok(carried) => {
                let credential = carried.credential();
                record.presented(credential);
                (
                    self.callers.claims(credential),
                    self.callers.owner(credential),
                )
            }
            Err(_) => (true, None),
        };
        if claimed {
            carriers::strip_request(&mut parts);
        }
        // To the Campaign of the caller whose login the credential names (the credential
        // itself only when that caller is `legacy`: Campaign checks it).
        let upstream = self.upstream_of(owner);
        self.unread(upstream, parts, body, peer, record).await
    }

    /// Phase 2 to 4 of [`super::Admitted::Page`]: the caller, from the credential of the
    /// cookie, the headers or the query; on the `ims` way every copy out and the Bearer in, the
    /// body streamed unchanged. A WSDL request without any credential takes the token of
    /// `[wsdl] profile` when it may; any other without one is refused (401), or passes through
    /// when unknown callers do.
    pub(super) async fn forward_page(
        &self,
        request: Request<Lingering>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let length = declared_length(&parts.headers)?;
        if length.is_some_and(|length| length > self.max_body_bytes) {
            return Err(BodyError::TooLarge(self.max_body_bytes).into());
        }
        let carried = carriers::read(&parts.headers, parts.uri.query(), None)
            .map_err(AuthError::from)
            .inspect_err(|error| record.refused(error, &self.callers))?;
        let credential = carried.credential();
        let profile = if credential == Credential::Empty {
            let wsdl = parts.method == Method::GET && parts.uri.path() == WSDL_PATH;
            let allowed = self.wsdl.allow_from.is_empty()
                || self
                    .wsdl
                    .allow_from
                    .iter()
                    .any(|net| net.contains(&peer.addr.ip()));
            match (self.wsdl.profile, self.unknown_callers) {
                (Some(profile), _) if wsdl && allowed => profile,
                (_, UnknownCallers::Legacy) => {
                    let upstream = self.upstream_of(None);
                    return Box::pin(self.unread(upstream, parts, body, peer, record)).await;
                }
                (_, UnknownCallers::Reject) => return Err(ProxyError::Unauthorized),
            }
        } else {
            let route = self
                .route(credential, peer, record)
                .await
                .inspect_err(|error| record.refused(error, &self.callers))?;
            record.took(&Way::Routed(route));
            match route {
                Route::Ims(caller) => caller.profile,
                // Campaign checks the credential itself, as on the SOAP router.
                Route::Legacy(_) | Route::Transparent => {
                    let upstream = self.upstream_of(route.caller());
                    return Box::pin(self.unread(upstream, parts, body, peer, record)).await;
                }
            }
        };
        let profile = &self.profiles[profile];
        record.profile = Some(profile.name.clone());
        let token = self.token_of(profile).await?;
        let relocate = match &self.public_url {
            Some(public) if parts.uri.path() == WSDL_PATH => {
                // Its addresses are rewritten: as text, not compressed.
                parts.headers.remove(http::header::ACCEPT_ENCODING);
                Some(public)
            }
            _ => None,
        };
        let body = self.unread_body(body, length, record);
        let parts = self.ims_head(parts, &token, peer, length);
        let upstream = &self.upstreams[profile.upstream];
        let response = self
            .campaign(upstream, Request::from_parts(parts, body), record)
            .await?;
        let judged = self.judge(response, &token).await?;
        if judged.refused {
            // Not replayed (the body was not kept): the next request gets a new token.
            profile.tokens.invalidate(&token);
            record.campaign_refused = true;
        }
        match relocate {
            Some(public) if judged.response.status() == http::StatusCode::OK => {
                relocated(judged.response, public).await
            }
            _ => Ok(judged.response),
        }
    }
}

/// `response`, a WSDL, with its `soap:address` locations at `public` (`soap::point_at`).
async fn relocated(
    response: Response<ResponseBody>,
    public: &str,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (mut parts, body) = response.into_parts();
    let wsdl = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_WSDL_BYTES))
        .await
        .map_err(|e| UpstreamError::Unreachable(format!("reading the WSDL: {e}")))?
        .to_bytes();
    let wsdl = match crate::soap::point_at(&wsdl, public) {
        Some(relocated) => Bytes::from(relocated),
        None => wsdl,
    };
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, wsdl.len().into());
    Ok(Response::from_parts(parts, ResponseBody::full(wsdl)))
}
