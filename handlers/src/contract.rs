//! Serf's handler contract: the environment and the stdin a handler gets for an event.
//!
//! This is what lets a handler script written for Serf run unchanged. Every variable Serf sets
//! is set the same way, and set again under a `RUMOR_` name (`SERF_EVENT` and `RUMOR_EVENT`,
//! `SERF_TAG_ROLE` and `RUMOR_TAG_ROLE`, …):
//!
//! | variable | value |
//! | --- | --- |
//! | `SERF_EVENT` | `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`, `user` or `query` |
//! | `SERF_SELF_NAME` | the local node's name |
//! | `SERF_SELF_ROLE` | the local node's `role` tag, empty when it has none |
//! | `SERF_TAG_<KEY>` | each of the local node's tags; the key upper-cased, every character outside `[A-Z0-9_]` replaced by `_` |
//! | `SERF_USER_EVENT`, `SERF_USER_LTIME` | user events: the event's name and Lamport time |
//! | `SERF_QUERY_NAME`, `SERF_QUERY_LTIME` | queries: the query's name and Lamport time |
//!
//! stdin, for member events, is one line per member, `name\taddress\trole\ttags\n`: the address
//! is the IP alone, the role is the member's `role` tag, the tags are `k=v,k=v` sorted by key,
//! and a tab or newline inside the name, role or tags is written as the two characters `\t` or
//! `\n`. For user events and queries stdin is the payload, with a newline added when the payload
//! does not end with one (an empty payload stays empty), as Serf does.
//!
//! Environment values cannot hold NUL bytes; a NUL in a name or tag value is left out (the
//! agent refuses tag values with a NUL, so only an older member's can have one).
//!
//! A handler also inherits the agent's environment, less the variables that carry the agent's
//! secrets or where they are kept ([`WITHHELD_VARIABLES`]): a handler runs whatever an event
//! asks of it, and has no use for the control token or the cluster key.

use crate::event::{Event, MemberInfo, Tags};

/// The agent's own variables a handler never inherits: the control token, the file that holds
/// it, and the gossip encryption key. A handler that needs one is given it by its `env`.
pub const WITHHELD_VARIABLES: [&str; 3] = [
    "RUMOR_CONTROL_TOKEN",
    "RUMOR_CONTROL_TOKEN_FILE",
    "RUMOR_ENCRYPT",
];

/// The node the handlers run on. Its tags can change at runtime (tag updates), so the dispatcher
/// is told about every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    pub tags: Tags,
}

/// The variables a handler gets for `event` on `local`, `SERF_*` first, then their `RUMOR_*`
/// twins in the same order. The agent's own environment is added by the runner, not here.
pub fn environment(event: &Event, local: &LocalNode) -> Vec<(String, String)> {
    // Names without their prefix; each is emitted as SERF_<name> and RUMOR_<name>.
    let mut vars: Vec<(String, String)> = vec![
        ("EVENT".into(), event.serf_name().into()),
        ("SELF_NAME".into(), local.name.clone()),
        (
            "SELF_ROLE".into(),
            local.tags.get("role").cloned().unwrap_or_default(),
        ),
    ];
    for (key, value) in &local.tags {
        vars.push((format!("TAG_{}", tag_variable_suffix(key)), value.clone()));
    }
    match event {
        Event::Member { .. } => {}
        Event::User(user) => {
            vars.push(("USER_EVENT".into(), user.name.clone()));
            vars.push(("USER_LTIME".into(), user.ltime.to_string()));
        }
        Event::Query(query) => {
            vars.push(("QUERY_NAME".into(), query.name.clone()));
            vars.push(("QUERY_LTIME".into(), query.ltime.to_string()));
        }
    }
    let mut env = Vec::with_capacity(vars.len() * 2);
    for prefix in ["SERF_", "RUMOR_"] {
        for (name, value) in &vars {
            env.push((format!("{prefix}{name}"), value.replace('\0', "")));
        }
    }
    env
}

