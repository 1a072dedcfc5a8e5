//! The cluster: membership over foca, our wire envelope, tags, user events, anti-entropy.
//! It knows nothing of handlers: it emits [`rumor_handlers::event::Event`]s on a channel.
//!
//! Layout: `identity`, `wire`, `message` are the formats; `members`, `event_buffer`,
//! `lamport`, `state` the decisions (pure, unit-tested); `actor`, `timers`, `push_pull` the
//! I/O around them; `handle` the API the rest of the agent uses.

mod actor;
pub mod config;
mod datagrams;
pub mod error;
pub mod event_buffer;
pub mod handle;
mod heartbeat;
pub mod identity;
pub mod keyring;
mod lamport;
pub mod latency;
pub(crate) mod log_limit;
mod members;
pub mod message;
pub mod plumtree;
pub mod profile;
pub(crate) mod push_pull;
pub mod query;
mod rate_limit;
mod recent;
mod refused;
mod runtime;
pub mod sim;
pub mod snapshot;
mod state;
mod suspicion;
mod timers;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use rumor_handlers::event::Event;
use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use handle::{
    ClusterHandle, ClusterInfo, JoinReport, MemberView, QueryParams, SeenEvent, Status,
};
pub use identity::NodeId;
pub use profile::Profile;

use actor::Actor;
use state::{ClusterState, SharedState};

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

    let state = SharedState::new(ClusterState::new(local.clone(), config.tags.clone()));
    let mut config = config;
    let snapshotter = match config.snapshot_file.clone() {
        None => None,
        Some(path) => {
            let (restored, problem) = snapshot::load(&path);
            if let Some(problem) = problem {
                tracing::warn!("snapshot: {problem}");
            }
            {
                let mut s = state.lock();
                s.event_clock
                    .witness(restored.event_clock.saturating_sub(1));
                s.query_clock
                    .witness(restored.query_clock.saturating_sub(1));
            }
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
                Ok(s) => Some((s, restarted)),
                Err(e) => {
                    tracing::error!(
                        "snapshot {}: cannot write ({e}); running without one",
                        path.display()
                    );
                    None
                }
            }
        }
    };
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let handle = ClusterHandle {
        commands: commands_tx,
        push_pull_timeout: config.profile.push_pull_timeout(),
        max_push_pull_bytes: push_pull::MAX_FRAME_BYTES,
        keyring: keyring::SharedKeyring::new(config.keyring.clone(), config.keyring_file.clone()),
    };

    tokio::spawn(push_pull::serve(listener, handle.clone()));
    if !config.retry_join.is_empty() {
        tokio::spawn(retry_join(handle.clone(), config.retry_join.clone()));
    }
    let actor = Actor::new(
        config,
        snapshotter,
        local.clone(),
        state,
        Arc::new(socket),
        commands_rx,
        handle.clone(),
        events_tx,
    )
    .noticing_refusals(refusals);
    let task = tokio::spawn(actor.run());
    Ok(Running {
        handle,
        events: events_rx,
        task,
        local,
    })
}

/// Tries the `retry_join` addresses with backoff (1 s doubling to 30 s) until one answers.
async fn retry_join(handle: ClusterHandle, addrs: Vec<String>) {
    let mut backoff = std::time::Duration::from_secs(1);
    loop {
        for addr in &addrs {
            match push_pull::join_one(&handle, addr).await {
                Ok(()) => {
                    info!(%addr, "retry-join: joined the cluster");
                    return;
                }
                Err(push_pull::PushPullError::Stopped) => return,
                Err(e @ push_pull::PushPullError::NameConflict { .. }) => {
                    tracing::error!(%addr, "retry-join gave up: {e}");
                    return;
                }
                Err(e) => tracing::debug!(%addr, "retry-join failed: {e}"),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}
#[cfg(test)]
mod tests;
