//! The control API's request and response bodies, shared by the server and the client.
//! `docs/control-api.md` documents each endpoint with these shapes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rumor_handlers::event::{Event, Tags};
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterInfo, MemberView, SeenEvent, Status};
use crate::logging::LogLine;

/// Largest request body the server reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Every error response: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /v1/members` query: all filters must match. Regexes match the whole value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MembersQuery {
    pub status: Option<Status>,
    pub name: Option<String>,
    /// `(tag key, regex for its value)`; a member without the key does not match.
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembersResponse {
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaveResponse {
    pub left: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceLeaveRequest {
    pub node: String,
    #[serde(default)]
    pub prune: bool,
}

/// An empty JSON object, `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    pub name: String,
    #[serde(default)]
    pub payload: Payload,
    #[serde(default = "yes")]
    pub coalesce: bool,
}

fn yes() -> bool {
    true
}

pub use crate::payload::Payload;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventResponse {
    pub ltime: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    #[serde(default)]
    pub set: Tags,
    #[serde(default)]
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagsResponse {
    pub tags: Tags,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InfoResponse {
    pub agent: AgentSummary,
    pub cluster: ClusterInfo,
    /// Each handler's counters and last run.
    #[serde(default)]
    pub handlers: Vec<rumor_handlers::HandlerStatus>,
}

/// The agent process itself, as `GET /v1/info` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSummary {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    /// Where the control API is served.
    pub control: String,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsResponse {
    pub events: Vec<SeenEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub reloaded: bool,
    pub message: String,
}

/// One line of the `GET /v1/monitor` NDJSON stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MonitorLine {
    Log(LogLine),
    Event {
        event: Event,
    },
    /// The stream fell behind; this many log lines or events were dropped for it.
    Lagged {
        missed: u64,
    },
}

impl MembersQuery {
    /// The URL query string (without `?`), percent-encoded.
    pub fn to_query_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(status) = self.status {
            pairs.push(("status", status.as_str().to_string()));
        }
        if let Some(name) = &self.name {
            pairs.push(("name", name.clone()));
        }
        for (key, re) in &self.tags {
            pairs.push(("tag", format!("{key}={re}")));
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Parses a URL query string; unknown parameters and malformed values are errors.
    pub fn from_query_string(query: &str) -> Result<Self, String> {
        let mut out = MembersQuery::default();
        for (key, value) in parse_query(query)? {
            match key.as_str() {
                "status" => out.status = Some(value.parse()?),
                "name" => out.name = Some(value),
                "tag" => match value.split_once('=') {
                    Some((k, re)) if !k.is_empty() => {
                        out.tags.push((k.to_string(), re.to_string()))
                    }
                    _ => {
                        return Err(format!("invalid tag filter {value:?}: expected KEY=REGEX"));
                    }
                },
                other => {
                    return Err(format!(
                        "unknown query parameter {other:?}: expected status, name or tag"
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// Splits and percent-decodes `a=1&b=2` (`+` is a space).
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid percent-encoding in query {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query parameter {s:?} is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_query_round_trips_through_the_url() {
        let q = MembersQuery {
            status: Some(Status::Alive),
            name: Some("web-[0-9]+".into()),
            tags: vec![
                ("role".into(), "web|api".into()),
                ("dc".into(), "a b&c=d".into()),
            ],
        };
        let s = q.to_query_string();
        assert!(!s.contains(' ') && !s.contains('|'), "{s}");
        assert_eq!(MembersQuery::from_query_string(&s).unwrap(), q);
        assert_eq!(
            MembersQuery::from_query_string("").unwrap(),
            MembersQuery::default()
        );
    }

    #[test]
    fn members_query_errors_name_the_problem() {
        let err = MembersQuery::from_query_string("status=dead").unwrap_err();
        assert!(err.contains("unknown status"), "{err}");
        let err = MembersQuery::from_query_string("tag=role").unwrap_err();
        assert!(err.contains("KEY=REGEX"), "{err}");
        let err = MembersQuery::from_query_string("colour=red").unwrap_err();
        assert!(err.contains("unknown query parameter"), "{err}");
        let err = MembersQuery::from_query_string("name=%zz").unwrap_err();
        assert!(err.contains("percent"), "{err}");
    }

    #[test]
    fn payload_is_a_string_or_bytes() {
        let text: EventRequest = serde_json::from_str(r#"{"name":"d","payload":"v1"}"#).unwrap();
        assert_eq!(text.payload.0, b"v1");
        assert!(text.coalesce);
        let bytes: EventRequest =
            serde_json::from_str(r#"{"name":"d","payload":[255,0],"coalesce":false}"#).unwrap();
        assert_eq!(bytes.payload.0, vec![255, 0]);
        assert!(!bytes.coalesce);
        assert_eq!(serde_json::to_string(&Payload(vec![255])).unwrap(), "[255]");
        assert_eq!(
            serde_json::to_string(&Payload(b"hi".to_vec())).unwrap(),
            "\"hi\""
        );
        let err = serde_json::from_str::<EventRequest>(r#"{"name":"d","payload":7}"#).unwrap_err();
        assert!(err.to_string().contains("a string or an array"), "{err}");
    }

    #[test]
    fn monitor_lines_are_tagged_with_type() {
        let lagged = serde_json::to_string(&MonitorLine::Lagged { missed: 3 }).unwrap();
        assert_eq!(lagged, r#"{"type":"lagged","missed":3}"#);
        let log = MonitorLine::Log(LogLine {
            ts: "t".into(),
            level: "INFO".into(),
            target: "rumor".into(),
            message: "m".into(),
        });
        let s = serde_json::to_string(&log).unwrap();
        assert!(s.starts_with(r#"{"type":"log","ts":"t""#), "{s}");
        assert_eq!(serde_json::from_str::<MonitorLine>(&s).unwrap(), log);
    }
}

/// `POST /v1/query`: ask the cluster; the answer is a stream of [`QueryLine`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub name: String,
    #[serde(default)]
    pub payload: Payload,
    /// Only these nodes answer (empty: any node).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Only nodes whose tag KEY fully matches the regular expression answer.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// How long to wait for answers [default: grows with the cluster size].
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Ask matching nodes to ack on receipt.
    #[serde(default = "yes")]
    pub ack: bool,
}

/// `POST /v1/reachability`: ping every member through the gossip layer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReachabilityRequest {
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What `POST /v1/keys` does on every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyOp {
    List,
    Install,
    Use,
    Remove,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    pub op: KeyOp,
    /// The base64 key, for install, use and remove.
    #[serde(default)]
    pub key: Option<String>,
}

/// One node's outcome: its keys after the change (primary first), or its error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeKeys {
    pub ok: bool,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The answer of `POST /v1/keys`: every node's outcome, and how many failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysResponse {
    pub nodes: BTreeMap<String, NodeKeys>,
    pub failed: usize,
}
