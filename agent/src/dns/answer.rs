//! The answer to one question, as a pure function of the published [`Zone`], the settings and
//! the question: no I/O, so every rule of `docs/dns.md` is tested here without sockets.
//!
//! - Outside our zones: REFUSED (we are authoritative only, never recursive).
//! - A name with no members behind it: NXDOMAIN, and the zone's SOA in the authority section so
//!   resolvers cache the negative answer for the SOA's minimum TTL (RFC 2308).
//! - A name that exists but has no record of the asked type: NOERROR, no answers, the SOA in
//!   the authority section (NODATA).
//! - Address and SRV answers come in random order, so clients that take the first spread load.

use std::net::IpAddr;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;

use super::DnsSettings;
use super::names::{Lookup, ZoneKind, classify};
use super::zone::{Zone, ZoneMember};

/// An answer's code and sections.
#[derive(Debug, Default)]
pub struct Answer {
    pub code: ResponseCode,
    /// Whether we answer as the zone's authority (every answer but REFUSED).
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// The records found for a name that exists (possibly none of the asked type).
#[derive(Default)]
struct Found {
    answers: Vec<Record>,
    additionals: Vec<Record>,
}

/// Answers `qtype` for `name` (lowercase).
pub fn answer(zone: &Zone, s: &DnsSettings, name: &Name, qtype: RecordType) -> Answer {
    let Some((kind, lookup)) = classify(name, &s.domain, s.reverse) else {
        return Answer {
            code: ResponseCode::Refused,
            ..Answer::default()
        };
    };
    let apex = match kind {
        ZoneKind::Domain => s.domain.clone(),
        ZoneKind::ReverseV4 => Name::from_ascii("in-addr.arpa.").expect("a valid name"),
        ZoneKind::ReverseV6 => Name::from_ascii("ip6.arpa.").expect("a valid name"),
    };
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let found = match lookup {
        Lookup::Apex => {
            let mut found = Found::default();
            if wants(RecordType::SOA) {
                found.answers.push(soa(s, &apex, zone.serial, s.ttl));
            }
            if wants(RecordType::NS) {
                let ns = RData::NS(NS(s.server_name.clone()));
                found
                    .answers
                    .push(Record::from_rdata(apex.clone(), s.ttl, ns));
            }
            Some(found)
        }
        Lookup::Empty => Some(Found::default()),
        Lookup::Unknown => None,
        Lookup::Node(label) => {
            let members: Vec<&ZoneMember> = zone.nodes(&label).collect();
            (!members.is_empty()).then(|| {
                let mut answers = addresses(name, &members, s.ttl, qtype);
                if wants(RecordType::TXT) {
                    answers.extend(members.iter().filter(|m| !m.txt.is_empty()).map(|m| {
                        let txt = RData::TXT(TXT::new(m.txt.clone()));
                        Record::from_rdata(name.clone(), s.ttl, txt)
                    }));
                }
                Found {
                    answers,
                    additionals: Vec::new(),
                }
            })
        }
        Lookup::Tag(pairs) => {
            let mut members: Vec<&ZoneMember> = zone.tagged(&pairs).collect();
            members.shuffle(&mut rand::rng());
            (!members.is_empty()).then(|| Found {
                answers: addresses(name, &members, s.ttl, qtype),
                additionals: Vec::new(),
            })
        }
        Lookup::Srv { service, pairs } => {
            let port_tag = format!("{service}_port");
            let mut targets: Vec<(&ZoneMember, u16, Name)> = zone
                .tagged(&pairs)
                .filter_map(|m| {
                    let port = m.tag(&port_tag).or_else(|| m.tag("port"))?.parse().ok()?;
                    Some((m, port, s.node_name(&m.label)?))
                })
                .collect();
            targets.shuffle(&mut rand::rng());
            (!targets.is_empty()).then(|| {
                let mut found = Found::default();
                if wants(RecordType::SRV) {
                    for (m, port, target) in targets {
                        let srv = RData::SRV(SRV::new(1, 1, port, target.clone()));
                        found
                            .answers
                            .push(Record::from_rdata(name.clone(), s.ttl, srv));
                        found
                            .additionals
                            .extend(addresses(&target, &[m], s.ttl, RecordType::ANY));
                    }
                }
                found
            })
        }
        Lookup::Reverse(addr) => {
            let names: Vec<Name> = zone
                .at(addr)
                .filter_map(|m| s.node_name(&m.label))
                .collect();
            (!names.is_empty()).then(|| Found {
                answers: if wants(RecordType::PTR) {
                    names
                        .into_iter()
                        .map(|n| Record::from_rdata(name.clone(), s.ttl, RData::PTR(PTR(n))))
                        .collect()
                } else {
                    Vec::new()
                },
                additionals: Vec::new(),
            })
        }
    };
    let negative = || vec![soa(s, &apex, zone.serial, s.soa_min_ttl)];
    match found {
        None => Answer {
            code: ResponseCode::NXDomain,
            authoritative: true,
            authority: negative(),
            ..Answer::default()
        },
        Some(found) => Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            authority: if found.answers.is_empty() {
                negative()
            } else {
                Vec::new()
            },
            answers: found.answers,
            additionals: found.additionals,
        },
    }
}

