//! The local commands a node takes from its agent (`rumor members`, `info`, `events`,
//! `event`, `tags`, `force-leave`): what it reports, and the checks and broadcasts behind
//! each change.

use std::time::UNIX_EPOCH;

use rumor_handlers::event::{Tags, UserEvent};

use super::message::{self, Broadcast, EventSeq, LeaveIntent};
use super::views::{ClusterInfo, Counters, MemberView, SeenEvent, Status};
use super::{Node, Now};
use crate::cluster::error::ClusterError;

impl Node {
    // ---- commands that read ----

    /// Every member this node knows, itself included, sorted by name.
    pub fn members(&self) -> Vec<MemberView> {
        self.state.lock().members.iter().map(|m| m.view()).collect()
    }

    /// Bumped whenever [`Node::members`] would show something else.
    pub fn members_revision(&self) -> u64 {
        self.state.lock().members.revision()
    }

    pub fn info(&self) -> ClusterInfo {
        let state = self.state.lock();
        let local = state.members.local();
        ClusterInfo {
            node: local.id.name.clone(),
            advertise: local.id.addr,
            generation: local.id.generation,
            connected: self.connected,
            members_alive: state.members.count(Status::Alive),
            members_leaving: state.members.count(Status::Leaving),
            members_left: state.members.count(Status::Left),
            members_failed: state.members.count(Status::Failed),
            event_clock: state.event_clock.time(),
            max_event_bytes: self.config.max_event_bytes,
            events_kept: state.events.kept_len(),
            event_retention: state.events.retention().count,
            event_retention_secs: state.events.retention().age.as_secs(),
            profile: self.config.profile.as_str().to_string(),
            name_conflicts: state.members.conflicts().to_vec(),
            event_latency: state.event_latency.clone(),
            counters: Counters {
                tree_duplicates: self.tree.counters.duplicates,
                tree_grafts: self.tree.counters.grafts,
                ..state.counters.clone()
            },
        }
    }

    /// The user events this node keeps for others, in the order they arrived.
    pub fn recent_events(&self) -> Vec<SeenEvent> {
        let state = self.state.lock();
        state
            .events
            .kept()
            .map(|seen| SeenEvent {
                name: seen.event.name.clone(),
                ltime: seen.event.ltime,
                origin: seen.event.origin.clone(),
                payload_bytes: seen.event.payload.len(),
                received_unix_ns: seen
                    .received
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            })
            .collect()
    }

    // ---- commands that change ----

    /// Sends a user event to the whole cluster; returns its Lamport time.
    pub fn send_event(
        &mut self,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
        now: Now,
    ) -> Result<u64, ClusterError> {
        self.tick_clock(now);
        message::check_event_name(&name).map_err(|reason| ClusterError::InvalidName {
            name: name.clone(),
            reason,
        })?;
        let size = name.len() + payload.len();
        if size > self.config.max_event_bytes {
            return Err(ClusterError::EventTooLarge {
                size,
                limit: self.config.max_event_bytes,
            });
        }
        let (ltime, origin, generation, claimed) = {
            let mut state = self.state.lock();
            let me = &state.members.local().id;
            let (origin, generation) = (me.name.clone(), me.generation);
            let claimed = state.events.high(&origin, generation);
            (state.event_clock.tick(), origin, generation, claimed)
        };
        // Our stream is ours: if the cluster saw a number of it we never sent (a forged or
        // corrupted datagram on an unencrypted network), numbering on below it would make
        // every member, this one included, take our next events for copies of that one. Go on
        // above it, as a member refutes a suspicion with a higher incarnation.
        self.next_seq = self.next_seq.max(claimed + 1);
        let seq = EventSeq {
            generation,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let sent_unix_ms = now
            .wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.add_broadcast(Broadcast::User {
            event: UserEvent {
                ltime,
                name,
                payload,
                coalesce,
                origin,
            },
            seq,
            sent_unix_ms,
        });
        Ok(ltime)
    }

    /// Sets and deletes tags of this node; returns the resulting tags.
    pub fn update_tags(
        &mut self,
        set: Tags,
        delete: Vec<String>,
        now: Now,
    ) -> Result<Tags, ClusterError> {
        self.tick_clock(now);
        let current = self.state.lock().members.local().tags.clone();
        let mut tags = current.clone();
        for key in &delete {
            tags.remove(key);
        }
        for (key, value) in set {
            message::check_tag_key(&key).map_err(ClusterError::InvalidTags)?;
            message::check_tag_value(&key, &value).map_err(ClusterError::InvalidTags)?;
            tags.insert(key, value);
        }
        let size = message::tags_size(&tags);
        if size > message::MAX_TAGS_BYTES {
            return Err(ClusterError::InvalidTags(format!(
                "the tags take {size} bytes, the limit is {} bytes",
                message::MAX_TAGS_BYTES
            )));
        }
        if tags == current {
            return Ok(tags); // nothing changed: no broadcast, no member-update everywhere
        }
        let record = self.state.lock().members.local_tag_record(tags.clone());
        self.add_broadcast(Broadcast::Tags(record));
        Ok(tags)
    }

    /// Marks a failed member as left everywhere (`prune` also removes it from the list).
    pub fn force_leave(&mut self, node: String, prune: bool, now: Now) -> Result<(), ClusterError> {
        self.tick_clock(now);
        let (target, by) = {
            let state = self.state.lock();
            let local = state.members.local().id.name.clone();
            let member = state
                .members
                .get(&node)
                .ok_or_else(|| ClusterError::UnknownMember(node.clone()))?;
            if member.id.name == local || matches!(member.status, Status::Alive | Status::Leaving) {
                return Err(ClusterError::MemberAlive(node));
            }
            if member.status == Status::Left && !prune {
                return Ok(());
            }
            (member.id.clone(), local)
        };
        self.add_broadcast(Broadcast::Leave(LeaveIntent {
            node: target.name,
            generation: target.generation,
            by,
            prune,
        }));
        Ok(())
    }
}
