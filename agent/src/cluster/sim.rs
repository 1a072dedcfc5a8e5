//! A deterministic, in-process simulation of a rumor cluster: no sockets, no clock.
//!
//! Every simulated node is a real [`foca::Foca`] with our identity ([`NodeId`]), foca's
//! postcard codec and our broadcast handler and state ([`SharedState`], [`Broadcast`]), plus
//! the broadcast tree user events travel on ([`Plumtree`]), driven the way the actor drives
//! them: after every call into foca or the tree, what they want sent, scheduled and notified
//! is drained (see `actor.rs`, `flush`). Packets and timers go into one priority queue ordered
//! by simulated time; each packet takes a random one-way latency and may be lost. The whole
//! run follows from the seed.
//!
//! The membership is built directly (each node's foca is fed its peers with `apply_many`)
//! rather than by simulating joins. foca keeps its member list in a vector with linear
//! lookups, so a full view costs O(N²) per node to build and ~100 bytes per entry; for large
//! N each node can be given a random symmetric partial view instead (`view`): the tree's
//! links are drawn uniformly from the members a node knows, so a random view of a few hundred
//! peers spreads an event like a full one (the tests check that on small N).
//! With a partial view, probing and periodic announces are switched off (their timers are
//! dropped): an indirect probe or an announce introduces nodes that do not know each other,
//! each then spreads the other as a new member, and the views grow back towards N while the
//! simulation drowns in membership gossip. foca's periodic gossip keeps running (it no longer
//! carries user events; the tree's grafts repair what a lost push missed). With the full
//! membership everything runs.
//!
//! What is measured: one user event is injected at node 0 after a warm-up (probes and
//! periodic gossip run at their real cadence all along) in which a few other nodes sent an
//! event each — a cluster's first events shape its broadcast tree, and a running cluster has
//! had some; the report gives the simulated time
//! until 50 %, 99 %, 99.9 % and 100 % of the nodes received it, the hops it took, and the
//! packets per node it cost — counted both as packets that carried it and, against a second
//! run with the same seed and no event, as packets that would not have been sent otherwise.
//!
//! Not modelled: the member table (tags, statuses) — notifications are drained and ignored, as
//! they do not affect how a user event spreads —, push-pull anti-entropy, the wire envelope
//! (counted in bytes only), CPU time per packet.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{Foca, Member, PostcardCodec, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rumor_handlers::event::{Event, Tags, UserEvent};
use serde::Serialize;

use super::identity::NodeId;
use super::message::Broadcast;
use super::plumtree::{self, Plumtree, TreeTimer};
use super::profile::Profile;
use super::runtime::SwimRuntime;
use super::state::{self, ClusterState, SharedState, SwimNode};
use super::timers::Scheduled;
use super::wire::{HEADER_LEN, Kind};

/// Name of the injected user event.
const EVENT_NAME: &str = "bench";
/// First simulated address: node `i` is 10.0.0.0 + i, port 7946.
const BASE_IP: u32 = 0x0A00_0000;
const PORT: u16 = 7946;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// Number of nodes (at least 2).
    pub nodes: usize,
    /// Seed of every random choice: the same parameters give the same report.
    pub seed: u64,
    /// Probability that a packet is lost, 0.0–1.0.
    pub loss: f64,
    /// One-way latency, drawn uniformly from this range for every packet.
    pub latency: (Duration, Duration),
    /// Timing profile (foca's configuration, sized for `nodes`).
    pub profile: Profile,
    /// Peers each node knows: `None` or anything ≥ `nodes - 1` is the full membership.
    pub view: Option<usize>,
    /// Simulated time before the event is injected (probing runs meanwhile).
    pub warmup: Duration,
    /// Simulated time after the injection that is simulated and counted.
    pub horizon: Duration,
    /// Also run the same seed without the event to count the extra packets it caused.
    pub baseline: bool,
    /// User events sent during the warm-up (by random nodes, 200 ms apart, ending 500 ms
    /// before the measured one): 0 measures a cluster's very first event.
    pub warmup_events: usize,
}

impl Default for SimParams {
    /// 50 nodes on a LAN (0.2–1 ms one way), no loss, full membership.
    fn default() -> Self {
        SimParams {
            nodes: 50,
            seed: 1,
            loss: 0.0,
            latency: (Duration::from_micros(200), Duration::from_millis(1)),
            profile: Profile::Lan,
            view: None,
            warmup: Duration::from_millis(2500),
            horizon: Duration::from_secs(5),
            baseline: true,
            warmup_events: 3,
        }
    }
}

