//! The member table: each node's identity, status and tags as this node believes them.
//!
//! foca decides who is alive; this table adds what Serf shows on top of that — `leaving`,
//! `left` versus `failed`, tags, reaping — and turns every change into an [`Event`]. It is a
//! plain state machine: inputs are foca notifications and our broadcasts, outputs are events.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumor_handlers::event::{Event, MemberEventKind, MemberInfo, Tags};
use serde::{Deserialize, Serialize};

use super::identity::NodeId;
use super::message::{LeaveIntent, TagRecord, TagVersion};
use super::recent::RecentSet;
use super::views::{MemberView, Status};
use crate::cluster::wire::PROTOCOL_VERSION;

/// How many leave intents are remembered to recognise copies of them.
const LEAVE_MEMORY: usize = 1024;

/// One member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub status: Status,
    pub tags: Tags,
    pub tag_version: TagVersion,
    /// The generation for which a leave was announced, if any.
    pub left_generation: Option<u64>,
    #[serde(skip, default = "SystemTime::now")]
    pub status_since: SystemTime,
}

impl Member {
    fn info(&self) -> MemberInfo {
        MemberInfo {
            name: self.id.name.clone(),
            addr: self.id.addr.ip(),
            port: self.id.addr.port(),
            tags: self.tags.clone(),
        }
    }

    pub fn view(&self) -> MemberView {
        MemberView {
            name: self.id.name.clone(),
            addr: self.id.addr.ip(),
            port: self.id.addr.port(),
            status: self.status,
            tags: self.tags.clone(),
            generation: self.id.generation,
            status_since_ms: self
                .status_since
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            protocol: PROTOCOL_VERSION,
        }
    }

    fn set_status(&mut self, status: Status, now: SystemTime) {
        self.status = status;
        self.status_since = now;
    }
}

/// Every member this node knows of, itself included, by name.
pub struct MemberTable {
    local: String,
    members: BTreeMap<String, Member>,
    /// Tags that arrived before foca told us about their node.
    pending_tags: HashMap<String, (TagVersion, Tags)>,
    seen_leaves: RecentSet<(String, u64, bool)>,
    /// Live nodes seen using a name another live node has (newest last, bounded).
    conflicts: Vec<String>,
    /// Bumped on every change a member list shows (status, tags, address, who is listed):
    /// whoever publishes the list compares it to know when to publish again.
    revision: u64,
}

/// How many name conflicts `rumor info` remembers.
const MAX_CONFLICTS: usize = 16;

fn member_event(kind: MemberEventKind, member: &Member) -> Event {
    Event::Member {
        kind,
        members: vec![member.info()],
    }
}

impl MemberTable {
    /// A table holding just the local node, alive with its tags.
    pub fn new(local: NodeId, tags: Tags, now: SystemTime) -> Self {
        let name = local.name.clone();
        let version = TagVersion {
            generation: local.generation,
            counter: 0,
        };
        let me = Member {
            id: local,
            status: Status::Alive,
            tags,
            tag_version: version,
            left_generation: None,
            status_since: now,
        };
        MemberTable {
            local: name.clone(),
            members: BTreeMap::from([(name, me)]),
            pending_tags: HashMap::new(),
            seen_leaves: RecentSet::new(LEAVE_MEMORY),
            conflicts: Vec::new(),
            revision: 0,
        }
    }

    pub fn local(&self) -> &Member {
        &self.members[&self.local]
    }

    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Name conflicts seen (newest last).
    pub fn conflicts(&self) -> &[String] {
        &self.conflicts
    }

