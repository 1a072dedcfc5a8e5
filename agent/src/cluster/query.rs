//! Queries: a broadcast like a user event, plus filters (which nodes should answer), a
//! timeout, and the asker's address. Nodes that pass the filters ack at once and send their
//! answer straight back to the asker over UDP. The asker knows from its member table which
//! nodes should answer, so it finishes as soon as all of them have — it does not sit out the
//! timeout when every answer is in.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use regex::Regex;
use rumor_handlers::event::Tags;
use serde::{Deserialize, Serialize};

use super::message::MessageError;
use crate::payload::Payload;

/// Names starting with this are rumor's own queries; the public API refuses them.
pub const INTERNAL_PREFIX: &str = "_rumor_";
/// The internal query behind `rumor reachability`: every node answers at once.
pub const PING: &str = "_rumor_ping";
/// Internal queries behind `rumor keys`: each node answers with its keys (a JSON list,
/// primary first) after applying the change, or with the error.
pub const KEYS_LIST: &str = "_rumor_keys_list";
pub const KEYS_INSTALL: &str = "_rumor_keys_install";
pub const KEYS_USE: &str = "_rumor_keys_use";
pub const KEYS_REMOVE: &str = "_rumor_keys_remove";

/// Version of the reply encoding.
const REPLY_VERSION: u8 = 1;
/// Largest `max_response_bytes`: an answer plus its header must fit one UDP packet.
pub const MAX_RESPONSE_BYTES_CEILING: usize = 1200;
/// Appended to an answer cut to the size limit.
pub const TRUNCATED_MARKER: &[u8] = b"...[truncated]";

/// Which nodes should answer: all listed names (none listed = any name) and every tag regex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryFilter {
    pub nodes: Vec<String>,
    /// (tag key, regular expression the whole value must match)
    pub tags: Vec<(String, String)>,
}

/// A filter with its regular expressions compiled.
pub struct CompiledFilter {
    nodes: Vec<String>,
    tags: Vec<(String, Regex)>,
}