/// The A (IPv4) and AAAA (IPv6) records of `members` under `name` that `qtype` asks for.
fn addresses(name: &Name, members: &[&ZoneMember], ttl: u32, qtype: RecordType) -> Vec<Record> {
    let any = qtype == RecordType::ANY;
    members
        .iter()
        .filter_map(|m| match m.addr {
            IpAddr::V4(ip) if any || qtype == RecordType::A => Some(RData::A(A(ip))),
            IpAddr::V6(ip) if any || qtype == RecordType::AAAA => Some(RData::AAAA(AAAA(ip))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(name.clone(), ttl, rdata))
        .collect()
}

/// The SOA of `apex` with `ttl`; its minimum (the negative-caching TTL) is `soa_min_ttl`.
fn soa(s: &DnsSettings, apex: &Name, serial: u32, ttl: u32) -> Record {
    let hostmaster = Name::from_ascii("hostmaster")
        .and_then(|h| h.append_name(&s.domain))
        .unwrap_or_else(|_| s.domain.clone());
    // Refresh, retry and expire matter only to secondaries, which this zone has none of.
    let soa = SOA::new(
        s.server_name.clone(),
        hostmaster,
        serial,
        3600,
        600,
        86400,
        s.soa_min_ttl,
    );
    Record::from_rdata(apex.clone(), ttl, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::{MemberView, Status};
    use crate::dns::DnsConfig;

    fn settings(reverse: bool) -> DnsSettings {
        let config = DnsConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            domain: "rumor".into(),
            ttl: Duration::from_secs(5),
            soa_min_ttl: Duration::from_secs(30),
            reverse,
        };
        DnsSettings::new(&config, "a").unwrap()
    }

    fn zone() -> Zone {
        let m = |name: &str, ip: &str, tags: &[(&str, &str)]| {
            MemberView::with_defaults(name, ip.parse().unwrap(), Status::Alive, tags)
        };
        Zone::build(&[
            m("a", "10.0.0.1", &[("role", "web"), ("web_port", "80")]),
            m("b", "10.0.0.2", &[("role", "web")]),
            m("Web.1", "10.0.0.3", &[("Role", "Web Server")]),
        ])
    }

    fn ask(name: &str, qtype: RecordType, reverse: bool) -> Answer {
        let name = Name::from_ascii(name).unwrap().to_lowercase();
        answer(&zone(), &settings(reverse), &name, qtype)
    }

    #[test]
    fn a_name_without_the_asked_type_is_nodata_with_the_soa() {
        let a = ask("a.node.rumor.", RecordType::AAAA, false);
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_eq!(a.authority.len(), 1);
        assert_eq!(a.authority[0].ttl, 30);
    }

    #[test]
    fn answers_carry_the_configured_ttl_and_the_apex_has_soa_and_ns() {
        let a = ask("a.node.rumor.", RecordType::A, false);
        assert_eq!(a.answers[0].ttl, 5);
        let apex = ask("rumor.", RecordType::ANY, false);
        let types: Vec<RecordType> = apex.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(types, [RecordType::SOA, RecordType::NS]);
        assert_eq!(apex.answers[1].data.to_string(), "a.node.rumor.");
    }

    #[test]
    fn srv_leaves_out_members_without_a_port_tag() {
        let srv = ask("_web._tcp.web.role.tag.rumor.", RecordType::SRV, false);
        assert_eq!(srv.answers.len(), 1);
        assert_eq!(srv.answers[0].data.to_string(), "1 1 80 a.node.rumor.");
        let none = ask("_db._tcp.web.role.tag.rumor.", RecordType::SRV, false);
        assert_eq!(none.code, ResponseCode::NXDomain);
    }

    #[test]
    fn mapped_names_and_tags_answer() {
        let node = ask("web-1.node.rumor.", RecordType::A, false);
        assert_eq!(node.answers.len(), 1);
        let tag = ask("web-server.role.tag.rumor.", RecordType::A, false);
        assert_eq!(tag.answers.len(), 1);
    }

    #[test]
    fn reverse_names_are_refused_unless_enabled() {
        let off = ask("1.0.0.10.in-addr.arpa.", RecordType::PTR, false);
        assert_eq!(off.code, ResponseCode::Refused);
        let on = ask("1.0.0.10.in-addr.arpa.", RecordType::PTR, true);
        assert_eq!(on.answers[0].data.to_string(), "a.node.rumor.");
        let unknown = ask("9.0.0.10.in-addr.arpa.", RecordType::PTR, true);
        assert_eq!(unknown.code, ResponseCode::NXDomain);
        assert_eq!(unknown.authority[0].name.to_string(), "in-addr.arpa.");
    }
}
