//! The event as a WASM handler reads it on stdin: one JSON object, versioned
//! ([`SCHEMA_VERSION`]), documented with an example of each kind in docs/wasm.md.
//!
//! ```json
//! {"version": 1, "kind": "user", "name": "deploy", "ltime": 42, "origin": "ops-1",
//!  "payload": {"text": "web v42", "base64": "d2ViIHY0Mg=="},
//!  "members": [], "local": {"name": "web-1", "tags": {"role": "web"}}}
//! ```
//!
//! * `kind`: `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`,
//!   `user` or `query` (Serf's `SERF_EVENT`).
//! * `name`, `ltime`, `origin`, `payload`: user events and queries; `null` for member events.
//!   `payload.text` is the payload when it is UTF-8 and `null` otherwise; `payload.base64`
//!   always holds it (standard alphabet, padded). The payload is exactly what was sent: no
//!   newline is added, unlike a shell handler's stdin.
//! * `query_id`: queries only (`null` otherwise).
//! * `members`: member events: each member with `name`, `address`, `port`, `tags` and the
//!   `status` the event gives it (`alive` after a join or update, `left` after a leave,
//!   `failed` after a failure, `reaped` once removed); empty for user events and queries.
//! * `local`: the node the handler runs on, its `name` and `tags`.
//!
//! A later version only adds fields; a field's meaning never changes within a version.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::contract::LocalNode;
use crate::event::{Event, MemberEventKind, MemberInfo};

/// The `version` of the event JSON this agent writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The event as the JSON bytes a WASM handler reads on stdin, with a final newline.
pub fn event_json(event: &Event, local: &LocalNode) -> Vec<u8> {
    let mut value = json!({
        "version": SCHEMA_VERSION,
        "kind": event.serf_name(),
        "name": Value::Null,
        "ltime": Value::Null,
        "origin": Value::Null,
        "query_id": Value::Null,
        "payload": Value::Null,
        "members": [],
        "local": {"name": local.name, "tags": local.tags},
    });
    match event {
        Event::Member { kind, members } => {
            let status = member_status(*kind);
            value["members"] = members.iter().map(|m| member(m, status)).collect();
        }
        Event::User(user) => {
            value["name"] = json!(user.name);
            value["ltime"] = json!(user.ltime);
            value["origin"] = json!(user.origin);
            value["payload"] = payload(&user.payload);
        }
        Event::Query(query) => {
            value["name"] = json!(query.name);
            value["ltime"] = json!(query.ltime);
            value["origin"] = json!(query.origin);
            value["query_id"] = json!(query.id);
            value["payload"] = payload(&query.payload);
        }
    }
    let mut bytes = serde_json::to_vec(&value).expect("a JSON value serializes");
    bytes.push(b'\n');
    bytes
}

/// The status a member event gives its members.
fn member_status(kind: MemberEventKind) -> &'static str {
    match kind {
        MemberEventKind::Join | MemberEventKind::Update => "alive",
        MemberEventKind::Leave => "left",
        MemberEventKind::Failed => "failed",
        MemberEventKind::Reap => "reaped",
    }
}

fn member(member: &MemberInfo, status: &str) -> Value {
    json!({
        "name": member.name,
        "address": member.addr.to_string(),
        "port": member.port,
        "tags": member.tags,
        "status": status,
    })
}

