//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): `READY=1` once the listeners
//! serve, `RELOADING=1` then `READY=1` around a reload, `STOPPING=1` at shutdown, and a `STATUS=`
//! line for `systemctl status`. A datagram to the socket `$NOTIFY_SOCKET` names (a path, or an
//! abstract name after `@`); without it (not under systemd), nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (lines `KEY=value`) to the service manager, if one listens. Best effort: a
/// failure is logged, never fatal.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    use std::os::unix::ffi::OsStrExt;
    let address = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => abstract_address(name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = address.and_then(|address| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &address)
    });
    if let Err(error) = sent {
        tracing::debug!(%error, "no word to the service manager");
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::other("abstract socket names are Linux's"))
}

/// The listeners serve.
pub(crate) fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}"));
}

/// A reload starts (with the monotonic time systemd asks `Type=notify-reload` services for).
pub(crate) fn reloading() {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// Shutting down: requests in flight are finishing.
pub(crate) fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping: finishing requests in flight");
}
