//! Anti-entropy: when the node exchanges state with another over TCP, what it sends, and how
//! it merges what comes back. Exchanges happen to join, periodically with a random member, at
//! once with a member back from failed (catch-up), with a random failed member (Serf's
//! reconnect), and while cut off (re-announce to everyone we ever knew). The driver runs the
//! exchanges (`push_pull.rs`); the node decides when and merges the results.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foca::Member;
use rand::seq::IndexedRandom;
use tracing::{debug, warn};

use super::Node;
use super::effect::{Effect, Tick};
use super::events::StreamSummary;
use super::exchange::{ExchangeOutcome, ExchangeState, Mode, Purpose};
use super::identity::NodeId;
use super::message::{self, Broadcast, LeaveIntent, TagRecord};
use super::views::Status;

const REANNOUNCE_FIRST: Duration = Duration::from_secs(1);
const REANNOUNCE_MAX: Duration = Duration::from_secs(30);
/// At most one catch-up exchange with a returning member per this interval: all of the other
/// side's events arrive through one.
const CATCH_UP_SPACING: Duration = Duration::from_secs(1);

/// When the node last caught up, and how it backs off re-announcing while cut off.
pub(super) struct AntiEntropy {
    last_catch_up: Option<Instant>,
    reannounce_backoff: Duration,
    reannounce_scheduled: bool,
}

impl Default for AntiEntropy {
    fn default() -> Self {
        AntiEntropy {
            last_catch_up: None,
            reannounce_backoff: REANNOUNCE_FIRST,
            reannounce_scheduled: false,
        }
    }
}

impl AntiEntropy {
    /// Back in a cluster: the next time we are cut off, re-announce quickly again.
    pub(super) fn connected(&mut self) {
        self.reannounce_backoff = REANNOUNCE_FIRST;
    }
}

impl Node {
    /// Our state, to send to a peer in an exchange, with the user events the peer has not
    /// delivered when its streams are known (`peer`). `join`: we are joining through it; on a
    /// first join the cluster's history is not for us, and user events wait until the answer
    /// says which of them are history.
    pub fn exchange_state(
        &mut self,
        join: bool,
        peer: Option<&[StreamSummary]>,
        now: super::Now,
    ) -> ExchangeState {
        self.tick_clock(now);
        let first_join = join && !self.ever_joined && !self.restarted;
        if first_join && !self.state.lock().holding_events() {
            self.state.lock().hold_events();
            let bound = self.config.profile.push_pull_timeout() * 2;
            self.effects
                .timer(now.mono + bound, Tick::ReleaseHeldEvents);
        }
        let state = self.state.lock();
        ExchangeState {
            from: self.foca.identity().clone(),
            join,
            members: state.members.iter().cloned().collect(),
            swim: self.foca.iter_membership_state().cloned().collect(),
            event_ltime: state.event_clock.time(),
            query_ltime: state.query_clock.time(),
            streams: state.events.summary(),
            events: peer.map_or_else(Vec::new, |p| state.events.missing_for(p)),
            wants_events: !first_join,
        }
    }

    /// A first join did not answer in time: the events held meanwhile are news after all.
    pub(super) fn release_held_events(&mut self) {
        if self.state.lock().holding_events() {
            let now = self.now.wall;
            self.state.lock().release_events(None, now);
            self.flush();
        }
    }

