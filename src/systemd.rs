//! systemd's notify protocol (`sd_notify`): with `Type=notify`, pgfleet tells systemd
//! when it is ready (every endpoint listening) and when it is stopping. Outside systemd
//! (`NOTIFY_SOCKET` unset) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) to systemd, if pgfleet runs under it.
/// Failures are logged: systemd then times the start out, which names the problem.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        match bytes.strip_prefix(b"@") {
            // A socket in the abstract namespace.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(socket = ?path, state, error = %e, "cannot notify systemd");
    }
}

/// Tells systemd a configuration reload has begun (`Type=notify-reload`); send
/// `READY=1` once it is done. systemd asks for the time on `CLOCK_MONOTONIC` with it,
/// to tell this reload from an earlier one.
pub fn reloading() {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
    notify(&reloading_message(usec));
}

/// The `RELOADING=1` notification at `monotonic_usec`.
fn reloading_message(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloading_carries_the_monotonic_time() {
        assert_eq!(
            reloading_message(12_345_678),
            "RELOADING=1\nMONOTONIC_USEC=12345678"
        );
    }
}
