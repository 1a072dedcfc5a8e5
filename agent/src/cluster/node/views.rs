//! What the cluster reports to the rest of the agent — the member list, `rumor info`, the
//! counters, recent events — and the parameters of a query. The control API and the CLI
//! show these shapes (see `docs/control-api.md`).

use std::net::SocketAddr;
use std::time::Duration;

use rumor_handlers::event::Tags;
use serde::{Deserialize, Serialize};

use super::filter::QueryFilter;
use super::latency::LatencyHistogram;

/// A query to send: what to ask, who should answer, how long to wait.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pub name: String,
    pub payload: Vec<u8>,
    pub filter: QueryFilter,
    /// `None`: a default that grows with the cluster size.
    pub timeout: Option<Duration>,
    /// Ask matching nodes to ack on receipt.
    pub ack: bool,
}

/// Member status as Serf shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Alive,
    /// Announced a graceful leave that has not completed yet.
    Leaving,
    Left,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alive" => Ok(Status::Alive),
            "leaving" => Ok(Status::Leaving),
            "left" => Ok(Status::Left),
            "failed" => Ok(Status::Failed),
            other => Err(format!(
                "unknown status {other:?}: expected alive, leaving, left or failed"
            )),
        }
    }
}

/// One member as `rumor members` and `GET /v1/members` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub name: String,
    /// IP address only; the port is separate, as in Serf.
    pub addr: std::net::IpAddr,
    pub port: u16,
    pub status: Status,
    pub tags: Tags,
    /// Bumped on every process start (and on an automatic rejoin after being declared dead).
    pub generation: u64,
    /// Unix time in milliseconds of the last status change seen by this node.
    pub status_since_ms: u64,
    /// Wire protocol version this build speaks.
    pub protocol: u8,
}

/// The tag prefix health checks publish their state under: `health_NAME=passing|warning|critical`.
pub const HEALTH_TAG_PREFIX: &str = "health_";

impl MemberView {
    /// A member on port 7946, generation 1, this build's protocol: what tests, fuzz targets and
    /// examples leave at its defaults.
    #[doc(hidden)]
    pub fn with_defaults(
        name: &str,
        addr: std::net::IpAddr,
        status: Status,
        tags: &[(&str, &str)],
    ) -> MemberView {
        MemberView {
            name: name.to_string(),
            addr,
            port: 7946,
            status,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            generation: 1,
            status_since_ms: 0,
            protocol: crate::cluster::wire::PROTOCOL_VERSION,
        }
    }

    /// Alive and every health check it publishes passing: the members a lookup (DNS, a load
    /// balancer's backends) should send traffic to. A member with no checks passes.
    pub fn passing(&self) -> bool {
        self.status == Status::Alive
            && self
                .tags
                .iter()
                .filter(|(k, _)| k.starts_with(HEALTH_TAG_PREFIX))
                .all(|(_, v)| v == "passing")
    }
}

/// Every member this node knows, itself included, sorted by name: what the cluster publishes
/// to readers that must never wait on it (DNS answers, rendered templates).
pub type MemberList = std::sync::Arc<Vec<MemberView>>;

/// `rumor info` / `GET /v1/info`: this agent's view of itself and the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub node: String,
    pub advertise: SocketAddr,
    pub generation: u64,
    /// `true` once another live member knows about us; `false` while alone or cut off.
    pub connected: bool,
    pub members_alive: usize,
    pub members_leaving: usize,
    pub members_left: usize,
    pub members_failed: usize,
    pub event_clock: u64,
    pub max_event_bytes: usize,
    /// User events kept for peers that missed them, and the bounds (count, seconds).
    #[serde(default)]
    pub events_kept: usize,
    #[serde(default)]
    pub event_retention: usize,
    #[serde(default)]
    pub event_retention_secs: u64,
    pub profile: String,
    /// Live nodes seen using a name another live node has (see the log).
    #[serde(default)]
    pub name_conflicts: Vec<String>,
    #[serde(default)]
    pub counters: Counters,
    /// Send-to-receipt time of user events that reached this node by gossip.
    #[serde(default)]
    pub event_latency: LatencyHistogram,
}

/// Monotonic counters kept by the cluster (also exported as metrics). Missing fields read
/// as 0, so a client can talk to an agent of another version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub packets_received: u64,
    pub packets_sent: u64,
    /// Datagrams rejected before reaching foca (bad magic, unknown version, truncated).
    pub packets_rejected: u64,
    /// Datagrams foca itself refused (decode errors, wrong destination, too big).
    pub packets_invalid: u64,
    /// Datagrams and frames that failed the encryption check: tampered, sealed with a key we
    /// do not have, or plain where encryption is required (and the reverse).
    pub packets_undecryptable: u64,
    pub events_received: u64,
    pub events_duplicate: u64,
    /// User events this node will never get: a peer had moved past them and no longer kept
    /// them (see `event_retention`). Each loss is also logged at WARN.
    pub events_lost: u64,
    /// Queries refused because their deadline had passed, they were sent before this agent
    /// started, or they would wait longer than any query may (replay protection).
    pub queries_refused: u64,
    /// Successful exchanges, those that found both sides in sync included.
    pub push_pull_ok: u64,
    /// Exchanges whose digests matched, so no state crossed.
    pub push_pull_in_sync: u64,
    pub push_pull_failed: u64,
    /// Incoming push-pulls refused because their source exceeded the rate limit.
    pub push_pull_rate_limited: u64,
    /// Queries sent again, straight to a node that had not answered (one per node and try).
    pub query_reasks: u64,
    /// Probes of ours that got no answer, directly or indirectly: each starts a suspicion.
    pub probes_failed: u64,
    /// Packets to a member that its host refused (ICMP port unreachable: its agent is gone).
    pub packets_refused: u64,
    /// Members this node declared down because independent members confirmed a suspicion
    /// (before foca's suspicion timer would have).
    pub suspicions_confirmed: u64,
    /// Copies of a user event or query that arrived after the first (each prunes a link of
    /// the broadcast tree).
    pub tree_duplicates: u64,
    /// User events and queries asked for after only their announcement arrived (a lost
    /// packet or a dead parent in the broadcast tree).
    pub tree_grafts: u64,
}

/// One recently seen user event, for `rumor events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenEvent {
    pub name: String,
    pub ltime: u64,
    pub origin: String,
    pub payload_bytes: usize,
    /// Wall-clock time this agent first received it, unix nanoseconds.
    pub received_unix_ns: u128,
}

/// Result of `join`: how many addresses answered, and why the others did not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReport {
    pub joined: usize,
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(status: Status, tags: &[(&str, &str)]) -> MemberView {
        MemberView::with_defaults("a", [127, 0, 0, 1].into(), status, tags)
    }

    #[test]
    fn passing_means_alive_and_every_check_passing() {
        assert!(member(Status::Alive, &[("role", "web")]).passing());
        assert!(member(Status::Alive, &[("health_http", "passing")]).passing());
        assert!(!member(Status::Alive, &[("health_http", "warning")]).passing());
        assert!(
            !member(
                Status::Alive,
                &[("health_a", "passing"), ("health_b", "critical")]
            )
            .passing()
        );
        assert!(!member(Status::Failed, &[]).passing());
        assert!(!member(Status::Leaving, &[]).passing());
    }
}
