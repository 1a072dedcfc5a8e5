//! A deterministic, in-process simulation of a rumor cluster: the agent's own [`Node`]s in
//! simulated time, with no sockets and no clock.
//!
//! Every simulated node is the very [`Node`] an agent runs — foca, the broadcast tree, the
//! member table, suspicions and queries — driven the way the actor drives it ([`world`]).
//! Packets and timers go into one priority queue ordered by simulated time; each packet takes
//! a random one-way latency and may be lost. The whole run follows from the seed.
//!
//! The membership is built directly (each node's foca is fed its peers) rather than by
//! simulating joins. foca keeps its member list in a vector with linear lookups, so a full
//! view costs O(N²) per node to build and ~100 bytes per entry; for large N each node can be
//! given a random symmetric partial view instead (`view`): the tree's links are drawn
//! uniformly from the members a node knows, so a random view of a few hundred peers spreads
//! an event like a full one (the tests check that on small N). With a partial view, probing,
//! periodic announces and the nodes' announcements of themselves are switched off: they
//! introduce nodes that do not know each other, each then spreads the other as a new member,
//! and the views grow back towards N while the simulation drowns in membership gossip.
//! foca's periodic gossip keeps running (the tree's grafts repair what a lost push missed).
//! With the full membership everything runs, as in an agent.
//!
//! What [`simulate`] measures: one user event is injected at node 0 after a warm-up (probes,
//! gossip and heartbeats run at their real cadence all along) in which a few other nodes sent
//! an event each — a cluster's first events shape its broadcast tree, and a running cluster
//! has had some; the report gives the simulated time until 50 %, 99 %, 99.9 % and 100 % of
//! the nodes' handlers got it, the hops it took, and the packets per node it cost — counted
//! both as packets that carried it and, against a second run with the same seed and no
//! event, as packets that would not have been sent otherwise.
//!
//! Not modelled: the wire envelope (counted in bytes only) and CPU time per packet.

pub mod world;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

#[cfg(doc)]
use super::node::Node;
use super::profile::Profile;
use world::{Network, World};

/// Name of the measured user event.
const EVENT_NAME: &str = "bench";
/// Its payload, which marks the packets that carry it.
const EVENT_PAYLOAD: &[u8] = b"the measured event";

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
    let with_event = run(&params, true);
    let extra = params
        .baseline
        .then(|| with_event.packets as f64 - run(&params, false).packets as f64);
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

/// One run: the warm-up events, then (`with_event`) the measured one at node 0.
fn run(params: &SimParams, with_event: bool) -> Outcome {
    let n = params.nodes;
    let mut rng = StdRng::seed_from_u64(params.seed);
    let view = params.view.unwrap_or(n - 1).min(n - 1);
    let probes = view >= n - 1;
    let config = World::config(params.profile);
    let network = Network {
        loss: params.loss.clamp(0.0, 1.0),
        latency: params.latency,
    };
    let mut world = World::new(
        &config,
        peers(n, view, &mut rng),
        network,
        params.seed,
        probes,
    );
    for k in 0..params.warmup_events {
        let before = Duration::from_millis(500 + 200 * (params.warmup_events - 1 - k) as u64);
        let at = params.warmup.saturating_sub(before);
        let node = rng.random_range(1..n);
        world.send_event_at(at, node, &format!("warmup-{k}"), b"simulated");
    }
    if with_event {
        world.send_event_at(params.warmup, 0, EVENT_NAME, EVENT_PAYLOAD);
    }
    world.count_from(params.warmup, Some(EVENT_PAYLOAD.to_vec()));
    world.run_until(params.warmup + params.horizon);
    let mut received_at = vec![None; n];
    let mut hops = vec![None; n];
    for d in world.deliveries().iter().filter(|d| d.name == EVENT_NAME) {
        if received_at[d.node].is_none() {
            received_at[d.node] = Some(d.at);
            hops[d.node] = Some(d.hops);
        }
    }
    let traffic = world.traffic();
    Outcome {
        injected_at: u64::try_from(params.warmup.as_nanos()).unwrap_or(u64::MAX),
        received_at,
        hops,
        packets: traffic.packets,
        bytes: traffic.bytes,
        event_packets: traffic.marked,
        view,
        probes,
        max_transmissions: config.profile.foca_config(n).max_transmissions.get(),
    }
}

/// Each node's peers: everyone, or a random symmetric graph where each node picked
/// `view / 2` others (so degrees average `view`, and whoever sends to a node is known to it).
fn peers(n: usize, view: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    if view >= n - 1 {
        return World::full_views(n);
    }
    let mut adjacency: Vec<Vec<usize>> = vec![Vec::with_capacity(view + view / 4); n];
    let picks = (view / 2).max(1);
    for i in 0..n {
        for _ in 0..picks {
            let j = loop {
                let j = rng.random_range(0..n);
                if j != i {
                    break j;
                }
            };
            adjacency[i].push(j);
            adjacency[j].push(i);
        }
    }
    for list in &mut adjacency {
        list.sort_unstable();
        list.dedup();
    }
    adjacency
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
            assert!(!list.contains(&i));
            for &j in list {
                assert!(adjacency[j].contains(&i));
            }
        }
    }
}

