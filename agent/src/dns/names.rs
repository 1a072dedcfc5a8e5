//! What a query name asks for: the names of `docs/dns.md`, read right to left.
//!
//! | name                                   | asks for                                   |
//! |----------------------------------------|--------------------------------------------|
//! | `DOMAIN`                               | the zone apex (SOA, NS)                    |
//! | `NODE.node.DOMAIN`                     | one member                                 |
//! | `VALUE.KEY[.VALUE.KEY…].tag.DOMAIN`     | the members with every one of those tags   |
//! | `_SERVICE._tcp[.VALUE.KEY…].tag.DOMAIN` | SRV for those members, on their port tag   |
//! | `D.C.B.A.in-addr.arpa`, `…ip6.arpa`    | PTR, when the reverse zones are on         |
//!
//! A name that is a prefix of names that exist (`tag.DOMAIN`, `role.tag.DOMAIN`,
//! `_tcp.….tag.DOMAIN`, `node.DOMAIN`, a partial reverse name) is an empty non-terminal:
//! it exists with no records, so qname-minimising resolvers walking down to a real name are
//! not told NXDOMAIN on the way (RFC 8020).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::rr::Name;

/// One (key, value) tag pair, both labels.
pub type TagPair = (String, String);

/// What a name under one of our zones asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The zone's own name.
    Apex,
    /// `NODE.node.DOMAIN`.
    Node(String),
    /// `VALUE.KEY….tag.DOMAIN`: pairs in the order written.
    Tag(Vec<TagPair>),
    /// `_SERVICE._tcp.….tag.DOMAIN` (or `_udp`); `service` without its underscore.
    Srv {
        service: String,
        pairs: Vec<TagPair>,
    },
    /// A reverse name with a whole address.
    Reverse(IpAddr),
    /// A name that exists only as a prefix of others: no records, not NXDOMAIN.
    Empty,
    /// No such name in the zone: NXDOMAIN.
    Unknown,
}

/// Which of our zones a name is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneKind {
    Domain,
    ReverseV4,
    ReverseV6,
}

/// `name` (lowercase) read against our domain and, when `reverse` is on, the reverse zones:
/// the zone it falls in and what it asks for, or `None` when it is outside all of them.
pub fn classify(name: &Name, domain: &Name, reverse: bool) -> Option<(ZoneKind, Lookup)> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let below = |zone_labels: usize| labels.len() - zone_labels;
    if domain.zone_of(name) {
        let prefix = &labels[..below(domain.num_labels() as usize)];
        return Some((ZoneKind::Domain, in_domain(prefix)));
    }
    if !reverse {
        return None;
    }
    let v4: Name = Name::from_ascii("in-addr.arpa.").expect("a valid name");
    let v6: Name = Name::from_ascii("ip6.arpa.").expect("a valid name");
    if v4.zone_of(name) {
        let prefix = &labels[..below(2)];
        return Some((ZoneKind::ReverseV4, reverse_v4(prefix)));
    }
    if v6.zone_of(name) {
        let prefix = &labels[..below(2)];
        return Some((ZoneKind::ReverseV6, reverse_v6(prefix)));
    }
    None
}

/// `prefix`: the labels left of the domain, leftmost first.
fn in_domain(prefix: &[&[u8]]) -> Lookup {
    let Some(prefix) = prefix
        .iter()
        .map(|l| std::str::from_utf8(l).ok())
        .collect::<Option<Vec<&str>>>()
    else {
        return Lookup::Unknown;
    };
    match prefix.as_slice() {
        [] => Lookup::Apex,
        ["node"] | ["tag"] => Lookup::Empty,
        [node, "node"] => Lookup::Node(node.to_string()),
        [rest @ .., "tag"] => in_tag(rest),
        _ => Lookup::Unknown,
    }
}

/// `labels`: left of `tag.DOMAIN`.
fn in_tag(labels: &[&str]) -> Lookup {
    if let [service, proto, rest @ ..] = labels
        && let Some(service) = service.strip_prefix('_')
        && matches!(*proto, "_tcp" | "_udp")
    {
        return match pairs(rest) {
            Some(pairs) if !service.is_empty() => Lookup::Srv {
                service: service.to_string(),
                pairs,
            },
            Some(_) => Lookup::Unknown,
            None => Lookup::Empty,
        };
    }
    if let [proto, rest @ ..] = labels
        && matches!(*proto, "_tcp" | "_udp")
    {
        return match pairs(rest) {
            Some(_) => Lookup::Empty,
            None => Lookup::Unknown,
        };
    }
    match pairs(labels) {
        Some(pairs) => Lookup::Tag(pairs),
        // `KEY.tag.DOMAIN`, `KEY.VALUE.KEY.tag.DOMAIN`: on the way to a pair.
        None => Lookup::Empty,
    }
}

