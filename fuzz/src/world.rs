//! A few of the agent's own cluster nodes ([`Node`]) on a simulated network, driven as the
//! actor drives one: an input, then every effect it answers with. Datagrams take 1 ms and are
//! never lost, exchanges (push-pull) cross at once, and time only moves when the fuzz target
//! says so. Everything follows from fixed seeds, so an input replays exactly.
//!
//! The simulation in `rumor::cluster::sim` is built for measuring; this one is built for
//! meddling: a target can put any datagram into any node, mangle the datagrams in flight and
//! replay old ones, then check that the nodes still work.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rumor::cluster::node::exchange::{ExchangeOutcome, ExchangeState};
use rumor::cluster::node::{Effect, Node, Now, Tick};
use rumor::cluster::sim::world::{World as SimWorld, addr_of, id_of};
use rumor::cluster::wire::{Kind, WireError};
use rumor::cluster::{ClusterConfig, Profile};
use rumor_handlers::event::Event;

/// One-way latency of every datagram.
const LATENCY: Duration = Duration::from_millis(1);
/// Datagrams kept for replays.
const CAPTURED: usize = 64;
/// The wall clock the world starts at.
const WALL_START_S: u64 = 1_700_000_000;

/// A datagram on its way, or one that arrived (for replays).
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub kind: Kind,
    pub body: Vec<u8>,
    at: Duration,
}

struct Due {
    at: Duration,
    seq: u64,
    node: usize,
    tick: Tick,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Work a node asked for that involves another node: done after its effects are drained.
enum Pending {
    Exchange {
        from: usize,
        peer: SocketAddr,
    },
    KeyQuery {
        node: usize,
        origin: String,
        id: u32,
    },
}

/// Nodes by index: node `i` is `n<i>` at [`addr_of`]`(i)`.
pub struct World {
    nodes: HashMap<usize, Node>,
    base: Instant,
    now: Duration,
    seq: u64,
    timers: BinaryHeap<Reverse<Due>>,
    in_flight: VecDeque<Datagram>,
    captured: VecDeque<Datagram>,
    pending: VecDeque<Pending>,
    /// User events handed to each node's handlers, by node: their names in order.
    delivered: HashMap<usize, Vec<String>>,
    /// Datagrams sent to addresses outside the world (to a forged sender, say).
    outside: Vec<Datagram>,
    /// Most effects one input produced so far.
    pub most_effects: usize,
}

impl World {
    /// Nodes `0..n`, each knowing all the others, started.
    pub fn new(n: usize) -> World {
        let mut world = World {
            nodes: HashMap::new(),
            base: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            timers: BinaryHeap::new(),
            in_flight: VecDeque::new(),
            captured: VecDeque::new(),
            pending: VecDeque::new(),
            delivered: HashMap::new(),
            outside: Vec::new(),
            most_effects: 0,
        };
        for i in 0..n {
            let now = world.clock();
            let mut node = new_node(i, now);
            node.start(now);
            node.seed_members((0..n).filter(|&j| j != i).map(id_of), now);
            world.nodes.insert(i, node);
            world.drain(i);
        }
        world.settle();
        world
    }

    /// Adds node `i` and joins it to the cluster through node `via`, as `rumor agent --join`
    /// does (an exchange that answers a first join).
    pub fn join(&mut self, i: usize, via: usize) {
        let now = self.clock();
        let mut node = new_node(i, now);
        node.start(now);
        let mine = node.exchange_state(true, None, now);
        self.nodes.insert(i, node);
        self.drain(i);
        if self.exchange(i, via, mine, true).is_none() {
            return;
        }
        self.settle();
    }

    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(&i)
    }

    /// Delivers a datagram to node `to` now (it need not be one any node sent).
    pub fn inject(&mut self, from: SocketAddr, to: usize, kind: Kind, body: &[u8]) {
        let now = self.clock();
        if let Some(node) = self.nodes.get_mut(&to) {
            node.on_datagram(from, kind, body, now);
            self.drain(to);
            self.settle();
        }
    }