/// A tag key as it appears in `SERF_TAG_<KEY>`: upper-cased, every character outside
/// `[A-Z0-9_]` replaced by `_` (`dc-name` → `DC_NAME`).
///
/// Upper-casing is per character, as Go's `strings.ToUpper` does it: a character whose upper
/// case is several characters (`ß` → `SS`) stays itself, and so becomes one `_`, exactly as in
/// Serf.
pub fn tag_variable_suffix(key: &str) -> String {
    key.chars()
        .map(|c| {
            let mut upper = c.to_uppercase();
            let c = match (upper.next(), upper.next()) {
                (Some(single), None) => single,
                _ => c,
            };
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The bytes a handler reads on stdin for `event`.
pub fn stdin(event: &Event) -> Vec<u8> {
    match event {
        Event::Member { members, .. } => {
            let mut out = String::new();
            for member in members {
                out.push_str(&member_line(member));
            }
            out.into_bytes()
        }
        Event::User(user) => payload_with_newline(&user.payload),
        Event::Query(query) => payload_with_newline(&query.payload),
    }
}

/// One member's stdin line: `name\taddress\trole\ttags\n`.
pub fn member_line(member: &MemberInfo) -> String {
    let role = member.tags.get("role").map(String::as_str).unwrap_or("");
    let tags = member
        .tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{}\t{}\t{}\t{}\n",
        escape_field(&member.name),
        member.addr,
        escape_field(role),
        escape_field(&tags)
    )
}

/// Writes tab and newline as the two characters `\t` and `\n`, as Serf's `eventClean` does.
fn escape_field(value: &str) -> String {
    value.replace('\t', "\\t").replace('\n', "\\n")
}

fn payload_with_newline(payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    if out.last().is_some_and(|&b| b != b'\n') {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::event::{MemberEventKind, QueryEvent, UserEvent};

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn local() -> LocalNode {
        LocalNode {
            name: "web-1".into(),
            tags: tags(&[("role", "web"), ("dc-name", "east"), ("rack.id", "r1")]),
        }
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn member_event_environment() {
        let event = Event::Member {
            kind: MemberEventKind::Failed,
            members: vec![],
        };
        let env = environment(&event, &local());
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "SERF_EVENT",
                "SERF_SELF_NAME",
                "SERF_SELF_ROLE",
                "SERF_TAG_DC_NAME",
                "SERF_TAG_RACK_ID",
                "SERF_TAG_ROLE",
                "RUMOR_EVENT",
                "RUMOR_SELF_NAME",
                "RUMOR_SELF_ROLE",
                "RUMOR_TAG_DC_NAME",
                "RUMOR_TAG_RACK_ID",
                "RUMOR_TAG_ROLE",
            ]
        );
        for prefix in ["SERF_", "RUMOR_"] {
            let var = |n: &str| get(&env, &format!("{prefix}{n}")).unwrap().to_string();
            assert_eq!(var("EVENT"), "member-failed");
            assert_eq!(var("SELF_NAME"), "web-1");
            assert_eq!(var("SELF_ROLE"), "web");
            assert_eq!(var("TAG_DC_NAME"), "east");
            assert_eq!(var("TAG_RACK_ID"), "r1");
        }
    }

    #[test]
    fn no_role_tag_gives_an_empty_role() {
        let node = LocalNode {
            name: "n".into(),
            tags: Tags::new(),
        };
        let event = Event::Member {
            kind: MemberEventKind::Join,
            members: vec![],
        };
        assert_eq!(get(&environment(&event, &node), "SERF_SELF_ROLE"), Some(""));
    }

    #[test]
    fn user_and_query_environment_and_stdin() {
        let user = Event::User(UserEvent {
            ltime: 42,
            name: "deploy".into(),
            payload: b"web v42".to_vec(),
            coalesce: true,
            origin: "ops".into(),
        });
        let env = environment(&user, &local());
        assert_eq!(get(&env, "SERF_EVENT"), Some("user"));
        assert_eq!(get(&env, "SERF_USER_EVENT"), Some("deploy"));
        assert_eq!(get(&env, "SERF_USER_LTIME"), Some("42"));
        assert_eq!(get(&env, "RUMOR_USER_EVENT"), Some("deploy"));
        assert_eq!(get(&env, "RUMOR_USER_LTIME"), Some("42"));
        assert_eq!(get(&env, "SERF_QUERY_NAME"), None);
        assert_eq!(stdin(&user), b"web v42\n");

        let query = Event::Query(QueryEvent {
            ltime: 7,
            id: 3,
            name: "uptime".into(),
            payload: b"already\n".to_vec(),
            origin: "ops".into(),
        });
        let env = environment(&query, &local());
        assert_eq!(get(&env, "SERF_EVENT"), Some("query"));
        assert_eq!(get(&env, "SERF_QUERY_NAME"), Some("uptime"));
        assert_eq!(get(&env, "SERF_QUERY_LTIME"), Some("7"));
        assert_eq!(get(&env, "RUMOR_QUERY_NAME"), Some("uptime"));
        assert_eq!(get(&env, "RUMOR_QUERY_LTIME"), Some("7"));
        assert_eq!(get(&env, "SERF_USER_EVENT"), None);
        assert_eq!(stdin(&query), b"already\n");
    }

    #[test]
    fn empty_payload_stays_empty() {
        let user = Event::User(UserEvent {
            ltime: 1,
            name: "ping".into(),
            payload: vec![],
            coalesce: false,
            origin: "ops".into(),
        });
        assert_eq!(stdin(&user), b"");
    }

    #[test]
    fn member_lines_match_serfs_format() {
        let event = Event::Member {
            kind: MemberEventKind::Join,
            members: vec![
                MemberInfo {
                    name: "web-1".into(),
                    addr: "10.0.0.1".parse::<IpAddr>().unwrap(),
                    port: 7946,
                    tags: tags(&[("role", "web"), ("dc", "east")]),
                },
                MemberInfo {
                    name: "odd\tname\n".into(),
                    addr: "fd00::2".parse::<IpAddr>().unwrap(),
                    port: 7946,
                    tags: tags(&[("note", "a\tb")]),
                },
                MemberInfo {
                    name: "bare".into(),
                    addr: "10.0.0.3".parse::<IpAddr>().unwrap(),
                    port: 7946,
                    tags: Tags::new(),
                },
            ],
        };
        assert_eq!(
            String::from_utf8(stdin(&event)).unwrap(),
            "web-1\t10.0.0.1\tweb\tdc=east,role=web\n\
             odd\\tname\\n\tfd00::2\t\tnote=a\\tb\n\
             bare\t10.0.0.3\t\t\n"
        );
    }

    #[test]
    fn tag_keys_become_variable_names() {
        assert_eq!(tag_variable_suffix("role"), "ROLE");
        assert_eq!(tag_variable_suffix("dc-name.x y"), "DC_NAME_X_Y");
        assert_eq!(tag_variable_suffix("a_1"), "A_1");
        assert_eq!(tag_variable_suffix("é"), "_");
        // Go upper-cases one character at a time: ß has no single upper-case character.
        assert_eq!(tag_variable_suffix("straße"), "STRA_E");
        assert_eq!(tag_variable_suffix("ıd"), "ID");
    }

    #[test]
    fn nul_bytes_are_left_out_of_values() {
        let node = LocalNode {
            name: "a\0b".into(),
            tags: Tags::new(),
        };
        let event = Event::Member {
            kind: MemberEventKind::Join,
            members: vec![],
        };
        assert_eq!(
            get(&environment(&event, &node), "SERF_SELF_NAME"),
            Some("ab")
        );
    }
}
