//! What `serf` prints, built from what rumor's commands answer: Serf's JSON shapes (field
//! names, nesting and order as Serf's Go structs marshal them) and its text layouts, so
//! scripts that parse `serf members -format=json` or `serf query -format=json` keep working.
//! Pure functions of the answers, tested without an agent.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;
use serde_json::Value;

use crate::control::api::{InfoResponse, KeysResponse, MemberView};

/// `serf members -format=json`: `{"members": [...]}` (`null` when none matched, as Go
/// marshals an empty slice it never filled).
#[derive(Debug, Serialize)]
pub struct Members {
    pub members: Option<Vec<Member>>,
}

/// One member as Serf prints it: `addr` is `IP:PORT`, `protocol` an object.
#[derive(Debug, Serialize)]
pub struct Member {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub tags: BTreeMap<String, String>,
    pub status: String,
    pub protocol: Protocol,
}

/// Serf's protocol range; rumor speaks one version, so all three are it.
#[derive(Debug, Serialize)]
pub struct Protocol {
    pub max: u8,
    pub min: u8,
    pub version: u8,
}

impl Member {
    pub fn of(m: &MemberView) -> Member {
        Member {
            name: m.name.clone(),
            addr: SocketAddr::new(m.addr, m.port).to_string(),
            port: m.port,
            tags: m.tags.clone(),
            status: m.status.as_str().to_string(),
            protocol: Protocol {
                max: m.protocol,
                min: m.protocol,
                version: m.protocol,
            },
        }
    }
}

pub fn members(list: &[MemberView]) -> Members {
    Members {
        members: (!list.is_empty()).then(|| list.iter().map(Member::of).collect()),
    }
}

/// `serf members` text: `name  addr  status  tags`, plus the protocol columns with
/// `-detailed`.
pub fn members_text(list: &[MemberView], detailed: bool) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            let m = Member::of(m);
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut row = vec![m.name, m.addr, m.status, tags.join(",")];
            if detailed {
                row.push(format!("Protocol Version: {}", m.protocol.version));
                row.push(format!(
                    "Available Protocol Range: [{}, {}]",
                    m.protocol.min, m.protocol.max
                ));
            }
            row
        })
        .collect();
    columnize(&rows)
}

/// Go's `columnize.SimpleFormat`: every column but the last padded to its widest cell and
/// followed by two spaces (so an empty last cell leaves them), the whole text trimmed.
pub fn columnize(rows: &[Vec<String>]) -> String {
    let widths = crate::cli::output::column_widths(rows);
    let mut text = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            } else {
                text.push_str(cell);
            }
        }
        text.push('\n');
    }
    text.trim().to_string()
}

/// `serf query -format=json`: `{"Acks": [...], "Responses": {node: answer}}` (`Acks` is
/// `null` when no node acked, as with `-no-ack`).
#[derive(Debug, Serialize)]
pub struct QueryResult {
    #[serde(rename = "Acks")]
    pub acks: Option<Vec<String>>,
    #[serde(rename = "Responses")]
    pub responses: BTreeMap<String, String>,
}

/// Serf's query result from `rumor query --format json`'s (`acks`, `responses` whose
/// payloads are strings, or `{"base64": ...}` when not UTF-8).
pub fn query(rumor: &Value) -> QueryResult {
    let acks: Vec<String> = rumor["acks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let responses = rumor["responses"]
        .as_object()
        .map(|r| {
            r.iter()
                .map(|(node, payload)| (node.clone(), payload_text(payload)))
                .collect()
        })
        .unwrap_or_default();
    QueryResult {
        acks: (!acks.is_empty()).then_some(acks),
        responses,
    }
}

/// `serf query` text: the dispatch line, the acks, the answers (without their last newline),
/// and the totals (no ack total with `-no-ack`).
pub fn query_text(name: &str, result: &QueryResult, no_ack: bool) -> Vec<String> {
    let mut lines = vec![format!("Query '{name}' dispatched")];
    let acks = result.acks.as_deref().unwrap_or_default();
    for node in acks {
        lines.push(format!("Ack from '{node}'"));
    }
    for (node, answer) in &result.responses {
        let answer = answer.strip_suffix('\n').unwrap_or(answer);
        lines.push(format!("Response from '{node}': {answer}"));
    }
    if !no_ack {
        lines.push(format!("Total Acks: {}", acks.len()));
    }
    lines.push(format!("Total Responses: {}", result.responses.len()));
    lines
}

/// A payload as `rumor query --format json` writes it (a string, or `{"base64": ...}` when it
/// is not UTF-8), as the text Serf shows.
fn payload_text(payload: &Value) -> String {
    match serde_json::from_value::<crate::payload::Payload>(payload.clone()) {
        Ok(bytes) => String::from_utf8_lossy(&bytes.0).into_owned(),
        Err(_) => payload.to_string(),
    }
}

/// `serf info`: sections of string values — `agent`, `event_handlers` (filter → command),
/// `runtime`, `serf` (with `encrypted`) and `tags` (the local node's).
pub fn info(
    info: &InfoResponse,
    tags: &BTreeMap<String, String>,
) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let c = &info.cluster;
    let mut handlers = BTreeMap::new();
    for h in &info.handlers {
        // Serf keys its map by filter; two handlers with one filter keep both, by name.
        let key = if handlers.contains_key(&h.filter) {
            format!("{} ({})", h.filter, h.name)
        } else {
            h.filter.clone()
        };
        handlers.insert(key, h.command.clone());
    }
    let strings = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    BTreeMap::from([
        ("agent", strings(&[("name", c.node.clone())])),
        ("event_handlers", handlers),
        (
            "runtime",
            strings(&[
                ("arch", std::env::consts::ARCH.to_string()),
                ("cpu_count", cpus.to_string()),
                ("os", std::env::consts::OS.to_string()),
                ("version", format!("rumor {}", info.agent.version)),
            ]),
        ),
        (
            "serf",
            strings(&[
                ("encrypted", info.agent.encrypted.to_string()),
                ("event_time", c.event_clock.to_string()),
                ("failed", c.members_failed.to_string()),
                ("left", c.members_left.to_string()),
                (
                    "members",
                    (c.members_alive + c.members_leaving + c.members_failed + c.members_left)
                        .to_string(),
                ),
            ]),
        ),
        ("tags", tags.clone()),
    ])
}

