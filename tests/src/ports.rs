//! Ports for agents: one number free for both UDP and TCP on 127.0.0.1.
//!
//! Ports come from below the kernel's ephemeral range (`ip_local_port_range`), so the source
//! port of some unrelated outgoing connection can never take an agent's port between the check
//! here and the agent's bind. A port is handed out only if both a TCP listener and a UDP socket
//! can bind it, and never twice in one process (a process-wide set covers parallel test threads).
//! Each process starts its search at a random offset, so parallel test binaries rarely meet.
//!
//! Residual race: another process may bind the port between our check and the agent's bind
//! (the sockets are closed before the agent starts). [`crate::Agent::start`] then sees the agent
//! exit with "address in use" and retries with a new port.

use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The lowest port we use; below are well-known and commonly configured service ports.
const LOWEST: u16 = 20000;

/// A port free for both UDP and TCP on 127.0.0.1, never returned before by this process.
pub fn free_port() -> u16 {
    let (lo, hi) = search_range();
    let span = u32::from(hi - lo) + 1;
    let start = RandomState::new().hash_one(std::process::id()) as u32 % span;
    let mut taken = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        if !taken.contains(&port) && is_free(port) {
            taken.insert(port);
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1 in {lo}..={hi}");
}

/// Whether `port` can be bound on 127.0.0.1 for TCP and for UDP right now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The ports below the ephemeral range, or a fixed range if that leaves too few.
fn search_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > LOWEST + 1000 {
        (LOWEST, ephemeral_low - 1)
    } else {
        (LOWEST, 30000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ports_are_free_for_udp_and_tcp_and_distinct() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(p >= LOWEST, "{p}");
            let _tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("tcp free");
            let _udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).expect("udp free");
        }
    }

    #[test]
    fn parallel_threads_get_distinct_ports() {
        let handles: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..10).map(|_| free_port()).collect::<Vec<_>>()))
            .collect();
        let all: Vec<u16> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let distinct: HashSet<u16> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        assert!(!is_free(port), "UDP-only use must count as taken");
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert!(
            !is_free(tcp.local_addr().unwrap().port()),
            "TCP-only use must count as taken"
        );
    }
}