fn payload(bytes: &[u8]) -> Value {
    json!({
        "text": std::str::from_utf8(bytes).ok(),
        "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{QueryEvent, UserEvent};

    fn local() -> LocalNode {
        LocalNode {
            name: "web-1".into(),
            tags: [("role".to_string(), "web".to_string())].into(),
        }
    }

    fn parse(event: &Event) -> Value {
        serde_json::from_slice(&event_json(event, &local())).unwrap()
    }

    #[test]
    fn a_user_event_carries_its_payload_as_text_and_base64() {
        let value = parse(&Event::User(UserEvent {
            ltime: 42,
            name: "deploy".into(),
            payload: b"web v42".to_vec(),
            coalesce: true,
            origin: "ops-1".into(),
        }));
        assert_eq!(
            value,
            json!({"version": 1, "kind": "user", "name": "deploy", "ltime": 42,
                   "origin": "ops-1", "query_id": null,
                   "payload": {"text": "web v42", "base64": "d2ViIHY0Mg=="},
                   "members": [], "local": {"name": "web-1", "tags": {"role": "web"}}})
        );
    }

    #[test]
    fn a_binary_query_payload_has_no_text() {
        let value = parse(&Event::Query(QueryEvent {
            ltime: 7,
            id: 3,
            name: "load".into(),
            payload: vec![0xff, 0x00],
            origin: "ops".into(),
        }));
        assert_eq!(value["kind"], "query");
        assert_eq!(value["query_id"], 3);
        assert_eq!(value["payload"], json!({"text": null, "base64": "/wA="}));
    }

    #[test]
    fn member_events_list_members_with_the_status_the_event_gives() {
        let value = parse(&Event::Member {
            kind: MemberEventKind::Failed,
            members: vec![MemberInfo {
                name: "db-1".into(),
                addr: "10.0.0.9".parse().unwrap(),
                port: 7946,
                tags: [("role".to_string(), "db".to_string())].into(),
            }],
        });
        assert_eq!(value["kind"], "member-failed");
        assert_eq!(value["name"], Value::Null);
        assert_eq!(value["payload"], Value::Null);
        assert_eq!(
            value["members"],
            json!([{"name": "db-1", "address": "10.0.0.9", "port": 7946,
                    "tags": {"role": "db"}, "status": "failed"}])
        );
    }

    /// The event each example of docs/wasm.md shows, by its kind.
    fn documented_event(kind: &str) -> Event {
        let member = |name: &str, addr: &str, tags: &[(&str, &str)]| MemberInfo {
            name: name.into(),
            addr: addr.parse().unwrap(),
            port: 7946,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let web = |n: u8| {
            member(
                &format!("web-{n}"),
                &format!("10.0.0.1{n}"),
                &[("role", "web")],
            )
        };
        let db = || member("db-1", "10.0.0.9", &[("role", "db")]);
        let members = |kind, members| Event::Member { kind, members };
        match kind {
            "user" => Event::User(UserEvent {
                ltime: 42,
                name: "deploy".into(),
                payload: b"web v42".to_vec(),
                coalesce: true,
                origin: "ops-1".into(),
            }),
            "query" => Event::Query(QueryEvent {
                ltime: 7,
                id: 3,
                name: "load".into(),
                payload: vec![0xff, 0x00],
                origin: "ops-1".into(),
            }),
            "member-join" => members(MemberEventKind::Join, vec![web(2)]),
            "member-update" => members(
                MemberEventKind::Update,
                vec![member(
                    "web-2",
                    "10.0.0.12",
                    &[("role", "web"), ("web_version", "v42")],
                )],
            ),
            "member-leave" => members(MemberEventKind::Leave, vec![web(2), web(3)]),
            "member-failed" => members(MemberEventKind::Failed, vec![db()]),
            "member-reap" => members(MemberEventKind::Reap, vec![db()]),
            other => panic!("docs/wasm.md shows an example of an unknown kind {other:?}"),
        }
    }

    #[test]
    fn every_example_in_the_docs_is_what_the_agent_writes() {
        let doc = include_str!("../../../docs/wasm.md");
        let section = &doc[doc.find("## The event JSON").expect("the schema section")..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let mut kinds = Vec::new();
        for block in section.split("```json").skip(1) {
            let text = &block[..block.find("```").expect("a closed block")];
            let shown: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("an example is not JSON ({e}):\n{text}"));
            let kind = shown["kind"].as_str().expect("every example has a kind");
            assert_eq!(shown, parse(&documented_event(kind)), "the {kind} example");
            kinds.push(kind.to_string());
        }
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "member-failed",
                "member-join",
                "member-leave",
                "member-reap",
                "member-update",
                "query",
                "user"
            ],
            "one example of each kind"
        );
    }
}
