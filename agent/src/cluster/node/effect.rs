//! What goes into a [`Node`](super::Node) and what comes out of it.
//!
//! Inputs are method calls that carry the time ([`Now`]); outputs are [`Effect`]s, queued in
//! order and taken with [`Node::next_effect`](super::Node::next_effect). The node never reads
//! a clock, a socket or a file: whoever drives it — the agent's actor or the simulation —
//! carries the effects out and feeds the results back in as inputs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use rumor_handlers::event::Event;

use super::exchange::{Mode, Purpose};
use super::identity::NodeId;
use super::plumtree::TreeTimer;
use super::query::QueryUpdate;
use crate::cluster::wire::Kind;

/// The time of an input: a monotonic instant for deadlines and timers, and the wall clock for
/// what is shown to users (status times, event latencies).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// The machine's clocks, for the agent.
    pub fn real() -> Now {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Something the node must be told about at a given time ([`Effect::Timer`]).
#[derive(Debug)]
pub enum Tick {
    /// A timer foca asked for; handed back exactly as given.
    Swim(foca::Timer<NodeId>),
    /// Exchange state with a random peer.
    PushPull,
    /// Remove members failed or left for longer than their timeouts.
    Reap,
    /// Not connected: announce ourselves to join addresses and known members again.
    Reannounce,
    /// A graceful leave is in progress: is it done spreading?
    LeaveCheck,
    /// The timeout of a query we asked (by id).
    QueryDeadline(u32),
    /// Ask the nodes that have not answered a query of ours again (by id).
    QueryReask(u32),
    /// Forget received queries whose asker stopped waiting, and stale suspicions.
    Expire,
    /// A first join did not answer in time: stop holding user events.
    ReleaseHeldEvents,
    /// Try to reach a failed member again.
    Reconnect,
    /// The next step of confirming a suspicion of this member (ping again, or report it).
    ConfirmSuspect(NodeId),
    /// The broadcast tree's own timers (ask for a missing broadcast, link again).
    Tree(TreeTimer),
    /// Send the next heartbeat on the ring.
    Heartbeat,
}

/// A change to what the node keeps on disk so that a restart rejoins on its own (see
/// `snapshot.rs`). The clocks are read with [`Node::clocks`](super::Node::clocks) whenever
/// the driver writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    Alive {
        name: String,
        addr: SocketAddr,
    },
    NotAlive {
        name: String,
    },
    /// Whether the node left gracefully (`false` again once it is back in a cluster).
    Left(bool),
    /// Write what changed now rather than at the next interval (a join just happened).
    Now,
    /// Write what changed and wait until it is on disk: the node is stopping.
    Sync,
}

/// An instruction from the node to its driver.
#[derive(Debug)]
pub enum Effect {
    /// Send a datagram (the driver adds the envelope and seals it).
    Send {
        to: SocketAddr,
        kind: Kind,
        body: Vec<u8>,
    },
    /// Call [`Node::on_timer`](super::Node::on_timer) with `tick` at `at`.
    Timer { at: Instant, tick: Tick },
    /// An event for the local handlers.
    Event(Event),
    /// News for the asker of query `id` (the last one is [`QueryUpdate::Done`]).
    Query { id: u32, update: QueryUpdate },
    /// Exchange state with `peer` over TCP (the node's side with
    /// [`Node::exchange_state`](super::Node::exchange_state)); give the peer's state to
    /// [`Node::merge`](super::Node::merge), and report an exchange that merged nothing with
    /// [`Node::on_exchange`](super::Node::on_exchange).
    Exchange {
        peer: SocketAddr,
        mode: Mode,
        why: Purpose,
    },
    /// Not connected: join again through the first of these addresses that answers.
    Rejoin { targets: Vec<String> },
    /// Answer one of rumor's key queries (`_rumor_keys_*`) against the keyring, and give the
    /// result to [`Node::respond`](super::Node::respond). `ltime`: the query's Lamport time,
    /// which with its origin orders key changes (an older one never undoes a newer one).
    KeyQuery {
        origin: String,
        id: u32,
        ltime: u64,
        name: String,
        payload: Vec<u8>,
    },
    /// Record a change in the snapshot file.
    Persist(Persist),
    /// The graceful leave is complete: stop driving the node.
    Left,
}

/// The node's queue of effects, in the order they arose.
#[derive(Default)]
pub(super) struct Effects(VecDeque<Effect>);

impl Effects {
    pub(super) fn push(&mut self, effect: Effect) {
        self.0.push_back(effect);
    }

    pub(super) fn pop(&mut self) -> Option<Effect> {
        self.0.pop_front()
    }

    pub(super) fn extend(&mut self, effects: impl IntoIterator<Item = Effect>) {
        self.0.extend(effects);
    }

    pub(super) fn send(&mut self, to: SocketAddr, kind: Kind, body: Vec<u8>) {
        self.push(Effect::Send { to, kind, body });
    }

    pub(super) fn timer(&mut self, at: Instant, tick: Tick) {
        self.push(Effect::Timer { at, tick });
    }

    pub(super) fn persist(&mut self, change: Persist) {
        self.push(Effect::Persist(change));
    }
}
