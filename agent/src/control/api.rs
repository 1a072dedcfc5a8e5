//! The control API's request and response bodies, shared by the server and the client (and
//! so by the CLI). Every body is defined here; the views they carry that other modules own
//! (members and cluster state, query stream lines, log lines, events, handler status) are
//! sent as they serialize and re-exported here, so that both sides import from one place.
//! `docs/control-api.md` documents each endpoint with these shapes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::cluster::query::QueryUpdate;
pub use crate::cluster::{
    ClusterInfo, ConnectionCounts, JoinReport, MemberView, SeenEvent, Status,
};
pub use crate::control::limits::{ControlConnections, ListenerCounts};
pub use crate::health::CheckStatus;
pub use crate::logging::LogLine;
/// An event or query payload: a JSON string when it is UTF-8, else `{"base64": "..."}`.
pub use crate::payload::Payload;
pub use crate::plugin::PluginStatus;
pub use crate::reload::ReloadStatus;
pub use rumor_handlers::event::{Event, Tags};
pub use rumor_handlers::{HandlerStatus, Setting};

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
    pub handlers: Vec<HandlerStatus>,
    /// Incoming connections: held now, and dropped by the limits since the start.
    #[serde(default)]
    pub connections: ConnectionsSummary,
    /// The installed plugins, and whether each loaded.
    #[serde(default)]
    pub plugins: Vec<PluginStatus>,
    /// How reloads (of the config file and the plugins) went.
    #[serde(default)]
    pub reload: ReloadStatus,
}

/// The agent's incoming connections, as `GET /v1/info` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionsSummary {
    /// The push-pull (TCP gossip) port.
    pub push_pull: ConnectionCounts,
    /// The control API and metrics listeners.
    pub control: ControlConnections,
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
    /// Whether gossip is encrypted (Serf's `encrypted` in `serf info`).
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsResponse {
    pub events: Vec<SeenEvent>,
}

/// `GET /v1/checks`: this agent's health checks, by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChecksResponse {
    pub checks: Vec<CheckStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub reloaded: bool,
    pub message: String,
}

/// `GET /v1/plugins`: the installed plugins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginsResponse {
    pub plugins: Vec<PluginStatus>,
}

/// One built-in plugin, as `GET /v1/plugins/catalog` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Installed on this agent (in any version).
    pub installed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogResponse {
    pub plugins: Vec<CatalogEntry>,
}

/// One setting of a plugin, as `GET /v1/plugin?name=NAME` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettingInfo {
    pub name: String,
    /// `string`, `integer`, `boolean`, `duration` or `path`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value in use.
    pub value: Option<Setting>,
    /// Given at install or with `rumor plugin set` (rather than the default).
    pub given: bool,
    pub default: Option<String>,
    pub required: bool,
    pub help: String,
}

/// `GET /v1/plugin?name=NAME`: one plugin, its settings and its handlers' status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginInfoResponse {
    pub plugin: PluginStatus,
    pub settings: Vec<SettingInfo>,
    /// Its handlers' counters, last runs and errors.
    pub handlers: Vec<HandlerStatus>,
}

/// `POST /v1/plugin/install`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginInstallRequest {
    /// A built-in plugin's name, or an absolute path to a plugin folder or `.tar.gz`.
    pub source: String,
    /// `[name, value]` pairs, as typed after `--set`.
    #[serde(default)]
    pub set: Vec<(String, String)>,
}

/// `POST /v1/plugin/set`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSetRequest {
    pub name: String,
    pub set: Vec<(String, String)>,
}

/// `POST /v1/plugin/remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRemoveRequest {
    pub name: String,
}

/// What an install, set or remove did: the plugin as it now is (none after a removal), and
/// what the reload that applied it said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginChangeResponse {
    pub plugin: Option<PluginStatus>,
    /// The reload's report; an error there (another plugin broken, the config file) does not
    /// undo the change.
    pub reload: String,
    pub reload_ok: bool,
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

/// `POST /v1/query`: ask the cluster; the answer is a stream of NDJSON [`QueryUpdate`]s.
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
    fn payload_is_a_string_base64_or_bytes() {
        let text: EventRequest = serde_json::from_str(r#"{"name":"d","payload":"v1"}"#).unwrap();
        assert_eq!(text.payload.0, b"v1");
        assert!(text.coalesce);
        let bytes: EventRequest =
            serde_json::from_str(r#"{"name":"d","payload":[255,0],"coalesce":false}"#).unwrap();
        assert_eq!(bytes.payload.0, vec![255, 0]);
        assert!(!bytes.coalesce);
        let base64: EventRequest =
            serde_json::from_str(r#"{"name":"d","payload":{"base64":"/wA="}}"#).unwrap();
        assert_eq!(base64.payload.0, vec![255, 0]);
        assert_eq!(
            serde_json::to_string(&Payload(vec![255])).unwrap(),
            r#"{"base64":"/w=="}"#
        );
        assert_eq!(
            serde_json::to_string(&Payload(b"hi".to_vec())).unwrap(),
            "\"hi\""
        );
        let err = serde_json::from_str::<EventRequest>(r#"{"name":"d","payload":7}"#).unwrap_err();
        assert!(err.to_string().contains(r#"a string, {"base64""#), "{err}");
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
