//! The node: everything one cluster member decides, with no I/O.
//!
//! A [`Node`] owns foca (SWIM membership), the broadcast tree user events and queries travel
//! on, the cluster state (members, tags, the event window, clocks), suspicions and queries.
//! It takes inputs — a datagram, a timer, a local command, the result of an exchange — each
//! with the time ([`Now`]), and answers with [`Effect`]s: datagrams to send, timers to set,
//! events for the handlers, exchanges to start, changes to persist. It never reads a clock, a
//! socket or a file, so the agent's actor (`actor.rs`) and the simulation (`sim/`) drive the
//! very same code.
//!
//! Each concern keeps its own state type in its own module — the member table
//! (`members.rs`), the user events' streams (`events.rs`), the broadcast tree (`plumtree.rs`),
//! suspicions (`suspicion.rs`), queries (`query.rs`, `queries.rs`), the leave
//! (`leave.rs`), anti-entropy (`anti_entropy.rs`) — and the node wires them together. The
//! one loop they all go through is [`Node::flush`]: after every call into foca or the tree it
//! turns what they asked for into effects, and feeds what the broadcast handler collected
//! (news, queries, suspicions) to the concerns.

mod anti_entropy;
mod commands;
mod effect;
pub mod events;
pub mod exchange;
pub mod filter;
mod heartbeat;
pub mod identity;
mod lamport;
pub mod latency;
mod leave;
pub mod members;
mod membership;
pub mod message;
pub mod plumtree;
pub mod queries;
pub mod query;
mod recent;
mod runtime;
mod state;
mod suspect;
mod suspicion;
pub mod views;

use std::net::SocketAddr;
use std::time::Duration;

use foca::{Foca, Member, PostcardCodec};
use rand::rngs::StdRng;
use rumor_handlers::event::MemberEventKind;
use tracing::{debug, error, warn};

pub use effect::{Effect, Now, Persist, Tick};
pub use exchange::{ExchangeOutcome, ExchangeState};

use self::anti_entropy::AntiEntropy;
use self::effect::Effects;
use self::identity::NodeId;
use self::leave::Leaving;
use self::message::{Broadcast, QueryReply};
use self::plumtree::Plumtree;
use self::queries::Queries;
use self::runtime::SwimRuntime;
use self::state::{ClusterState, SharedState, SwimNode};
use self::suspicion::Suspicions;
use super::config::ClusterConfig;
use super::wire::{Kind, WireError};
use crate::log_limit::LogLimiter;

/// How often failed and left members are checked for reaping.
const REAP_INTERVAL: Duration = Duration::from_secs(2);
/// How often received queries and stale suspicions are forgotten.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(5);

/// One cluster member's decisions; see the module docs.
pub struct Node {
    config: ClusterConfig,
    foca: SwimNode,
    runtime: SwimRuntime,
    /// Shared with foca's broadcast handler (foca owns the handler); never locked across a
    /// call into foca.
    state: SharedState,
    tree: Plumtree<SocketAddr>,
    suspicions: Suspicions,
    queries: Queries,
    anti_entropy: AntiEntropy,
    leaving: Option<Leaving>,
    rng: StdRng,
    /// `true` once another live member knows about us.
    connected: bool,
    ever_joined: bool,
    /// This process continues an earlier one (from its snapshot): its first join is a rejoin,
    /// and events it missed while down are delivered (handlers skip what they already ran).
    restarted: bool,
    /// Live member count foca's config was last sized for.
    sized_for: usize,
    /// The number our next user event gets in our stream (see `events.rs`).
    next_seq: u64,
    /// See [`Node::announcing`].
    announcing: bool,
    rejected_log: LogLimiter,
    invalid_log: LogLimiter,
    crypto_log: LogLimiter,
    effects: Effects,
    now: Now,
}

