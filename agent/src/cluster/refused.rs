//! Refused packets: a member's host answered our UDP packet with ICMP "port unreachable".
//!
//! Why: when an agent crashes (killed, out of memory, a panic) on a host that stays up, its
//! port closes and the host's kernel refuses every packet sent there. That is near-certain
//! news that the agent is gone, available at the first packet sent to it, where SWIM learns
//! it only when a probe period ends without an answer. The actor treats a refusal like a
//! failed probe of its own (see suspicion.rs): it reports the suspicion, and confirming
//! members whose pings are refused too report at once instead of after three ping intervals.
//! A forged refusal cannot take a live member down: the verdict still needs independent
//! reporters, and the member refutes a suspicion of itself as soon as it hears it.
//!
//! How: Linux reports ICMP errors on an unconnected UDP socket only with `IP_RECVERR`
//! (`IPV6_RECVERR`); they are then queued on the socket's error queue, read with
//! `recvmsg(MSG_ERRQUEUE)`, which gives the destination of the refused packet. Every ICMP
//! error (a refusal, or a router's "host unreachable") is queued and also returned, once, by
//! the next `send` or `recv` on the socket, whatever that call's destination. So the actor
//! retries a failed send once ([`may_be_an_earlier_error`]) and skips a failed receive.
//! Errors left unread would fill the receive buffer, so the actor drains the queue whenever
//! the socket reports one.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Errors read from the queue per call; more wait for the next readiness.
const MAX_PER_DRAIN: usize = 256;

/// Asks the kernel to report ICMP errors for packets sent from `socket`.
pub fn enable(socket: &UdpSocket) -> io::Result<()> {
    set_recverr(socket, true)
}

/// Stops the reports, for when the queue can no longer be read: errors left on it would use
/// up the receive buffer (turning the option off also empties the queue).
pub fn disable(socket: &UdpSocket) -> io::Result<()> {
    set_recverr(socket, false)
}

fn set_recverr(socket: &UdpSocket, on: bool) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    // IPv4 errors reach an IPv6 socket too (IPv4-mapped peers), so a v6 socket sets both.
    if socket.local_addr()?.is_ipv6() {
        setsockopt_bool(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, on)?;
    }
    setsockopt_bool(fd, libc::IPPROTO_IP, libc::IP_RECVERR, on)
}