/// Queries, failure detection and healing, run through the agent's own node in simulated
/// time: what the real-process tests show on a few agents, here on a few dozen.
#[cfg(test)]
mod cluster_tests {
    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::cluster::node::events::Retention;
    use crate::cluster::node::query::QueryUpdate;
    use crate::cluster::{QueryParams, Status};
    use rumor_handlers::event::MemberEventKind;

    const LAN: Network = Network {
        loss: 0.0,
        latency: (Duration::from_micros(200), Duration::from_millis(1)),
    };

    fn world(n: usize, network: Network, seed: u64) -> World {
        let config = World::config(Profile::Lan);
        let mut world = World::new(&config, World::full_views(n), network, seed, true);
        world.run_until(Duration::from_secs(2));
        world
    }

    #[test]
    fn a_query_is_answered_by_every_node_and_returns_without_waiting_for_the_timeout() {
        let mut w = world(30, LAN, 7);
        w.answer_queries_after(Duration::from_millis(5));
        let asked_at = w.now();
        let id = w.ask_query(
            0,
            QueryParams {
                name: "uptime".into(),
                ack: true,
                ..QueryParams::default()
            },
        );
        w.run_until(asked_at + Duration::from_secs(10));
        let updates = w.query_updates(0, id);
        let answers = updates
            .iter()
            .filter(|u| matches!(u, QueryUpdate::Answer { .. }))
            .count();
        let acks = updates
            .iter()
            .filter(|u| matches!(u, QueryUpdate::Ack { .. }))
            .count();
        assert_eq!((answers, acks), (30, 30), "{updates:?}");
        assert_eq!(
            updates.last(),
            Some(&QueryUpdate::Done {
                timed_out: false,
                missing: vec![]
            })
        );
    }

    #[test]
    fn silent_nodes_are_asked_again_so_a_query_survives_loss() {
        let lossy = Network { loss: 0.1, ..LAN };
        let mut w = world(30, lossy, 11);
        w.answer_queries_after(Duration::from_millis(5));
        let id = w.ask_query(
            0,
            QueryParams {
                name: "load".into(),
                ..QueryParams::default()
            },
        );
        w.run_until(w.now() + Duration::from_secs(10));
        let done = w.query_updates(0, id).last().cloned();
        assert_eq!(
            done,
            Some(QueryUpdate::Done {
                timed_out: false,
                missing: vec![]
            })
        );
        assert!(w.node(0).info().counters.query_reasks > 0);
    }

    #[test]
    fn a_crashed_node_is_declared_failed_everywhere_by_confirmed_suspicion() {
        let mut w = world(30, LAN, 3);
        w.record_member_events();
        let crashed_at = w.now();
        w.crash(7);
        w.run_until(crashed_at + Duration::from_secs(5));
        let failed: Vec<u64> = w
            .member_events()
            .iter()
            .filter(|(_, _, kind, name)| *kind == MemberEventKind::Failed && name == "n7")
            .map(|(at, _, _, _)| *at)
            .collect();
        assert_eq!(failed.len(), 29, "every live node reports n7 failed once");
        let slowest = Duration::from_nanos(*failed.iter().max().unwrap()) - crashed_at;
        // foca's own suspicion timeout at 30 nodes is several seconds; confirmation by
        // independent members (and the refused packets of the heartbeat ring) is faster.
        assert!(slowest < Duration::from_secs(3), "took {slowest:?}");
        let confirmed: u64 = (0..30)
            .filter(|&i| i != 7)
            .map(|i| w.node(i).info().counters.suspicions_confirmed)
            .sum();
        assert!(confirmed > 0);
        assert!(
            w.node(0)
                .members()
                .iter()
                .any(|m| m.name == "n7" && m.status == Status::Failed)
        );
    }

