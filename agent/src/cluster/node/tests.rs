//! One node alone, driven by hand: inputs in, effects out, no sockets and no clock. The
//! simulation (`sim/`) drives many of them together.

use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rumor_handlers::event::Event;

use super::*;
use crate::cluster::error::ClusterError;
use crate::cluster::sim::world::{World, addr_of, id_of};
use crate::cluster::wire;

struct Driven {
    node: Node,
    base: Instant,
    at: Duration,
}

/// Node `n0` of a simulated LAN, alone, not started yet.
fn lone_node(now: Now) -> Node {
    let config = ClusterConfig {
        node: "n0".into(),
        ..World::config(crate::cluster::Profile::Lan)
    };
    let (rng, foca_rng) = (StdRng::seed_from_u64(1), StdRng::seed_from_u64(2));
    Node::new(config, id_of(0), false, rng, foca_rng, now)
}

impl Driven {
    /// `n0`, started, its start-up effects drained.
    fn new() -> Driven {
        let mut driven = Driven::unstarted();
        let now = driven.now();
        driven.node.start(now);
        driven.effects();
        driven
    }

    /// `n0`, not started yet.
    fn unstarted() -> Driven {
        let base = Instant::now();
        let now = Now {
            mono: base,
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        Driven {
            node: lone_node(now),
            base,
            at: Duration::ZERO,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: self.base + self.at,
            wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000) + self.at,
        }
    }

    fn effects(&mut self) -> Vec<Effect> {
        std::iter::from_fn(|| self.node.next_effect()).collect()
    }

    /// Moves time on and fires every timer that is due in `effects`.
    fn fire_due(&mut self, effects: Vec<Effect>, until: Duration) -> Vec<Effect> {
        self.at = until;
        let mut out = Vec::new();
        for effect in effects {
            match effect {
                Effect::Timer { at, tick } if at <= self.base + until => {
                    let now = self.now();
                    self.node.on_timer(tick, now);
                    out.extend(self.effects());
                }
                other => out.push(other),
            }
        }
        out
    }
}

fn sends(effects: &[Effect]) -> Vec<(SocketAddr, Kind, Vec<u8>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, kind, body } => Some((*to, *kind, body.clone())),
            _ => None,
        })
        .collect()
}