/// What a simulation found. Times are simulated time since the injection.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub nodes: usize,
    /// Peers each node knew at the start (`nodes - 1` for the full membership).
    pub view: usize,
    pub loss: f64,
    /// foca's `max_transmissions` for this cluster size: how often each node passes an item on.
    pub max_transmissions: u8,
    /// Whether foca's probes ran (they are off with a partial view; see the module docs).
    pub probes: bool,
    /// Events sent before the measured one.
    pub warmup_events: usize,
    /// Nodes that received the event within the horizon.
    pub received: usize,
    pub reached_50_ms: Option<f64>,
    pub reached_99_ms: Option<f64>,
    pub reached_99_9_ms: Option<f64>,
    pub reached_100_ms: Option<f64>,
    /// Hops from the origin to a node (median and maximum over the nodes reached).
    pub hops_p50: Option<u32>,
    pub hops_max: Option<u32>,
    /// Packets that carried the event, per node.
    pub event_packets_per_node: f64,
    /// Packets sent because of the event (this run minus the run without it), per node.
    pub extra_packets_per_node: Option<f64>,
    /// All packets sent during the horizon, per node (probes, acks, gossip, relays).
    pub packets_per_node: f64,
    /// All bytes sent during the horizon, per node and simulated second (with our envelope).
    pub bytes_per_node_s: f64,
    /// Wall-clock time the simulation took, seconds.
    pub wall_s: f64,
}

