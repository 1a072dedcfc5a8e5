//! Queries: a broadcast like a user event, plus filters (which nodes should answer), a
//! timeout, and the asker's address. Nodes that pass the filters ack at once and send their
//! answer straight back to the asker over UDP. The asker knows from its member table which
//! nodes should answer, so it finishes as soon as all of them have — it does not sit out the
//! timeout when every answer is in.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::filter::{CompiledFilter, QueryFilter};
use super::message::{QueryMsg, QueryReply};
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

/// Largest `max_response_bytes`: an answer plus its header must fit one UDP packet.
pub const MAX_RESPONSE_BYTES_CEILING: usize = 1200;
/// Appended to an answer cut to the size limit.
pub const TRUNCATED_MARKER: &[u8] = b"...[truncated]";

/// How far the clocks of two members may disagree for a query still to be taken: a query is
/// refused once its asker's deadline is this far in the past on the receiver's clock.
pub const QUERY_CLOCK_SKEW: Duration = Duration::from_secs(5);
/// The longest a query may wait for answers (and so be remembered by every node).
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most queries remembered at once; beyond it new queries are refused rather than old ones
/// forgotten (forgetting one would let a copy of it run again).
const MAX_REMEMBERED_QUERIES: usize = 65_536;

/// Why a node does not take a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A copy of one already taken.
    Copy,
    /// Its deadline has passed (a late copy, or a captured query sent again).
    Expired,
    /// It was sent before this process started: it was meant for an earlier one.
    BeforeStart,
    /// Its deadline is further away than any query may wait.
    TooLong,
    /// Too many queries are waiting for their deadlines already.
    Full,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Copy => "a copy",
            Refused::Expired => "its deadline has passed",
            Refused::BeforeStart => "it was sent before this agent started",
            Refused::TooLong => "its deadline is further away than a query may wait",
            Refused::Full => "too many queries are waiting for their deadlines",
        }
    }
}

/// The queries a node has taken, each remembered until its deadline (plus the allowed clock
/// skew) has passed, so that neither a copy nor a captured query sent again ever runs twice.
/// Time here is the wall clock in unix milliseconds: deadlines are the askers'.
#[derive(Debug)]
pub struct SeenQueries {
    seen: HashSet<(String, u32)>,
    /// (forget after, key): the soonest first.
    expiry: BinaryHeap<Reverse<(u64, (String, u32))>>,
    /// When this process started: queries sent before it were meant for an earlier one.
    started_ms: u64,
}

impl SeenQueries {
    pub fn new(started_ms: u64) -> SeenQueries {
        SeenQueries {
            seen: HashSet::new(),
            expiry: BinaryHeap::new(),
            started_ms,
        }
    }

    /// Takes `q` (it is news, to run) or says why not.
    pub fn admit(&mut self, q: &QueryMsg, now_ms: u64) -> Result<(), Refused> {
        let skew = QUERY_CLOCK_SKEW.as_millis() as u64;
        self.forget_expired(now_ms);
        let key = (q.origin.clone(), q.id);
        if self.seen.contains(&key) {
            return Err(Refused::Copy);
        }
        if q.deadline_unix_ms.saturating_add(skew) < now_ms {
            return Err(Refused::Expired);
        }
        let sent_ms = q.deadline_unix_ms.saturating_sub(u64::from(q.timeout_ms));
        if sent_ms.saturating_add(skew) < self.started_ms {
            return Err(Refused::BeforeStart);
        }
        let longest = (MAX_QUERY_TIMEOUT + QUERY_CLOCK_SKEW).as_millis() as u64;
        if q.deadline_unix_ms > now_ms.saturating_add(longest) {
            return Err(Refused::TooLong);
        }
        if self.seen.len() >= MAX_REMEMBERED_QUERIES {
            return Err(Refused::Full);
        }
        self.seen.insert(key.clone());
        let forget_at = q.deadline_unix_ms.saturating_add(skew);
        self.expiry.push(Reverse((forget_at, key)));
        Ok(())
    }

    fn forget_expired(&mut self, now_ms: u64) {
        while let Some(Reverse((at, _))) = self.expiry.peek() {
            if *at >= now_ms {
                break;
            }
            if let Some(Reverse((_, key))) = self.expiry.pop() {
                self.seen.remove(&key);
            }
        }
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
    fn long_answers_are_cut_with_a_marker() {
        let mut p = vec![b'x'; 50];
        assert!(!truncate_answer(&mut p, 50));
        assert!(truncate_answer(&mut p, 20));
        assert_eq!(p.len(), 20);
        assert!(p.ends_with(TRUNCATED_MARKER));
    }

    fn query(id: u32, deadline_unix_ms: u64, timeout_ms: u32) -> QueryMsg {
        QueryMsg {
            ltime: 1,
            id,
            name: "q".into(),
            payload: vec![],
            origin: "asker".into(),
            reply_to: "127.0.0.1:1".parse().unwrap(),
            timeout_ms,
            deadline_unix_ms,
            filter: QueryFilter::default(),
            ack: false,
        }
    }

    #[test]
    fn a_query_runs_once_and_never_after_its_deadline_or_before_this_start() {
        let start = 1_000_000;
        let mut seen = SeenQueries::new(start);
        let q = query(1, start + 10_000, 5_000);
        assert_eq!(seen.admit(&q, start + 6_000), Ok(()));
        assert_eq!(seen.admit(&q, start + 7_000), Err(Refused::Copy));
        // Long after: forgotten, but refused by its deadline, not run again.
        assert_eq!(seen.admit(&q, start + 60_000), Err(Refused::Expired));
        // Within the skew allowance a late copy is still recognised as a copy.
        let late = query(2, start + 20_000, 5_000);
        assert_eq!(seen.admit(&late, start + 24_000), Ok(()));
        assert_eq!(seen.admit(&late, start + 24_500), Err(Refused::Copy));
        // Captured before this process started, sent again after it: refused.
        let restarted = SeenQueries::new(start + 30_000)
            .admit(&query(3, start + 40_000, 20_000), start + 31_000);
        assert_eq!(restarted, Err(Refused::BeforeStart));
        // A deadline further than any query may wait.
        let far = start + MAX_QUERY_TIMEOUT.as_millis() as u64 * 2;
        assert_eq!(
            seen.admit(&query(4, far, 5_000), start + 1),
            Err(Refused::TooLong)
        );
    }
}
