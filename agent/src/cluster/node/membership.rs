//! The node's wiring of membership: foca's notifications into the member table (which turns
//! them into member events), the snapshot's record of who is alive, foca's sizing, reaping,
//! and the heartbeat ring. The decisions themselves live in `members.rs` (statuses, tags,
//! reaping) and `heartbeat.rs` (whom to send the heartbeat to).

use std::collections::HashSet;
use std::net::SocketAddr;

use foca::OwnedNotification;
use tracing::{debug, error, info, warn};

use super::effect::{Persist, Tick};
use super::identity::NodeId;
use super::{Effect, Node, REAP_INTERVAL, heartbeat};
use crate::cluster::wire::Kind;

impl Node {
    pub(super) fn on_notification(&mut self, notification: OwnedNotification<NodeId>) {
        let now = self.now.wall;
        match notification {
            OwnedNotification::MemberUp(id) => {
                info!(member = %id, "member alive");
                self.catch_up_if_back(&id);
                self.effects.persist(Persist::Alive {
                    name: id.name.clone(),
                    addr: id.addr,
                });
                let events = self.state.lock().members.member_up(id, now);
                self.state.lock().outbox.extend(events);
            }
            OwnedNotification::MemberDown(id) => {
                self.suspicions.forget(&id);
                self.tree.remove_peer(&id.addr);
                self.effects.persist(Persist::NotAlive {
                    name: id.name.clone(),
                });
                let events = self.state.lock().members.member_down(&id, now);
                info!(member = %id, "member down");
                self.state.lock().outbox.extend(events);
                // A process of the same name elsewhere, held back while this one was alive
                // (a host that moved), takes its place now.
                let successor = self
                    .foca
                    .iter_members()
                    .map(|m| m.id())
                    .find(|other| other.name == id.name && other.addr != id.addr)
                    .cloned();
                if let Some(next) = successor {
                    let events = self.state.lock().members.member_up(next, now);
                    self.state.lock().outbox.extend(events);
                }
            }
            OwnedNotification::Rename(old, new) => {
                let active = self.foca.iter_members().any(|m| m.id() == &new);
                if active {
                    self.catch_up_if_back(&new);
                    self.effects.persist(Persist::Alive {
                        name: new.name.clone(),
                        addr: new.addr,
                    });
                }
                debug!(%old, %new, active, "member identity replaced");
                let events = self.state.lock().members.renamed(&old, new, active, now);
                self.state.lock().outbox.extend(events);
            }
            OwnedNotification::Active => {
                info!("connected to the cluster");
                self.effects.persist(Persist::Left(false));
                // The members just learned go to disk now, not at the next interval: a node
                // that crashes right after joining still rejoins on its own.
                self.effects.persist(Persist::Now);
                self.connected = true;
                self.ever_joined = true;
                self.anti_entropy.connected();
            }
            OwnedNotification::Idle => {
                self.connected = false;
                if self.leaving.is_none() {
                    warn!(
                        "no live members left: will keep announcing to join addresses and known members"
                    );
                    self.schedule_reannounce();
                }
            }
            OwnedNotification::Defunct => {
                if self.leaving.is_none() {
                    error!("this node was declared dead and cannot rejoin; restart the agent");
                }
            }
            OwnedNotification::Rejoin(id) => {
                warn!(identity = %id, "the cluster declared this node dead; rejoined as a new generation");
                self.state.lock().members.set_local_id(id);
                self.next_seq = 1; // a new generation: a new stream of user events
            }
            OwnedNotification::ProbeFailed(_, id) => {
                self.state.lock().counters.probes_failed += 1;
                self.report_suspect(id);
            }
            // Filtered out by `SwimRuntime`.
            OwnedNotification::DataReceived(_) | OwnedNotification::DataSent(_) => {}
        }
    }

    /// foca's transmission counts and suspicion time depend on the cluster size.
    pub(super) fn resize(&mut self) {
        let live = self.foca.num_members() + 1;
        if live != self.sized_for {
            self.sized_for = live;
            if let Err(e) = self.foca.set_config(self.config.profile.foca_config(live)) {
                warn!("could not resize foca's config for {live} members: {e}");
            }
        }
    }

    /// Removes members failed or left for longer than their timeouts, and tree links to
    /// members foca no longer lists.
    pub(super) fn reap(&mut self) {
        self.effects
            .timer(self.now.mono + REAP_INTERVAL, Tick::Reap);
        let events = self.state.lock().members.reap(
            self.now.wall,
            self.config.reconnect_timeout,
            self.config.tombstone_timeout,
        );
        if !events.is_empty() {
            info!(count = events.len(), "reaped members");
            self.effects.extend(events.into_iter().map(Effect::Event));
        }
        // Tree peers that foca does not list as live (one that linked to us and died before
        // we ever heard of it, so no "down" came) are dropped; lost links are replaced.
        let live: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        if self.tree.retain_peers(|peer| live.contains(peer)) {
            self.flush();
        }
    }

    /// Sends this period's heartbeat to the next member on the ring (see heartbeat.rs).
    pub(super) fn heartbeat(&mut self) {
        let local = self.foca.identity().name.clone();
        let next = heartbeat::successor(
            &local,
            self.foca
                .iter_members()
                .map(|m| (m.id().name.as_str(), m.id().addr)),
        );
        if let Some(to) = next {
            self.effects.send(to, Kind::Heartbeat, Vec::new());
        }
        self.effects.timer(
            self.now.mono + self.config.profile.heartbeat_interval(),
            Tick::Heartbeat,
        );
    }
}
