//! The messages rumor spreads on top of foca's gossip (as foca "custom broadcasts"): tag
//! records, user events, leave intents, queries and suspicion reports. Each is a version byte followed by postcard.

use std::hash::{DefaultHasher, Hash, Hasher};

use rumor_handlers::event::{Tags, UserEvent};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::identity::{MAX_NODE_NAME, NodeId};
use super::query::QueryMsg;
use super::wire::SWIM_PACKET_SIZE;

/// Version of the broadcast encoding (independent of the envelope's protocol version).
const BROADCAST_VERSION: u8 = 1;

/// Largest encoded identity: name (≤ 64 bytes + length), IPv6 socket address, generation.
const MAX_IDENTITY_BYTES: usize = 1 + MAX_NODE_NAME + 21 + 10;
/// Room for one broadcast item in a foca `Broadcast` packet: the packet minus its header
/// (two identities, incarnation, message tag) and the item's 2-byte length prefix.
pub const MAX_BROADCAST_BYTES: usize = SWIM_PACKET_SIZE - (2 * MAX_IDENTITY_BYTES + 4) - 2;
/// Encoding overhead of a user event around its name and payload (version, tags, Lamport
/// time, length prefixes, coalesce flag, origin name, send time).
const USER_EVENT_OVERHEAD: usize = 2 + 10 + 3 + 3 + 1 + 1 + MAX_NODE_NAME + 10;
/// The largest `max_event_bytes` (name + payload) that still fits one packet. foca accepts
/// larger broadcasts but never sends them, so configurations above this are refused.
pub const MAX_EVENT_BYTES_CEILING: usize = 1100;
const _: () = assert!(MAX_EVENT_BYTES_CEILING + USER_EVENT_OVERHEAD <= MAX_BROADCAST_BYTES);
/// Largest encoded tag map of one node.
pub const MAX_TAGS_BYTES: usize = 1024;
const _: () = assert!(MAX_TAGS_BYTES + 2 + 1 + MAX_NODE_NAME + 20 + 22 <= MAX_BROADCAST_BYTES);
/// Longest user event name, in bytes.
pub const MAX_EVENT_NAME: usize = 128;

/// Orders tag records of one node: a later process (generation) always wins, then the
/// counter that node bumps on each change.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TagVersion {
    pub generation: u64,
    pub counter: u64,
}

/// A node's full tag set at one version. The node's own records carry its address: a node
/// that has never heard of it adds it to the membership at once (Serf's join intent), so a
/// joiner is known cluster-wide at the speed of the eager relay, not of membership gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub node: String,
    pub version: TagVersion,
    pub tags: Tags,
    /// Set by the node itself; `None` when relayed from a push-pull (it may be gone).
    pub addr: Option<std::net::SocketAddr>,
}

/// "NODE (at this generation) is leaving": sent by the node itself on a graceful leave, or by
/// any node for `force-leave` (`by` says who).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveIntent {
    pub node: String,
    pub generation: u64,
    pub by: String,
    /// Also remove the member from every list at once.
    pub prune: bool,
}

/// "REPORTER could not reach MEMBER at this incarnation": one vote towards declaring it down
/// without waiting out foca's suspicion timer (see `suspicion.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectReport {
    pub member: NodeId,
    pub incarnation: foca::Incarnation,
    pub reporter: String,
}

/// One item spread through the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    Tags(TagRecord),
    /// A user event, and when its origin sent it (unix ms; 0 when relayed from push-pull).
    User {
        event: UserEvent,
        sent_unix_ms: u64,
    },
    Leave(LeaveIntent),
    Query(QueryMsg),
    Suspect(SuspectReport),
}

#[derive(Debug, Error)]
pub enum MessageError {
    #[error("empty broadcast")]
    Empty,
    #[error("unsupported broadcast version {0} (this agent speaks {BROADCAST_VERSION})")]
    Version(u8),
    #[error("malformed broadcast: {0}")]
    Decode(#[from] postcard::Error),
    #[error("invalid broadcast: {0}")]
    Invalid(String),
}

impl Broadcast {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![BROADCAST_VERSION];
        // Serializing our own plain data into a Vec cannot fail.
        postcard::to_io(self, &mut out).expect("postcard encoding into a Vec");
        out
    }