/// The member events among `effects`, as `(kind, names)`.
fn member_events(effects: &[Effect]) -> Vec<(&'static str, Vec<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(Event::Member { kind, members }) => Some((
                kind.as_str(),
                members.iter().map(|m| m.name.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_reports_its_own_join_at_start_and_its_own_leave_as_serf_does() {
    let mut d = Driven::unstarted();
    let now = d.now();
    d.node.start(now);
    let started = d.effects();
    assert_eq!(
        member_events(&started),
        [("member-join", vec!["n0".to_string()])],
        "the first event a handler sees is its own node joining"
    );
    assert!(
        matches!(started[0], Effect::Event(_)),
        "before anything else"
    );

    d.node.leave(now);
    let mut effects = d.effects();
    let mut at = Duration::ZERO;
    while !effects.iter().any(|e| matches!(e, Effect::Left)) {
        at += Duration::from_millis(50);
        assert!(at < Duration::from_secs(10), "the leave never completed");
        effects = d.fire_due(effects, at);
    }
    let left = effects
        .iter()
        .position(|e| matches!(e, Effect::Left))
        .unwrap();
    assert_eq!(
        member_events(&effects[..left]),
        [("member-leave", vec!["n0".to_string()])],
        "its own leave reaches its handlers before the node stops"
    );
}

#[test]
fn garbage_is_counted_and_changes_nothing() {
    let mut d = Driven::new();
    let now = d.now();
    let stranger = addr_of(99);
    d.node.on_datagram(stranger, Kind::Tree, b"\xff\xff", now);
    d.node.on_datagram(stranger, Kind::QueryReply, b"", now);
    d.node.on_datagram(stranger, Kind::Ping, b"short", now);
    d.node
        .on_unreadable(stranger, &wire::WireError::BadMagic(b'G'));
    d.node.on_unreadable(stranger, &wire::WireError::Encrypted);
    assert!(d.effects().is_empty());
    let counters = d.node.info().counters;
    assert_eq!(counters.packets_received, 5);
    assert_eq!(counters.packets_rejected, 4);
    assert_eq!(counters.packets_undecryptable, 1);
    assert_eq!(d.node.members().len(), 1, "only itself");
}

#[test]
fn a_ping_is_answered_with_its_nonce() {
    let mut d = Driven::new();
    let now = d.now();
    let asker = addr_of(5);
    d.node
        .on_datagram(asker, Kind::Ping, &wire::nonce_body(42), now);
    let out = sends(&d.effects());
    assert_eq!(out, [(asker, Kind::Ack, wire::nonce_body(42).to_vec())]);
}

#[test]
fn an_event_sent_by_a_lone_node_reaches_its_own_handlers_once() {
    let mut d = Driven::new();
    let now = d.now();
    let ltime = d
        .node
        .send_event("deploy".into(), b"v2".to_vec(), false, now)
        .unwrap();
    let effects = d.effects();
    let events: Vec<&Event> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert!(
        matches!(events[..], [Event::User(u)] if u.name == "deploy" && u.ltime == ltime),
        "{events:?}"
    );
    assert!(sends(&effects).is_empty(), "nobody to tell");
    let too_big = vec![0u8; 4096];
    let err = d.node.send_event("x".into(), too_big, false, now);
    assert!(matches!(err, Err(ClusterError::EventTooLarge { .. })));
}

#[test]
fn a_query_answered_by_the_asker_itself_completes_at_once() {
    let mut d = Driven::new();
    let now = d.now();
    let params = views::QueryParams {
        name: "uptime".into(),
        ..views::QueryParams::default()
    };
    let id = d.node.ask_query(params, now).unwrap();
    let effects = d.effects();
    assert!(matches!(
        &effects[0],
        Effect::Query { id: i, update: query::QueryUpdate::Started { expected, .. } }
            if *i == id && expected == &["n0".to_string()]
    ));
    let handed = effects.iter().find_map(|e| match e {
        Effect::Event(Event::Query(q)) => Some(q.clone()),
        _ => None,
    });
    let q = handed.expect("the query goes to our own handlers");
    // The handler answers; the answer goes to the asker's address, which is ours.
    d.node
        .respond(q.origin, q.id, Ok(b"up 3 days".to_vec()), now);
    let (to, kind, body) = sends(&d.effects()).pop().expect("an answer datagram");
    assert_eq!((to, kind), (addr_of(0), Kind::QueryReply));
    d.node.on_datagram(to, kind, &body, now);
    let updates: Vec<query::QueryUpdate> = d
        .effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Query { update, .. } => Some(update),
            _ => None,
        })
        .collect();
    assert!(matches!(
        &updates[..],
        [query::QueryUpdate::Answer { node, .. }, query::QueryUpdate::Done { timed_out: false, missing }]
            if node == "n0" && missing.is_empty()
    ));
}

#[test]
fn a_lone_node_leaves_at_once_and_records_it() {
    let mut d = Driven::new();
    let now = d.now();
    d.node.leave(now);
    let effects = d.effects();
    let effects = d.fire_due(effects, Duration::from_millis(100));
    let persisted: Vec<&Persist> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(persisted, [&Persist::Left(true), &Persist::Sync]);
    assert!(matches!(effects.last(), Some(Effect::Left)));
    assert_eq!(d.node.members()[0].status, views::Status::Leaving);
}

#[test]
fn the_start_sets_the_periodic_timers() {
    let base = Instant::now();
    let now = Now {
        mono: base,
        wall: UNIX_EPOCH,
    };
    let mut node = lone_node(now);
    node.start(now);
    let ticks: Vec<String> = std::iter::from_fn(|| node.next_effect())
        .filter_map(|e| match e {
            Effect::Timer { tick, .. } => Some(format!("{tick:?}")),
            _ => None,
        })
        .collect();
    for periodic in ["PushPull", "Reap", "Heartbeat", "Expire", "Reconnect"] {
        assert!(
            ticks.iter().any(|t| t == periodic),
            "{periodic} in {ticks:?}"
        );
    }
}
