//! What crosses in a push-pull exchange (anti-entropy over TCP, see `push_pull.rs` for the
//! protocol): everything one node knows that another may have missed, and a digest of it, so
//! two nodes that know the same things can say so in 16 bytes.
//!
//! User events cross as what the receiver is missing: each side's state carries its streams
//! (what it has delivered, see `events.rs`), and the side that answers sends the events it keeps
//! that the other has not delivered. So an exchange opens with the initiator's streams, the
//! responder answers with its state and what the initiator misses, and the initiator closes
//! with its state and what the responder misses.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::events::{StreamEvent, StreamSummary};
use super::identity::NodeId;
use super::members::Member;
use super::message::TagVersion;
use super::views::Status;

/// Everything one node tells another in an exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangeState {
    /// The sender.
    pub from: NodeId,
    /// The sender is joining through us (so we tell foca about it at once).
    pub join: bool,
    /// The sender's member table (statuses, tags, leave intents).
    pub members: Vec<Member>,
    /// The sender's foca membership state (identities, incarnations, alive/suspect/down).
    pub swim: Vec<foca::Member<NodeId>>,
    /// The sender's event and query clocks.
    pub event_ltime: u64,
    pub query_ltime: u64,
    /// The sender's user event streams: what it has delivered, and what it keeps.
    pub streams: Vec<StreamSummary>,
    /// Events the receiver has not delivered, as far as the sender knows from the receiver's
    /// streams (none when it does not know them).
    pub events: Vec<StreamEvent>,
    /// Whether the sender wants the events it has not delivered: not on a first join, when
    /// the cluster's history is not for it.
    pub wants_events: bool,
}

/// How an exchange opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send the whole state at once (joins, and members back from failure, which surely
    /// differ).
    Full,
    /// Offer a digest first (periodic anti-entropy, which usually finds nothing new).
    Digest,
}

/// A digest of what anti-entropy would exchange: each member's identity, status, tag version
/// and leave intent, and how far each user event stream has been delivered — in a canonical
/// order, so two nodes that know the same things agree on it. foca's membership (incarnations) is left out: it is not the
/// same list on every node (none lists itself), and what it decides shows in the statuses.
pub fn digest(state: &ExchangeState) -> [u8; 16] {
    type MemberKey<'a> = (&'a str, SocketAddr, u64, Status, TagVersion, Option<u64>);
    let mut members: Vec<MemberKey> = state
        .members
        .iter()
        .map(|m| {
            (
                m.id.name.as_str(),
                m.id.addr,
                m.id.generation,
                m.status,
                m.tag_version,
                m.left_generation,
            )
        })
        .collect();
    members.sort();
    let mut streams: Vec<(&str, u64, u64, u64)> = state
        .streams
        .iter()
        .map(|s| (s.origin.as_str(), s.generation, s.contiguous, s.high))
        .collect();
    streams.sort();
    let canonical = postcard::to_allocvec(&(members, streams)).expect("plain data encodes");
    let hash = ring::digest::digest(&ring::digest::SHA256, &canonical);
    *hash
        .as_ref()
        .first_chunk()
        .expect("a SHA-256 hash is 32 bytes")
}

/// Why the node asked for an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Periodic anti-entropy with a random live member.
    Periodic,
    /// A member we had written off is back: exchange what each side sent meanwhile.
    CatchUp,
    /// Serf's reconnect: try a random failed member (a partition may have healed).
    Reconnect,
}

impl Purpose {
    /// What a successful exchange of this kind means, for the log.
    pub fn success(self) -> &'static str {
        match self {
            Purpose::Periodic => "push-pull exchange merged",
            Purpose::CatchUp => "caught up with a member back from failed",
            Purpose::Reconnect => "reconnected to a failed member",
        }
    }
}

/// How an exchange that merged nothing ended, counted by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeOutcome {
    /// The digests matched: both sides know the same.
    InSync,
    /// A periodic exchange we started failed (retried by the next period).
    Failed,
    /// An incoming exchange was refused: its source exceeded the rate limit.
    RateLimited,
    /// An incoming stream failed the encryption check.
    Undecryptable,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small state, for tests of the exchange and its framing.
    pub(crate) fn state() -> ExchangeState {
        ExchangeState {
            from: NodeId {
                name: "a".into(),
                addr: "127.0.0.1:7946".parse().unwrap(),
                generation: 7,
            },
            join: true,
            members: vec![],
            swim: vec![],
            event_ltime: 3,
            query_ltime: 1,
            streams: vec![],
            events: vec![],
            wants_events: true,
        }
    }

    fn member(name: &str, status: Status, counter: u64) -> Member {
        Member {
            id: NodeId {
                name: name.into(),
                addr: "10.0.0.1:7946".parse().unwrap(),
                generation: 1,
            },
            status,
            tags: Default::default(),
            tag_version: TagVersion {
                generation: 1,
                counter,
            },
            left_generation: None,
            status_since: std::time::SystemTime::now(),
        }
    }

    fn stream(origin: &str, contiguous: u64, high: u64) -> StreamSummary {
        StreamSummary {
            origin: origin.into(),
            generation: 1,
            contiguous,
            high,
            kept_from: 1,
        }
    }

    #[test]
    fn the_digest_covers_members_and_streams_in_any_order() {
        let mut a = state();
        a.members = vec![member("x", Status::Alive, 1), member("y", Status::Alive, 2)];
        a.streams = vec![stream("x", 4, 4), stream("y", 2, 9)];
        // Another node, same knowledge: listed in another order, another sender and clock,
        // another foca view.
        let mut b = a.clone();
        b.from.name = "b".into();
        b.event_ltime = 9;
        b.join = false;
        b.members.reverse();
        b.streams.reverse();
        b.streams[0].kept_from = 3; // what each keeps may differ
        b.swim = vec![foca::Member::alive(a.from.clone())];
        assert_eq!(digest(&a), digest(&b));
        let changed: [fn(&mut ExchangeState); 4] = [
            |s| s.members[0].status = Status::Failed,
            |s| s.members[0].tag_version.counter += 1,
            |s| s.streams.push(stream("z", 1, 1)),
            |s| s.streams[1].contiguous += 1,
        ];
        for change in changed {
            let mut c = a.clone();
            change(&mut c);
            assert_ne!(digest(&a), digest(&c));
        }
    }
}