    pub fn decode(data: &[u8]) -> Result<Broadcast, MessageError> {
        let (&version, body) = data.split_first().ok_or(MessageError::Empty)?;
        if version != BROADCAST_VERSION {
            return Err(MessageError::Version(version));
        }
        let msg: Broadcast = postcard::from_bytes(body)?;
        msg.validate()?;
        Ok(msg)
    }

    /// Rejects what a well-behaved node never sends (so nothing odd reaches a handler).
    fn validate(&self) -> Result<(), MessageError> {
        let bad = |m: String| Err(MessageError::Invalid(m));
        match self {
            Broadcast::Tags(t) => {
                check_node_name(&t.node).or_else(bad)?;
                if tags_size(&t.tags) > MAX_TAGS_BYTES {
                    return bad(format!("tags of {} exceed {MAX_TAGS_BYTES} bytes", t.node));
                }
            }
            Broadcast::User { event: e, .. } => {
                check_node_name(&e.origin).or_else(bad)?;
                check_event_name(&e.name).or_else(bad)?;
                if e.name.len() + e.payload.len() > MAX_EVENT_BYTES_CEILING {
                    return bad(format!("event {} is too large", e.name));
                }
            }
            Broadcast::Leave(l) => {
                check_node_name(&l.node).or_else(bad)?;
                check_node_name(&l.by).or_else(bad)?;
            }
            Broadcast::Query(q) => {
                check_node_name(&q.origin).or_else(bad)?;
                check_event_name(&q.name).or_else(bad)?;
                if q.name.len() + q.payload.len() > MAX_EVENT_BYTES_CEILING {
                    return bad(format!("query {} is too large", q.name));
                }
            }
            Broadcast::Suspect(r) => {
                check_node_name(&r.member.name).or_else(bad)?;
                check_node_name(&r.reporter).or_else(bad)?;
            }
        }
        Ok(())
    }

    /// The key foca uses to tell this item apart from others it is spreading.
    pub fn key(&self) -> BroadcastKey {
        match self {
            Broadcast::Tags(t) => BroadcastKey::Tags {
                node: t.node.clone(),
                version: t.version,
            },
            Broadcast::User { event: e, .. } => {
                let mut h = DefaultHasher::new();
                (&e.name, &e.payload).hash(&mut h);
                BroadcastKey::User {
                    ltime: e.ltime,
                    digest: h.finish(),
                }
            }
            Broadcast::Leave(l) => BroadcastKey::Leave {
                node: l.node.clone(),
                generation: l.generation,
                prune: l.prune,
            },
            Broadcast::Query(q) => BroadcastKey::Query {
                origin: q.origin.clone(),
                id: q.id,
            },
            Broadcast::Suspect(r) => BroadcastKey::Suspect {
                member: r.member.name.clone(),
                generation: r.member.generation,
                incarnation: r.incarnation,
                reporter: r.reporter.clone(),
            },
        }
    }
}

/// Identifies a broadcast in foca's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastKey {
    Tags {
        node: String,
        version: TagVersion,
    },
    User {
        ltime: u64,
        digest: u64,
    },
    Leave {
        node: String,
        generation: u64,
        prune: bool,
    },
    Query {
        origin: String,
        id: u32,
    },
    Suspect {
        member: String,
        generation: u64,
        incarnation: foca::Incarnation,
        reporter: String,
    },
}

impl foca::Invalidates for BroadcastKey {
    /// A newer tag record of a node replaces the older one still being spread.
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (
                BroadcastKey::Tags { node, version },
                BroadcastKey::Tags {
                    node: other_node,
                    version: other_version,
                },
            ) => node == other_node && version >= other_version,
            _ => self == other,
        }
    }
}

/// Size of a tag map as it travels (postcard encoding).
pub fn tags_size(tags: &Tags) -> usize {
    postcard::experimental::serialized_size(tags).unwrap_or(usize::MAX)
}

/// Tag keys: 1–64 bytes of letters, digits, `.`, `_` and `-` (they become `SERF_TAG_*`
/// environment variable names in handlers).
pub fn check_tag_key(key: &str) -> Result<(), String> {
    check_name(key, 64, "tag key")
}