    /// Changes since the table was made (see the field).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn count(&self, status: Status) -> usize {
        self.members.values().filter(|m| m.status == status).count()
    }

    /// Our identity changed (foca renewed it after we were declared down).
    pub fn set_local_id(&mut self, id: NodeId) {
        if let Some(me) = self.members.get_mut(&self.local) {
            me.id = id;
            self.revision += 1;
        }
    }

    /// foca: `id` is alive.
    pub fn member_up(&mut self, id: NodeId, now: SystemTime) -> Vec<Event> {
        if let Some(existing) = self.members.get(&id.name)
            && existing.id.addr != id.addr
            && matches!(existing.status, Status::Alive | Status::Leaving)
        {
            // Two live nodes, one name: keep the one we know, and say so loudly.
            let what = if id.name == self.local {
                format!(
                    "another node at {} uses this node's name {:?}",
                    id.addr, id.name
                )
            } else {
                format!(
                    "two live nodes use the name {:?}: {} (kept) and {}",
                    id.name, existing.id.addr, id.addr
                )
            };
            tracing::error!("name conflict: {what}; give each node a unique --node");
            if self.conflicts.len() >= MAX_CONFLICTS {
                self.conflicts.remove(0);
            }
            self.conflicts.push(what);
            return vec![];
        }
        if id.name == self.local {
            return vec![];
        }
        self.revision += 1;
        let pending = self.pending_tags.remove(&id.name);
        let member = self
            .members
            .entry(id.name.clone())
            .or_insert_with(|| Member {
                id: id.clone(),
                status: Status::Failed,
                tags: Tags::new(),
                tag_version: TagVersion::default(),
                left_generation: None,
                status_since: now,
            });
        if id.generation < member.id.generation {
            return vec![]; // news about an earlier process of this node
        }
        if let Some((version, tags)) = pending
            && version > member.tag_version
        {
            member.tag_version = version;
            member.tags = tags;
        }
        let new_process = id.generation > member.id.generation;
        member.id = id;
        match member.status {
            Status::Alive => vec![],
            Status::Leaving if !new_process => vec![],
            Status::Leaving | Status::Failed | Status::Left => {
                if new_process {
                    member.left_generation = None;
                }
                member.set_status(Status::Alive, now);
                vec![member_event(MemberEventKind::Join, member)]
            }
        }
    }

    /// foca: `id` was declared down (it failed, or it left after announcing it).
    pub fn member_down(&mut self, id: &NodeId, now: SystemTime) -> Vec<Event> {
        let Some(member) = self.members.get_mut(&id.name) else {
            return vec![];
        };
        if member.id != *id || matches!(member.status, Status::Failed | Status::Left) {
            return vec![];
        }
        self.revision += 1;
        if member.left_generation == Some(id.generation) {
            member.set_status(Status::Left, now);
            vec![member_event(MemberEventKind::Leave, member)]
        } else {
            member.set_status(Status::Failed, now);
            vec![member_event(MemberEventKind::Failed, member)]
        }
    }

    /// foca: a newer identity `new` took the address of `old`. `new_active` says whether foca
    /// considers the new identity alive.
    pub fn renamed(
        &mut self,
        old: &NodeId,
        new: NodeId,
        new_active: bool,
        now: SystemTime,
    ) -> Vec<Event> {
        if old.name == new.name {
            // A restart of the same node. If the old process was still counted alive (it left,
            // or crashed, and came back before anyone declared it down), foca sends no
            // MemberUp: the new process is alive now, whatever the old one announced.
            if new_active {
                return self.member_up(new, now);
            }
            if let Some(member) = self.members.get_mut(&new.name)
                && new.generation >= member.id.generation
            {
                member.id = new;
            }
            return vec![];
        }
        // A different node now answers on that address: the old one is gone.
        let mut events = self.member_down(old, now);
        if new_active {
            events.extend(self.member_up(new, now));
        }
        events
    }

    /// A tag record arrived. Returns whether it is news (to be spread further) and the events.
    pub fn apply_tags(&mut self, record: TagRecord, now: SystemTime) -> (bool, Vec<Event>) {
        let _ = now;
        let Some(member) = self.members.get_mut(&record.node) else {
            let newer = self
                .pending_tags
                .get(&record.node)
                .is_none_or(|(v, _)| record.version > *v);
            if newer {
                self.pending_tags
                    .insert(record.node, (record.version, record.tags));
            }
            return (newer, vec![]);
        };
        if record.version <= member.tag_version {
            return (false, vec![]);
        }
        self.revision += 1;
        member.tag_version = record.version;
        if member.tags == record.tags {
            return (true, vec![]);
        }
        member.tags = record.tags;
        let events = match member.status {
            Status::Alive | Status::Leaving => vec![member_event(MemberEventKind::Update, member)],
            Status::Failed | Status::Left => vec![],
        };
        (true, events)
    }

    /// A leave intent arrived. Returns whether it is news and the events.
    pub fn apply_leave(&mut self, intent: &LeaveIntent, now: SystemTime) -> (bool, Vec<Event>) {
        if !self
            .seen_leaves
            .insert((intent.node.clone(), intent.generation, intent.prune))
        {
            return (false, vec![]);
        }

        let Some(member) = self.members.get_mut(&intent.node) else {
            return (true, vec![]);
        };
        self.revision += 1;
        if intent.generation < member.id.generation {
            return (false, vec![]); // about an earlier process of this node
        }
        let mut events = Vec::new();
        let graceful = intent.by == intent.node;
        if intent.generation == member.id.generation {
            match member.status {
                Status::Alive if graceful => {
                    member.left_generation = Some(intent.generation);
                    member.set_status(Status::Leaving, now);
                }
                // force-leave never overrides what this node sees alive.
                Status::Alive | Status::Leaving | Status::Left => {
                    if graceful {
                        member.left_generation = Some(intent.generation);
                    }
                }
                Status::Failed => {
                    member.left_generation = Some(intent.generation);
                    member.set_status(Status::Left, now);
                    events.push(member_event(MemberEventKind::Leave, member));
                }
            }
        } else if graceful {
            // A generation we have not seen up yet: remember it for when foca reports it down.
            member.left_generation = Some(intent.generation);
        }
        if intent.prune
            && intent.node != self.local
            && let Some(member) = self.members.get(&intent.node)
            && member.status == Status::Left
        {
            let member = self.members.remove(&intent.node).expect("checked above");
            events.push(member_event(MemberEventKind::Reap, &member));
        }
        (true, events)
    }

    /// Learns members another node reported in a push-pull exchange that foca will not tell us
    /// about (failed or left ones we have never seen). Alive ones come through foca.
    pub fn learn_absent(&mut self, remote: &Member, now: SystemTime) {
        if remote.id.name == self.local || self.members.contains_key(&remote.id.name) {
            return;
        }
        if matches!(remote.status, Status::Failed | Status::Left) {
            let mut member = remote.clone();
            member.status_since = now;
            self.revision += 1;
            self.members.insert(member.id.name.clone(), member);
        }
    }

    /// Removes failed members silent for `reconnect_timeout` and left ones after
    /// `tombstone_timeout`.
    pub fn reap(
        &mut self,
        now: SystemTime,
        reconnect_timeout: Duration,
        tombstone_timeout: Duration,
    ) -> Vec<Event> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                let age = now.duration_since(m.status_since).unwrap_or_default();
                match m.status {
                    Status::Failed => age >= reconnect_timeout,
                    Status::Left => age >= tombstone_timeout,
                    Status::Alive | Status::Leaving => false,
                }
            })
            .map(|m| m.id.name.clone())
            .collect();
        if !expired.is_empty() {
            self.revision += 1;
        }
        expired
            .into_iter()
            .filter_map(|name| self.members.remove(&name))
            .map(|m| member_event(MemberEventKind::Reap, &m))
            .collect()
    }

    /// Changes the local node's tags; returns the record to broadcast.
    pub fn local_tag_record(&self, tags: Tags) -> TagRecord {
        let me = self.local();
        TagRecord {
            addr: Some(me.id.addr),
            node: self.local.clone(),
            version: TagVersion {
                generation: me.id.generation,
                counter: me.tag_version.counter + 1,
            },
            tags,
        }
    }

    /// A member event about the local node alone: Serf's handlers see the node's own
    /// `member-join` when its agent starts and its own `member-leave` when it leaves.
    pub fn local_event(&self, kind: MemberEventKind) -> Event {
        member_event(kind, self.local())
    }

    /// Marks the local node as leaving.
    pub fn set_local_leaving(&mut self, now: SystemTime) {
        if let Some(me) = self.members.get_mut(&self.local) {
            me.set_status(Status::Leaving, now);
            self.revision += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, generation: u64) -> NodeId {
        let port = 7000 + name.len() as u16;
        NodeId {
            name: name.into(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            generation,
        }
    }

    fn table() -> MemberTable {
        MemberTable::new(
            id("me", 1),
            Tags::from([("role".into(), "lb".into())]),
            SystemTime::now(),
        )
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.serf_name()).collect()
    }

    #[test]
    fn the_revision_moves_with_news_and_not_with_copies() {
        let mut t = table();
        let r0 = t.revision();
        t.member_up(id("a", 1), SystemTime::now());
        let r1 = t.revision();
        assert!(r1 > r0);
        let record = TagRecord {
            node: "a".into(),
            version: TagVersion {
                generation: 1,
                counter: 1,
            },
            tags: Tags::from([("role".into(), "web".into())]),
            addr: None,
        };
        t.apply_tags(record.clone(), SystemTime::now());
        let r2 = t.revision();
        assert!(r2 > r1);
        t.apply_tags(record, SystemTime::now());
        assert_eq!(t.revision(), r2, "a copy changes nothing");
        t.member_down(&id("a", 1), SystemTime::now());
        assert!(t.revision() > r2);
    }

    fn status(t: &MemberTable, name: &str) -> Status {
        t.get(name).unwrap().status
    }

    const T0: SystemTime = UNIX_EPOCH;

    #[test]
    fn join_fail_and_rejoin_as_a_new_process() {
        let mut t = table();
        assert_eq!(kinds(&t.member_up(id("web", 1), T0)), ["member-join"]);
        assert!(
            t.member_up(id("web", 1), T0).is_empty(),
            "no duplicate join"
        );
        assert_eq!(kinds(&t.member_down(&id("web", 1), T0)), ["member-failed"]);
        assert_eq!(status(&t, "web"), Status::Failed);
        // foca's rename on restart, then the new process comes up.
        assert!(t.renamed(&id("web", 1), id("web", 2), false, T0).is_empty());
        assert_eq!(kinds(&t.member_up(id("web", 2), T0)), ["member-join"]);
        assert_eq!(t.get("web").unwrap().id.generation, 2);
        assert_eq!(t.iter().count(), 2, "one entry per name");
        // A late "down" about the old process changes nothing.
        assert!(t.member_down(&id("web", 1), T0).is_empty());
        assert_eq!(status(&t, "web"), Status::Alive);
    }

    #[test]
    fn a_graceful_leave_ends_as_left_not_failed() {
        let mut t = table();
        t.member_up(id("web", 1), T0);
        let intent = LeaveIntent {
            node: "web".into(),
            generation: 1,
            by: "web".into(),
            prune: false,
        };
        let (news, events) = t.apply_leave(&intent, T0);
        assert!(news && events.is_empty());
        assert_eq!(status(&t, "web"), Status::Leaving);
        assert!(!t.apply_leave(&intent, T0).0, "copies are not news");
        assert_eq!(kinds(&t.member_down(&id("web", 1), T0)), ["member-leave"]);
        assert_eq!(status(&t, "web"), Status::Left);
    }

    #[test]
    fn a_leave_intent_arriving_after_the_failure_turns_it_into_a_leave() {
        let mut t = table();
        t.member_up(id("web", 1), T0);
        t.member_down(&id("web", 1), T0);
        let intent = LeaveIntent {
            node: "web".into(),
            generation: 1,
            by: "web".into(),
            prune: false,
        };
        assert_eq!(kinds(&t.apply_leave(&intent, T0).1), ["member-leave"]);
    }

    #[test]
    fn force_leave_applies_to_failed_members_only_and_prune_removes() {
        let mut t = table();
        t.member_up(id("web", 1), T0);
        let forced = |prune| LeaveIntent {
            node: "web".into(),
            generation: 1,
            by: "me".into(),
            prune,
        };
        assert!(t.apply_leave(&forced(false), T0).1.is_empty());
        assert_eq!(
            status(&t, "web"),
            Status::Alive,
            "alive nodes are not forced out"
        );
        t.member_down(&id("web", 1), T0);
        assert_eq!(
            kinds(&t.apply_leave(&forced(true), T0).1),
            ["member-leave", "member-reap"]
        );
        assert!(t.get("web").is_none());
    }

    #[test]
    fn tags_newer_versions_win_and_emit_updates() {
        let mut t = table();
        t.member_up(id("web", 1), T0);
        let record = |generation, counter, v: &str| TagRecord {
            addr: None,
            node: "web".into(),
            version: TagVersion {
                generation,
                counter,
            },
            tags: Tags::from([("version".into(), v.into())]),
        };
        let (news, events) = t.apply_tags(record(1, 1, "1"), T0);
        assert!(news);
        assert_eq!(kinds(&events), ["member-update"]);
        assert!(!t.apply_tags(record(1, 1, "1"), T0).0);
        assert!(
            !t.apply_tags(record(0, 9, "old"), T0).0,
            "older process loses"
        );
        assert_eq!(t.get("web").unwrap().tags["version"], "1");
        assert_eq!(
            kinds(&t.apply_tags(record(1, 2, "2"), T0).1),
            ["member-update"]
        );
    }

    #[test]
    fn tags_before_the_member_are_kept_until_it_comes_up() {
        let mut t = table();
        let rec = TagRecord {
            addr: None,
            node: "db".into(),
            version: TagVersion {
                generation: 3,
                counter: 1,
            },
            tags: Tags::from([("role".into(), "db".into())]),
        };
        assert!(t.apply_tags(rec, T0).0);
        assert!(t.get("db").is_none(), "not listed before foca knows it");
        let events = t.member_up(id("db", 3), T0);
        let Event::Member { members, .. } = &events[0] else {
            panic!()
        };
        assert_eq!(members[0].tags["role"], "db");
    }

    #[test]
    fn reaps_after_the_timeouts() {
        let mut t = table();
        t.member_up(id("a", 1), T0);
        t.member_up(id("bb", 1), T0);
        t.member_down(&id("a", 1), T0);
        let hour = Duration::from_secs(3600);
        assert!(t.reap(T0 + hour / 2, hour, hour).is_empty());
        assert_eq!(kinds(&t.reap(T0 + hour, hour, hour)), ["member-reap"]);
        assert!(t.get("a").is_none());
        assert!(t.get("bb").is_some() && t.get("me").is_some());
    }

    #[test]
    fn a_node_that_left_and_restarted_before_being_declared_down_is_alive_again() {
        let mut t = table();
        t.member_up(id("web", 1), T0);
        let intent = LeaveIntent {
            node: "web".into(),
            generation: 1,
            by: "web".into(),
            prune: false,
        };
        t.apply_leave(&intent, T0);
        assert_eq!(status(&t, "web"), Status::Leaving);
        // The new process replaces the old one while foca still counts the old alive.
        assert_eq!(
            kinds(&t.renamed(&id("web", 1), id("web", 2), true, T0)),
            ["member-join"]
        );
        assert_eq!(status(&t, "web"), Status::Alive);
        assert_eq!(t.get("web").unwrap().left_generation, None);
        // A late "down" about the old process changes nothing.
        assert!(t.member_down(&id("web", 1), T0).is_empty());
        assert_eq!(status(&t, "web"), Status::Alive);
    }

    #[test]
    fn a_second_live_node_with_the_same_name_is_a_conflict_not_a_replacement() {
        let mut t = table();
        t.member_up(id("web", 1), T0);
        let mut impostor = id("web", 9);
        impostor.addr = "127.0.0.1:9999".parse().unwrap();
        assert!(t.member_up(impostor.clone(), T0).is_empty());
        assert_eq!(
            t.get("web").unwrap().id,
            id("web", 1),
            "the known node is kept"
        );
        assert_eq!(t.conflicts().len(), 1);
        assert!(t.conflicts()[0].contains("127.0.0.1:9999"));
        // Our own name, claimed elsewhere.
        let mut twin = id("me", 5);
        twin.addr = "127.0.0.1:9998".parse().unwrap();
        t.member_up(twin, T0);
        assert!(t.conflicts()[1].contains("this node's name"));
        // A failed node's name can be taken by a new process elsewhere (a moved host).
        t.member_down(&id("web", 1), T0);
        assert_eq!(kinds(&t.member_up(impostor, T0)), ["member-join"]);
    }
}
