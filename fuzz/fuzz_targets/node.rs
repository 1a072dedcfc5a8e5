//! A cluster node fed anything: datagrams of every kind with any body, from members, strangers
//! and forged addresses, real traffic mangled in flight or replayed later, and any push-pull
//! state — through `Node::on_datagram`, `on_unreadable` and `merge`, the node core's own
//! inputs. Afterwards every node must still work: it answers a ping, a new node can join
//! through it, and a user event crosses both ways.
#![no_main]

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rumor::cluster::node::exchange::ExchangeState;
use rumor::cluster::sim::world::addr_of;
use rumor::cluster::wire::{self, Kind};
use rumor_fuzz::world::World;

/// Nodes of the cluster under attack.
const NODES: usize = 3;
/// The node that joins afterwards to check the others still work.
const CHECKER: usize = 7;
/// Inputs longer than this are cut (each step can be expensive).
const MAX_OPS: usize = 64;
/// Simulated time the fuzzer may let pass in all.
const MAX_WAIT: Duration = Duration::from_secs(120);

#[derive(Arbitrary, Debug)]
enum Sender {
    Member(u8),
    /// An address no node has.
    Stranger(u16),
    V6(u16),
}

impl Sender {
    fn addr(&self) -> SocketAddr {
        match self {
            Sender::Member(i) => addr_of(usize::from(*i) % NODES),
            Sender::Stranger(port) => SocketAddr::from(([192, 0, 2, 1], *port)),
            Sender::V6(port) => SocketAddr::from((Ipv6Addr::LOCALHOST, *port)),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A datagram whose envelope says `kind` (the byte as it would arrive).
    Datagram {
        from: Sender,
        to: u8,
        kind: u8,
        body: Vec<u8>,
    },
    /// A push-pull state decoded from these bytes, merged by node `to`.
    State { to: u8, join: bool, body: Vec<u8> },
    /// Changes a byte of (or cuts) the `k`-th datagram in flight.
    Mangle { k: u8, at: u16, xor: u8, cut: bool },
    /// Sends an earlier datagram again, to node `to`.
    Replay { k: u8, to: u8 },
    /// Lets simulated time pass.
    Wait { ms: u16 },
    /// A user event at node `node`.
    Event { node: u8 },
}

fn node(i: u8) -> usize {
    usize::from(i) % NODES
}

fuzz_target!(|ops: Vec<Op>| {
    let mut world = World::new(NODES);
    let mut waited = Duration::ZERO;
    for (k, op) in ops.into_iter().take(MAX_OPS).enumerate() {
        match op {
            Op::Datagram {
                from,
                to,
                kind,
                body,
            } => {
                let body = &body[..body.len().min(wire::MAX_DATAGRAM)];
                match wire::parse_header([wire::MAGIC, wire::PROTOCOL_VERSION, kind]) {
                    Ok((kind, false)) => world.inject(from.addr(), node(to), kind, body),
                    Ok((_, true)) => {
                        world.unreadable(from.addr(), node(to), &wire::WireError::Encrypted)
                    }
                    Err(e) => world.unreadable(from.addr(), node(to), &e),
                }
            }
            Op::State { to, join, body } => {
                if let Ok(state) = postcard::from_bytes::<ExchangeState>(&body) {
                    world.merge(node(to), state, join);
                }
            }
            Op::Mangle { k, at, xor, cut } => {
                if let Some(d) = world.in_flight(usize::from(k)) {
                    if !d.body.is_empty() {
                        let at = usize::from(at) % d.body.len();
                        if cut {
                            d.body.truncate(at);
                        } else {
                            d.body[at] ^= xor.max(1);
                        }
                    }
                }
            }
            Op::Replay { k, to } => {
                if let Some(d) = world.captured(usize::from(k)) {
                    world.inject(d.from, node(to), d.kind, &d.body);
                }
            }
            Op::Wait { ms } => {
                let d = Duration::from_millis(u64::from(ms)).min(MAX_WAIT - waited);
                waited += d;
                world.run_for(d);
            }
            Op::Event { node: i } => world.send_event(node(i), &format!("fuzz-{k}")),
        }
    }
    assert!(
        world.most_effects < 4096,
        "one input made a node produce {} effects",
        world.most_effects
    );
    world.run_for(Duration::from_secs(5));

    // Every node answers a ping at once.
    for i in 0..NODES {
        assert!(world.node(i).is_some(), "n{i} stopped");
        let asker = SocketAddr::from(([192, 0, 2, 99], 4000 + i as u16));
        world.inject(asker, i, Kind::Ping, &wire::nonce_body(0xfeed + i as u64));
        let acked = world.outside().iter().any(|d| {
            d.to == asker
                && d.kind == Kind::Ack
                && wire::parse_nonce(&d.body) == Some(0xfeed + i as u64)
        });
        assert!(acked, "n{i} no longer answers a ping");
    }

    // A new node joins through n0, and an event crosses each way.
    world.join(CHECKER, 0);
    world.send_event(CHECKER, "check-from-checker");
    world.send_event(0, "check-from-n0");
    let crossed = world.run_until(Duration::from_secs(120), |w| {
        w.delivered(0).iter().any(|e| e == "check-from-checker")
            && w.delivered(CHECKER).iter().any(|e| e == "check-from-n0")
    });
    assert!(
        crossed,
        "after the input, events no longer cross between n0 and a node that joined it: \
         n0 handled {:?}, the new node {:?}",
        world.delivered(0),
        world.delivered(CHECKER)
    );
});