/// Node names: 1–64 bytes of letters, digits, `.`, `_` and `-`.
pub fn check_node_name(name: &str) -> Result<(), String> {
    check_name(name, MAX_NODE_NAME, "node name")
}

/// Event names: 1–128 bytes of letters, digits, `.`, `_`, `-`, `:` and `/`.
pub fn check_event_name(name: &str) -> Result<(), String> {
    check_name(name, MAX_EVENT_NAME, "event name")
}

fn check_name(name: &str, max: usize, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > max {
        return Err(format!(
            "{what} {name:?} is {} bytes, the limit is {max}",
            name.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:/".contains(c);
    if let Some(c) = name
        .chars()
        .find(|&c| !allowed(c) || (what != "event name" && "/:".contains(c)))
    {
        return Err(format!(
            "{what} {name:?} contains {c:?}; use letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Invalidates;

    fn event(name: &str, payload_len: usize) -> Broadcast {
        Broadcast::User {
            event: UserEvent {
                ltime: u64::MAX,
                name: name.into(),
                payload: vec![0xff; payload_len],
                coalesce: true,
                origin: "o".repeat(MAX_NODE_NAME),
            },
            sent_unix_ms: u64::MAX,
        }
    }

    #[test]
    fn round_trip_and_worst_case_size() {
        let name = "n".repeat(MAX_EVENT_NAME);
        let msg = event(&name, MAX_EVENT_BYTES_CEILING - name.len());
        let bytes = msg.encode();
        assert!(bytes.len() <= MAX_BROADCAST_BYTES, "{} bytes", bytes.len());
        assert_eq!(Broadcast::decode(&bytes).unwrap(), msg);
    }

    #[test]
    fn rejects_garbage_versions_and_invalid_names() {
        assert!(matches!(Broadcast::decode(b""), Err(MessageError::Empty)));
        assert!(matches!(
            Broadcast::decode(b"\x07abc"),
            Err(MessageError::Version(7))
        ));
        assert!(matches!(
            Broadcast::decode(b"\x01\xff\xff"),
            Err(MessageError::Decode(_))
        ));
        let bad = Broadcast::Leave(LeaveIntent {
            node: "has space".into(),
            generation: 1,
            by: "x".into(),
            prune: false,
        });
        assert!(matches!(
            Broadcast::decode(&bad.encode()),
            Err(MessageError::Invalid(_))
        ));
    }

    proptest::proptest! {
        /// Any bytes, versioned or not: an error or a valid broadcast, never a panic.
        #[test]
        fn decoding_random_bytes_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500)) {
            let _ = Broadcast::decode(&data);
            let mut versioned = data.clone();
            versioned.insert(0, BROADCAST_VERSION);
            if let Ok(msg) = Broadcast::decode(&versioned) {
                // Whatever decodes also passes validation and re-encodes.
                proptest::prop_assert!(msg.validate().is_ok());
                proptest::prop_assert!(!msg.encode().is_empty());
            }
        }

        /// Mutating one byte of a valid broadcast never panics the decoder.
        #[test]
        fn mutated_broadcasts_never_panic(at in proptest::prelude::any::<proptest::sample::Index>(), byte in proptest::prelude::any::<u8>()) {
            let mut data = event("deploy", 40).encode();
            let i = at.index(data.len());
            data[i] = byte;
            let _ = Broadcast::decode(&data);
        }
    }

    #[test]
    fn newer_tag_records_replace_older_ones() {
        let key = |counter| BroadcastKey::Tags {
            node: "a".into(),
            version: TagVersion {
                generation: 1,
                counter,
            },
        };
        assert!(key(2).invalidates(&key(1)));
        assert!(!key(1).invalidates(&key(2)));
        let other = BroadcastKey::Tags {
            node: "b".into(),
            version: TagVersion::default(),
        };
        assert!(!key(2).invalidates(&other));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_node_name("web-1.example_x").is_ok());
        assert!(check_node_name("").is_err());
        assert!(check_node_name(&"a".repeat(65)).is_err());
        assert!(check_node_name("a/b").is_err());
        assert!(check_event_name("deploy:web/v2").is_ok());
        assert!(check_event_name("bad name").is_err());
    }
}
