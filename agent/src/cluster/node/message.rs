//! The messages rumor spreads on top of foca's gossip (as foca "custom broadcasts"): tag
//! records, user events, leave intents, queries and suspicion reports. Each is a version byte followed by postcard.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;

use rumor_handlers::event::{Tags, UserEvent};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::filter::QueryFilter;
use super::identity::{MAX_NODE_NAME, NodeId};
use crate::cluster::wire::SWIM_PACKET_SIZE;

/// Version of the broadcast encoding (independent of the envelope's protocol version).
const BROADCAST_VERSION: u8 = 2;
/// Version of the query reply encoding.
const REPLY_VERSION: u8 = 1;

/// Largest encoded identity: name (≤ 64 bytes + length), IPv6 socket address, generation.
const MAX_IDENTITY_BYTES: usize = 1 + MAX_NODE_NAME + 21 + 10;
/// Room for one broadcast item in a foca `Broadcast` packet: the packet minus its header
/// (two identities, incarnation, message tag) and the item's 2-byte length prefix.
pub const MAX_BROADCAST_BYTES: usize = SWIM_PACKET_SIZE - (2 * MAX_IDENTITY_BYTES + 4) - 2;
/// Encoding overhead of a user event around its name and payload (version, tags, Lamport
/// time, length prefixes, coalesce flag, origin name, its place in the origin's stream, send
/// time).
const USER_EVENT_OVERHEAD: usize = 2 + 10 + 3 + 3 + 1 + 1 + MAX_NODE_NAME + 20 + 10;
/// Room for one user event or query in a datagram of the broadcast tree (they travel there,
/// never in foca's packets): the packet minus the tree frame's own header.
const MAX_TREE_ITEM_BYTES: usize = SWIM_PACKET_SIZE - 16;
/// The largest `max_event_bytes` (name + payload) that still fits one packet; larger
/// configurations are refused.
pub const MAX_EVENT_BYTES_CEILING: usize = 1100;
const _: () = assert!(MAX_EVENT_BYTES_CEILING + USER_EVENT_OVERHEAD <= MAX_TREE_ITEM_BYTES);
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

/// A user event's place in its origin's stream: the origin's process generation, and the
/// number the origin gave it (1, 2, 3, … within that generation). With the origin's name it
/// identifies the event (see `events.rs`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EventSeq {
    pub generation: u64,
    pub seq: u64,
}

/// One item spread through the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    Tags(TagRecord),
    /// A user event, its place in its origin's stream, and when its origin sent it (unix ms;
    /// 0 when relayed from push-pull).
    User {
        event: UserEvent,
        seq: EventSeq,
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
                for (key, value) in &t.tags {
                    check_tag_key(key).or_else(bad)?;
                    check_tag_value(key, value).or_else(bad)?;
                }
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

/// A query as it spreads through the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMsg {
    /// Query clock time at the asker.
    pub ltime: u64,
    /// Random per query; with `origin` it identifies the query.
    pub id: u32,
    pub name: String,
    pub payload: Vec<u8>,
    pub origin: String,
    /// Where acks and answers go.
    pub reply_to: SocketAddr,
    /// How long the asker waits; answers after that are pointless.
    pub timeout_ms: u32,
    /// When the asker stops waiting, on its clock (unix ms): a node refuses the query after
    /// that (plus the allowed clock skew), so a captured query cannot be run again later.
    pub deadline_unix_ms: u64,
    pub filter: QueryFilter,
    /// Whether matching nodes should ack on receipt.
    pub ack: bool,
}

/// What a node sends back to the asker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryReply {
    /// "I received the query and pass its filters."
    Ack { id: u32, from: String },
    /// A handler's answer (stdout of a handler that exited 0).
    Answer {
        id: u32,
        from: String,
        payload: Vec<u8>,
        truncated: bool,
    },
    /// This node will not answer (no handler for the query, or it failed); sent so the asker
    /// need not wait for it.
    NoAnswer {
        id: u32,
        from: String,
        reason: String,
    },
}

