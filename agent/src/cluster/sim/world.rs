//! The simulated world: real [`Node`]s, a network of one priority queue, and simulated time.
//!
//! Every node is the agent's own [`Node`] — foca, the broadcast tree, the member table,
//! suspicions, queries — driven as the actor drives it: an input (a packet, a due timer, a
//! command), then every effect it answers with is carried out. Packets and timers go into
//! one queue ordered by simulated time; each packet takes a random one-way latency and may
//! be lost. A crashed node's host stays up, so packets to it are refused (the sender hears
//! of it, as the agent does through ICMP). Exchanges (push-pull) cross in one round trip.
//! Query handlers answer after a fixed delay. The whole run follows from the seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, UNIX_EPOCH};

use foca::Timer;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rumor_handlers::event::{Event, MemberEventKind, Tags};

use crate::cluster::config::ClusterConfig;
use crate::cluster::node::events::{Retention, StreamSummary};
use crate::cluster::node::exchange::{ExchangeOutcome, ExchangeState, Mode, Purpose, digest};
use crate::cluster::node::identity::NodeId;
use crate::cluster::node::query::QueryUpdate;
use crate::cluster::node::{Effect, Node, Now, Tick};
use crate::cluster::profile::Profile;
use crate::cluster::timers::Scheduled;
use crate::cluster::wire::{HEADER_LEN, Kind};

/// First simulated address: node `i` is 10.0.0.0 + i, port 7946.
const BASE_IP: u32 = 0x0A00_0000;
const PORT: u16 = 7946;
/// The wall clock the simulation starts at (any fixed time: the run must not depend on the
/// machine's).
const WALL_START_S: u64 = 1_700_000_000;

/// The address of simulated node `i`.
pub fn addr_of(i: usize) -> SocketAddr {
    let ip = BASE_IP + u32::try_from(i).expect("node index fits an IPv4 range");
    SocketAddr::from((Ipv4Addr::from(ip), PORT))
}

fn index_of(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(a) => u32::from(*a.ip()).checked_sub(BASE_IP).map(|i| i as usize),
        SocketAddr::V6(_) => None,
    }
}

/// The identity of simulated node `i`.
pub fn id_of(i: usize) -> NodeId {
    NodeId {
        name: format!("n{i}"),
        addr: addr_of(i),
        generation: 1,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How packets travel.
#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Probability that a packet is lost, 0.0–1.0.
    pub loss: f64,
    /// One-way latency, drawn uniformly from this range for every packet.
    pub latency: (Duration, Duration),
}

/// What happens at a point in simulated time.
enum Work {
    Packet {
        from: usize,
        to: usize,
        kind: Kind,
        data: Vec<u8>,
    },
    /// A packet to `addr` was refused by its host: the sender hears of it.
    Refused {
        node: usize,
        addr: SocketAddr,
    },
    Timer {
        node: usize,
        tick: Tick,
    },
    /// A simulated query handler finished.
    Answer {
        node: usize,
        origin: String,
        id: u32,
        answer: Result<Vec<u8>, String>,
    },
    /// An exchange's opening reaches its responder: the initiator's streams, and its
    /// digest for a periodic exchange.
    Open {
        from: usize,
        to: usize,
        mode: Mode,
        streams: Vec<StreamSummary>,
        digest: [u8; 16],
        wants_events: bool,
        why: Purpose,
    },
    /// The responder's answer reaches the initiator (`None`: the digests matched).
    Reply {
        to: usize,
        from: usize,
        state: Option<Box<ExchangeState>>,
    },
    /// The initiator's closing state reaches the responder.
    Close {
        to: usize,
        state: Box<ExchangeState>,
    },
    /// The exchange failed (the responder is down).
    ExchangeFailed {
        node: usize,
        why: Purpose,
    },
    /// `rumor event` at a node.
    Event {
        node: usize,
        name: String,
        payload: Vec<u8>,
    },
}

/// A user event as one node's handlers got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Simulated time, nanoseconds since the start.
    pub at: u64,
    pub node: usize,
    pub name: String,
    pub origin: String,
    /// Hops from its sender (0 at the sender).
    pub hops: u32,
}

