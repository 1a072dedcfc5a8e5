//! One packet in, one reply out (or none): decoding, the checks a query must pass, the answer,
//! and encoding within the size the transport allows.
//!
//! Why here and not in hickory's `Server`: that server answers an undecodable packet with
//! FORMERR and drops a headerless one without a trace, and neither reaches its handler, so they
//! cannot be counted. Garbage that gets an answer is also a reflection amplifier. Here anything
//! that is not a DNS query is dropped and counted; the decoding, the response builder and the
//! encoder (with its TC bit) are hickory's.

use std::net::{Ipv4Addr, SocketAddr};

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::Request;
use hickory_server::zone_handler::MessageResponseBuilder;

use super::DnsSettings;
use super::answer::{Answer, answer};
use super::stats::DnsStats;
use super::zone::Zone;

/// The largest UDP answer we send, and the size our EDNS record offers: the size the DNS flag
/// day of 2020 settled on, which passes common paths without IP fragmentation.
pub const MAX_UDP_ANSWER: u16 = 1232;
/// The size a client without EDNS accepts over UDP (RFC 1035).
const CLASSIC_UDP_ANSWER: u16 = 512;

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The reply to `packet`, or `None` when it is dropped (not a DNS query; counted). Public for
/// the fuzz target, which feeds it any bytes.
pub fn respond(
    zone: &Zone,
    settings: &DnsSettings,
    packet: &[u8],
    transport: Transport,
    stats: &DnsStats,
) -> Option<Vec<u8>> {
    // The source address is only carried along by hickory's type; nothing here reads it.
    let unused = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let protocol = match transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    let Ok(request) = Request::from_bytes(packet.to_vec(), unused, protocol) else {
        DnsStats::bump(&stats.malformed);
        return None;
    };
    if request.metadata.message_type != MessageType::Query {
        DnsStats::bump(&stats.malformed);
        return None;
    }
    DnsStats::bump(match transport {
        Transport::Udp => &stats.queries_udp,
        Transport::Tcp => &stats.queries_tcp,
    });
    let queries = request.queries.queries();
    let reply = match queries {
        _ if request.metadata.op_code != OpCode::Query => error(ResponseCode::NotImp),
        // We speak EDNS version 0 only (RFC 6891, section 6.1.3).
        _ if request.edns.as_ref().is_some_and(|e| e.version() > 0) => error(ResponseCode::BADVERS),
        [query] if query.query_class() != DNSClass::IN => error(ResponseCode::Refused),
        [query] if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) => {
            error(ResponseCode::Refused)
        }
        [query] => answer(
            zone,
            settings,
            &Name::from(query.name()),
            query.query_type(),
        ),
        _ => error(ResponseCode::FormErr),
    };
    let limit = match (transport, &request.edns) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, None) => CLASSIC_UDP_ANSWER,
        (Transport::Udp, Some(edns)) => {
            edns.max_payload().clamp(CLASSIC_UDP_ANSWER, MAX_UDP_ANSWER)
        }
    };
    let mut our_edns = Edns::new();
    our_edns.set_max_payload(MAX_UDP_ANSWER);
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = reply.authoritative;
    metadata.response_code = reply.code;
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if request.edns.is_some() {
        builder.edns(&our_edns);
    }
    let response = builder.build(
        metadata,
        reply.answers.iter(),
        reply.authority.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    );
    let mut bytes = Vec::with_capacity(usize::from(limit.min(4096)));
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(limit);
    let code = match response.destructive_emit(&mut encoder) {
        Ok(info) => {
            if info.truncation {
                DnsStats::bump(&stats.truncated);
            }
            reply.code
        }
        Err(e) => {
            tracing::warn!(error = %e, "dns: cannot encode an answer; sending SERVFAIL");
            bytes = servfail(&request.metadata);
            ResponseCode::ServFail
        }
    };
    DnsStats::bump(match code {
        ResponseCode::NoError => &stats.noerror,
        ResponseCode::NXDomain => &stats.nxdomain,
        ResponseCode::Refused => &stats.refused,
        _ => &stats.other,
    });
    Some(bytes)
}

fn error(code: ResponseCode) -> Answer {
    Answer {
        code,
        ..Answer::default()
    }
}

/// A bare SERVFAIL header for `request`.
fn servfail(request: &Metadata) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = ResponseCode::ServFail;
    let mut message =
        hickory_server::proto::op::Message::new(request.id, MessageType::Response, request.op_code);
    message.metadata = metadata;
    message.to_vec().unwrap_or_default()
}
