//! Campaign's verdict on a Bearer token, read from its answer.
//!
//! A token is refused with HTTP 401, or with an HTTP 500 SOAP fault whose text carries
//! `XSV-350114` (Campaign's IMS check answered 401) or `XSV-350008` (session expired or
//! invalid: with a Bearer token, the token). Any other answer, faults included, is Campaign's
//! own business and streams back untouched.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

use super::{Proxy, ProxyError};
use crate::body::{CampaignBody, ResponseBody};
use crate::headers::strip_hop_by_hop;
use crate::ims::Token;
use crate::upstream::UpstreamError;

/// Campaign's faults are small; a 500 answer is read this far to look for the codes.
const PEEK_BYTES: usize = 64 * 1024;
const REFUSAL_CODES: [&[u8]; 2] = [b"XSV-350114", b"XSV-350008"];

/// An answer, and whether it refuses the token.
pub(super) struct Judged {
    pub response: Response<ResponseBody>,
    pub refused: bool,
    /// The fault read for the verdict holds `secret` (Campaign, or something before it,
    /// echoed the token): it must not reach the caller.
    pub echoes: bool,
}

/// Reads as much of the answer as the verdict needs (nothing, unless it is a 401 or a 500) and
/// gives it back whole, ready to stream. `secret` is the access token the call carried.
pub(super) async fn judge(
    response: Response<CampaignBody>,
    idle: Duration,
    secret: &[u8],
) -> Result<Judged, crate::h1::Error> {
    let status = response.status();
    let (parts, mut body) = response.into_parts();
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::INTERNAL_SERVER_ERROR {
        return Ok(Judged {
            response: Response::from_parts(parts, ResponseBody::upstream(None, body, idle)),
            refused: false,
            echoes: false,
        });
    }
    let mut read = BytesMut::new();
    while read.len() < PEEK_BYTES && !body.is_end_stream() {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(frame)) => {
                if let Ok(data) = frame?.into_data() {
                    read.extend_from_slice(&data);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let read: Bytes = read.freeze();
    let holds =
        |needle: &[u8]| !needle.is_empty() && read.windows(needle.len()).any(|w| w == needle);
    let refused =
        status == StatusCode::UNAUTHORIZED || REFUSAL_CODES.iter().any(|code| holds(code));
    let echoes = holds(secret);
    Ok(Judged {
        response: Response::from_parts(parts, ResponseBody::upstream(Some(read), body, idle)),
        refused,
        echoes,
    })
}

impl Proxy {
    /// Campaign's answer to a call that carried `token`: whether it refuses the token, and
    /// the answer ready for the caller, without its hop-by-hop headers and without any header
    /// that echoes the token. An answer whose fault echoes it is not relayed at all.
    pub(super) async fn judge(
        &self,
        response: Response<crate::body::CampaignBody>,
        token: &Token,
    ) -> Result<Judged, ProxyError> {
        let secret = token.access_token();
        let mut judged = judge(response, self.idle_timeout, secret)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        if judged.echoes {
            return Err(UpstreamError::EchoedToken.into());
        }
        let headers = judged.response.headers_mut();
        strip_hop_by_hop(headers);
        let echoing: Vec<HeaderName> = headers
            .iter()
            .filter(|(_, value)| {
                !secret.is_empty() && value.as_bytes().windows(secret.len()).any(|w| w == secret)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in echoing {
            tracing::warn!(header = %name, "Campaign's answer echoes the access token in a header; dropped");
            headers.remove(&name);
        }
        Ok(judged)
    }
}

#[cfg(test)]
mod tests;
