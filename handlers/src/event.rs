//! The event model: what the cluster reports and what handlers consume.
//!
//! These types are plain data. The cluster produces them, the agent passes them on, and the
//! handler runtimes turn them into Serf's environment-and-stdin contract. Nothing here knows
//! how an event travelled.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A node's tags: string keys to string values, ordered so output is stable.
pub type Tags = BTreeMap<String, String>;

/// What happened to one or more members. The names are Serf's `SERF_EVENT` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberEventKind {
    /// A member became alive (first seen, or back after failing or leaving).
    Join,
    /// A member left gracefully (or was force-left).
    Leave,
    /// A member stopped answering and was declared dead.
    Failed,
    /// A member's tags changed.
    Update,
    /// A failed or left member was removed from the member list.
    Reap,
}

impl MemberEventKind {
    /// The `SERF_EVENT` value for this kind, e.g. `member-join`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberEventKind::Join => "member-join",
            MemberEventKind::Leave => "member-leave",
            MemberEventKind::Failed => "member-failed",
            MemberEventKind::Update => "member-update",
            MemberEventKind::Reap => "member-reap",
        }
    }
}

impl fmt::Display for MemberEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member as a handler sees it: Serf's `name<TAB>address<TAB>role<TAB>tags` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub tags: Tags,
}

/// A user event (`rumor event NAME PAYLOAD`), as delivered once to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    /// Lamport time assigned by the node that sent it.
    pub ltime: u64,
    pub name: String,
    #[serde(with = "crate::payload_json")]
    pub payload: Vec<u8>,
    /// Serf's coalesce flag: handlers may collapse events of the same name to the newest.
    pub coalesce: bool,
    /// Name of the node that sent it.
    pub origin: String,
}

/// A query (`rumor query NAME PAYLOAD`): like a user event, but the asker waits for answers.
/// A handler's stdout (exit 0) is this node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryEvent {
    /// Lamport time assigned by the asking node (query clock).
    pub ltime: u64,
    /// Identifies the query at the asker (with `origin`).
    pub id: u32,
    pub name: String,
    #[serde(with = "crate::payload_json")]
    pub payload: Vec<u8>,
    /// Name of the asking node.
    pub origin: String,
}

/// Everything the cluster reports to the local handlers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// A membership change of one or more members.
    Member {
        kind: MemberEventKind,
        members: Vec<MemberInfo>,
    },
    /// A user event.
    User(UserEvent),
    /// A query that this node passed the filters of.
    Query(QueryEvent),
}

impl Event {
    /// The `SERF_EVENT` value: `member-join` … `member-reap`, or `user`.
    pub fn serf_name(&self) -> &'static str {
        match self {
            Event::Member { kind, .. } => kind.as_str(),
            Event::User(_) => "user",
            Event::Query(_) => "query",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_as_text_in_json_and_binary_ones_as_base64() {
        let event = |payload: &[u8]| {
            Event::User(UserEvent {
                ltime: 1,
                name: "deploy".into(),
                payload: payload.to_vec(),
                coalesce: true,
                origin: "a".into(),
            })
        };
        let text = serde_json::to_string(&event(b"web v42")).unwrap();
        assert!(text.contains(r#""payload":"web v42""#), "{text}");
        let binary = serde_json::to_string(&event(&[0xff, 0])).unwrap();
        assert!(
            binary.contains(r#""payload":{"base64":"/wA="}"#),
            "{binary}"
        );
        for json in [text, binary] {
            let back: Event = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
    }

    #[test]
    fn serf_names_match_serfs_event_strings() {
        let kinds = [
            (MemberEventKind::Join, "member-join"),
            (MemberEventKind::Leave, "member-leave"),
            (MemberEventKind::Failed, "member-failed"),
            (MemberEventKind::Update, "member-update"),
            (MemberEventKind::Reap, "member-reap"),
        ];
        for (kind, name) in kinds {
            let event = Event::Member {
                kind,
                members: vec![],
            };
            assert_eq!(event.serf_name(), name);
        }
        let user = Event::User(UserEvent {
            ltime: 1,
            name: "deploy".into(),
            payload: b"v1".to_vec(),
            coalesce: true,
            origin: "a".into(),
        });
        assert_eq!(user.serf_name(), "user");
    }
}
