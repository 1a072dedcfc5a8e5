//! The cluster: membership over foca, our wire envelope, tags, user events, queries and
//! anti-entropy. It knows nothing of handlers: it emits [`rumor_handlers::event::Event`]s on a
//! channel.
//!
//! Layout: `node/` is the core with no I/O — every decision, as inputs in and effects out,
//! one module per concern ([`node::Node`]). Around it: `actor.rs` drives one node over a UDP
//! socket and a timer queue, `push_pull.rs` runs state exchanges over TCP, `wire.rs` and
//! `keyring.rs` are the envelope and its encryption, `snapshot.rs` the file a restart rejoins
//! from, `sim/` drives thousands of nodes in simulated time, and `handle.rs` is the API the
//! rest of the agent uses. Imports flow one way: the drivers use the node, never the reverse.

mod actor;
mod admission;
pub mod config;
mod datagrams;
pub mod error;
mod frames;
pub mod handle;
mod key_queries;
pub mod keyring;
pub mod node;
pub mod profile;
pub(crate) mod push_pull;
mod rate_limit;
mod refused;
pub mod sim;
pub mod snapshot;
mod timers;
pub mod wire;

// The node's formats and views, under the names the rest of the agent uses.
pub use node::{events, identity, latency, message, plumtree, query};

use std::net::SocketAddr;
use std::sync::Arc;

use rand::rngs::StdRng;
use rumor_handlers::event::Event;
use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::info;

pub use admission::ConnectionCounts;
pub use config::ClusterConfig;
pub use error::ClusterError;
/// The push-pull stream's frames, for the fuzz targets (`fuzz/`) that feed them bytes.
pub use frames::{FrameError, MAX_FRAME_BYTES, read_frame, write_frame};
pub use handle::ClusterHandle;
pub use identity::NodeId;
pub use node::views::{
    ClusterInfo, Counters, HEALTH_TAG_PREFIX, JoinReport, MemberList, MemberView, QueryParams,
    SeenEvent, Status,
};
pub use profile::Profile;
pub use push_pull::{Offer, PushPullError, Reply};

use actor::{Actor, Wiring};
use node::{Node, Now};
use push_pull::PushPull;

/// Binds UDP and TCP on the same port. With port 0 the UDP socket picks a free port, and TCP
/// may find that port taken (by a TCP socket of another process): then it tries again with
/// another port, a few times, instead of failing the start.
async fn bind_pair(
    addr: SocketAddr,
) -> Result<(UdpSocket, TcpListener, SocketAddr), (&'static str, std::io::Error)> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 1;
    loop {
        let socket = UdpSocket::bind(addr).await.map_err(|e| ("udp", e))?;
        let bound = socket.local_addr().map_err(|e| ("udp", e))?;
        match TcpListener::bind(bound).await {
            Ok(listener) => return Ok((socket, listener, bound)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(e) => return Err(("tcp", e)),
        }
    }
}

/// Why the cluster could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("invalid node name: {0}")]
    NodeName(String),
    #[error(
        "max_event_bytes = {value} is out of range: it must be between 1 and {ceiling} so every event fits one UDP packet"
    )]
    EventLimit { value: usize, ceiling: usize },
    #[error(
        "max_response_bytes = {value} is out of range: it must be between 1 and {ceiling} so every answer fits one UDP packet"
    )]
    ResponseLimit { value: usize, ceiling: usize },
    #[error("invalid tags: {0}")]
    Tags(String),
    #[error(
        "cannot listen on {addr} ({proto}): {source}. Is another agent running there? Choose another with --bind"
    )]
    Bind {
        addr: std::net::SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
}

/// A started cluster: its handle, the stream of events for the local handlers, and the
/// actor task (it ends after a graceful leave).
pub struct Running {
    pub handle: ClusterHandle,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub task: JoinHandle<()>,
    pub local: NodeId,
}