/// Runs the simulation described by `params`. Panics if `params.nodes < 2`.
pub fn simulate(params: SimParams) -> SimReport {
    assert!(params.nodes >= 2, "a simulation needs at least 2 nodes");
    let started = Instant::now();
    let with_event = World::new(&params).run(true);
    let extra = params.baseline.then(|| {
        let without = World::new(&params).run(false);
        with_event.packets as f64 - without.packets as f64
    });
    let n = params.nodes as f64;
    let mut times: Vec<u64> = with_event.received_at.iter().flatten().copied().collect();
    times.sort_unstable();
    let mut hops: Vec<u32> = with_event.hops.iter().flatten().copied().collect();
    hops.sort_unstable();
    let reached = |fraction: f64| {
        let needed = ((fraction * n).ceil() as usize).max(1);
        times
            .get(needed - 1)
            .map(|&t| (t - with_event.injected_at) as f64 / 1e6)
    };
    SimReport {
        nodes: params.nodes,
        view: with_event.view,
        loss: params.loss,
        max_transmissions: with_event.max_transmissions,
        probes: with_event.probes,
        warmup_events: params.warmup_events,
        received: times.len(),
        reached_50_ms: reached(0.5),
        reached_99_ms: reached(0.99),
        reached_99_9_ms: reached(0.999),
        reached_100_ms: reached(1.0),
        hops_p50: hops.get(hops.len().saturating_sub(1) / 2).copied(),
        hops_max: hops.last().copied(),
        event_packets_per_node: with_event.event_packets as f64 / n,
        extra_packets_per_node: extra.map(|e| e / n),
        packets_per_node: with_event.packets as f64 / n,
        bytes_per_node_s: with_event.bytes as f64 / n / params.horizon.as_secs_f64(),
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// What happens at a point in simulated time.
enum Work {
    Packet {
        from: u32,
        to: u32,
        kind: Kind,
        data: Bytes,
    },
    Timer {
        node: u32,
        timer: Timer<NodeId>,
    },
    Tree {
        node: u32,
        timer: TreeTimer,
    },
    /// A user event sent by this node (`measured`: the one the report is about).
    Inject {
        node: u32,
        measured: bool,
    },
}

struct Node {
    foca: SwimNode,
    state: SharedState,
    /// Peers are node indices.
    tree: Plumtree<u32>,
}

/// What one run produced.
struct Outcome {
    injected_at: u64,
    received_at: Vec<Option<u64>>,
    hops: Vec<Option<u32>>,
    packets: u64,
    bytes: u64,
    event_packets: u64,
    view: usize,
    probes: bool,
    max_transmissions: u8,
}

struct World {
    nodes: Vec<Node>,
    /// One runtime for all nodes: it is drained completely after every call into a foca.
    runtime: SwimRuntime,
    queue: BinaryHeap<Reverse<Scheduled<u64, Work>>>,
    seq: u64,
    now: u64,
    rng: StdRng,
    loss: f64,
    latency_ns: (u64, u64),
    injected_at: u64,
    end: u64,
    /// The encoded event, to recognise packets that carry it.
    event: Option<Vec<u8>>,
    received_at: Vec<Option<u64>>,
    hops: Vec<Option<u32>>,
    packets: u64,
    bytes: u64,
    event_packets: u64,
    view: usize,
    /// Whether probe and announce timers run (only with the full membership).
    probes: bool,
    max_transmissions: u8,
}

fn addr_of(i: usize) -> SocketAddr {
    let ip = BASE_IP + u32::try_from(i).expect("node index fits an IPv4 range");
    SocketAddr::from((Ipv4Addr::from(ip), PORT))
}

fn index_of(addr: SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V4(a) => u32::from(*a.ip()).checked_sub(BASE_IP),
        SocketAddr::V6(_) => None,
    }
}

fn id_of(i: usize) -> NodeId {
    NodeId {
        name: format!("n{i}"),
        addr: addr_of(i),
        generation: 1,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Each node's peers: everyone, or a random symmetric graph where each node picked
/// `view / 2` others (so degrees average `view`, and whoever sends to a node is known to it).
fn peers(n: usize, view: usize, rng: &mut StdRng) -> Vec<Vec<u32>> {
    if view >= n - 1 {
        return (0..n)
            .map(|i| (0..n as u32).filter(|&j| j as usize != i).collect())
            .collect();
    }
    let mut adjacency: Vec<Vec<u32>> = vec![Vec::with_capacity(view + view / 4); n];
    let picks = (view / 2).max(1);
    for i in 0..n {
        for _ in 0..picks {
            let j = loop {
                let j = rng.random_range(0..n);
                if j != i {
                    break j;
                }
            };
            adjacency[i].push(j as u32);
            adjacency[j].push(i as u32);
        }
    }
    for list in &mut adjacency {
        list.sort_unstable();
        list.dedup();
    }
    adjacency
}

impl World {
    fn new(params: &SimParams) -> World {
        let n = params.nodes;
        let rng = StdRng::seed_from_u64(params.seed);
        let config = params.profile.foca_config(n);
        let max_transmissions = config.max_transmissions.get();
        let probe_period = nanos(config.probe_period);
        let view = params.view.unwrap_or(n - 1).min(n - 1);
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let state = SharedState::new(ClusterState::new(id_of(i), Tags::new()));
                let foca = Foca::with_custom_broadcast(
                    id_of(i),
                    config.clone(),
                    StdRng::seed_from_u64(
                        params.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ),
                    PostcardCodec,
                    state.clone(),
                );
                let tree = Plumtree::new(params.profile.tree_graft_timeout());
                Node { foca, state, tree }
            })
            .collect();
        let (lo, hi) = params.latency;
        let mut world = World {
            nodes,
            runtime: SwimRuntime::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng,
            loss: params.loss.clamp(0.0, 1.0),
            latency_ns: (nanos(lo), nanos(hi.max(lo))),
            injected_at: nanos(params.warmup),
            end: nanos(params.warmup) + nanos(params.horizon),
            event: None,
            received_at: vec![None; n],
            hops: vec![None; n],
            packets: 0,
            bytes: 0,
            event_packets: 0,
            view,
            probes: view >= n - 1,
            max_transmissions,
        };
        let adjacency = peers(n, view, &mut world.rng);
        for (i, list) in adjacency.into_iter().enumerate() {
            world.nodes[i].tree.link(&list, &mut world.rng);
            let members = list.into_iter().map(|j| Member::alive(id_of(j as usize)));
            if let Err(e) = world.nodes[i]
                .foca
                .apply_many(members, false, &mut world.runtime)
            {
                panic!("seeding node {i}'s membership: {e}");
            }
            // The nodes did not all start at the same instant: shift each one's first timers
            // by a random fraction of the probe period, so probes are not synchronised.
            let offset = world.rng.random_range(0..probe_period.max(1));
            world.drain(i, offset);
            world.drain_tree(i);
        }
        for k in 0..params.warmup_events {
            let before = Duration::from_millis(500 + 200 * (params.warmup_events - 1 - k) as u64);
            let at = world.injected_at.saturating_sub(nanos(before));
            let node = world.rng.random_range(1..n as u32);
            world.push(
                at,
                Work::Inject {
                    node,
                    measured: false,
                },
            );
        }
        world
    }

    fn push(&mut self, at: u64, work: Work) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            item: work,
        }));
    }

    fn run(mut self, with_event: bool) -> Outcome {
        if with_event {
            let measured = Work::Inject {
                node: 0,
                measured: true,
            };
            self.push(self.injected_at, measured);
        }
        while let Some(Reverse(entry)) = self.queue.pop() {
            if entry.at > self.end {
                break;
            }
            self.now = entry.at;
            match entry.item {
                Work::Packet {
                    from,
                    to,
                    kind,
                    data,
                } => {
                    let node = &mut self.nodes[to as usize];
                    // A rejected packet is what a real node would log and drop; nothing to do.
                    match kind {
                        Kind::Tree => match plumtree::decode(&data) {
                            Ok(
                                frame @ (plumtree::Frame::Gossip(encoded)
                                | plumtree::Frame::Direct(encoded)),
                            ) => {
                                let new = match frame {
                                    plumtree::Frame::Direct(_) => {
                                        node.tree.on_direct(from, encoded)
                                    }
                                    _ => node.tree.on_gossip(from, encoded),
                                };
                                if new && let Ok(msg) = Broadcast::decode(encoded) {
                                    node.state.lock().receive(msg, std::time::SystemTime::now());
                                }
                            }
                            Ok(frame) => node.tree.on_control(from, &frame),
                            Err(_) => {}
                        },
                        _ => {
                            let _ = node.foca.handle_data(&data, &mut self.runtime);
                        }
                    }
                    self.flush(to as usize, Some(from as usize));
                }
                Work::Tree { node, timer } => {
                    self.nodes[node as usize].tree.timer_due(timer);
                    self.flush(node as usize, None);
                }
                Work::Timer { node, timer } => {
                    let _ = self.nodes[node as usize]
                        .foca
                        .handle_timer(timer, &mut self.runtime);
                    self.flush(node as usize, None);
                }
                Work::Inject { node, measured } => self.inject(node as usize, measured),
            }
        }
        Outcome {
            injected_at: self.injected_at,
            received_at: self.received_at,
            hops: self.hops,
            packets: self.packets,
            bytes: self.bytes,
            event_packets: self.event_packets,
            view: self.view,
            probes: self.probes,
            max_transmissions: self.max_transmissions,
        }
    }

    /// `rumor event` at node `i`, as the actor's `send_event` does it.
    fn inject(&mut self, i: usize, measured: bool) {
        let node = &mut self.nodes[i];
        let ltime = node.state.lock().event_clock.tick();
        let msg = Broadcast::User {
            event: UserEvent {
                ltime,
                name: if measured { EVENT_NAME } else { "warmup" }.into(),
                payload: b"simulated".to_vec(),
                coalesce: false,
                origin: format!("n{i}"),
            },
            sent_unix_ms: 0,
        };
        let encoded = msg.encode();
        if node.state.lock().receive(msg, std::time::SystemTime::now()) {
            let members: Vec<u32> = node
                .foca
                .iter_members()
                .filter_map(|m| index_of(m.id().addr))
                .collect();
            node.tree.broadcast_own(&encoded, members);
        }
        if measured {
            self.event = Some(encoded);
        }
        self.flush(i, None);
    }

    /// The actor's `flush` for node `i`, after a packet from `from` (if any) was handled.
    fn flush(&mut self, i: usize, from: Option<usize>) {
        loop {
            self.drain(i, self.now);
            let mut more = false;
            while self.runtime.next_notification().is_some() {
                more = true; // the member table is not modelled (see the module docs)
            }
            let relay = std::mem::take(&mut self.nodes[i].state.lock().relay);
            if relay {
                let _ = state::relay_eagerly(&mut self.nodes[i].foca, &mut self.runtime);
                more = true;
            }
            self.nodes[i].state.lock().query_inbox.clear();
            self.drain_tree(i);
            if !more && self.runtime.backlog() == 0 {
                break;
            }
        }
        let outbox = std::mem::take(&mut self.nodes[i].state.lock().outbox);
        let got_event = outbox
            .iter()
            .any(|e| matches!(e, Event::User(u) if u.name == EVENT_NAME));
        if got_event && self.received_at[i].is_none() {
            self.received_at[i] = Some(self.now);
            self.hops[i] = Some(match from {
                Some(f) => self.hops[f].map_or(1, |h| h + 1),
                None => 0,
            });
        }
    }

    /// Sends what node `i`'s foca asked to send, and schedules its timers from `base`.
    fn drain(&mut self, i: usize, base: u64) {
        while let Some((to, data)) = self.runtime.next_send() {
            if let Some(to) = index_of(to.addr) {
                self.send(i, to, Kind::Swim, Bytes::from(data));
            }
        }
        while let Some((after, timer)) = self.runtime.next_timer() {
            let introduces_strangers = matches!(
                timer,
                Timer::ProbeRandomMember(_)
                    | Timer::PeriodicAnnounce(_)
                    | Timer::PeriodicAnnounceDown(_)
            );
            if introduces_strangers && !self.probes {
                continue;
            }
            let node = i as u32;
            self.push(base + nanos(after), Work::Timer { node, timer });
        }
    }

    /// Sends what node `i`'s tree asked to send, and schedules its timers.
    fn drain_tree(&mut self, i: usize) {
        while let Some((to, out)) = self.nodes[i].tree.next_out() {
            let mut body = Vec::new();
            plumtree::encode(&out, &mut body);
            self.send(i, to, Kind::Tree, Bytes::from(body));
        }
        while let Some((after, timer)) = self.nodes[i].tree.next_timer() {
            let node = i as u32;
            self.push(self.now + nanos(after), Work::Tree { node, timer });
        }
    }

    fn send(&mut self, from: usize, to: u32, kind: Kind, data: Bytes) {
        if to as usize >= self.nodes.len() {
            return;
        }
        if self.now >= self.injected_at {
            self.packets += 1;
            self.bytes += (data.len() + HEADER_LEN) as u64;
            if self.event.as_ref().is_some_and(|e| contains(&data, e)) {
                self.event_packets += 1;
            }
        }
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            return;
        }
        let (lo, hi) = self.latency_ns;
        let delay = if hi > lo {
            self.rng.random_range(lo..=hi)
        } else {
            lo
        };
        let from = from as u32;
        let packet = Work::Packet {
            from,
            to,
            kind,
            data,
        };
        self.push(self.now + delay, packet);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(nodes: usize, loss: f64) -> SimParams {
        SimParams {
            nodes,
            loss,
            warmup: Duration::from_millis(1500),
            horizon: Duration::from_secs(3),
            ..SimParams::default()
        }
    }

    #[test]
    fn every_node_receives_the_event_without_loss() {
        let r = simulate(params(50, 0.0));
        assert_eq!(r.received, 50, "{r:?}");
        assert_eq!(r.view, 49);
        assert!(r.probes);
        // 49 members are few enough for the sender to push to each itself: one hop of
        // 0.2–1 ms, one copy per node.
        assert!(r.reached_100_ms.unwrap() <= 1.0, "{r:?}");
        assert_eq!(r.hops_max, Some(1), "{r:?}");
        assert!(r.event_packets_per_node < 1.5, "{r:?}");
        let extra = r.extra_packets_per_node.unwrap();
        assert!((1.0..=10.0).contains(&extra), "{r:?}");
    }

    #[test]
    fn the_first_event_floods_the_links_then_the_tree_is_cheaper() {
        let first = simulate(SimParams {
            warmup_events: 0,
            ..params(100, 0.0)
        });
        let later = simulate(params(100, 0.0));
        assert_eq!((first.received, later.received), (100, 100));
        assert!(
            first.event_packets_per_node > 2.0 * later.event_packets_per_node,
            "{first:?} {later:?}"
        );
    }

    // With 10 % loss, eager pushes get lost and the tree repairs itself by GRAFTs after an
    // announcement: slower (a graft timeout per repair) but complete.
    #[test]
    fn every_node_receives_the_event_with_ten_percent_loss() {
        let r = simulate(params(50, 0.1));
        assert_eq!(r.received, 50, "{r:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_report() {
        let a = simulate(SimParams {
            baseline: false,
            ..params(30, 0.05)
        });
        let b = simulate(SimParams {
            baseline: false,
            ..params(30, 0.05)
        });
        assert_eq!(a.reached_100_ms, b.reached_100_ms);
        assert_eq!(a.packets_per_node, b.packets_per_node);
        assert_eq!(a.hops_max, b.hops_max);
    }

    #[test]
    fn a_partial_view_spreads_the_event_to_everyone() {
        let r = simulate(SimParams {
            view: Some(20),
            ..params(200, 0.0)
        });
        assert_eq!(r.received, 200, "{r:?}");
        assert!(r.view == 20 && !r.probes);
    }

    #[test]
    fn partial_views_are_symmetric() {
        let mut rng = StdRng::seed_from_u64(3);
        let adjacency = peers(100, 10, &mut rng);
        for (i, list) in adjacency.iter().enumerate() {
            assert!(!list.contains(&(i as u32)));
            for &j in list {
                assert!(adjacency[j as usize].contains(&(i as u32)));
            }
        }
    }
}