fn setsockopt_bool(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    on: bool,
) -> io::Result<()> {
    let on = libc::c_int::from(on);
    // SAFETY: `on` outlives the call and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an error from `send` or `recv` is a refusal reported late (see the module docs):
/// the operation itself did not happen and can be retried.
pub fn is_refusal(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::ConnectionRefused
}

/// Whether a failed send may have failed with an earlier packet's ICMP error (a refusal,
/// a host or network unreachable, ...) rather than its own, and so is worth one more try:
/// any error but a full buffer. A send's own error simply comes back on the retry.
pub fn may_be_an_earlier_error(error: &io::Error) -> bool {
    error.kind() != io::ErrorKind::WouldBlock
}

/// Reads the socket's error queue until it is empty (or [`MAX_PER_DRAIN`] errors were read),
/// pushing the destination of each refused packet onto `refused`. Other errors on the queue
/// (a host or network unreachable, a local error) are read and dropped: they say nothing
/// about the agent on the other end.
pub fn drain(socket: &UdpSocket, refused: &mut Vec<SocketAddr>) -> io::Result<()> {
    for _ in 0..MAX_PER_DRAIN {
        match socket.try_io(Interest::ERROR, || read_error(socket.as_raw_fd())) {
            Ok(Some(addr)) => refused.push(addr),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `recvmsg(MSG_ERRQUEUE)`: the refused destination, `None` for another kind of error,
/// `WouldBlock` when the queue is empty.
fn read_error(fd: libc::c_int) -> io::Result<Option<SocketAddr>> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // The refused packet's payload is copied here; only its destination matters.
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // Room for one IP_RECVERR message: a cmsghdr, sock_extended_err and the offender address.
    let mut control = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `msg` points to a live buffer of the length given with it.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut refused = false;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control`; CMSG_* walk within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let is_recverr = (c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR)
                || (c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
            if is_recverr {
                let err: libc::sock_extended_err =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let from_icmp = err.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    || err.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
                refused |= from_icmp && err.ee_errno == libc::ECONNREFUSED as u32;
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok(refused.then(|| socket_addr(&name)).flatten())
}

/// The address in a `sockaddr_storage` filled by the kernel.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in, which fits in the storage.
            let a: libc::sockaddr_in = unsafe { std::ptr::read((&raw const *storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const *storage).cast()) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let v6 = SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            );
            // A v4 peer of a dual-stack socket: compare as the v4 address members have.
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
                None => SocketAddr::V6(v6),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A port nothing listens on (bound, then closed again).
    fn closed_port() -> SocketAddr {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    }

    /// Waits until the socket has an error queued, without reading it.
    async fn queued(socket: &UdpSocket) {
        tokio::time::timeout(Duration::from_secs(5), socket.ready(Interest::ERROR))
            .await
            .expect("the kernel reports the refusal")
            .unwrap();
    }

    async fn refusals(socket: &UdpSocket) -> Vec<SocketAddr> {
        let mut refused = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            while refused.is_empty() {
                socket.ready(Interest::ERROR).await.unwrap();
                drain(socket, &mut refused).unwrap();
            }
        })
        .await
        .expect("the kernel reports the refusal");
        refused
    }

    #[tokio::test]
    async fn a_packet_to_a_closed_port_is_reported_with_its_destination() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable(&socket).unwrap();
        let gone = closed_port();
        socket.send_to(b"ping", gone).await.unwrap();
        assert_eq!(refusals(&socket).await, vec![gone]);
        // The queue is empty again.
        let mut more = Vec::new();
        drain(&socket, &mut more).unwrap();
        assert!(more.is_empty(), "{more:?}");
    }

    #[tokio::test]
    async fn ipv6_refusals_are_reported_too() {
        let Ok(socket) = UdpSocket::bind("[::1]:0").await else {
            // CI sets RUMOR_REQUIRE_ALL: there a skip is a failure.
            assert!(
                std::env::var_os("RUMOR_REQUIRE_ALL").is_none(),
                "no IPv6 loopback on this machine"
            );
            eprintln!("skipped: no IPv6 loopback on this machine");
            return;
        };
        enable(&socket).unwrap();
        let gone = std::net::UdpSocket::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap();
        socket.send_to(b"ping", gone).await.unwrap();
        assert_eq!(refusals(&socket).await, vec![gone]);
    }

    #[tokio::test]
    async fn the_socket_keeps_working_for_live_peers_after_a_refusal() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable(&socket).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let gone = closed_port();
        socket.send_to(b"ping", gone).await.unwrap();
        queued(&socket).await;
        // Not drained: the refusal makes the next send fail, whatever its destination. That
        // packet was not sent; the retry sends it.
        let to = peer.local_addr().unwrap();
        let first = socket.try_send_to(b"hello", to);
        assert!(
            matches!(&first, Err(e) if is_refusal(e) && may_be_an_earlier_error(e)),
            "{first:?}"
        );
        assert_eq!(socket.try_send_to(b"hello", to).unwrap(), 5);
        let mut buf = [0u8; 16];
        let (n, _) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        // The refusal itself is still on the queue.
        assert_eq!(refusals(&socket).await, vec![gone]);
        peer.send_to(b"back", socket.local_addr().unwrap())
            .await
            .unwrap();
        let (n, _) = socket.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
    }

    #[tokio::test]
    async fn disabling_stops_the_reports_and_empties_the_queue() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable(&socket).unwrap();
        socket.send_to(b"ping", closed_port()).await.unwrap();
        queued(&socket).await;
        disable(&socket).unwrap();
        // The first refusal may still surface once, on this send (as in the actor: retry).
        let gone = closed_port();
        if let Err(e) = socket.send_to(b"ping", gone).await {
            assert!(is_refusal(&e), "{e}");
            socket.send_to(b"ping", gone).await.unwrap();
        }
        // Nothing may arrive now; a loopback refusal would take microseconds.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut refused = Vec::new();
        let read = socket.try_io(Interest::ERROR, || read_error(socket.as_raw_fd()));
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{read:?}"
        );
        drain(&socket, &mut refused).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
    }

    #[tokio::test]
    async fn without_enable_nothing_is_reported() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(b"ping", closed_port()).await.unwrap();
        // Nothing may arrive; a loopback refusal would take microseconds.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut refused = Vec::new();
        drain(&socket, &mut refused).unwrap();
        assert!(refused.is_empty());
        // And a later send is not disturbed.
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .try_send_to(b"x", peer.local_addr().unwrap())
            .unwrap();
    }
}
