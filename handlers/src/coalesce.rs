//! Serf's coalescing, as pure logic: events go in with [`Coalescer::push`], and
//! [`Coalescer::flush`] returns what a handler should run when its window closes. The dispatcher
//! owns the timer; this module has none, so it is tested by feeding events and flushing.
//! Serf's agent always coalesces, with a 3 s window closed early after 1 s without events
//! ([`SERF_COALESCE`], [`SERF_COALESCE_QUIET`]); a rumor handler coalesces only when its
//! configuration asks (`coalesce = "serf"` for Serf's timing), so by default every event runs
//! at once.
//!
//! * Member events: the coalescer keeps the *latest* event per member across kinds (a member
//!   that joined and then failed within the window is only "failed"). A flush emits one event
//!   per kind, listing the members whose latest kind it is; members keep the order they first
//!   arrived in the window, and kinds the order of their first member. Like Serf, a member whose latest state is exactly what
//!   the previous flush already reported (same kind, same name, address and tags) is left out.
//!   (Serf compares only the kind for all but updates; comparing the member as well means a
//!   node that came back at a new address is reported again.)
//! * User events with `coalesce = true`: per event name only the newest (highest Lamport time)
//!   is kept; several with that same newest time are all kept, as Serf does.
//! * User events with `coalesce = false` and queries are never held: [`Coalescer::push`] hands
//!   them straight back.

use std::collections::HashMap;
use std::time::Duration;

use crate::event::{Event, MemberEventKind, MemberInfo, UserEvent};

/// The window Serf's agent coalesces member and user events in: held events run at most this
/// long after the first of them arrived.
pub const SERF_COALESCE: Duration = Duration::from_secs(3);
/// Serf's agent's quiescent period: held events run as soon as none arrived for this long.
pub const SERF_COALESCE_QUIET: Duration = Duration::from_secs(1);

