//! Sending a burst of datagrams with one `sendmmsg(2)` call.
//!
//! Why: a node sends its own user event to up to 64 members at once (the broadcast tree's
//! direct push), and every drain of the tree can hold relays and announcements to several
//! peers. One system call per drain instead of one per frame saves the sender the entry and
//! exit of each, and the whole burst is queued before the sender can be preempted. (It does
//! not make the members' arrival times less spread: each receiver's own work does that, see
//! `docs/performance.md`.)
//!
//! A failed datagram is retried once when the failure may be an earlier packet's ICMP error
//! reported late ([`refused::may_be_an_earlier_error`]); the rest of the burst goes on
//! either way.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;

use socket2::SockAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::refused;

/// Datagrams to send together: their bytes in one buffer, reused from burst to burst.
#[derive(Default)]
pub struct Burst {
    data: Vec<u8>,
    packets: Vec<(SocketAddr, Range<usize>)>,
}

impl Burst {
    pub fn clear(&mut self) {
        self.data.clear();
        self.packets.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Adds a datagram for `to`, whose bytes `write` appends to the buffer it is given.
    pub fn push(&mut self, to: SocketAddr, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.data.len();
        write(&mut self.data);
        self.packets.push((to, start..self.data.len()));
    }

    /// The destination of datagram `i`.
    pub fn to(&self, i: usize) -> SocketAddr {
        self.packets[i].0
    }

    /// Sends every datagram, and returns how many went out. `failed` is called with the index
    /// and error of each one that did not (UDP is lossy anyway: the caller only logs them).
    pub fn send(&self, socket: &UdpSocket, mut failed: impl FnMut(usize, io::Error)) -> usize {
        let addrs: Vec<SockAddr> = self.packets.iter().map(|(to, _)| (*to).into()).collect();
        let mut iovs: Vec<libc::iovec> = self
            .packets
            .iter()
            .map(|(_, range)| libc::iovec {
                iov_base: self.data[range.clone()].as_ptr().cast_mut().cast(),
                iov_len: range.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = addrs
            .iter()
            .zip(iovs.iter_mut())
            .map(|(addr, iov)| {
                // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
                h.msg_hdr.msg_namelen = addr.len();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();

        let mut sent = 0;
        let mut next = 0;
        let mut retried = false;
        while next < headers.len() {
            let rest = &mut headers[next..];
            let result = socket.try_io(Interest::WRITABLE, || {
                // SAFETY: every header points at an address, an iovec and bytes that live
                // until this function returns, and `rest.len()` headers follow the pointer.
                let n = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        rest.as_mut_ptr(),
                        rest.len() as libc::c_uint,
                        0,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                // The first `n` went out; the next one failed (its error comes back on the
                // next call), or they all did.
                Ok(n) => {
                    sent += n;
                    next += n;
                    retried = false;
                }
                Err(e) if !retried && refused::may_be_an_earlier_error(&e) => retried = true,
                Err(e) => {
                    failed(next, e);
                    next += 1;
                    retried = false;
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket the runtime has seen writable: sends on it are attempted at once.
    async fn bound() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.writable().await.unwrap();
        socket
    }

    #[tokio::test]
    async fn a_burst_reaches_every_destination_with_its_own_bytes() {
        let sender = bound().await;
        let receivers = [bound().await, bound().await, bound().await];
        let mut burst = Burst::default();
        for (i, r) in receivers.iter().enumerate() {
            let to = r.local_addr().unwrap();
            burst.push(to, |buf| {
                buf.extend_from_slice(format!("to {i}").as_bytes())
            });
        }
        // A second datagram to the first receiver, from the same reused buffer.
        burst.push(receivers[0].local_addr().unwrap(), |buf| {
            buf.extend_from_slice(b"again")
        });
        let mut failures = Vec::new();
        assert_eq!(burst.send(&sender, |i, e| failures.push((i, e))), 4);
        assert!(failures.is_empty(), "{failures:?}");
        let mut buf = [0u8; 64];
        for (i, r) in receivers.iter().enumerate() {
            let (n, from) = r.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], format!("to {i}").as_bytes());
            assert_eq!(from, sender.local_addr().unwrap());
        }
        let (n, _) = receivers[0].recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"again");
        burst.clear();
        assert!(burst.is_empty());
        assert_eq!(burst.send(&sender, |_, _| panic!("nothing to send")), 0);
    }

    #[tokio::test]
    async fn a_datagram_that_cannot_be_sent_is_reported_and_the_rest_still_go() {
        let sender = bound().await;
        let receiver = bound().await;
        let mut burst = Burst::default();
        // An IPv6 destination from an IPv4 socket fails on its own (EAFNOSUPPORT / EINVAL).
        burst.push("[::1]:9".parse().unwrap(), |buf| buf.push(1));
        burst.push(receiver.local_addr().unwrap(), |buf| buf.push(2));
        let mut failures = Vec::new();
        assert_eq!(burst.send(&sender, |i, e| failures.push((i, e.kind()))), 1);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, 0);
        assert_eq!(burst.to(0), "[::1]:9".parse::<SocketAddr>().unwrap());
        let mut buf = [0u8; 8];
        let (n, _) = receiver.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], [2]);
    }
}
