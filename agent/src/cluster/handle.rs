//! The cluster's public face: a cheap, cloneable handle that sends commands to the actor task
//! that owns the membership state, and the data types those commands return.

use std::net::SocketAddr;
use std::time::Duration;

use rumor_handlers::event::Tags;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::error::ClusterError;
use super::keyring::SharedKeyring;
use super::push_pull;
use super::query::{QueryFilter, QueryUpdate};

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
    pub profile: String,
    /// Live nodes seen using a name another live node has (see the log).
    #[serde(default)]
    pub name_conflicts: Vec<String>,
    #[serde(default)]
    pub counters: Counters,
    /// Send-to-receipt time of user events that reached this node by gossip.
    #[serde(default)]
    pub event_latency: super::latency::LatencyHistogram,
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
    pub events_too_old: u64,
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

/// A request to the actor. Each carries a channel for its answer.
pub(crate) enum Command {
    Members(oneshot::Sender<Vec<MemberView>>),
    Info(oneshot::Sender<ClusterInfo>),
    RecentEvents(oneshot::Sender<Vec<SeenEvent>>),
    SendEvent {
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
        reply: oneshot::Sender<Result<u64, ClusterError>>,
    },
    UpdateTags {
        set: Tags,
        delete: Vec<String>,
        reply: oneshot::Sender<Result<Tags, ClusterError>>,
    },
    ForceLeave {
        node: String,
        prune: bool,
        reply: oneshot::Sender<Result<(), ClusterError>>,
    },
    Leave(oneshot::Sender<()>),
    /// Our state, to send to a peer in a push-pull exchange.
    Snapshot {
        join: bool,
        reply: oneshot::Sender<push_pull::State>,
    },
    /// A peer's state received in a push-pull exchange (either side).
    Merge {
        remote: Box<push_pull::State>,
        /// This is the answer to our own join: do not replay the cluster's event history.
        answer_to_join: bool,
        reply: Option<oneshot::Sender<()>>,
    },
    /// A push-pull (either side) found both states the same: nothing to merge (counted).
    PushPullInSync,
    /// A push-pull we started failed (counted, and retried by the actor's timers).
    PushPullFailed,
    /// An incoming push-pull stream failed the encryption check (counted).
    PushPullUndecryptable,
    /// An incoming push-pull was refused: its source exceeded the rate limit (counted).
    PushPullRateLimited,
    Query {
        params: QueryParams,
        reply: oneshot::Sender<Result<mpsc::UnboundedReceiver<QueryUpdate>, ClusterError>>,
    },
    /// This node's answer to a query it received (`Err`: it will not answer, and why).
    Respond {
        origin: String,
        id: u32,
        answer: Result<Vec<u8>, String>,
    },
}

/// A cloneable handle to the running cluster. Every method fails with
/// [`ClusterError::Stopped`] once the agent is shutting down.
#[derive(Clone)]
pub struct ClusterHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) push_pull_timeout: Duration,
    pub(crate) max_push_pull_bytes: usize,
    /// Seals and opens push-pull frames (and, in the actor, every packet).
    pub(crate) keyring: SharedKeyring,
}

impl ClusterHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)
    }

    /// Every member this node knows, including itself, sorted by name.
    pub async fn members(&self) -> Result<Vec<MemberView>, ClusterError> {
        self.ask(Command::Members).await
    }

    pub async fn info(&self) -> Result<ClusterInfo, ClusterError> {
        self.ask(Command::Info).await
    }

    /// The user events still in the deduplication window, oldest first.
    pub async fn recent_events(&self) -> Result<Vec<SeenEvent>, ClusterError> {
        self.ask(Command::RecentEvents).await
    }

    /// Sends a user event to the whole cluster; returns its Lamport time.
    /// Fails with [`ClusterError::EventTooLarge`] when name + payload exceed the limit.
    pub async fn send_event(
        &self,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    ) -> Result<u64, ClusterError> {
        self.ask(|reply| Command::SendEvent {
            name,
            payload,
            coalesce,
            reply,
        })
        .await?
    }

    /// Sets and deletes tags of this node; returns the resulting tags.
    pub async fn update_tags(&self, set: Tags, delete: Vec<String>) -> Result<Tags, ClusterError> {
        self.ask(|reply| Command::UpdateTags { set, delete, reply })
            .await?
    }

    /// Marks a failed member as left everywhere (`prune` also removes it from the list at once).
    pub async fn force_leave(&self, node: String, prune: bool) -> Result<(), ClusterError> {
        self.ask(|reply| Command::ForceLeave { node, prune, reply })
            .await?
    }

    /// Announces a graceful leave, waits (bounded) for it to spread, and stops the cluster.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        self.ask(Command::Leave).await
    }

    /// Joins through each address (`host:port`, resolved here) with a TCP push-pull exchange.
    /// Succeeds if at least one answered; the report says which did not and why.
    pub async fn join(&self, addrs: &[String]) -> Result<JoinReport, ClusterError> {
        let mut report = JoinReport {
            joined: 0,
            errors: Vec::new(),
        };
        for addr in addrs {
            match push_pull::join_one(self, addr).await {
                Ok(()) => report.joined += 1,
                Err(e) => report.errors.push(format!("{addr}: {e}")),
            }
        }
        if report.joined == 0 && !addrs.is_empty() {
            return Err(ClusterError::JoinFailed(report.errors.join("; ")));
        }
        Ok(report)
    }

    /// Sends a query; the receiver gets acks and answers as they arrive, then `Done`.
    pub async fn query(
        &self,
        params: QueryParams,
    ) -> Result<mpsc::UnboundedReceiver<QueryUpdate>, ClusterError> {
        self.ask(|reply| Command::Query { params, reply }).await?
    }

    /// Answers a query this node received (from the handlers). Late answers are dropped.
    pub async fn respond(
        &self,
        origin: String,
        id: u32,
        answer: Result<Vec<u8>, String>,
    ) -> Result<(), ClusterError> {
        self.commands
            .send(Command::Respond { origin, id, answer })
            .await
            .map_err(|_| ClusterError::Stopped)
    }

    pub(crate) async fn snapshot(&self, join: bool) -> Result<push_pull::State, ClusterError> {
        self.ask(|reply| Command::Snapshot { join, reply }).await
    }

    /// Counts an exchange that found both sides in sync.
    pub(crate) async fn in_sync(&self) -> Result<(), ClusterError> {
        self.commands
            .send(Command::PushPullInSync)
            .await
            .map_err(|_| ClusterError::Stopped)
    }

    pub(crate) async fn merge(
        &self,
        remote: push_pull::State,
        answer_to_join: bool,
    ) -> Result<(), ClusterError> {
        self.ask(|reply| Command::Merge {
            remote: Box::new(remote),
            answer_to_join,
            reply: Some(reply),
        })
        .await
    }
}