/// Events held during one coalescing window, plus what the last flush reported per member.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// Latest (kind, member) per member name, in order of first arrival in this window.
    members: Vec<(MemberEventKind, MemberInfo)>,
    member_index: HashMap<String, usize>,
    /// What the previous flushes reported last, per member name.
    reported: HashMap<String, (MemberEventKind, MemberInfo)>,
    /// Newest user events per name, in order of first arrival of the name in this window.
    users: Vec<(String, Vec<UserEvent>)>,
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// Takes an event into the window, or hands it back when it is not coalesced (queries,
    /// user events without the coalesce flag): those run at once.
    pub fn push(&mut self, event: Event) -> Option<Event> {
        match event {
            Event::Member { kind, members } => {
                for member in members {
                    match self.member_index.get(&member.name) {
                        Some(&i) => self.members[i] = (kind, member),
                        None => {
                            self.member_index
                                .insert(member.name.clone(), self.members.len());
                            self.members.push((kind, member));
                        }
                    }
                }
                None
            }
            Event::User(user) if user.coalesce => {
                match self.users.iter_mut().find(|(name, _)| *name == user.name) {
                    Some((_, newest)) => {
                        let newest_ltime = newest[0].ltime;
                        if user.ltime > newest_ltime {
                            *newest = vec![user];
                        } else if user.ltime == newest_ltime {
                            newest.push(user);
                        }
                    }
                    None => self.users.push((user.name.clone(), vec![user])),
                }
                None
            }
            other => Some(other),
        }
    }

    /// Whether nothing is held (no flush needed).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.users.is_empty()
    }

    /// How many members and user events are held.
    pub fn held(&self) -> usize {
        self.members.len() + self.users.iter().map(|(_, v)| v.len()).sum::<usize>()
    }

    /// Ends the window: the member events (one per kind), then the user events, to run in this
    /// order. Leaves the coalescer empty, remembering what was reported.
    pub fn flush(&mut self) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        let mut kind_slot: Vec<(MemberEventKind, usize)> = Vec::new();
        self.member_index.clear();
        for (kind, member) in std::mem::take(&mut self.members) {
            let latest = (kind, member);
            if self.reported.get(&latest.1.name) == Some(&latest) {
                continue;
            }
            let (kind, member) = latest;
            if kind == MemberEventKind::Reap {
                // A reaped member is gone; forget it so the map does not grow forever.
                self.reported.remove(&member.name);
            } else {
                self.reported
                    .insert(member.name.clone(), (kind, member.clone()));
            }
            let slot = match kind_slot.iter().find(|(k, _)| *k == kind) {
                Some(&(_, slot)) => slot,
                None => {
                    out.push(Event::Member {
                        kind,
                        members: Vec::new(),
                    });
                    kind_slot.push((kind, out.len() - 1));
                    out.len() - 1
                }
            };
            if let Event::Member { members, .. } = &mut out[slot] {
                members.push(member);
            }
        }
        for (_, newest) in std::mem::take(&mut self.users) {
            out.extend(newest.into_iter().map(Event::User));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::event::{QueryEvent, Tags};

    fn member(name: &str, ip: &str) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            addr: ip.parse::<IpAddr>().unwrap(),
            port: 7946,
            tags: Tags::new(),
        }
    }

    fn member_event(kind: MemberEventKind, members: Vec<MemberInfo>) -> Event {
        Event::Member { kind, members }
    }

    fn user(name: &str, ltime: u64, coalesce: bool) -> Event {
        Event::User(UserEvent {
            ltime,
            name: name.into(),
            payload: format!("{name}@{ltime}").into_bytes(),
            coalesce,
            origin: "o".into(),
        })
    }

    fn names(event: &Event) -> (MemberEventKind, Vec<String>) {
        match event {
            Event::Member { kind, members } => {
                (*kind, members.iter().map(|m| m.name.clone()).collect())
            }
            other => panic!("not a member event: {other:?}"),
        }
    }

    #[test]
    fn member_events_keep_the_latest_state_per_member() {
        let a = member("a", "10.0.0.1");
        let b = member("b", "10.0.0.2");
        let c = member("c", "10.0.0.3");
        let mut co = Coalescer::new();
        assert!(
            co.push(member_event(
                MemberEventKind::Join,
                vec![a.clone(), b.clone()]
            ))
            .is_none()
        );
        assert!(
            co.push(member_event(MemberEventKind::Join, vec![c.clone()]))
                .is_none()
        );
        assert!(
            co.push(member_event(MemberEventKind::Failed, vec![a.clone()]))
                .is_none()
        );
        assert_eq!(co.held(), 3);
        let out = co.flush();
        assert_eq!(out.len(), 2);
        // a arrived first, so its latest kind (failed) comes first.
        assert_eq!(
            names(&out[0]),
            (MemberEventKind::Failed, vec!["a".to_string()])
        );
        assert_eq!(
            names(&out[1]),
            (
                MemberEventKind::Join,
                vec!["b".to_string(), "c".to_string()]
            )
        );
        assert!(co.is_empty());
        assert!(co.flush().is_empty());
    }

    #[test]
    fn five_joins_become_one_event() {
        let mut co = Coalescer::new();
        for i in 0..5 {
            co.push(member_event(
                MemberEventKind::Join,
                vec![member(&format!("n{i}"), "10.0.0.1")],
            ));
        }
        let out = co.flush();
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]).1.len(), 5);
    }

    #[test]
    fn what_the_last_flush_reported_is_not_repeated() {
        let a = member("a", "10.0.0.1");
        let mut co = Coalescer::new();
        co.push(member_event(MemberEventKind::Join, vec![a.clone()]));
        assert_eq!(co.flush().len(), 1);

        // The same join again: nothing new.
        co.push(member_event(MemberEventKind::Join, vec![a.clone()]));
        assert!(co.flush().is_empty());

        // Back at another address: reported.
        let moved = member("a", "10.0.0.9");
        co.push(member_event(MemberEventKind::Join, vec![moved]));
        assert_eq!(co.flush().len(), 1);

        // Failed then joined again within one window, same as last reported: nothing new.
        co.push(member_event(
            MemberEventKind::Failed,
            vec![member("a", "10.0.0.9")],
        ));
        co.push(member_event(
            MemberEventKind::Join,
            vec![member("a", "10.0.0.9")],
        ));
        assert!(co.flush().is_empty());

        // An update with new tags is reported; the same update again is not.
        let mut tagged = member("a", "10.0.0.9");
        tagged.tags.insert("role".into(), "web".into());
        co.push(member_event(MemberEventKind::Update, vec![tagged.clone()]));
        assert_eq!(co.flush().len(), 1);
        co.push(member_event(MemberEventKind::Update, vec![tagged.clone()]));
        assert!(co.flush().is_empty());

        // Reaped: reported, and forgotten.
        co.push(member_event(MemberEventKind::Reap, vec![tagged.clone()]));
        assert_eq!(names(&co.flush()[0]).0, MemberEventKind::Reap);
        assert!(co.reported.is_empty());
    }

    #[test]
    fn user_events_collapse_to_the_newest_per_name() {
        let mut co = Coalescer::new();
        assert!(co.push(user("deploy", 3, true)).is_none());
        assert!(co.push(user("deploy", 5, true)).is_none());
        assert!(co.push(user("deploy", 4, true)).is_none());
        assert!(co.push(user("restart", 1, true)).is_none());
        assert!(co.push(user("restart", 1, true)).is_none());
        let out = co.flush();
        let got: Vec<(String, u64)> = out
            .iter()
            .map(|e| match e {
                Event::User(u) => (u.name.clone(), u.ltime),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("deploy".to_string(), 5),
                ("restart".to_string(), 1),
                ("restart".to_string(), 1)
            ]
        );
    }

    #[test]
    fn uncoalesced_user_events_and_queries_pass_through() {
        let mut co = Coalescer::new();
        let plain = user("deploy", 1, false);
        assert_eq!(co.push(plain.clone()), Some(plain));
        let query = Event::Query(QueryEvent {
            ltime: 1,
            id: 9,
            name: "uptime".into(),
            payload: vec![],
            origin: "o".into(),
        });
        assert_eq!(co.push(query.clone()), Some(query));
        assert!(co.is_empty());
    }

    #[test]
    fn members_come_before_user_events_in_a_flush() {
        let mut co = Coalescer::new();
        co.push(user("deploy", 1, true));
        co.push(member_event(
            MemberEventKind::Leave,
            vec![member("x", "10.0.0.1")],
        ));
        let out = co.flush();
        assert!(matches!(out[0], Event::Member { .. }));
        assert!(matches!(out[1], Event::User(_)));
    }
}
