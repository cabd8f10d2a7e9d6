//! Campaign's answer as it comes off a pooled keep-alive connection: `h1.rs` reads it, and,
//! read to its end, gives the connection back to its pool when HTTP allows another request on
//! it; dropped before, it closes it.

pub(crate) use crate::h1::Answer as CampaignBody;