    /// Merges a peer's state (from an exchange either side started). `answer_to_join`: it
    /// answers our own join, so the cluster's event history is not replayed here.
    pub fn merge(&mut self, remote: ExchangeState, answer_to_join: bool, now: super::Now) {
        self.tick_clock(now);
        let local = self.foca.identity().clone();
        if remote.from == local {
            debug!("ignoring a push-pull exchange with ourselves");
            return;
        }
        if message::check_node_name(&remote.from.name).is_err() {
            warn!(from = ?remote.from, "ignoring push-pull state with an invalid node name");
            return;
        }
        // What the peer knows goes through foca's broadcast path, exactly like a received
        // broadcast: what is news to us is applied *and* spread further with a fresh budget
        // (memberlist does the same with state learned by push-pull).
        let mut learned: Vec<Broadcast> = Vec::new();
        {
            let mut state = self.state.lock();
            state.event_clock.witness(remote.event_ltime);
            state.query_clock.witness(remote.query_ltime);
            if answer_to_join && state.holding_events() {
                // Our first join: what the cluster sent before it is history, not for our
                // handlers. Events gossiped to us while the join was in flight are sorted now.
                state.release_events(Some(&remote.streams), now.wall);
            }
            for member in &remote.members {
                if message::check_node_name(&member.id.name).is_err() {
                    continue;
                }
                // The peer's own record keeps its address: the peer is certainly alive (it
                // is talking to us), and nodes that have not heard of it yet add it to their
                // membership from this copy at once, without waiting for foca's membership
                // gossip. Other members' records go without: they may be gone.
                learned.push(Broadcast::Tags(TagRecord {
                    addr: (member.id == remote.from).then_some(member.id.addr),
                    node: member.id.name.clone(),
                    version: member.tag_version,
                    tags: member.tags.clone(),
                }));
                if let Some(generation) = member.left_generation {
                    learned.push(Broadcast::Leave(LeaveIntent {
                        node: member.id.name.clone(),
                        generation,
                        by: member.id.name.clone(),
                        prune: false,
                    }));
                }
                state.members.learn_absent(member, now.wall);
            }
            state.counters.push_pull_ok += 1;
        }
        learned.extend(remote.events.into_iter().map(|e| Broadcast::User {
            event: e.event,
            seq: e.seq,
            sent_unix_ms: 0,
        }));
        for item in learned {
            if let Err(e) = self.offer(item, false) {
                debug!(from = %remote.from, "ignoring an invalid item in push-pull state: {e}");
            }
        }
        // What the peer has moved past and no longer keeps, we will not get from it.
        let lost = self
            .state
            .lock()
            .events
            .write_off_unrecoverable(&remote.streams);
        for l in lost {
            warn!(
                origin = %l.origin, first = l.first, last = l.last, count = l.count, peer = %remote.from,
                "user events lost: the peer no longer keeps them (raise event_retention to keep more)"
            );
            self.state.lock().counters.events_lost += l.count;
        }
        // A "down" verdict about a member we hold active is left out: our own probes are the
        // fresher word on it (a dead one is soon found by them), whereas the peer may be
        // repeating what its side of a healed partition concluded — applying that would make
        // a live member flap to failed here until it renews its identity.
        let active: HashSet<NodeId> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        let mut swim: Vec<Member<NodeId>> = remote
            .swim
            .into_iter()
            .filter(|m| message::check_node_name(&m.id().name).is_ok())
            .filter(|m| !(m.state() == foca::State::Down && active.contains(m.id())))
            .collect();
        swim.push(Member::alive(remote.from.clone()));
        if let Err(e) = self
            .foca
            .apply_many(swim.into_iter(), true, &mut self.runtime)
        {
            debug!("foca apply_many: {e}");
        }
        if answer_to_join && let Err(e) = self.foca.announce(remote.from.clone(), &mut self.runtime)
        {
            debug!("foca announce: {e}");
        }
        self.flush();
    }

    /// How an exchange that merged nothing ended.
    pub fn on_exchange(&mut self, outcome: ExchangeOutcome) {
        let counters = &mut self.state.lock().counters;
        match outcome {
            ExchangeOutcome::InSync => {
                counters.push_pull_ok += 1;
                counters.push_pull_in_sync += 1;
            }
            ExchangeOutcome::Failed => counters.push_pull_failed += 1,
            ExchangeOutcome::RateLimited => counters.push_pull_rate_limited += 1,
            ExchangeOutcome::Undecryptable => counters.packets_undecryptable += 1,
        }
    }

