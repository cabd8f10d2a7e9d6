//! SOAP as Campaign's `soaprouter.jsp` speaks it.
//!
//! - `soap/scan.rs` reads the start of a body, as it arrives, up to the end of the first
//!   parameter of the method element (Campaign's authentication string), and says where every
//!   copy of the session token is (`soap/scan/quick.rs` reads the common envelope in one pass);
//! - `soap/charset.rs`: the five encodings an envelope may come in, and how a credential's text
//!   is decoded;
//! - `soap/tail.rs` watches the rest of the body, as it streams, for an element after the Body;
//! - `soap/splice.rs` applies edits to the prefix (the copies of the token out, chosen by
//!   `carriers`) without copying the rest;
//! - `soap/action.rs` names the called method (`nms:rtEvent#PushEvent`);
//! - `soap/fault.rs` writes faults shaped like Campaign's own;
//! - `soap/logon.rs` writes the Logon and Logoff answers imsbridge gives itself;
//! - `soap/wsdl.rs` points a WSDL's addresses at the proxy (`server.public_url`);
//! - `soap/compare.rs` compares two answers as XML, for a shadow caller.

mod action;
mod charset;
mod compare;
mod fault;
mod logon;
mod scan;
mod splice;
mod tail;
mod wsdl;

pub(crate) use action::Action;
pub use charset::Charset;
pub(crate) use compare::agree;
pub(crate) use fault::{Fault, FaultCode, INVALID_LOGIN, SESSION_INVALID};
pub(crate) use logon::{logoff_response, logon_response};
pub use scan::Scanner;
pub(crate) use scan::{CarrierKind, Envelope, ScanError};
pub(crate) use splice::Edit;
pub use splice::splice;
pub use tail::Tail;
pub(crate) use wsdl::point_at;

/// The one path Campaign serves SOAP on.
pub(crate) const SOAP_ROUTER_PATH: &str = "/nl/jsp/soaprouter.jsp";