/// `VALUE.KEY.VALUE.KEY…` as pairs; `None` for an odd count (a pair not yet complete).
fn pairs(labels: &[&str]) -> Option<Vec<TagPair>> {
    labels.len().is_multiple_of(2).then(|| {
        labels
            .chunks(2)
            .map(|pair| (pair[1].to_string(), pair[0].to_string()))
            .collect()
    })
}

/// `D.C.B.A` of `D.C.B.A.in-addr.arpa`.
fn reverse_v4(prefix: &[&[u8]]) -> Lookup {
    let octets: Option<Vec<u8>> = prefix
        .iter()
        .rev()
        .map(|l| std::str::from_utf8(l).ok()?.parse().ok())
        .collect();
    match octets {
        Some(o) if o.len() == 4 => {
            Lookup::Reverse(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])))
        }
        Some(o) if o.len() < 4 => Lookup::Empty,
        _ => Lookup::Unknown,
    }
}

/// The 32 nibbles of an ip6.arpa name, least significant first.
fn reverse_v6(prefix: &[&[u8]]) -> Lookup {
    let nibbles: Option<Vec<u8>> = prefix
        .iter()
        .rev()
        .map(|l| match l {
            [c] => (*c as char).to_digit(16).map(|d| d as u8),
            _ => None,
        })
        .collect();
    match nibbles {
        Some(n) if n.len() == 32 => {
            let mut octets = [0u8; 16];
            for (i, pair) in n.chunks(2).enumerate() {
                octets[i] = pair[0] << 4 | pair[1];
            }
            Lookup::Reverse(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        Some(n) if n.len() < 32 => Lookup::Empty,
        _ => Lookup::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<Lookup> {
        let domain = Name::from_ascii("rumor.").unwrap();
        let name = Name::from_ascii(name).unwrap().to_lowercase();
        classify(&name, &domain, true).map(|(_, l)| l)
    }

    fn pair(k: &str, v: &str) -> TagPair {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn node_and_apex_names() {
        assert_eq!(lookup("rumor."), Some(Lookup::Apex));
        assert_eq!(
            lookup("Web1.node.rumor."),
            Some(Lookup::Node("web1".into()))
        );
        assert_eq!(lookup("node.rumor."), Some(Lookup::Empty));
        assert_eq!(lookup("x.web1.node.rumor."), Some(Lookup::Unknown));
        assert_eq!(lookup("service.rumor."), Some(Lookup::Unknown));
    }

    #[test]
    fn tag_pairs_chain_left_to_right() {
        assert_eq!(
            lookup("web.role.tag.rumor."),
            Some(Lookup::Tag(vec![pair("role", "web")]))
        );
        assert_eq!(
            lookup("web.role.eu-west.dc.tag.rumor."),
            Some(Lookup::Tag(vec![
                pair("role", "web"),
                pair("dc", "eu-west")
            ]))
        );
        assert_eq!(lookup("role.tag.rumor."), Some(Lookup::Empty));
        assert_eq!(lookup("tag.rumor."), Some(Lookup::Empty));
    }

    #[test]
    fn srv_names() {
        assert_eq!(
            lookup("_http._tcp.web.role.tag.rumor."),
            Some(Lookup::Srv {
                service: "http".into(),
                pairs: vec![pair("role", "web")]
            })
        );
        assert_eq!(
            lookup("_http._tcp.tag.rumor."),
            Some(Lookup::Srv {
                service: "http".into(),
                pairs: vec![]
            })
        );
        assert_eq!(lookup("_tcp.web.role.tag.rumor."), Some(Lookup::Empty));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            lookup("4.3.2.10.in-addr.arpa."),
            Some(Lookup::Reverse("10.2.3.4".parse().unwrap()))
        );
        assert_eq!(lookup("2.10.in-addr.arpa."), Some(Lookup::Empty));
        assert_eq!(lookup("x.3.2.10.in-addr.arpa."), Some(Lookup::Unknown));
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        assert_eq!(
            lookup(v6),
            Some(Lookup::Reverse("2001:db8::1".parse().unwrap()))
        );
    }

    #[test]
    fn other_zones_are_outside() {
        assert_eq!(lookup("example.com."), None);
        let domain = Name::from_ascii("rumor.").unwrap();
        let ptr = Name::from_ascii("4.3.2.10.in-addr.arpa.").unwrap();
        assert_eq!(classify(&ptr, &domain, false), None);
    }
}
