//! Telling systemd how the agent is doing (`Type=notify`, `WatchdogSec=`), in the few lines
//! of sd_notify(3)'s protocol rather than a crate: one datagram of `KEY=VALUE` lines to the
//! Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//! Outside systemd the variable is unset and every call does nothing.
//!
//! Why the watchdog is fed from the gossip actor: a ping travels through the actor's command
//! queue, so systemd restarts an agent whose gossip loop is stuck, not only a dead process;
//! a timer task of its own would keep beating while the loop that matters hung.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use crate::cluster::ClusterHandle;

/// The variable systemd sets to the socket it listens on.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...`, newline-separated) to systemd.
/// Returns `Ok(false)` when the agent does not run under a notifying service manager.
pub fn notify(state: &str) -> std::io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) => send(&socket.to_string_lossy(), state).map(|()| true),
        None => Ok(false),
    }
}

fn send(socket: &str, state: &str) -> std::io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// How often systemd wants a watchdog ping, from `$WATCHDOG_USEC` (set by `WatchdogSec=`),
/// when it is meant for this process (`$WATCHDOG_PID`, when set, is our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Feeds the watchdog at half its interval (sd_watchdog_enabled(3)'s advice) for as long as
/// the gossip actor answers a ping; when it stops answering, the pings stop and systemd
/// restarts the agent after `WatchdogSec`.
pub async fn feed_watchdog(cluster: ClusterHandle, interval: Duration) {
    let mut ticks = tokio::time::interval(interval / 2);
    let mut warned = false;
    loop {
        ticks.tick().await;
        match tokio::time::timeout(interval / 2, cluster.ping()).await {
            Ok(Ok(())) => match notify("WATCHDOG=1") {
                Ok(_) => warned = false,
                // Once per spell of failures: systemd will act on the missing pings anyway.
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("cannot feed the systemd watchdog: {e}");
                }
                Err(_) => {}
            },
            Ok(Err(_)) => return, // stopping
            Err(_) => tracing::error!(
                "the gossip loop did not answer within {:?}: not feeding the systemd watchdog",
                interval / 2
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reaches_a_path_or_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1\nSTATUS=running").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=running");

        let name = format!("rumor-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        send(&format!("@{name}"), "WATCHDOG=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
