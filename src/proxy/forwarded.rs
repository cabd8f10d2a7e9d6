//! Who the client is behind trusted proxies (`server.trusted_proxies`): the right-most
//! address of `X-Forwarded-For` that is not one of them. That address is what `allow_from`, the
//! logs and the `X-Forwarded-For` sent to Campaign use.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::server::Peer;
use crate::upstream::X_FORWARDED_FOR;

/// The client of a request that came from `peer` through trusted proxies, whose chain is then
/// dropped from `headers` (Campaign gets that address alone). `None`: the peer is the client.
pub(super) fn client(trusted: &[IpNet], peer: &Peer, headers: &mut HeaderMap) -> Option<Peer> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer.addr.ip()) {
        return None;
    }
    let chain: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = None;
    for entry in chain.iter().rev() {
        // An entry that is no address ends the chain that can be believed.
        let Ok(ip) = entry.parse::<IpAddr>() else {
            break;
        };
        client = Some(ip);
        if !is_trusted(&ip) {
            break;
        }
    }
    let client = client?;
    headers.remove(&X_FORWARDED_FOR);
    Some(Peer::new(SocketAddr::new(client, 0), peer.cert.clone()))
}
