//! Both sides of queries. The asker broadcasts the query, collects acks and answers sent
//! straight back, asks silent nodes again with a doubling wait, and finishes as soon as every
//! expected node answered or at the deadline. A node that receives a query acks it if it
//! passes the filter, hands it to its handlers (or answers rumor's own queries itself), and
//! keeps its answer until the deadline so an asker that lost it gets it again without the
//! handler running twice.
//!
//! [`Queries`] is the bookkeeping of both sides; the `impl Node` below wires it to the
//! broadcast and the effects. The formats are in `message.rs` ([`QueryMsg`], [`QueryReply`])
//! and the asker's tally of one query in `query.rs` ([`PendingQuery`]).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumor_handlers::event::{Event, QueryEvent};
use tracing::{debug, warn};

use super::effect::{Effect, Tick};
use super::message::{self, Broadcast, QueryMsg, QueryReply};
use super::query::{self, PendingQuery, QueryUpdate};
use super::state::unix_ms;
use super::views::{QueryParams, Status};
use super::{Node, Now};
use crate::cluster::error::ClusterError;
use crate::cluster::wire::Kind;

/// Most answers kept for re-asks at once (each at most `max_response_bytes` and a header).
const MAX_KEPT_ANSWERS: usize = 1024;

/// A query we asked, waiting for answers.
struct Asked {
    pending: PendingQuery,
    /// The query as broadcast, to ask silent nodes again.
    broadcast: Vec<u8>,
    deadline: Instant,
    /// Wait before the next re-ask (doubles each time).
    reask_after: Duration,
}

/// A query we received and may still answer.
struct Received {
    reply_to: SocketAddr,
    deadline: Instant,
}

/// Our answer to a query, kept until its deadline.
struct Answered {
    reply_to: SocketAddr,
    reply: Vec<u8>,
    deadline: Instant,
}

/// What the node does with a query that reached it straight from its asker.
enum AskedAgain {
    /// We answered already: send the kept answer again.
    Resend { to: SocketAddr, reply: Vec<u8> },
    /// Still running here: say so again (the ack may be what was lost).
    Running,
    /// Never got it, or forgot it.
    Unknown,
}

/// Queries this node asked, and queries it received, by id.
#[derive(Default)]
pub struct Queries {
    asked: HashMap<u32, Asked>,
    received: HashMap<(String, u32), Received>,
    answered: HashMap<(String, u32), Answered>,
}

impl Queries {
    fn asked_again(&self, origin: &str, id: u32) -> AskedAgain {
        let key = (origin.to_string(), id);
        if let Some(kept) = self.answered.get(&key) {
            return AskedAgain::Resend {
                to: kept.reply_to,
                reply: kept.reply.clone(),
            };
        }
        if self.received.contains_key(&key) {
            return AskedAgain::Running;
        }
        AskedAgain::Unknown
    }

    /// Takes our answer to a received query: where to send it, unless the query is over.
    fn take_received(&mut self, origin: &str, id: u32, now: Instant) -> Option<Received> {
        let received = self.received.remove(&(origin.to_string(), id))?;
        (received.deadline > now).then_some(received)
    }

    /// Keeps an answer sent, so a re-ask gets it again (bounded).
    fn keep_answer(&mut self, origin: String, id: u32, sent: Answered) {
        if self.answered.len() < MAX_KEPT_ANSWERS {
            self.answered.insert((origin, id), sent);
        }
    }

    /// Forgets received queries and kept answers whose asker stopped waiting.
    pub(super) fn expire(&mut self, now: Instant) {
        self.received.retain(|_, r| r.deadline > now);
        self.answered.retain(|_, a| a.deadline > now);
    }
}