    /// Node `to` merges `state` as if a peer had sent it in an exchange (`answer_to_join`:
    /// the answer to its own join).
    pub fn merge(&mut self, to: usize, state: ExchangeState, answer_to_join: bool) {
        let now = self.clock();
        if let Some(node) = self.nodes.get_mut(&to) {
            node.merge(state, answer_to_join, now);
            self.drain(to);
            self.settle();
        }
    }

    /// A datagram whose envelope could not be opened reaches node `to`.
    pub fn unreadable(&mut self, from: SocketAddr, to: usize, error: &WireError) {
        if let Some(node) = self.nodes.get_mut(&to) {
            node.on_unreadable(from, error);
            self.drain(to);
            self.settle();
        }
    }

    /// The `k`-th datagram in flight (modulo how many there are), to change before it lands.
    pub fn in_flight(&mut self, k: usize) -> Option<&mut Datagram> {
        let n = self.in_flight.len();
        (n > 0).then(|| &mut self.in_flight[k % n])
    }

    /// The `k`-th of the last datagrams that landed (modulo how many are kept).
    pub fn captured(&self, k: usize) -> Option<Datagram> {
        let n = self.captured.len();
        (n > 0).then(|| self.captured[k % n].clone())
    }

    /// `rumor event NAME` at node `i`.
    pub fn send_event(&mut self, i: usize, name: &str) {
        let now = self.clock();
        if let Some(node) = self.nodes.get_mut(&i) {
            node.send_event(name.to_string(), Vec::new(), false, now)
                .expect("a short event name is valid");
            self.drain(i);
            self.settle();
        }
    }

    /// The user events node `i` handed to its handlers, in order.
    pub fn delivered(&self, i: usize) -> &[String] {
        self.delivered.get(&i).map_or(&[], Vec::as_slice)
    }

    /// Datagrams sent to addresses of no node.
    pub fn outside(&self) -> &[Datagram] {
        &self.outside
    }

