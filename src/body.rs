//! The bodies the proxy moves, and how long and how much of them it holds:
//!
//! - [`UpstreamBody`] (`body/upstream.rs`): the caller's request on its way to Campaign, the
//!   spliced prefix first, the rest streamed as it comes;
//! - [`Replay`] (`body/replay.rs`): what an [`UpstreamBody`] sent, kept (bounded) so that a call
//!   whose token Campaign refused can go once more;
//! - [`CampaignBody`] (`body/campaign.rs`): Campaign's answer as it comes off the pooled
//!   connection, which it gives back when read to its end;
//! - [`ResponseBody`] (`body/response.rs`): the answer to the caller, Campaign's streamed back or
//!   one of our own, which says when it is done with so that the request's log line follows;
//! - [`Lingering`] (`body/linger.rs`): the caller's request body, drained within bounds when
//!   dropped before its end, so that a refused upload reads its answer;
//! - `body/idle.rs`: the timer that stops a peer going quiet in the middle of a body.
//!
//! Nothing here knows about callers, tokens or SOAP: this module depends on no other of the
//! crate, so that `upstream` (which sends these bodies) and `proxy` (which makes them) both can.

mod campaign;
mod idle;
mod linger;
mod replay;
mod response;
mod upstream;

use std::time::Duration;

pub(crate) use campaign::CampaignBody;
pub(crate) use linger::Lingering;
pub(crate) use replay::Replay;
pub(crate) use response::{Finish, ResponseBody, Tee};
pub(crate) use upstream::{Inspect, UpstreamBody};

/// The most a connection buffers in hyper, each way, on the listener and towards Campaign; also
/// the largest request head accepted. hyper's default lets a fast upload grow its buffers to
/// about 400 KiB and queue older chunks besides; this bound keeps the memory of many concurrent
/// uploads low, and reads this large keep the CPU per forwarded megabyte low
/// (`bench/README.md` has the measurements).
pub(crate) const MAX_BUF_SIZE: usize = 128 * 1024;

/// Why the caller's body could not be read or forwarded to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body over {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body: {0}")]
    Client(String),
    #[error("the client sent nothing for {0:?} in the middle of its body")]
    Idle(Duration),
    /// What the body's [`Inspect`] refused, in its words (never quoting the body).
    #[error("the rest of the request body was refused: {0}")]
    Refused(String),
}