impl QueryReply {
    pub fn id(&self) -> u32 {
        match self {
            QueryReply::Ack { id, .. }
            | QueryReply::Answer { id, .. }
            | QueryReply::NoAnswer { id, .. } => *id,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![REPLY_VERSION];
        postcard::to_io(self, &mut out).expect("postcard encoding into a Vec");
        out
    }

    pub fn decode(data: &[u8]) -> Result<QueryReply, MessageError> {
        let (&version, body) = data.split_first().ok_or(MessageError::Empty)?;
        if version != REPLY_VERSION {
            return Err(MessageError::Version(version));
        }
        Ok(postcard::from_bytes(body)?)
    }
}

/// Size of a tag map as it travels (postcard encoding).
pub fn tags_size(tags: &Tags) -> usize {
    postcard::experimental::serialized_size(tags).unwrap_or(usize::MAX)
}

/// Tag keys: 1–64 bytes of letters, digits, `.`, `_` and `-` (they become `SERF_TAG_*`
/// environment variable names in handlers).
pub fn check_tag_key(key: &str) -> Result<(), String> {
    check_name(key, 64, "tag key", "")
}

/// Tag values: any text but `,` and control characters other than tab and newline. A handler
/// gets them in its environment (`SERF_TAG_*`), which cannot hold a NUL, and in member events'
/// stdin as `k=v,k=v`, where a comma inside a value could not be told from the list's own.
/// Tab and newline are written there as `\t` and `\n`, as Serf does; other control
/// characters would reach scripts and logs raw. `=` is fine: keys never contain one, so `k=v`
/// splits at the first `=`.
pub fn check_tag_value(key: &str, value: &str) -> Result<(), String> {
    let refused = |c: char| c == ',' || (c.is_control() && c != '\t' && c != '\n');
    match value.chars().find(|&c| refused(c)) {
        None => Ok(()),
        Some(',') => Err(format!(
            "the value {value:?} of tag {key:?} contains ',', which separates tags in a \
             handler's member list (name ip role k=v,k=v); use another separator, e.g. ';' or a \
             space"
        )),
        Some(c) => Err(format!(
            "the value {value:?} of tag {key:?} contains the control character {c:?}; a tag \
             value is text, with no control character but tab and newline"
        )),
    }
}

/// Node names: 1–64 bytes of letters, digits, `.`, `_` and `-`.
pub fn check_node_name(name: &str) -> Result<(), String> {
    check_name(name, MAX_NODE_NAME, "node name", "")
}

/// Event and query names: 1–128 bytes of letters, digits, `.`, `_`, `-` and `:`, starting with
/// a letter, a digit or `_`, without `..`. Handlers get them as `SERF_USER_EVENT` and
/// `SERF_QUERY_NAME`, which scripts put into paths and command lines: a `/` or `..` would make
/// a path of one, a leading `-` an option, a leading `.` a hidden file. (`:` and `.` are
/// enough to namespace names, e.g. `deploy:web.v2`.)
pub fn check_event_name(name: &str) -> Result<(), String> {
    check_name(name, MAX_EVENT_NAME, "event name", ":")?;
    if name.starts_with(['.', '-']) {
        return Err(format!(
            "event name {name:?} starts with {:?}; start it with a letter, a digit or '_'",
            &name[..1]
        ));
    }
    if name.contains("..") {
        return Err(format!(
            "event name {name:?} contains \"..\"; use letters, digits, '.', '_', '-' or ':' \
             without two dots in a row"
        ));
    }
    Ok(())
}

/// 1–`max` bytes of letters, digits, `.`, `_`, `-` and the characters in `extra`.
fn check_name(name: &str, max: usize, what: &str, extra: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > max {
        return Err(format!(
            "{what} {name:?} is {} bytes, the limit is {max}",
            name.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c);
    if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        let extra: String = extra.chars().map(|c| format!(", '{c}'")).collect();
        return Err(format!(
            "{what} {name:?} contains {c:?}; use letters, digits, '.', '_'{extra} or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_garbage_is_an_error() {
        let r = QueryReply::NoAnswer {
            id: 9,
            from: "x".into(),
            reason: "r".into(),
        };
        assert_eq!(QueryReply::decode(&r.encode()).unwrap(), r);
        assert!(QueryReply::decode(b"").is_err());
        assert!(QueryReply::decode(b"\x01\xff\xff\xff").is_err());
    }

    proptest::proptest! {
        #[test]
        fn reply_decoding_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500)) {
            let _ = QueryReply::decode(&data);
            let mut versioned = data.clone();
            versioned.insert(0, REPLY_VERSION);
            let _ = QueryReply::decode(&versioned);
        }
    }
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
            seq: EventSeq {
                generation: u64::MAX,
                seq: u64::MAX,
            },
            sent_unix_ms: u64::MAX,
        }
    }

    #[test]
    fn round_trip_and_worst_case_size() {
        let name = "n".repeat(MAX_EVENT_NAME);
        let msg = event(&name, MAX_EVENT_BYTES_CEILING - name.len());
        let bytes = msg.encode();
        assert!(bytes.len() <= MAX_TREE_ITEM_BYTES, "{} bytes", bytes.len());
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
            Broadcast::decode(b"\x02\xff\xff"),
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
        assert!(check_event_name("deploy:web.v2").is_ok());
        assert!(check_event_name("_internal-1").is_ok());
        assert!(check_event_name("bad name").is_err());
        for name in [
            "deploy:web/v2",
            "../../etc/cron.d/x",
            "a..b",
            "..",
            ".hidden",
            "-rf",
        ] {
            let err = check_event_name(name).unwrap_err();
            assert!(err.contains(&format!("{name:?}")), "{err}");
        }
        assert!(check_event_name("a/b").unwrap_err().contains("'/'"));
    }

    #[test]
    fn tag_values_are_text_without_commas_or_unescaped_control_characters() {
        for ok in ["", "web", "a=b", "x y; z", "é ü", "tab\there", "two\nlines"] {
            assert!(check_tag_value("k", ok).is_ok(), "{ok:?}");
        }
        assert!(check_tag_value("zones", "a,b").unwrap_err().contains("','"));
        for bad in ["a\0b", "a\rb", "\u{1b}[31m", "\u{7f}"] {
            let err = check_tag_value("k", bad).unwrap_err();
            assert!(err.contains("control character"), "{err}");
        }
    }

    #[test]
    fn tag_records_with_invalid_keys_or_values_are_refused_from_the_wire() {
        for (key, value) in [("zones", "a,b"), ("note", "a\0b"), ("bad key", "v")] {
            let record = Broadcast::Tags(TagRecord {
                node: "web-1".into(),
                version: TagVersion::default(),
                tags: [(key.to_string(), value.to_string())].into(),
                addr: None,
            });
            assert!(
                matches!(
                    Broadcast::decode(&record.encode()),
                    Err(MessageError::Invalid(_))
                ),
                "{key}={value:?}"
            );
        }
    }
}