impl QueryFilter {
    /// Compiles the tag expressions, anchored at both ends as Serf does.
    pub fn compile(&self) -> Result<CompiledFilter, String> {
        let tags = self
            .tags
            .iter()
            .map(|(key, expr)| {
                Regex::new(&format!("^(?:{expr})$"))
                    .map(|re| (key.clone(), re))
                    .map_err(|e| format!("invalid regular expression for tag {key:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(CompiledFilter {
            nodes: self.nodes.clone(),
            tags,
        })
    }
}

impl CompiledFilter {
    pub fn matches(&self, name: &str, tags: &Tags) -> bool {
        (self.nodes.is_empty() || self.nodes.iter().any(|n| n == name))
            && self
                .tags
                .iter()
                .all(|(key, re)| tags.get(key).is_some_and(|v| re.is_match(v)))
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

/// Cuts an answer to `limit` bytes, ending it with [`TRUNCATED_MARKER`]. Returns whether it cut.
pub fn truncate_answer(payload: &mut Vec<u8>, limit: usize) -> bool {
    if payload.len() <= limit {
        return false;
    }
    let keep = limit.saturating_sub(TRUNCATED_MARKER.len());
    payload.truncate(keep);
    payload.extend_from_slice(&TRUNCATED_MARKER[..TRUNCATED_MARKER.len().min(limit)]);
    true
}

/// What the asker reports while a query runs; the control API streams these as NDJSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum QueryUpdate {
    /// Sent first: the nodes expected to answer, and how long the asker waits.
    Started {
        expected: Vec<String>,
        timeout_ms: u64,
    },
    Ack {
        node: String,
    },
    /// A node's answer; `truncated`: the node cut it to `max_response_bytes`.
    Answer {
        node: String,
        payload: Payload,
        truncated: bool,
    },
    /// A node that passed the filters but will not answer (no handler, or all failed).
    NoAnswer {
        node: String,
        reason: String,
    },
    /// The query is over: every expected node answered, or the timeout passed.
    Done {
        timed_out: bool,
        /// Expected nodes that sent no answer.
        missing: Vec<String>,
    },
}

/// The asker's bookkeeping for one query.
pub struct PendingQuery {
    expected: BTreeSet<String>,
    acked: BTreeSet<String>,
    answered: BTreeSet<String>,
}

impl PendingQuery {
    /// `expected`: the members that pass the filter as far as the asker knows.
    pub fn new(expected: BTreeSet<String>) -> Self {
        PendingQuery {
            expected,
            acked: BTreeSet::new(),
            answered: BTreeSet::new(),
        }
    }

    /// Takes a reply; returns what to report (copies are dropped).
    pub fn on_reply(&mut self, reply: QueryReply) -> Option<QueryUpdate> {
        match reply {
            QueryReply::Ack { from, .. } => {
                // A node we did not expect (new, or its tags changed) acked: wait for it too.
                self.expected.insert(from.clone());
                self.acked
                    .insert(from.clone())
                    .then_some(QueryUpdate::Ack { node: from })
            }
            QueryReply::Answer {
                from,
                payload,
                truncated,
                ..
            } => self
                .answered
                .insert(from.clone())
                .then_some(QueryUpdate::Answer {
                    node: from,
                    payload: Payload(payload),
                    truncated,
                }),
            QueryReply::NoAnswer { from, reason, .. } => self
                .answered
                .insert(from.clone())
                .then_some(QueryUpdate::NoAnswer { node: from, reason }),
        }
    }

    pub fn expected(&self) -> Vec<String> {
        self.expected.iter().cloned().collect()
    }

    /// Expected nodes that have not answered (nor said they will not) yet.
    pub fn silent(&self) -> Vec<String> {
        self.expected.difference(&self.answered).cloned().collect()
    }

    /// Every expected node has answered (or said it will not).
    pub fn complete(&self) -> bool {
        self.expected.is_subset(&self.answered)
    }

    pub fn done(&self, timed_out: bool) -> QueryUpdate {
        QueryUpdate::Done {
            timed_out,
            missing: self.silent(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_match_names_and_anchored_tag_regexes() {
        let f = QueryFilter {
            nodes: vec![],
            tags: vec![("role".into(), "db|cache".into())],
        }
        .compile()
        .unwrap();
        assert!(f.matches("a", &tags(&[("role", "db")])));
        assert!(!f.matches("a", &tags(&[("role", "dbx")])), "anchored");
        assert!(!f.matches("a", &tags(&[])), "missing tag never matches");
        let f = QueryFilter {
            nodes: vec!["b".into()],
            tags: vec![],
        }
        .compile()
        .unwrap();
        assert!(f.matches("b", &tags(&[])) && !f.matches("a", &tags(&[])));
        let err = QueryFilter {
            nodes: vec![],
            tags: vec![("role".into(), "(".into())],
        }
        .compile()
        .err()
        .unwrap();
        assert!(err.contains("role"), "{err}");
    }

    #[test]
    fn completes_when_every_expected_and_acking_node_answered() {
        let mut q = PendingQuery::new(["a".to_string(), "b".to_string()].into());
        let ack = |from: &str| QueryReply::Ack {
            id: 1,
            from: from.into(),
        };
        let answer = |from: &str| QueryReply::Answer {
            id: 1,
            from: from.into(),
            payload: b"up".to_vec(),
            truncated: false,
        };
        assert!(q.on_reply(ack("a")).is_some());
        assert!(q.on_reply(ack("a")).is_none(), "copies dropped");
        assert!(
            q.on_reply(ack("c")).is_some(),
            "unexpected acker is waited for"
        );
        assert!(q.on_reply(answer("a")).is_some());
        assert!(q.on_reply(answer("a")).is_none());
        let no = QueryReply::NoAnswer {
            id: 1,
            from: "b".into(),
            reason: "no handler".into(),
        };
        assert!(q.on_reply(no).is_some());
        assert!(!q.complete());
        assert_eq!(q.silent(), ["c"], "the ones to ask again");
        assert_eq!(
            q.done(true),
            QueryUpdate::Done {
                timed_out: true,
                missing: vec!["c".into()]
            }
        );
        q.on_reply(answer("c"));
        assert!(q.complete());
    }

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

    #[test]
    fn long_answers_are_cut_with_a_marker() {
        let mut p = vec![b'x'; 50];
        assert!(!truncate_answer(&mut p, 50));
        assert!(truncate_answer(&mut p, 20));
        assert_eq!(p.len(), 20);
        assert!(p.ends_with(TRUNCATED_MARKER));
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
}
