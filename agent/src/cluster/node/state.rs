//! What the cluster knows beyond foca's member list — the member table, the user events'
//! streams, the queries taken, the clocks — and the foca `BroadcastHandler` that feeds it.
//!
//! foca owns its broadcast handler, so the state is shared between the handler and the actor
//! behind a mutex. Both run on the actor task, one at a time: the lock is never contended,
//! and the actor never holds it across a call into foca.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rumor_handlers::event::{Event, Tags, UserEvent};
use tracing::{debug, warn};

use super::events::{EventStreams, Observed, Retention, StreamSummary};
use super::identity::NodeId;
use super::lamport::LamportClock;
use super::latency::LatencyHistogram;
use super::members::MemberTable;
use super::message::{Broadcast, BroadcastKey, EventSeq, MessageError, QueryMsg, SuspectReport};
use super::query::SeenQueries;
use super::recent::RecentSet;
use super::runtime::SwimRuntime;
use super::views::Counters;

/// How many suspicion reports are remembered to recognise copies of them.
const SUSPECT_MEMORY: usize = 4096;
/// Bound on user events held while a first join is in flight.
const MAX_HELD_EVENTS: usize = 1024;

/// The cluster's state apart from foca's.
pub struct ClusterState {
    pub members: MemberTable,
    pub events: EventStreams,
    pub event_clock: LamportClock,
    pub query_clock: LamportClock,
    queries: SeenQueries,
    /// New queries for the actor to ack, filter and hand to the handlers.
    pub query_inbox: Vec<QueryMsg>,
    recent_suspicions: RecentSet<(NodeId, foca::Incarnation, String)>,
    /// New suspicion reports (ours included) for the actor to count and act on.
    pub suspect_inbox: Vec<SuspectReport>,
    /// Nodes announced by their own tag record that we had never heard of: the actor adds
    /// them to foca's membership.
    pub joins_inbox: Vec<NodeId>,
    /// While a node's first join is in flight, user events wait here: only the join answer
    /// says which of them are history (sent before we joined) and must not run handlers.
    held_events: Option<Vec<(UserEvent, EventSeq)>>,
    /// Events for the local handlers, drained by the actor.
    pub outbox: Vec<Event>,
    /// A new broadcast arrived: the actor relays it at once instead of waiting for gossip.
    pub relay: bool,
    /// Encoded user events for the actor to spread on the broadcast tree.
    pub tree_inbox: Vec<Vec<u8>>,
    pub counters: Counters,
    /// Send-to-receipt time of user events that reached this node by gossip.
    pub event_latency: LatencyHistogram,
    /// The wall-clock time of the input being handled (the node sets it), for what foca's
    /// broadcast handler applies: foca calls it without a time.
    pub now: SystemTime,
}

impl ClusterState {
    /// A node that started at `now`, keeping user events for others as `retention` says.
    pub fn new(local: NodeId, tags: Tags, retention: Retention, now: SystemTime) -> Self {
        ClusterState {
            members: MemberTable::new(local, tags, now),
            events: EventStreams::new(retention),
            event_clock: LamportClock::default(),
            query_clock: LamportClock::default(),
            queries: SeenQueries::new(unix_ms(now)),
            query_inbox: Vec::new(),
            recent_suspicions: RecentSet::new(SUSPECT_MEMORY),
            suspect_inbox: Vec::new(),
            joins_inbox: Vec::new(),
            held_events: None,
            outbox: Vec::new(),
            relay: false,
            tree_inbox: Vec::new(),
            counters: Counters::default(),
            event_latency: LatencyHistogram::default(),
            now,
        }
    }