    pub(super) fn periodic_push_pull(&mut self) {
        let interval = self
            .config
            .profile
            .push_pull_interval(self.foca.num_members() + 1);
        self.effects.timer(self.now.mono + interval, Tick::PushPull);
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let Some(&peer) = peers.choose(&mut self.rng) else {
            return;
        };
        self.exchange_with(peer, Mode::Digest, Purpose::Periodic);
    }

    fn exchange_with(&mut self, peer: SocketAddr, mode: Mode, why: Purpose) {
        self.effects.push(Effect::Exchange { peer, mode, why });
    }

    /// A member we had written off is back (a healed partition, a host back up): what each
    /// side sent meanwhile has left gossip, so exchange state with it now rather than at the
    /// next periodic push-pull.
    pub(super) fn catch_up_if_back(&mut self, id: &NodeId) {
        let was_failed = self
            .state
            .lock()
            .members
            .get(&id.name)
            .is_some_and(|m| m.status == Status::Failed);
        let recently = self
            .anti_entropy
            .last_catch_up
            .is_some_and(|t| self.now.mono.saturating_duration_since(t) < CATCH_UP_SPACING);
        if was_failed && !recently && self.leaving.is_none() {
            self.catch_up_with(id.addr, Purpose::CatchUp);
        }
    }

    /// Serf's reconnect: an exchange with one random failed member. If it is reachable again
    /// (a partition healed, a host came back) the exchange merges both sides' state, events
    /// included, and foca takes it from there.
    pub(super) fn reconnect(&mut self) {
        self.effects.timer(
            self.now.mono + self.config.profile.reconnect_interval(),
            Tick::Reconnect,
        );
        if self.leaving.is_some() {
            return;
        }
        let failed: Vec<SocketAddr> = self
            .state
            .lock()
            .members
            .iter()
            .filter(|m| m.status == Status::Failed)
            .map(|m| m.id.addr)
            .collect();
        let Some(&addr) = failed.choose(&mut self.rng) else {
            return;
        };
        self.catch_up_with(addr, Purpose::Reconnect);
    }

    fn catch_up_with(&mut self, addr: SocketAddr, why: Purpose) {
        self.anti_entropy.last_catch_up = Some(self.now.mono);
        self.exchange_with(addr, Mode::Full, why);
    }

    pub(super) fn schedule_reannounce(&mut self) {
        let ae = &mut self.anti_entropy;
        if !ae.reannounce_scheduled {
            ae.reannounce_scheduled = true;
            let at = self.now.mono + ae.reannounce_backoff;
            self.effects.timer(at, Tick::Reannounce);
        }
    }

    /// While cut off (foca stops its own timers when idle), try to join again through the
    /// configured addresses and every member we ever knew, backing off up to 30 s.
    pub(super) fn reannounce(&mut self) {
        self.anti_entropy.reannounce_scheduled = false;
        if self.connected || self.leaving.is_some() {
            return;
        }
        let mut targets: Vec<String> = self.config.join.clone();
        targets.extend(self.config.retry_join.iter().cloned());
        {
            let state = self.state.lock();
            let local = &state.members.local().id.name;
            // Not the members that left on purpose: announcing to one would pull it back in
            // after a restart, which `rumor leave` promises it will not do.
            targets.extend(
                state
                    .members
                    .iter()
                    .filter(|m| &m.id.name != local && m.status != Status::Left)
                    .map(|m| m.id.addr.to_string()),
            );
        }
        targets.dedup();
        if targets.is_empty() {
            return;
        }
        debug!(targets = targets.len(), "re-announcing");
        self.effects.push(Effect::Rejoin { targets });
        let ae = &mut self.anti_entropy;
        ae.reannounce_backoff = (ae.reannounce_backoff * 2).min(REANNOUNCE_MAX);
        self.schedule_reannounce();
    }
}
