//! The integration tests, in one binary: each module below was a binary of its own, and each
//! linked hyper, rustls and OpenTelemetry again (most of a cold `cargo test` was spent so).
//! `tests/flood.rs` stays apart: it measures latencies under load, which other tests running
//! beside it in the same process would disturb.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod cli;
mod cockpit;
mod connections;
mod cutover;
mod deploy;
mod docs;
mod egress;
mod interop;
mod jwt;
mod operations;
mod pages;
mod proxy;
mod resilience;
mod security;
mod sessions;
mod state;
mod upstreams;
mod workers;
mod wsdl_clients;
