//! Choosing the address to advertise when the agent binds to all interfaces.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The address other members should use to reach us: `advertise` if given; otherwise the
/// bind address, or — when binding to 0.0.0.0 — the first IPv4 address of an interface
/// that is up and not loopback (what Serf does).
pub fn choose(bind: SocketAddr, advertise: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    if let Some(a) = advertise {
        if a.ip().is_unspecified() {
            anyhow::bail!(
                "--advertise {a}: an unspecified address cannot be advertised; give the IP other hosts reach this one at"
            );
        }
        return Ok(a);
    }
    if !bind.ip().is_unspecified() {
        return Ok(bind);
    }
    match first_interface_ipv4() {
        Some(ip) => Ok(SocketAddr::new(IpAddr::V4(ip), bind.port())),
        None => anyhow::bail!(
            "cannot choose an address to advertise: no network interface with a non-loopback IPv4 address is up. \
             Pass --advertise IP:PORT, or --bind 127.0.0.1:PORT (or --dev) for a single-machine cluster"
        ),
    }
}

/// The first non-loopback IPv4 address of an interface that is up, from getifaddrs(3).
fn first_interface_ipv4() -> Option<Ipv4Addr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned; entries stay valid until freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let up = entry.ifa_flags & (libc::IFF_UP as u32) != 0;
        let loopback = entry.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0;
        if !up || loopback || entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; sa_family tells which sockaddr it really is.
        if i32::from(unsafe { (*entry.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: the family is AF_INET, so this is a sockaddr_in.
        let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !ip.is_loopback() && !ip.is_unspecified() {
            found = Some(ip);
            break;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_and_specific_addresses_win() {
        let bind: SocketAddr = "0.0.0.0:7946".parse().unwrap();
        let adv: SocketAddr = "10.1.2.3:7000".parse().unwrap();
        assert_eq!(choose(bind, Some(adv)).unwrap(), adv);
        let lo: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        assert_eq!(choose(lo, None).unwrap(), lo);
        assert!(choose(bind, Some(bind)).is_err());
    }

    #[test]
    fn all_interfaces_picks_a_real_interface_or_explains() {
        let bind: SocketAddr = "0.0.0.0:7946".parse().unwrap();
        match choose(bind, None) {
            Ok(a) => assert!(!a.ip().is_loopback() && a.port() == 7946),
            Err(e) => assert!(e.to_string().contains("--advertise")),
        }
    }
}