/// Binds the sockets and starts the actor. Joining is up to the caller
/// ([`ClusterHandle::join`]); `retry_join` addresses are tried in the background.
pub async fn start(config: ClusterConfig) -> Result<Running, StartError> {
    message::check_node_name(&config.node).map_err(StartError::NodeName)?;
    if config.max_response_bytes == 0
        || config.max_response_bytes > query::MAX_RESPONSE_BYTES_CEILING
    {
        return Err(StartError::ResponseLimit {
            value: config.max_response_bytes,
            ceiling: query::MAX_RESPONSE_BYTES_CEILING,
        });
    }
    if config.max_event_bytes == 0 || config.max_event_bytes > message::MAX_EVENT_BYTES_CEILING {
        return Err(StartError::EventLimit {
            value: config.max_event_bytes,
            ceiling: message::MAX_EVENT_BYTES_CEILING,
        });
    }
    for key in config.tags.keys() {
        message::check_tag_key(key).map_err(StartError::Tags)?;
    }
    if message::tags_size(&config.tags) > message::MAX_TAGS_BYTES {
        return Err(StartError::Tags(format!(
            "the tags exceed {} bytes",
            message::MAX_TAGS_BYTES
        )));
    }

    let bind_err = |proto| {
        move |source| StartError::Bind {
            addr: config.bind,
            proto,
            source,
        }
    };
    let (socket, listener, bound) = bind_pair(config.bind)
        .await
        .map_err(|(proto, source)| bind_err(proto)(source))?;
    let refusals = match refused::enable(&socket) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("packets refused by a member's host will not be noticed: {e}");
            false
        }
    };

    let mut advertise = config.advertise;
    if advertise.port() == 0 {
        advertise.set_port(bound.port());
    }
    let local = NodeId::starting_now(config.node.clone(), advertise);
    info!(node = %local.name, %bound, %advertise, generation = local.generation, profile = config.profile.as_str(), "cluster listening");

    let mut config = config;
    let restored = match config.snapshot_file.clone() {
        None => Restored::default(),
        Some(path) => restore_snapshot(path, &mut config),
    };
    let mut node = Node::new(
        config.clone(),
        local.clone(),
        restored.restarted,
        rand::make_rng::<StdRng>(),
        rand::make_rng::<StdRng>(),
        Now::real(),
    );
    node.restore_clocks(restored.clocks);
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let (requests_tx, requests_rx) = mpsc::channel(1024);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let keyring = keyring::SharedKeyring::new(config.keyring.clone(), config.keyring_file.clone());
    let port = PushPull::new(requests_tx, keyring, config.profile.push_pull_timeout());
    let (members_tx, members_rx) = tokio::sync::watch::channel(MemberList::default());
    let handle = ClusterHandle {
        commands: commands_tx,
        push_pull: port.clone(),
        members: members_rx,
    };

    tokio::spawn(push_pull::serve(listener, port.clone()));
    if !config.retry_join.is_empty() {
        tokio::spawn(retry_join(port.clone(), config.retry_join.clone()));
    }
    let actor = Actor::new(
        node,
        Wiring {
            socket: Arc::new(socket),
            commands: commands_rx,
            requests: requests_rx,
            push_pull: port,
            events: events_tx,
            snapshot: restored.writer,
            notice_refusals: refusals,
            members: members_tx,
        },
    );
    let task = tokio::spawn(actor.run());
    Ok(Running {
        handle,
        events: events_rx,
        task,
        local,
    })
}

/// What a previous run left for this one.
#[derive(Default)]
struct Restored {
    /// The snapshot file, open for this run.
    writer: Option<snapshot::Snapshotter>,
    /// The event and query clocks to continue from.
    clocks: (u64, u64),
    /// This process continues an earlier one (see [`Node::new`]).
    restarted: bool,
}

/// Reads the snapshot a previous run left: adds the members it knew to `retry_join` (unless
/// it left on purpose), and opens the file for this run.
fn restore_snapshot(path: std::path::PathBuf, config: &mut ClusterConfig) -> Restored {
    let (restored, problem) = snapshot::load(&path);
    if let Some(problem) = problem {
        tracing::warn!("snapshot: {problem}");
    }
    let clocks = (restored.event_clock, restored.query_clock);
    let rejoin = !restored.left || config.rejoin_after_leave;
    let known: Vec<String> = restored
        .alive
        .iter()
        .filter(|(name, _)| **name != config.node)
        .map(|(_, addr)| addr.to_string())
        .collect();
    if !known.is_empty() && rejoin {
        info!(
            members = known.len(),
            "snapshot: will rejoin the members known before the restart"
        );
        config.retry_join.extend(known);
    } else if !known.is_empty() {
        info!(
            "snapshot: this node left the cluster last time; not rejoining (set rejoin_after_leave, or join explicitly)"
        );
    }
    let restarted = restored.event_clock > 0 || !restored.alive.is_empty();
    match snapshot::Snapshotter::open(path.clone(), restored) {
        Ok(writer) => Restored {
            writer: Some(writer),
            clocks,
            restarted,
        },
        Err(e) => {
            tracing::error!(
                "snapshot {}: cannot write ({e}); running without one",
                path.display()
            );
            Restored {
                clocks,
                ..Restored::default()
            }
        }
    }
}

/// How often a retry-join that keeps failing says so again (the first failures are said at
/// once): often enough that an operator sees why a node stays alone, rarely enough not to
/// flood the log of a node whose seeds are down for hours.
const RETRY_JOIN_REMINDER: std::time::Duration = std::time::Duration::from_secs(60);

/// Tries the `retry_join` addresses with backoff (1 s doubling to 30 s) until one answers.
async fn retry_join(port: PushPull, addrs: Vec<String>) {
    let mut backoff = std::time::Duration::from_secs(1);
    let mut last_said: Option<tokio::time::Instant> = None;
    let mut rounds = 0u64;
    loop {
        rounds += 1;
        let say = last_said.is_none_or(|t| t.elapsed() >= RETRY_JOIN_REMINDER);
        if say {
            last_said = Some(tokio::time::Instant::now());
        }
        for addr in &addrs {
            match push_pull::join_one(&port, addr).await {
                Ok(()) => {
                    info!(%addr, attempts = rounds, "retry-join: joined the cluster");
                    return;
                }
                Err(push_pull::PushPullError::Stopped) => return,
                Err(e @ push_pull::PushPullError::NameConflict { .. }) => {
                    tracing::error!(%addr, "retry-join gave up: {e}");
                    return;
                }
                Err(e) if say => tracing::warn!(
                    %addr,
                    attempts = rounds,
                    "retry-join failed: {e}; trying again in {}s, and on until one answers",
                    backoff.as_secs()
                ),
                Err(e) => tracing::debug!(%addr, attempts = rounds, "retry-join failed: {e}"),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}
#[cfg(test)]
mod tests;