    /// Applies one broadcast; returns whether it was news (and so should be spread further).
    pub fn receive(&mut self, msg: Broadcast, now: SystemTime) -> bool {
        match msg {
            Broadcast::Tags(record) => {
                let announced = record
                    .addr
                    .filter(|_| self.members.get(&record.node).is_none());
                let id = announced.map(|addr| NodeId {
                    name: record.node.clone(),
                    addr,
                    generation: record.version.generation,
                });
                let (news, events) = self.members.apply_tags(record, now);
                if news && let Some(id) = id {
                    self.joins_inbox.push(id);
                }
                self.outbox.extend(events);
                news
            }
            Broadcast::Leave(intent) => {
                let (news, events) = self.members.apply_leave(&intent, now);
                self.outbox.extend(events);
                news
            }
            Broadcast::Query(query) => {
                if let Err(why) = self.queries.admit(&query, unix_ms(now)) {
                    if why != super::query::Refused::Copy {
                        self.counters.queries_refused += 1;
                        warn!(query = %query.name, origin = %query.origin, id = query.id, "query refused: {}", why.as_str());
                    }
                    return false;
                }
                self.query_clock.witness(query.ltime);
                self.query_inbox.push(query);
                true
            }
            Broadcast::Suspect(report) => {
                let key = (
                    report.member.clone(),
                    report.incarnation,
                    report.reporter.clone(),
                );
                if !self.recent_suspicions.insert(key) {
                    return false;
                }
                self.suspect_inbox.push(report);
                true
            }
            Broadcast::User {
                event,
                seq,
                sent_unix_ms,
            } => {
                if let Some(held) = self.held_events.as_mut() {
                    if held.len() < MAX_HELD_EVENTS {
                        held.push((event, seq));
                    }
                    return false; // decided (and spread) once the join answer is in
                }
                self.counters.events_received += 1;
                self.event_clock.witness(event.ltime);
                match self.events.observe(&event, seq, now) {
                    Observed::New => {
                        // Our own events reach us at once: only others' say anything.
                        if sent_unix_ms > 0 && event.origin != self.members.local().id.name {
                            self.event_latency
                                .observe(unix_ms(now).saturating_sub(sent_unix_ms));
                        }
                        debug!(name = %event.name, ltime = event.ltime, origin = %event.origin, seq = seq.seq, "user event");
                        self.outbox.push(Event::User(event));
                        true
                    }
                    Observed::Duplicate => {
                        self.counters.events_duplicate += 1;
                        false
                    }
                }
            }
        }
    }
}

impl ClusterState {
    /// A first join starts: hold user events until [`ClusterState::release_events`].
    pub fn hold_events(&mut self) {
        self.held_events.get_or_insert_with(Vec::new);
    }

    pub fn holding_events(&self) -> bool {
        self.held_events.is_some()
    }

    /// The first join is over: what the answering peer had delivered (`history`: its
    /// streams) is history; the held events are decided now. With `None` (the join failed)
    /// they are all treated as news.
    pub fn release_events(&mut self, history: Option<&[StreamSummary]>, now: SystemTime) {
        if let Some(streams) = history {
            self.events.adopt_history(streams, now);
        }
        for (event, seq) in self.held_events.take().unwrap_or_default() {
            let msg = Broadcast::User {
                event,
                seq,
                sent_unix_ms: 0,
            };
            let encoded = msg.encode();
            if self.receive(msg, now) {
                // Spread on the tree (a copy that came by the tree was passed on already and
                // is recognised there; one sent here while the join was in flight was not).
                self.tree_inbox.push(encoded);
            }
        }
    }
}

/// Unix milliseconds of a wall-clock time (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The foca instance every node runs.
pub type SwimNode = foca::Foca<NodeId, foca::PostcardCodec, rand::rngs::StdRng, SharedState>;

/// Eager relay rounds for what rides foca (tags, leave intents, suspicion reports; user events
/// and queries travel the broadcast tree): each `foca.broadcast()` pushes the new items to 3
/// random members, so 2 rounds reach about 6. With one round some nodes of a 50-node cluster
/// were never picked and waited for periodic gossip (a tail the benchmark showed).
pub const EAGER_RELAY_ROUNDS: usize = 2;

/// Pushes what is new in the broadcast backlog to a few random members at once, instead of
/// waiting for the next gossip round.
pub fn relay_eagerly(foca: &mut SwimNode, runtime: &mut SwimRuntime) -> Result<(), foca::Error> {
    for _ in 0..EAGER_RELAY_ROUNDS {
        foca.broadcast(&mut *runtime)?;
    }
    Ok(())
}