impl Node {
    /// A node named and addressed `local`, alone. `restarted`: it continues an earlier
    /// process of this node (its snapshot said so). Call [`Node::start`] next.
    pub fn new(
        config: ClusterConfig,
        local: NodeId,
        restarted: bool,
        rng: StdRng,
        foca_rng: StdRng,
        now: Now,
    ) -> Node {
        let state = SharedState::new(ClusterState::new(
            local.clone(),
            config.tags.clone(),
            config.event_retention,
            now.wall,
        ));
        let foca = Foca::with_custom_broadcast(
            local,
            config.profile.foca_config(1),
            foca_rng,
            PostcardCodec,
            state.clone(),
        );
        Node {
            tree: Plumtree::new(config.profile.tree_graft_timeout())
                .with_direct_limit(config.direct_push_limit),
            foca,
            runtime: SwimRuntime::new(),
            state,
            suspicions: Suspicions::default(),
            queries: Queries::default(),
            anti_entropy: AntiEntropy::default(),
            leaving: None,
            rng,
            connected: false,
            ever_joined: false,
            restarted,
            sized_for: 1,
            next_seq: 1,
            announcing: true,
            rejected_log: LogLimiter::default(),
            invalid_log: LogLimiter::default(),
            crypto_log: LogLimiter::default(),
            effects: Effects::default(),
            now,
            config,
        }
    }

    /// Whether the node announces itself with a tag broadcast at start, and adds nodes it
    /// hears of only through such announcements to foca's membership (default `true`). A
    /// simulation with partial views turns it off: announcements introduce nodes that do not
    /// know each other, and every view would grow back to the whole cluster.
    pub fn announcing(mut self, on: bool) -> Node {
        self.announcing = on;
        self
    }

    /// Reports the node's own `member-join` (Serf's handlers see it at every agent start, the
    /// first line a hosts-file script gets), announces our tags and sets the periodic timers.
    pub fn start(&mut self, now: Now) {
        self.tick_clock(now);
        let joined = self.state.lock().members.local_event(MemberEventKind::Join);
        self.effects.push(Effect::Event(joined));
        if self.announcing {
            let record = {
                let state = self.state.lock();
                let tags = state.members.local().tags.clone();
                state.members.local_tag_record(tags)
            };
            self.add_broadcast(Broadcast::Tags(record));
        }
        let at = now.mono;
        let profile = self.config.profile;
        self.effects
            .timer(at + profile.push_pull_interval(1), Tick::PushPull);
        self.effects.timer(at + REAP_INTERVAL, Tick::Reap);
        self.effects
            .timer(at + profile.heartbeat_interval(), Tick::Heartbeat);
        self.effects.timer(at + EXPIRY_INTERVAL, Tick::Expire);
        self.effects
            .timer(at + profile.reconnect_interval(), Tick::Reconnect);
    }

    /// The next thing to do, in the order the node decided it.
    pub fn next_effect(&mut self) -> Option<Effect> {
        self.effects.pop()
    }

    /// The node's identity (name, advertised address, generation).
    pub fn id(&self) -> &NodeId {
        self.foca.identity()
    }