/// Packets sent, counted once [`World::count_from`] is reached.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    pub packets: u64,
    /// With our envelope.
    pub bytes: u64,
    /// Packets that carry the marked payload ([`World::mark`]).
    pub marked: u64,
}

struct Sim {
    node: Node,
    up: bool,
}

/// A simulated cluster; see the module docs.
pub struct World {
    nodes: Vec<Sim>,
    queue: BinaryHeap<Reverse<Scheduled<u64, Work>>>,
    seq: u64,
    now: u64,
    base: Instant,
    rng: StdRng,
    network: Network,
    /// Whether foca's probes and announces run (off for partial views: they introduce nodes
    /// that do not know each other, and the views grow back towards the whole cluster).
    probes: bool,
    /// Node pairs that cannot reach each other (both directions).
    cuts: HashSet<(usize, usize)>,
    /// Simulated query handlers answer after this long (`None`: they never answer).
    handler_delay: Option<Duration>,
    deliveries: Vec<Delivery>,
    /// Hops of the first copy of each user event per node, to count the next hop.
    hops: HashMap<(usize, String, String), u32>,
    member_events: Vec<(u64, usize, MemberEventKind, String)>,
    updates: HashMap<(usize, u32), Vec<QueryUpdate>>,
    count_from: u64,
    mark: Option<Vec<u8>>,
    traffic: Traffic,
    /// Added to the timers being drained (see [`World::new`]).
    timer_shift: u64,
}

