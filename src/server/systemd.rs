//! The systemd notification protocol: one datagram (`READY=1`,
//! `STOPPING=1`) to the socket named by `NOTIFY_SOCKET`, when it is set.
//! A name starting with `@` is an abstract socket.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::{debug, warn};

/// Sends `state` to the service manager, if there is one.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    match sent {
        Ok(_) => debug!("told systemd {state}"),
        Err(e) => warn!("cannot notify systemd at {path}: {e}"),
    }
}