    /// The event and query Lamport clocks, for the snapshot.
    pub fn clocks(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.event_clock.time(), state.query_clock.time())
    }

    /// Continues the event and query clocks of an earlier process of this node (from its
    /// snapshot), so its events are not mistaken for old ones.
    pub fn restore_clocks(&mut self, (event, query): (u64, u64)) {
        let mut state = self.state.lock();
        state.event_clock.witness(event.saturating_sub(1));
        state.query_clock.witness(query.saturating_sub(1));
    }

    /// Counts datagrams the driver sent for us.
    pub fn count_sent(&mut self, packets: u64) {
        self.state.lock().counters.packets_sent += packets;
    }

    /// Members foca holds as alive (ourselves excluded).
    pub fn live_members(&self) -> impl Iterator<Item = &NodeId> {
        self.foca.iter_members().map(|m| m.id())
    }

    /// Seeds foca's membership directly (the simulation builds its cluster this way).
    pub fn seed_members(&mut self, members: impl Iterator<Item = NodeId>, now: Now) {
        self.tick_clock(now);
        let members = members.map(Member::alive);
        if let Err(e) = self.foca.apply_many(members, false, &mut self.runtime) {
            debug!("foca apply_many: {e}");
        }
        self.flush();
    }

    fn tick_clock(&mut self, now: Now) {
        self.now = now;
        self.state.lock().now = now.wall;
    }

    // ---- inputs ----

    /// A datagram whose envelope the driver opened.
    pub fn on_datagram(&mut self, from: SocketAddr, kind: Kind, body: &[u8], now: Now) {
        self.tick_clock(now);
        self.state.lock().counters.packets_received += 1;
        match kind {
            Kind::Swim => {
                if let Err(e) = self.foca.handle_data(body, &mut self.runtime) {
                    self.state.lock().counters.packets_invalid += 1;
                    if let Some(suppressed) = self.invalid_log.allow() {
                        warn!(%from, suppressed, "invalid SWIM packet ignored: {e}");
                    }
                }
                self.flush();
            }
            Kind::QueryReply => match QueryReply::decode(body) {
                Ok(reply) => self.on_query_reply(reply),
                Err(e) => self.reject(from, &format!("malformed query reply: {e}")),
            },
            Kind::Query => match Broadcast::decode(body) {
                Ok(Broadcast::Query(q)) => self.on_query_asked_again(q),
                Ok(_) => self.reject(from, "a direct query frame must carry a query"),
                Err(e) => self.reject(from, &format!("malformed direct query: {e}")),
            },
            Kind::Tree => match plumtree::decode(body) {
                Ok(plumtree::Frame::Gossip(encoded)) => self.on_tree_gossip(from, encoded, false),
                Ok(plumtree::Frame::Direct(encoded)) => self.on_tree_gossip(from, encoded, true),
                Ok(frame) => {
                    self.tree.on_control(from, &frame);
                    self.flush();
                }
                Err(e) => self.reject(from, &format!("malformed tree frame: {e}")),
            },
            Kind::Ping => match super::wire::parse_nonce(body) {
                Some(nonce) => {
                    let ack = super::wire::nonce_body(nonce).to_vec();
                    self.effects.send(from, Kind::Ack, ack);
                }
                None => self.reject(from, "malformed ping"),
            },
            Kind::Ack => match super::wire::parse_nonce(body) {
                Some(nonce) => self.suspicions.answered(nonce),
                None => self.reject(from, "malformed ack"),
            },
            // Nothing to do: its sender only wants to know whether our port is open.
            Kind::Heartbeat => {}
            Kind::PushPull => self.reject(from, "a PushPull frame is not valid over UDP"),
        }
    }

    /// A datagram the driver could not open: not ours, damaged, or sealed with a key we lack.
    pub fn on_unreadable(&mut self, from: SocketAddr, error: &WireError) {
        self.state.lock().counters.packets_received += 1;
        if error.is_crypto() {
            self.state.lock().counters.packets_undecryptable += 1;
            if let Some(suppressed) = self.crypto_log.allow() {
                warn!(%from, suppressed, "dropped packet: {error}");
            }
        } else {
            self.reject(from, &error.to_string());
        }
    }

    fn reject(&mut self, from: SocketAddr, reason: &str) {
        self.state.lock().counters.packets_rejected += 1;
        if let Some(suppressed) = self.rejected_log.allow() {
            warn!(%from, suppressed, "rejected packet: {reason}");
        }
    }

    /// A timer set by an [`Effect::Timer`] is due. When several are due at once, foca's come
    /// first, in foca's order (`Timer` implements `Ord`).
    pub fn on_timer(&mut self, tick: Tick, now: Now) {
        self.tick_clock(now);
        match tick {
            Tick::Swim(timer) => {
                if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                    debug!("foca timer: {e}");
                }
                self.flush();
            }
            Tick::PushPull => self.periodic_push_pull(),
            Tick::Reap => self.reap(),
            Tick::Reannounce => self.reannounce(),
            Tick::LeaveCheck => self.check_leave(),
            Tick::QueryDeadline(id) => self.finish_query(id, true),
            Tick::QueryReask(id) => self.reask(id),
            Tick::Reconnect => self.reconnect(),
            Tick::Heartbeat => self.heartbeat(),
            Tick::ReleaseHeldEvents => self.release_held_events(),
            Tick::Tree(timer) => {
                self.tree.timer_due(timer);
                self.flush();
            }
            Tick::ConfirmSuspect(member) => self.confirm_suspect(member),
            Tick::Expire => {
                self.queries.expire(now.mono);
                self.suspicions.expire(now.mono);
                self.state.lock().events.expire(now.wall);
                self.effects.timer(now.mono + EXPIRY_INTERVAL, Tick::Expire);
            }
        }
    }

    // ---- the pump ----

    /// Turns what foca and the tree asked for into effects, and hands what the broadcast
    /// handler collected to the concerns. Repeats while that causes more work.
    fn flush(&mut self) {
        loop {
            while let Some((to, data)) = self.runtime.next_send() {
                self.effects.send(to.addr, Kind::Swim, data);
            }
            while let Some((after, timer)) = self.runtime.next_timer() {
                self.effects.timer(self.now.mono + after, Tick::Swim(timer));
            }
            let mut more = false;
            while let Some(notification) = self.runtime.next_notification() {
                self.on_notification(notification);
                more = true;
            }
            // Eager relay: a broadcast that was news goes out now, not on the next gossip.
            if std::mem::take(&mut self.state.lock().relay) {
                if let Err(e) = state::relay_eagerly(&mut self.foca, &mut self.runtime) {
                    debug!("foca broadcast: {e}");
                }
                more = true;
            }
            let joined = std::mem::take(&mut self.state.lock().joins_inbox);
            if !joined.is_empty() && self.announcing {
                debug!(
                    count = joined.len(),
                    "members announced by their own broadcast"
                );
                let members = joined.into_iter().map(Member::alive);
                if let Err(e) = self.foca.apply_many(members, true, &mut self.runtime) {
                    debug!("foca apply_many: {e}");
                }
                more = true;
            }
            let queries = std::mem::take(&mut self.state.lock().query_inbox);
            for q in queries {
                self.accept_query(q);
            }
            let reports = std::mem::take(&mut self.state.lock().suspect_inbox);
            for report in reports {
                self.on_suspect_report(report);
                more = true;
            }
            let released = std::mem::take(&mut self.state.lock().tree_inbox);
            for encoded in released {
                self.tree.broadcast(&encoded);
            }
            self.drain_tree();
            if !more && self.runtime.backlog() == 0 {
                break;
            }
        }
        let events = std::mem::take(&mut self.state.lock().outbox);
        for event in events {
            self.effects.push(Effect::Event(event));
        }
        self.resize();
    }

    /// Turns the tree's frames and timers into effects; links it to more members first if it
    /// has too few peers.
    fn drain_tree(&mut self) {
        if self.tree.wants_peers() {
            let candidates: Vec<SocketAddr> =
                self.foca.iter_members().map(|m| m.id().addr).collect();
            self.tree.link(&candidates, &mut self.rng);
        }
        while let Some((to, out)) = self.tree.next_out() {
            let mut body = Vec::new();
            plumtree::encode(&out, &mut body);
            self.effects.send(to, Kind::Tree, body);
        }
        while let Some((after, timer)) = self.tree.next_timer() {
            self.effects.timer(self.now.mono + after, Tick::Tree(timer));
        }
    }

    /// A user event or query pushed to us on the tree, or (`direct`) by its sender itself.
    fn on_tree_gossip(&mut self, from: SocketAddr, encoded: &[u8], direct: bool) {
        let msg = match Broadcast::decode(encoded) {
            Ok(msg @ (Broadcast::User { .. } | Broadcast::Query(_))) => msg,
            Ok(_) => return self.reject(from, "only user events and queries travel the tree"),
            Err(e) => return self.reject(from, &format!("malformed broadcast on the tree: {e}")),
        };
        let new = if direct {
            self.tree.on_direct(from, encoded)
        } else {
            self.tree.on_gossip(from, encoded)
        };
        if new {
            let now = self.now.wall;
            self.state.lock().receive(msg, now);
        }
        self.flush();
    }

    /// Applies a broadcast of ours and spreads it: user events and queries on the tree, the
    /// rest through foca.
    fn add_broadcast(&mut self, msg: Broadcast) {
        if let Err(e) = self.offer(msg, true) {
            // Sizes are checked before we get here; this is a bug, not bad input.
            error!("could not queue broadcast: {e}");
        }
        if let Err(e) = state::relay_eagerly(&mut self.foca, &mut self.runtime) {
            debug!("foca broadcast: {e}");
        }
        self.flush();
    }

    /// Applies a broadcast (ours if `own`, else learned by push-pull) and, if it was news
    /// here, queues it to spread: user events and queries by the broadcast tree (ours straight
    /// to every member in a small cluster), the rest in foca's backlog (foca applies it
    /// through our handler).
    fn offer(&mut self, msg: Broadcast, own: bool) -> Result<(), foca::Error> {
        let encoded = msg.encode();
        match msg {
            Broadcast::User { .. } | Broadcast::Query(_) => {
                let now = self.now.wall;
                if self.state.lock().receive(msg, now) {
                    if own {
                        let members: Vec<SocketAddr> =
                            self.foca.iter_members().map(|m| m.id().addr).collect();
                        self.tree.broadcast_own(&encoded, members);
                    } else {
                        self.tree.broadcast(&encoded);
                    }
                }
                Ok(())
            }
            _ => self.foca.add_broadcast(&encoded).map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests;