impl World {
    /// `n` nodes, each started with `peers[i]` (indices) as its members; `probes`: whether
    /// foca probes (see the field).
    pub fn new(
        config: &ClusterConfig,
        peers: Vec<Vec<usize>>,
        network: Network,
        seed: u64,
        probes: bool,
    ) -> World {
        let n = peers.len();
        let base = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed);
        let start = Now {
            mono: base,
            wall: UNIX_EPOCH + Duration::from_secs(WALL_START_S),
        };
        let nodes = (0..n)
            .map(|i| {
                let config = ClusterConfig {
                    node: format!("n{i}"),
                    advertise: addr_of(i),
                    bind: addr_of(i),
                    ..config.clone()
                };
                let node_seed = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let node = Node::new(
                    config,
                    id_of(i),
                    false,
                    StdRng::seed_from_u64(node_seed),
                    StdRng::seed_from_u64(node_seed.rotate_left(17)),
                    start,
                )
                .announcing(false);
                Sim { node, up: true }
            })
            .collect();
        let probe_period = nanos(config.profile.foca_config(n).probe_period);
        let mut world = World {
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            base,
            rng: StdRng::seed_from_u64(rng.random()),
            network,
            probes,
            cuts: HashSet::new(),
            handler_delay: None,
            deliveries: Vec::new(),
            hops: HashMap::new(),
            member_events: Vec::new(),
            updates: HashMap::new(),
            count_from: 0,
            mark: None,
            traffic: Traffic::default(),
            timer_shift: 0,
        };
        // Every node starts knowing its peers, and links its share of the broadcast tree,
        // before anything reaches it (as each node of a real cluster did when it joined). Its
        // timers are shifted by a random fraction of the probe period, as if it had started a
        // little earlier or later: the probes of a real cluster are not synchronised.
        for (node, peers) in peers.into_iter().enumerate() {
            let sim = &mut world.nodes[node].node;
            sim.start(start);
            sim.seed_members(peers.into_iter().map(id_of), start);
            world.timer_shift = rng.random_range(0..probe_period.max(1));
            world.drain(node, None);
        }
        world.timer_shift = 0;
        world
    }

    /// The default node settings of a simulation with `profile`.
    pub fn config(profile: Profile) -> ClusterConfig {
        ClusterConfig {
            node: String::new(),
            bind: addr_of(0),
            advertise: addr_of(0),
            profile,
            tags: Tags::new(),
            join: vec![],
            retry_join: vec![],
            max_event_bytes: crate::cluster::message::MAX_EVENT_BYTES_CEILING,
            max_response_bytes: 1024,
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            keyring: None,
            keyring_file: None,
            snapshot_file: None,
            rejoin_after_leave: false,
            direct_push_limit: crate::cluster::plumtree::DIRECT_LIMIT,
            event_retention: Retention::default(),
        }
    }

    /// Every node knows every other.
    pub fn full_views(n: usize) -> Vec<Vec<usize>> {
        (0..n)
            .map(|i| (0..n).filter(|&j| j != i).collect())
            .collect()
    }

    /// Simulated query handlers answer after `delay` ("`NAME` from nI").
    pub fn answer_queries_after(&mut self, delay: Duration) {
        self.handler_delay = Some(delay);
    }

    /// Counts packets from simulated time `at` on, and those that carry `mark` among them.
    pub fn count_from(&mut self, at: Duration, mark: Option<Vec<u8>>) {
        self.count_from = nanos(at);
        self.mark = mark;
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Simulated time now.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// User events the nodes' handlers got, in order.
    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    /// Member events the nodes' handlers got since [`World::record_member_events`].
    pub fn member_events(&self) -> &[(u64, usize, MemberEventKind, String)] {
        &self.member_events
    }

    /// Starts recording member events (the joins of the start are left out).
    pub fn record_member_events(&mut self) {
        self.member_events.clear();
    }

    /// What node `i`'s query `id` reported so far.
    pub fn query_updates(&self, i: usize, id: u32) -> &[QueryUpdate] {
        self.updates.get(&(i, id)).map_or(&[], |u| &u[..])
    }

    /// Kills node `i`'s agent (its host stays up and refuses packets to it).
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Cuts (or heals) the link between `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize, cut: bool) {
        let pair = (a.min(b), a.max(b));
        if cut {
            self.cuts.insert(pair);
        } else {
            self.cuts.remove(&pair);
        }
    }

    /// Schedules `rumor event NAME PAYLOAD` at node `i`, at simulated time `at`.
    pub fn send_event_at(&mut self, at: Duration, i: usize, name: &str, payload: &[u8]) {
        let work = Work::Event {
            node: i,
            name: name.to_string(),
            payload: payload.to_vec(),
        };
        self.push(nanos(at), work);
    }

    /// Asks a query at node `i` now; its updates are in [`World::query_updates`].
    pub fn ask_query(&mut self, i: usize, params: crate::cluster::QueryParams) -> u32 {
        let now = self.clock();
        let id = self.nodes[i]
            .node
            .ask_query(params, now)
            .expect("a valid query");
        self.drain(i, None);
        id
    }

    /// Runs until simulated time `until` (or until nothing is left to do).
    pub fn run_until(&mut self, until: Duration) {
        let end = nanos(until);
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > end {
                break;
            }
            let Some(Reverse(entry)) = self.queue.pop() else {
                break;
            };
            self.now = entry.at;
            self.handle(entry.item);
        }
        self.now = self.now.max(end);
    }

    fn clock(&self) -> Now {
        let since = Duration::from_nanos(self.now);
        Now {
            mono: self.base + since,
            wall: UNIX_EPOCH + Duration::from_secs(WALL_START_S) + since,
        }
    }

    fn push(&mut self, at: u64, work: Work) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            item: work,
        }));
    }

    fn handle(&mut self, work: Work) {
        let now = self.clock();
        match work {
            Work::Packet {
                from,
                to,
                kind,
                data,
            } => {
                if !self.nodes[to].up {
                    // The host answers for its dead agent.
                    let at = self.now + self.latency();
                    self.push(
                        at,
                        Work::Refused {
                            node: from,
                            addr: addr_of(to),
                        },
                    );
                    return;
                }
                self.nodes[to]
                    .node
                    .on_datagram(addr_of(from), kind, &data, now);
                self.drain(to, Some(from));
            }
            Work::Refused { node, addr } => {
                if self.nodes[node].up {
                    self.nodes[node].node.on_refused(addr, now);
                    self.drain(node, None);
                }
            }
            Work::Timer { node, tick } => {
                if self.nodes[node].up {
                    self.nodes[node].node.on_timer(tick, now);
                    self.drain(node, None);
                }
            }
            Work::Answer {
                node,
                origin,
                id,
                answer,
            } => {
                if self.nodes[node].up {
                    self.nodes[node].node.respond(origin, id, answer, now);
                    self.drain(node, None);
                }
            }
            Work::Open {
                from,
                to,
                mode,
                streams,
                digest,
                wants_events,
                why,
            } => self.answer_exchange(from, to, mode, (streams, digest, wants_events), why),
            Work::Reply { to, from, state } => {
                if !self.nodes[to].up {
                    return;
                }
                let Some(remote) = state else {
                    self.nodes[to].node.on_exchange(ExchangeOutcome::InSync);
                    return;
                };
                let theirs = remote.wants_events.then(|| remote.streams.clone());
                let node = &mut self.nodes[to].node;
                node.merge(*remote, false, now);
                let closing = node.exchange_state(false, theirs.as_deref(), now);
                self.drain(to, None);
                let at = self.now + self.latency();
                let close = Work::Close {
                    to: from,
                    state: Box::new(closing),
                };
                self.push(at, close);
            }
            Work::Close { to, state } => {
                if self.nodes[to].up {
                    self.nodes[to].node.merge(*state, false, now);
                    self.drain(to, None);
                }
            }
            Work::ExchangeFailed { node, why } => {
                if why == Purpose::Periodic && self.nodes[node].up {
                    self.nodes[node].node.on_exchange(ExchangeOutcome::Failed);
                }
            }
            Work::Event {
                node,
                name,
                payload,
            } => {
                if self.nodes[node].up {
                    let sent = self.nodes[node].node.send_event(name, payload, false, now);
                    sent.expect("a simulated event within the limits");
                    self.drain(node, None);
                }
            }
        }
    }

    /// The responder's answer to an opening: "in sync", or its state with the events the
    /// initiator has not delivered; it merges the initiator's closing state later.
    fn answer_exchange(
        &mut self,
        from: usize,
        to: usize,
        mode: Mode,
        (streams, theirs, wants_events): (Vec<StreamSummary>, [u8; 16], bool),
        why: Purpose,
    ) {
        let now = self.clock();
        let back = self.now + self.latency();
        if !self.nodes[to].up || self.is_cut(from, to) {
            self.push(back, Work::ExchangeFailed { node: from, why });
            return;
        }
        let responder = &mut self.nodes[to].node;
        let peer = wants_events.then_some(&streams[..]);
        let local = responder.exchange_state(false, peer, now);
        let in_sync = mode == Mode::Digest && digest(&local) == theirs;
        if in_sync {
            responder.on_exchange(ExchangeOutcome::InSync);
        }
        self.drain(to, None);
        let reply = Work::Reply {
            to: from,
            from: to,
            state: (!in_sync).then(|| Box::new(local)),
        };
        self.push(back, reply);
    }

    /// Carries out node `i`'s effects (after a packet from `from`, if any).
    fn drain(&mut self, i: usize, from: Option<usize>) {
        while let Some(effect) = self.nodes[i].node.next_effect() {
            match effect {
                Effect::Send { to, kind, body } => {
                    if let Some(to) = index_of(to).filter(|&to| to < self.nodes.len()) {
                        self.send(i, to, kind, body);
                    }
                }
                Effect::Timer { at, tick } => {
                    let introduces_strangers = matches!(
                        tick,
                        Tick::Swim(
                            Timer::ProbeRandomMember(_)
                                | Timer::PeriodicAnnounce(_)
                                | Timer::PeriodicAnnounceDown(_)
                        )
                    );
                    if introduces_strangers && !self.probes {
                        continue;
                    }
                    let at = nanos(at.saturating_duration_since(self.base)) + self.timer_shift;
                    self.push(at, Work::Timer { node: i, tick });
                }
                Effect::Event(event) => self.observe(i, from, event),
                Effect::Query { id, update } => {
                    self.updates.entry((i, id)).or_default().push(update);
                }
                Effect::Exchange { peer, mode, why } => {
                    if let Some(to) = index_of(peer).filter(|&to| to < self.nodes.len()) {
                        let now = self.clock();
                        let local = self.nodes[i].node.exchange_state(false, None, now);
                        let at = self.now + self.latency();
                        let open = Work::Open {
                            from: i,
                            to,
                            mode,
                            digest: digest(&local),
                            wants_events: local.wants_events,
                            streams: local.streams,
                            why,
                        };
                        self.push(at, open);
                    }
                }
                Effect::KeyQuery { origin, id, .. } => {
                    let answer = Err("the simulation has no keyring".to_string());
                    let work = Work::Answer {
                        node: i,
                        origin,
                        id,
                        answer,
                    };
                    self.push(self.now, work);
                }
                // Nothing on disk, and nobody to rejoin through but the members it knows.
                Effect::Persist(_) | Effect::Rejoin { .. } => {}
                Effect::Left => self.nodes[i].up = false,
            }
        }
    }

    fn observe(&mut self, i: usize, from: Option<usize>, event: Event) {
        match event {
            Event::User(e) => {
                let hops = match from {
                    Some(f) => self
                        .hops
                        .get(&(f, e.origin.clone(), e.name.clone()))
                        .map_or(1, |h| h + 1),
                    None => 0,
                };
                self.hops
                    .insert((i, e.origin.clone(), e.name.clone()), hops);
                self.deliveries.push(Delivery {
                    at: self.now,
                    node: i,
                    name: e.name,
                    origin: e.origin,
                    hops,
                });
            }
            Event::Query(q) => {
                if let Some(delay) = self.handler_delay {
                    let answer = Ok(format!("{} from n{i}", q.name).into_bytes());
                    let work = Work::Answer {
                        node: i,
                        origin: q.origin,
                        id: q.id,
                        answer,
                    };
                    self.push(self.now + nanos(delay), work);
                }
            }
            Event::Member { kind, members } => {
                for m in members {
                    self.member_events.push((self.now, i, kind, m.name));
                }
            }
        }
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        !self.cuts.is_empty() && self.cuts.contains(&(a.min(b), a.max(b)))
    }

    fn latency(&mut self) -> u64 {
        let (lo, hi) = self.network.latency;
        let (lo, hi) = (nanos(lo), nanos(hi.max(lo)));
        if hi > lo {
            self.rng.random_range(lo..=hi)
        } else {
            lo
        }
    }

    fn send(&mut self, from: usize, to: usize, kind: Kind, data: Vec<u8>) {
        if self.now >= self.count_from {
            self.traffic.packets += 1;
            self.traffic.bytes += (data.len() + HEADER_LEN) as u64;
            if self.mark.as_ref().is_some_and(|m| contains(&data, m)) {
                self.traffic.marked += 1;
            }
        }
        if self.is_cut(from, to) {
            return;
        }
        let loss = self.network.loss;
        if loss > 0.0 && self.rng.random_bool(loss.clamp(0.0, 1.0)) {
            return;
        }
        let at = self.now + self.latency();
        let packet = Work::Packet {
            from,
            to,
            kind,
            data,
        };
        self.push(at, packet);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