    /// Lets `d` of simulated time pass, delivering datagrams and firing timers as they fall due.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// Like [`World::run_for`], but stops as soon as `done` holds; returns whether it did.
    pub fn run_until(&mut self, d: Duration, done: impl Fn(&World) -> bool) -> bool {
        let end = self.now + d;
        loop {
            if done(self) {
                return true;
            }
            let packet_at = self.in_flight.front().map(|p| p.at);
            let timer_at = self.timers.peek().map(|Reverse(t)| t.at);
            let next = match (packet_at, timer_at) {
                (Some(p), Some(t)) => p.min(t),
                (Some(p), None) => p,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if packet_at == Some(next) {
                let packet = self.in_flight.pop_front().expect("peeked");
                self.land(packet);
            } else {
                let Reverse(due) = self.timers.pop().expect("peeked");
                let now = self.clock();
                if let Some(node) = self.nodes.get_mut(&due.node) {
                    node.on_timer(due.tick, now);
                    self.drain(due.node);
                }
            }
            self.settle();
        }
        self.now = self.now.max(end);
        done(self)
    }

    fn land(&mut self, packet: Datagram) {
        let Some(to) = index_of(packet.to) else {
            return;
        };
        let now = self.clock();
        if let Some(node) = self.nodes.get_mut(&to) {
            node.on_datagram(packet.from, packet.kind, &packet.body, now);
            self.drain(to);
        }
        if self.captured.len() >= CAPTURED {
            self.captured.pop_front();
        }
        self.captured.push_back(packet);
    }

    fn clock(&self) -> Now {
        Now {
            mono: self.base + self.now,
            wall: UNIX_EPOCH + Duration::from_secs(WALL_START_S) + self.now,
        }
    }

    /// Carries out node `i`'s effects; what involves another node waits in `pending`.
    fn drain(&mut self, i: usize) {
        let mut count = 0;
        while let Some(effect) = self.nodes.get_mut(&i).and_then(Node::next_effect) {
            count += 1;
            match effect {
                Effect::Send { to, kind, body } => {
                    let datagram = Datagram {
                        from: addr_of(i),
                        to,
                        kind,
                        body,
                        at: self.now + LATENCY,
                    };
                    match index_of(to) {
                        Some(j) if self.nodes.contains_key(&j) => {
                            self.in_flight.push_back(datagram)
                        }
                        _ => self.outside.push(datagram),
                    }
                }
                Effect::Timer { at, tick } => {
                    self.seq += 1;
                    self.timers.push(Reverse(Due {
                        at: at.saturating_duration_since(self.base),
                        seq: self.seq,
                        node: i,
                        tick,
                    }));
                }
                Effect::Event(Event::User(e)) => {
                    self.delivered.entry(i).or_default().push(e.name);
                }
                Effect::Event(_) | Effect::Query { .. } => {}
                Effect::Exchange { peer, .. } => {
                    self.pending.push_back(Pending::Exchange { from: i, peer })
                }
                Effect::KeyQuery { origin, id, .. } => self.pending.push_back(Pending::KeyQuery {
                    node: i,
                    origin,
                    id,
                }),
                // Nothing on disk here, and a node cut off rejoins through its own timers.
                Effect::Persist(_) | Effect::Rejoin { .. } => {}
                Effect::Left => {
                    self.nodes.remove(&i);
                }
            }
        }
        self.most_effects = self.most_effects.max(count);
    }

    /// One exchange as `push_pull.rs` runs it: `from` opens with `opening`'s streams, `to`
    /// answers with its state and what `from` has not delivered, `from` closes with its state
    /// and what `to` has not delivered; both merge. `None` when `to` is not there.
    fn exchange(
        &mut self,
        from: usize,
        to: usize,
        opening: ExchangeState,
        join: bool,
    ) -> Option<()> {
        let now = self.clock();
        let wanted = opening.wants_events.then_some(&opening.streams[..]);
        let answer = self.nodes.get_mut(&to)?.exchange_state(false, wanted, now);
        self.drain(to);
        let node = self.nodes.get_mut(&from)?;
        let theirs = answer.wants_events.then(|| answer.streams.clone());
        node.merge(answer, join, now);
        let closing = node.exchange_state(false, theirs.as_deref(), now);
        self.drain(from);
        self.nodes.get_mut(&to)?.merge(closing, false, now);
        self.drain(to);
        Some(())
    }

    /// Does what nodes asked of each other until nothing is left.
    fn settle(&mut self) {
        while let Some(work) = self.pending.pop_front() {
            let now = self.clock();
            match work {
                Pending::Exchange { from, peer } => {
                    let Some(opening) = self
                        .nodes
                        .get_mut(&from)
                        .map(|n| n.exchange_state(false, None, now))
                    else {
                        continue;
                    };
                    let answered = index_of(peer)
                        .filter(|j| *j != from)
                        .and_then(|j| self.exchange(from, j, opening, false));
                    if answered.is_none()
                        && let Some(node) = self.nodes.get_mut(&from)
                    {
                        node.on_exchange(ExchangeOutcome::Failed);
                    }
                    self.drain(from);
                }
                Pending::KeyQuery { node, origin, id } => {
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.respond(origin, id, Err("no keyring here".into()), now);
                    }
                    self.drain(node);
                }
            }
        }
    }
}

/// Node `i`, not started, with the agent's `lan` settings.
fn new_node(i: usize, now: Now) -> Node {
    let config = ClusterConfig {
        node: format!("n{i}"),
        bind: addr_of(i),
        advertise: addr_of(i),
        ..SimWorld::config(Profile::Lan)
    };
    let seed = i as u64 + 1;
    Node::new(
        config,
        id_of(i),
        false,
        StdRng::seed_from_u64(seed),
        StdRng::seed_from_u64(seed.rotate_left(17)),
        now,
    )
}

/// The node index of a simulated address, if it is one.
fn index_of(addr: SocketAddr) -> Option<usize> {
    (0..16).find(|&i| addr_of(i) == addr)
}