impl Node {
    /// Sends a query; acks and answers come as [`Effect::Query`] with the returned id, the
    /// first being [`QueryUpdate::Started`] and the last [`QueryUpdate::Done`].
    pub fn ask_query(&mut self, params: QueryParams, now: Now) -> Result<u32, ClusterError> {
        self.tick_clock(now);
        message::check_event_name(&params.name).map_err(ClusterError::InvalidQuery)?;
        let size = params.name.len() + params.payload.len();
        if size > self.config.max_event_bytes {
            return Err(ClusterError::EventTooLarge {
                size,
                limit: self.config.max_event_bytes,
            });
        }
        let filter = params
            .filter
            .compile()
            .map_err(ClusterError::InvalidQuery)?;
        let (expected, ltime, origin, alive) = {
            let mut state = self.state.lock();
            let expected: BTreeSet<String> = state
                .members
                .iter()
                .filter(|m| m.status == Status::Alive && filter.matches(&m.id.name, &m.tags))
                .map(|m| m.id.name.clone())
                .collect();
            let alive = state.members.count(Status::Alive);
            let origin = state.members.local().id.name.clone();
            (expected, state.query_clock.tick(), origin, alive)
        };
        let timeout = params
            .timeout
            .unwrap_or_else(|| self.config.profile.query_timeout(alive));
        if timeout > query::MAX_QUERY_TIMEOUT {
            return Err(ClusterError::InvalidQuery(format!(
                "a timeout of {} is longer than a query may wait ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(query::MAX_QUERY_TIMEOUT)
            )));
        }
        let id = loop {
            let id = rand::RngExt::random::<u32>(&mut self.rng);
            if !self.queries.asked.contains_key(&id) {
                break id;
            }
        };
        let msg = Broadcast::Query(QueryMsg {
            ltime,
            id,
            name: params.name,
            payload: params.payload,
            origin,
            reply_to: self.foca.identity().addr,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            deadline_unix_ms: unix_ms(now.wall + timeout),
            filter: params.filter,
            ack: params.ack,
        });
        let encoded = msg.encode();
        if encoded.len() > message::MAX_BROADCAST_BYTES {
            return Err(ClusterError::QueryTooLarge {
                size: encoded.len(),
                limit: message::MAX_BROADCAST_BYTES,
            });
        }
        let pending = PendingQuery::new(expected);
        let update = QueryUpdate::Started {
            expected: pending.expected(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.effects.push(Effect::Query { id, update });
        let reask_after = self.config.profile.query_reask_first();
        self.queries.asked.insert(
            id,
            Asked {
                pending,
                broadcast: encoded,
                deadline: now.mono + timeout,
                reask_after,
            },
        );
        self.effects
            .timer(now.mono + timeout, Tick::QueryDeadline(id));
        self.effects
            .timer(now.mono + reask_after, Tick::QueryReask(id));
        // We apply our own copy like any node: ack and answer it.
        self.add_broadcast(msg);
        if self
            .queries
            .asked
            .get(&id)
            .is_some_and(|a| a.pending.complete())
        {
            self.finish_query(id, false);
        }
        Ok(id)
    }

    pub(super) fn on_query_reply(&mut self, reply: QueryReply) {
        let id = reply.id();
        let Some(asked) = self.queries.asked.get_mut(&id) else {
            return; // finished or unknown: a late or stray reply
        };
        if let Some(update) = asked.pending.on_reply(reply) {
            self.effects.push(Effect::Query { id, update });
        }
        if asked.pending.complete() {
            self.finish_query(id, false);
        }
    }

    /// Sends our query again, straight to each expected node that has not answered: the
    /// broadcast may have missed it, or its answer may have been lost. A node that has the
    /// query already acks again, or sends its kept answer again; one that never got it runs
    /// it now. Then waits twice as long for the next round, until the query's deadline.
    pub(super) fn reask(&mut self, id: u32) {
        let now = self.now.mono;
        let Some(asked) = self.queries.asked.get_mut(&id) else {
            return; // finished
        };
        let silent = asked.pending.silent();
        let broadcast = asked.broadcast.clone();
        asked.reask_after *= 2;
        if now + asked.reask_after < asked.deadline {
            let at = now + asked.reask_after;
            self.effects.timer(at, Tick::QueryReask(id));
        }
        let addrs: Vec<SocketAddr> = {
            let state = self.state.lock();
            silent
                .iter()
                .filter_map(|name| state.members.get(name))
                .filter(|m| m.status == Status::Alive)
                .map(|m| m.id.addr)
                .collect()
        };
        if !addrs.is_empty() {
            debug!(id, nodes = addrs.len(), "asking silent nodes again");
        }
        self.state.lock().counters.query_reasks += addrs.len() as u64;
        for addr in addrs {
            self.effects.send(addr, Kind::Query, broadcast.clone());
        }
    }

    /// A query sent straight to us because the asker has no answer from us yet.
    pub(super) fn on_query_asked_again(&mut self, q: QueryMsg) {
        match self.queries.asked_again(&q.origin, q.id) {
            AskedAgain::Resend { to, reply } => self.effects.send(to, Kind::QueryReply, reply),
            AskedAgain::Running => {
                if q.ack {
                    let from = self.state.lock().members.local().id.name.clone();
                    let ack = QueryReply::Ack { id: q.id, from };
                    self.effects
                        .send(q.reply_to, Kind::QueryReply, ack.encode());
                }
            }
            AskedAgain::Unknown => {
                // Take it like a broadcast one, without spreading it further.
                let now = self.now.wall;
                if self.state.lock().receive(Broadcast::Query(q), now) {
                    self.flush();
                }
            }
        }
    }

    pub(super) fn finish_query(&mut self, id: u32, timed_out: bool) {
        if let Some(asked) = self.queries.asked.remove(&id) {
            let update = asked.pending.done(timed_out);
            self.effects.push(Effect::Query { id, update });
        }
    }

    /// A query reached us: ack it if we pass its filter, then answer it (rumor's own
    /// queries) or hand it to the handlers.
    pub(super) fn accept_query(&mut self, q: QueryMsg) {
        let (name, tags) = {
            let state = self.state.lock();
            let me = state.members.local();
            (me.id.name.clone(), me.tags.clone())
        };
        match q.filter.compile() {
            Ok(filter) if filter.matches(&name, &tags) => {}
            Ok(_) => return,
            Err(e) => {
                debug!(query = %q.name, origin = %q.origin, "ignoring query with a bad filter: {e}");
                return;
            }
        }
        if q.ack {
            let ack = QueryReply::Ack {
                id: q.id,
                from: name.clone(),
            };
            self.effects
                .send(q.reply_to, Kind::QueryReply, ack.encode());
        }
        let deadline = self.now.mono + Duration::from_millis(u64::from(q.timeout_ms));
        self.queries.received.insert(
            (q.origin.clone(), q.id),
            Received {
                reply_to: q.reply_to,
                deadline,
            },
        );
        match q.name.as_str() {
            query::PING => self.respond(q.origin, q.id, Ok(b"pong".to_vec()), self.now),
            name if name.starts_with(query::INTERNAL_PREFIX) => {
                self.effects.push(Effect::KeyQuery {
                    origin: q.origin,
                    id: q.id,
                    ltime: q.ltime,
                    name: q.name,
                    payload: q.payload,
                });
            }
            _ => self.state.lock().outbox.push(Event::Query(QueryEvent {
                ltime: q.ltime,
                id: q.id,
                name: q.name,
                payload: q.payload,
                origin: q.origin,
            })),
        }
    }

    /// This node's answer to a query it received (`Err`: it will not answer, and why), cut
    /// to the response limit. Answers after the query's deadline are dropped.
    pub fn respond(&mut self, origin: String, id: u32, answer: Result<Vec<u8>, String>, now: Now) {
        self.tick_clock(now);
        let Some(received) = self.queries.take_received(&origin, id, now.mono) else {
            debug!(%origin, id, "answer for a query that is over or unknown: dropped");
            return;
        };
        let from = self.state.lock().members.local().id.name.clone();
        let reply = match answer {
            Ok(mut payload) => {
                let limit = self.config.max_response_bytes;
                let truncated = query::truncate_answer(&mut payload, limit);
                if truncated {
                    warn!(%origin, id, limit, "query answer longer than max_response_bytes: truncated");
                }
                QueryReply::Answer {
                    id,
                    from,
                    payload,
                    truncated,
                }
            }
            Err(reason) => QueryReply::NoAnswer { id, from, reason },
        };
        let encoded = reply.encode();
        self.effects
            .send(received.reply_to, Kind::QueryReply, encoded.clone());
        let kept = Answered {
            reply_to: received.reply_to,
            reply: encoded,
            deadline: received.deadline,
        };
        self.queries.keep_answer(origin, id, kept);
    }
}