/// `serf info` text: each section, then its `key = value` lines indented by a tab.
pub fn info_text(sections: &BTreeMap<&'static str, BTreeMap<String, String>>) -> Vec<String> {
    let mut lines = Vec::new();
    for (section, values) in sections {
        lines.push(format!("{section}:"));
        for (key, value) in values {
            lines.push(format!("\t{key} = {value}"));
        }
    }
    lines
}

/// `serf keys -list` text: each key with how many of the responding nodes have it.
pub fn keys_list(response: &KeysResponse) -> Vec<String> {
    let total = response.nodes.len();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for node in response.nodes.values().filter(|n| n.ok) {
        for key in &node.keys {
            *counts.entry(key).or_default() += 1;
        }
    }
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(key, n)| vec![key.to_string(), format!("[{n}/{total}]")])
        .collect();
    columnize(&rows).lines().map(String::from).collect()
}

/// The nodes that failed a `serf keys` operation, as Serf lists them.
pub fn keys_failures(response: &KeysResponse) -> Vec<String> {
    let rows: Vec<Vec<String>> = response
        .nodes
        .iter()
        .filter(|(_, n)| !n.ok)
        .map(|(node, n)| {
            vec![
                "failed:".to_string(),
                node.clone(),
                n.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    columnize(&rows).lines().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::Status;

    fn member(name: &str, port: u16, tags: &[(&str, &str)]) -> MemberView {
        MemberView {
            port,
            generation: 7,
            protocol: 1,
            ..MemberView::with_defaults(name, [127, 0, 0, 1].into(), Status::Alive, tags)
        }
    }

    #[test]
    fn members_json_has_serfs_fields_in_serfs_order() {
        let list = [
            member("a", 17946, &[("role", "web")]),
            member("b", 17947, &[]),
        ];
        let json = serde_json::to_string_pretty(&members(&list)).unwrap();
        let expected = r#"{
  "members": [
    {
      "name": "a",
      "addr": "127.0.0.1:17946",
      "port": 17946,
      "tags": {
        "role": "web"
      },
      "status": "alive",
      "protocol": {
        "max": 1,
        "min": 1,
        "version": 1
      }
    },
    {
      "name": "b",
      "addr": "127.0.0.1:17947",
      "port": 17947,
      "tags": {},
      "status": "alive",
      "protocol": {
        "max": 1,
        "min": 1,
        "version": 1
      }
    }
  ]
}"#;
        assert_eq!(json, expected);
        assert_eq!(
            serde_json::to_string(&members(&[])).unwrap(),
            r#"{"members":null}"#
        );
    }

    #[test]
    fn members_text_is_columnized_as_go_does() {
        let list = [
            member("b", 17947, &[]),
            member("a", 17946, &[("role", "web"), ("dc", "x")]),
            member("c", 17948, &[]),
        ];
        assert_eq!(
            members_text(&list, false),
            "b  127.0.0.1:17947  alive  \n\
             a  127.0.0.1:17946  alive  dc=x,role=web\n\
             c  127.0.0.1:17948  alive"
        );
        let detailed = members_text(&list[..1], true);
        assert_eq!(
            detailed,
            "b  127.0.0.1:17947  alive    Protocol Version: 1  Available Protocol Range: [1, 1]"
        );
    }

    #[test]
    fn query_results_take_serfs_shape() {
        let rumor = serde_json::json!({
            "acks": ["a", "b"],
            "responses": {"b": "up 3 days\n", "a": {"base64": "aGk="}, "c": {"base64": "/w=="}},
            "no_answer": {"c": "no handler"},
            "missing": [],
            "timed_out": false
        });
        let result = query(&rumor);
        // Serf's answers are strings: a byte that is not UTF-8 shows as U+FFFD.
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            serde_json::json!({"Acks": ["a", "b"],
                               "Responses": {"a": "hi", "b": "up 3 days\n", "c": "\u{fffd}"}})
        );
        assert_eq!(
            query_text("load", &result, false),
            [
                "Query 'load' dispatched",
                "Ack from 'a'",
                "Ack from 'b'",
                "Response from 'a': hi",
                "Response from 'b': up 3 days",
                "Response from 'c': \u{fffd}",
                "Total Acks: 2",
                "Total Responses: 3"
            ]
        );
        let none = query(&serde_json::json!({"acks": [], "responses": {}}));
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"Acks":null,"Responses":{}}"#
        );
        assert_eq!(
            query_text("x", &none, true),
            ["Query 'x' dispatched", "Total Responses: 0"]
        );
    }
}