/// The state as foca's broadcast handler and the actor share it.
#[derive(Clone)]
pub struct SharedState(Arc<Mutex<ClusterState>>);

impl SharedState {
    pub fn new(state: ClusterState) -> Self {
        SharedState(Arc::new(Mutex::new(state)))
    }

    pub fn lock(&self) -> MutexGuard<'_, ClusterState> {
        // A panic while holding the lock is a bug; keep serving with what is there.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl foca::BroadcastHandler<NodeId> for SharedState {
    type Key = BroadcastKey;
    type Error = MessageError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeId>,
    ) -> Result<Option<BroadcastKey>, MessageError> {
        let msg = Broadcast::decode(data)?;
        let key = msg.key();
        let mut state = self.lock();
        let now = state.now;
        if state.receive(msg, now) {
            state.relay = true;
            Ok(Some(key))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `seq`th event of node "seed".
    fn event(seq: u64, name: &str) -> Broadcast {
        Broadcast::User {
            event: UserEvent {
                ltime: seq,
                name: name.into(),
                payload: vec![],
                coalesce: true,
                origin: "seed".into(),
            },
            seq: EventSeq { generation: 1, seq },
            sent_unix_ms: 0,
        }
    }

    fn state(name: &str) -> ClusterState {
        let local = NodeId {
            name: name.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
        };
        ClusterState::new(local, Tags::new(), Retention::default(), SystemTime::now())
    }

    fn delivered(state: &mut ClusterState) -> Vec<String> {
        state
            .outbox
            .drain(..)
            .filter_map(|e| match e {
                Event::User(u) => Some(u.name),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn events_gossiped_during_the_first_join_are_sorted_by_the_join_answer() {
        let mut seed = state("seed");
        let now = SystemTime::now();
        for n in 1..=5 {
            seed.receive(event(n, "history"), now);
        }
        let mut state = state("new");
        state.hold_events();
        // Gossip from the seed overtakes the join answer: one old event, one new one.
        assert!(!state.receive(event(3, "history"), now));
        assert!(!state.receive(event(9, "fresh"), now));
        assert!(
            delivered(&mut state).is_empty(),
            "nothing runs before the answer"
        );
        // The answer says the seed had delivered the first five.
        state.release_events(Some(&seed.events.summary()), now);
        assert_eq!(delivered(&mut state), ["fresh"]);
        assert_eq!(state.tree_inbox.len(), 1, "the news is spread further");
        assert!(!state.holding_events());
        // Afterwards events flow normally.
        assert!(state.receive(event(10, "later"), now));
        assert_eq!(delivered(&mut state), ["later"]);
    }

    #[test]
    fn a_failed_join_releases_held_events_as_news() {
        let mut state = state("new");
        state.hold_events();
        state.receive(event(3, "e"), SystemTime::now());
        state.release_events(None, SystemTime::now());
        assert_eq!(delivered(&mut state), ["e"]);
    }

    proptest::proptest! {
        /// foca's own decoder, fed through our identity, codec and broadcast handler: random
        /// and mutated packets give errors, never a panic, and leave the state usable.
        #[test]
        fn foca_payloads_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1400)) {
            use foca::{Foca, PostcardCodec};
            let local = NodeId {
                name: "local".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                generation: 1,
            };
            let state = SharedState::new(ClusterState::new(
                local.clone(),
                Tags::new(),
                Retention::default(),
                SystemTime::now(),
            ));
            let rng: rand::rngs::StdRng = rand::make_rng();
            let mut foca = Foca::with_custom_broadcast(
                local,
                crate::cluster::Profile::Lan.foca_config(1),
                rng,
                PostcardCodec,
                state.clone(),
            );
            let mut runtime = SwimRuntime::new();
            let _ = foca.handle_data(&data, &mut runtime);
            // Still works afterwards.
            let _ = state.lock().members.local();
        }
    }
}