    #[test]
    fn a_lossy_network_declares_no_live_node_failed() {
        let lossy = Network { loss: 0.1, ..LAN };
        let mut w = world(30, lossy, 5);
        w.record_member_events();
        let from = w.now();
        w.run_until(from + Duration::from_secs(20));
        let failed: Vec<_> = w
            .member_events()
            .iter()
            .filter(|(_, _, kind, _)| *kind == MemberEventKind::Failed)
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn events_sent_during_a_partition_reach_the_other_side_after_it_heals() {
        let mut w = world(10, LAN, 9);
        // Cut nodes 0-4 from 5-9 and send an event on each side.
        for a in 0..5 {
            for b in 5..10 {
                w.cut(a, b, true);
            }
        }
        let cut_at = w.now();
        w.send_event_at(cut_at, 0, "left-side", b"");
        w.send_event_at(cut_at, 9, "right-side", b"");
        w.run_until(cut_at + Duration::from_secs(15));
        let heard = |w: &World, name: &str| {
            let mut nodes: Vec<usize> = w
                .deliveries()
                .iter()
                .filter(|d| d.name == name)
                .map(|d| d.node)
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            nodes
        };
        assert_eq!(heard(&w, "left-side"), [0, 1, 2, 3, 4]);
        assert!(
            w.node(0).info().members_failed == 5,
            "the other side is failed"
        );
        for a in 0..5 {
            for b in 5..10 {
                w.cut(a, b, false);
            }
        }
        let healed_at = w.now();
        // Serf's reconnect tries a failed member every 10 s on a LAN; then the exchange
        // carries each side's events to the other.
        w.run_until(healed_at + Duration::from_secs(60));
        assert_eq!(heard(&w, "left-side"), (0..10).collect::<Vec<_>>());
        assert_eq!(heard(&w, "right-side"), (0..10).collect::<Vec<_>>());
        let once = w.deliveries().len();
        assert_eq!(once, 20, "each node ran each event once");
        assert_eq!(w.node(3).info().members_alive, 10);
    }

    /// Cuts nodes `0..split` from the rest (both ways), or heals the cut.
    fn partition(w: &mut World, split: usize, cut: bool) {
        for a in 0..split {
            for b in split..w.len() {
                w.cut(a, b, cut);
            }
        }
    }

    /// The nodes that delivered each of `names`, as (name, nodes) for the ones short of
    /// `expected` nodes.
    fn short_of(w: &World, names: &[String], expected: usize) -> Vec<(String, usize)> {
        names
            .iter()
            .filter_map(|n| {
                let mut nodes: Vec<usize> = w
                    .deliveries()
                    .iter()
                    .filter(|d| &d.name == n)
                    .map(|d| d.node)
                    .collect();
                nodes.sort_unstable();
                nodes.dedup();
                (nodes.len() != expected).then(|| (n.clone(), nodes.len()))
            })
            .collect()
    }

    #[test]
    fn hundreds_of_events_sent_during_a_long_partition_all_arrive_after_it_heals() {
        let config = World::config(Profile::Lan);
        let mut w = World::new(&config, World::full_views(6), LAN, 21, true);
        w.run_until(Duration::from_secs(2));
        partition(&mut w, 3, true);
        let cut_at = w.now();
        // 400 events on one side and 50 on the other, 20 ms apart: far more than the 256
        // Lamport times events used to be told apart by.
        let mut names = Vec::new();
        for k in 0..400 {
            let name = format!("left-{k}");
            w.send_event_at(
                cut_at + Duration::from_millis(20 * k),
                k as usize % 3,
                &name,
                b"",
            );
            names.push(name);
        }
        for k in 0..50 {
            let name = format!("right-{k}");
            w.send_event_at(
                cut_at + Duration::from_millis(100 * k),
                3 + k as usize % 3,
                &name,
                b"",
            );
            names.push(name);
        }
        w.run_until(cut_at + Duration::from_secs(20));
        assert_eq!(
            w.node(0).info().members_failed,
            3,
            "the other side is failed"
        );
        partition(&mut w, 3, false);
        let healed_at = w.now();
        w.run_until(healed_at + Duration::from_secs(60));
        assert_eq!(short_of(&w, &names, 6), [], "events missing somewhere");
        assert_eq!(
            w.deliveries().len(),
            450 * 6,
            "each node ran each event once"
        );
        for i in 0..6 {
            let info = w.node(i).info();
            assert_eq!((info.members_alive, info.counters.events_lost), (6, 0));
        }
    }

    #[test]
    fn events_beyond_the_retention_are_lost_loudly_and_the_rest_still_arrive() {
        let config = ClusterConfig {
            event_retention: Retention {
                count: 100,
                age: Duration::from_secs(3600),
            },
            ..World::config(Profile::Lan)
        };
        let mut w = World::new(&config, World::full_views(4), LAN, 22, true);
        w.run_until(Duration::from_secs(2));
        partition(&mut w, 2, true);
        let cut_at = w.now();
        let names: Vec<String> = (0..250).map(|k| format!("e-{k}")).collect();
        for (k, name) in names.iter().enumerate() {
            w.send_event_at(cut_at + Duration::from_millis(20 * k as u64), 0, name, b"");
        }
        w.run_until(cut_at + Duration::from_secs(15));
        partition(&mut w, 2, false);
        let healed_at = w.now();
        w.run_until(healed_at + Duration::from_secs(60));
        // The far side gets the 100 events its peers still keep, and counts the rest lost.
        for far in [2, 3] {
            let got = w.deliveries().iter().filter(|d| d.node == far).count();
            let lost = w.node(far).info().counters.events_lost;
            assert_eq!((got, lost), (100, 150), "node {far}");
        }
        for near in [0, 1] {
            assert_eq!(w.node(near).info().counters.events_lost, 0);
        }
    }
}
