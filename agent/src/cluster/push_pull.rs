//! Anti-entropy: a full-state exchange with one peer over TCP ("push-pull"). Used to join
//! (the joiner learns everyone at once) and periodically, so a node that missed a broadcast —
//! a tag change, an event, a leave — catches up. What crosses is an
//! [`ExchangeState`](super::node::exchange::ExchangeState); this module is the protocol and
//! the tasks that run it.
//!
//! One exchange, three frames: the initiator opens with who it is and its user event streams
//! ([`Offer::Open`]); the responder answers with its state and the events the initiator has
//! not delivered ([`Reply::State`]); the initiator closes with its own state and the events
//! the responder has not delivered ([`Offer::State`]); each side merges what it got. A frame
//! carries the postcard-encoded [`Offer`] or [`Reply`]; how frames are written and read (a
//! piece at a time, within a budget) is `frames.rs`.
//!
//! Periodic exchanges open with a digest of the state too ([`Mode::Digest`]): in a converged
//! cluster both sides hold the same members and streams, the responder says so
//! ([`Reply::InSync`]) and nothing more crosses — this is most of the idle traffic otherwise.
//!
//! The tasks talk to the actor (which owns the node) through a [`PushPull`]: they ask it for
//! the local state, hand it the peer's to merge, and report outcomes to be counted.
//!
//! # Who gets served ([`serve`])
//!
//! Anyone can open a TCP connection, and until its first frame opens and decodes the agent
//! cannot tell a member from a stranger. So the accept loop never waits: each connection gets
//! a task at once and counts as *unauthenticated* until its first valid frame. At most
//! [`MAX_UNAUTHENTICATED`] are kept; when one more arrives, the one that has been silent the
//! longest is dropped, so connections held open by strangers cannot keep a member's join out.
//! A stranger's connection is also dropped when it sends nothing for [`IDLE_TIMEOUT`], or has
//! not completed a valid frame within the exchange timeout. A connection whose frame
//! authenticated takes one of [`MAX_CONCURRENT_EXCHANGES`] slots for the rest of its exchange;
//! strangers never hold one. Dropped connections are counted by reason
//! ([`ConnectionStats`](super::admission::ConnectionStats)) and logged at most once a second
//! per kind.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::admission::{ConnectionCounts, Connections, Dropped};
pub use super::frames::MAX_FRAME_BYTES;
use super::frames::{self, FrameError, Progress, Stall, read_frame, write_frame};
use super::keyring::SharedKeyring;
use super::node::events::StreamSummary;
use super::node::exchange::{ExchangeOutcome, ExchangeState, Mode, Purpose, digest};
use super::node::identity::NodeId;
use super::node::views::Status;
use super::rate_limit::{self, SourceLimiter};
use super::wire::WireError;
use crate::log_limit::LogLimiter;

/// Default port when a join address has none.
pub const DEFAULT_PORT: u16 = 7946;
/// Incoming exchanges served at once, once their first frame authenticated; more wait for a
/// slot (a noisy member cannot exhaust the agent).
pub const MAX_CONCURRENT_EXCHANGES: usize = 16;
/// Incoming connections kept before their first valid frame; past this the one silent the
/// longest is dropped.
pub const MAX_UNAUTHENTICATED: usize = 64;
/// How long a connection may send nothing before its first valid frame (a member sends its
/// frame as soon as it connects).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a joiner waits for a member that seems to have its name.
const NAME_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the initiator of an exchange sends.
#[derive(Debug, Serialize, Deserialize)]
pub enum Offer {
    /// The opening: who asks, its streams (so the answer can carry what it has not
    /// delivered, if it `wants_events`), and for a periodic exchange a [`digest`] of its
    /// state, which a peer that knows the same answers with [`Reply::InSync`].
    Open {
        from: NodeId,
        digest: Option<[u8; 16]>,
        streams: Vec<StreamSummary>,
        wants_events: bool,
    },
    /// The close: the initiator's state, with the events the responder has not delivered.
    State(ExchangeState),
}

/// What the responder answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The responder's state, with the events the initiator has not delivered.
    State(ExchangeState),
    /// The offered digest matches the responder's state: nothing to exchange.
    InSync,
}

#[derive(Debug, Error)]
pub enum PushPullError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Reading or writing a frame: I/O, the wire format, size, budget, decoding.
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("cannot resolve {0:?}: {1}")]
    Resolve(String, String),
    #[error("the agent is shutting down")]
    Stopped,
    #[error("unexpected frame: {0}")]
    Unexpected(&'static str),
    #[error(
        "the peer closed the connection without answering: check that encryption is set up the same on both sides (--encrypt, or the keyring file in the data directory); a peer also refuses sources that exceed its rate limit"
    )]
    Refused,
    #[error(
        "the name {name:?} is already used by a live member at {addr}: give this node another name with --node"
    )]
    NameConflict { name: String, addr: SocketAddr },
}

impl From<io::Error> for PushPullError {
    fn from(e: io::Error) -> PushPullError {
        PushPullError::Frame(FrameError::Io(e))
    }
}

/// A request from a push-pull task to the actor that owns the node.
pub(crate) enum Request {
    /// The local state to send to a peer (`join`: we are joining through it), with the
    /// events the peer has not delivered if its streams are given.
    State {
        join: bool,
        peer: Option<Vec<StreamSummary>>,
        reply: oneshot::Sender<ExchangeState>,
    },
    /// A peer's state, received in an exchange (either side).
    Merge {
        remote: Box<ExchangeState>,
        /// This is the answer to our own join: do not replay the cluster's event history.
        answer_to_join: bool,
        reply: Option<oneshot::Sender<()>>,
    },
    /// How an exchange ended, for the counters.
    Report(ExchangeOutcome),
}

/// What push-pull tasks need: the way to the actor, the keyring, and the limits.
#[derive(Clone)]
pub(crate) struct PushPull {
    requests: mpsc::Sender<Request>,
    /// Seals and opens the frames (the actor shares it for datagrams).
    pub(crate) keyring: SharedKeyring,
    timeout: Duration,
    max_bytes: usize,
    /// The incoming connections being served, and what the dropped ones cost.
    connections: Arc<Connections>,
}

impl PushPull {
    pub(crate) fn new(
        requests: mpsc::Sender<Request>,
        keyring: SharedKeyring,
        timeout: Duration,
    ) -> PushPull {
        PushPull {
            requests,
            keyring,
            timeout,
            max_bytes: MAX_FRAME_BYTES,
            connections: Arc::new(Connections::new(MAX_UNAUTHENTICATED)),
        }
    }

    /// The incoming connections now, and those dropped since the start.
    pub(crate) fn connection_counts(&self) -> ConnectionCounts {
        self.connections.counts()
    }

    pub(crate) async fn local_state(
        &self,
        join: bool,
        peer: Option<Vec<StreamSummary>>,
    ) -> Result<ExchangeState, PushPullError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::State { join, peer, reply })
            .await
            .map_err(|_| PushPullError::Stopped)?;
        answer.await.map_err(|_| PushPullError::Stopped)
    }

    /// Hands the peer's state to the node and waits until it is merged.
    async fn merge(
        &self,
        remote: ExchangeState,
        answer_to_join: bool,
    ) -> Result<(), PushPullError> {
        let (reply, merged) = oneshot::channel();
        self.requests
            .send(Request::Merge {
                remote: Box::new(remote),
                answer_to_join,
                reply: Some(reply),
            })
            .await
            .map_err(|_| PushPullError::Stopped)?;
        merged.await.map_err(|_| PushPullError::Stopped)
    }

    /// Counts an outcome; never waits (a full queue loses a count, not an exchange).
    fn report(&self, outcome: ExchangeOutcome) {
        let _ = self.requests.try_send(Request::Report(outcome));
    }
}

/// Runs an exchange with `addr` (`join`: we are joining through it): returns the peer's state,
/// or `None` when the digests matched and there is nothing to merge. The caller merges it; the
/// peer merges ours, which this sends last.
pub async fn exchange(
    addr: SocketAddr,
    mode: Mode,
    join: bool,
    port: &PushPull,
) -> Result<Option<ExchangeState>, PushPullError> {
    let timeout = port.timeout;
    let (keys, max) = (&port.keyring, port.max_bytes);
    let run = async {
        let local = port.local_state(join, None).await?;
        let open = Offer::Open {
            from: local.from.clone(),
            digest: (mode == Mode::Digest).then(|| digest(&local)),
            streams: local.streams,
            wants_events: local.wants_events,
        };
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        write_frame(&mut stream, &open, keys).await?;
        let remote = match read_frame(&mut stream, max, keys).await? {
            Reply::InSync if mode == Mode::Digest => return Ok(None),
            Reply::InSync => return Err(PushPullError::Unexpected("in sync, to a whole state")),
            Reply::State(remote) => remote,
        };
        let theirs = remote.wants_events.then(|| remote.streams.clone());
        let closing = port.local_state(false, theirs).await?;
        write_frame(&mut stream, &Offer::State(closing), keys).await?;
        Ok(Some(remote))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| PushPullError::Timeout(timeout))?
}

/// Runs an exchange the node asked for ([`Effect::Exchange`](super::node::Effect::Exchange))
/// and hands the result back: the peer's state to merge, or the outcome to count.
pub(crate) async fn exchange_for_node(port: PushPull, peer: SocketAddr, mode: Mode, why: Purpose) {
    match exchange(peer, mode, false, &port).await {
        Ok(Some(remote)) => {
            if why != Purpose::Periodic {
                info!(%peer, "{}", why.success());
            }
            let _ = port.merge(remote, false).await;
        }
        Ok(None) => port.report(ExchangeOutcome::InSync),
        // Exchanges with members that looked gone fail often and say little.
        Err(e) if why != Purpose::Periodic => debug!(%peer, "{why:?} exchange failed: {e}"),
        Err(e) => {
            debug!(%peer, "periodic push-pull failed: {e}");
            port.report(ExchangeOutcome::Failed);
        }
    }
}

/// Answers one incoming exchange: reads the peer's opening, answers with our state and what
/// it has not delivered (or "in sync" to a matching digest), then merges its closing state.
async fn answer(mut stream: TcpStream, port: &PushPull) -> Result<(), PushPullError> {
    let timeout = port.timeout;
    let (keys, max) = (&port.keyring, port.max_bytes);
    let run = async {
        let Offer::Open {
            digest: theirs,
            streams,
            wants_events,
            ..
        } = read_frame(&mut stream, max, keys).await?
        else {
            return Err(PushPullError::Unexpected("a state before the opening"));
        };
        let local = port
            .local_state(false, wants_events.then_some(streams))
            .await?;
        if theirs.is_some_and(|d| d == digest(&local)) {
            write_frame(&mut stream, &Reply::InSync, keys).await?;
            return Ok::<Option<ExchangeState>, PushPullError>(None);
        }
        write_frame(&mut stream, &Reply::State(local), keys).await?;
        match read_frame(&mut stream, max, keys).await? {
            Offer::State(remote) => Ok(Some(remote)),
            Offer::Open { .. } => Err(PushPullError::Unexpected("a second opening")),
        }
    };
    let remote = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| PushPullError::Timeout(timeout))??;
    match remote {
        Some(remote) => port.merge(remote, false).await,
        None => {
            port.report(ExchangeOutcome::InSync);
            Ok(())
        }
    }
}

/// Serves incoming exchanges until the agent stops; see the module docs for who is served.
pub(crate) async fn serve(listener: TcpListener, port: PushPull) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_EXCHANGES));
    let mut limiter = SourceLimiter::default();
    let mut accept_log = LogLimiter::default();
    let mut limited_log = LogLimiter::default();
    let mut evicted_log = LogLimiter::default();
    let rejected_logs = Arc::new(RejectionLogs::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                if let Some(suppressed) = accept_log.allow() {
                    warn!(suppressed, "push-pull listener: accept failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Loopback is not rate-limited: every agent on one host shares 127.0.0.1 (tests run
        // fifty), so a limit per address would throttle them all as one. What stops a local
        // flood is what stops a remote one: the cap on strangers with eviction, the idle and
        // first-frame timeouts, and the budget of unauthenticated bytes.
        if !peer.ip().is_loopback() && !limiter.allow(peer.ip(), std::time::Instant::now()) {
            // Closed at once: the peer retries later, as every rumor node does.
            port.report(ExchangeOutcome::RateLimited);
            if let Some(suppressed) = limited_log.allow() {
                warn!(%peer, suppressed, "push-pull refused: this source exceeds {} exchanges per second", rate_limit::PER_SECOND);
            }
            continue;
        }
        let progress = Arc::new(Progress::new(Some(slots.clone())));
        let task = tokio::spawn(serve_connection(
            stream,
            peer,
            progress.clone(),
            port.clone(),
            rejected_logs.clone(),
        ));
        let evicted = port
            .connections
            .admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(&progress, task.abort_handle());
        if evicted {
            port.connections.stats.count(Dropped::Evicted);
            if let Some(suppressed) = evicted_log.allow() {
                warn!(
                    suppressed,
                    "push-pull: {MAX_UNAUTHENTICATED} connections are waiting for a valid frame; dropped the one silent the longest to make room"
                );
            }
        }
    }
}

/// Serves one incoming connection, dropping it if it stalls before its first valid frame.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    progress: Arc<Progress>,
    port: PushPull,
    rejected_logs: Arc<RejectionLogs>,
) {
    let exchange = frames::watched(progress.clone(), answer(stream, &port));
    let (error, kind, dropped) = tokio::select! {
        answered = exchange => match answered {
            Ok(()) => return debug!(%peer, "push-pull answered"),
            Err(PushPullError::Stopped) => return,
            Err(e) => {
                let dropped = match &e {
                    PushPullError::Frame(FrameError::Wire(w)) if w.is_crypto() => {
                        port.report(ExchangeOutcome::Undecryptable);
                        None
                    }
                    PushPullError::Frame(FrameError::OverBudget { .. }) => {
                        Some(Dropped::OverBudget)
                    }
                    PushPullError::Frame(
                        FrameError::Wire(_)
                        | FrameError::WrongKind(_)
                        | FrameError::TooLarge { .. }
                        | FrameError::Decode(_),
                    )
                    | PushPullError::Unexpected(_) => Some(Dropped::Malformed),
                    _ => None,
                };
                (e.to_string(), rejection_kind(&e), dropped)
            }
        },
        stall = progress.stalled(IDLE_TIMEOUT, port.timeout) => {
            let (kind, dropped) = match stall {
                Stall::Idle(_) => ("idle", Dropped::Idle),
                Stall::NoValidFrame(_) => ("no valid frame", Dropped::NoValidFrame),
            };
            (stall.to_string(), kind, Some(dropped))
        }
    };
    if let Some(dropped) = dropped {
        port.connections.stats.count(dropped);
    }
    if let Some(suppressed) = rejected_logs.allow(kind) {
        warn!(%peer, suppressed, "rejected push-pull stream: {error}");
    }
}

/// A log limiter per kind of rejection: a flood of one kind is one line a second, and cannot
/// hide another kind (a peer with the wrong key among a flood of garbage).
#[derive(Default)]
struct RejectionLogs(Mutex<HashMap<&'static str, LogLimiter>>);

impl RejectionLogs {
    fn allow(&self, kind: &'static str) -> Option<u64> {
        let mut logs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        logs.entry(kind).or_default().allow()
    }
}

/// Which log limiter a rejected stream counts against.
fn rejection_kind(e: &PushPullError) -> &'static str {
    match e {
        PushPullError::Frame(frame) => match frame {
            FrameError::Wire(WireError::Encrypted) => "encrypted",
            FrameError::Wire(WireError::NotEncrypted) => "not encrypted",
            FrameError::Wire(WireError::Undecryptable(_)) => "undecryptable",
            FrameError::Wire(_) | FrameError::WrongKind(_) => "not push-pull",
            FrameError::TooLarge { .. } | FrameError::OverBudget { .. } => "too large",
            FrameError::Decode(_) => "malformed",
            FrameError::Truncated { .. } => "truncated",
            FrameError::Io(_) => "other",
        },
        PushPullError::Unexpected(_) => "malformed",
        PushPullError::Timeout(_) => "timeout",
        _ => "other",
    }
}

/// Resolves a join address (`host:port`, `ip:port`, or a host alone meaning port 7946).
pub async fn resolve(addr: &str) -> Result<Vec<SocketAddr>, PushPullError> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(vec![sa]);
    }
    let with_port = if addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:{DEFAULT_PORT}")
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| PushPullError::Resolve(addr.to_string(), e.to_string()))?
        .collect();
    if found.is_empty() {
        return Err(PushPullError::Resolve(
            addr.to_string(),
            "no addresses".into(),
        ));
    }
    Ok(found)
}

/// Joins the cluster through `addr`: one exchange, then both sides know each other.
pub(crate) async fn join_one(port: &PushPull, addr: &str) -> Result<(), PushPullError> {
    let mut last = None;
    for sa in resolve(addr).await? {
        match exchange(sa, Mode::Full, true, port).await {
            Ok(Some(remote)) => {
                let us = port.local_state(false, None).await?.from;
                check_name_is_free(port, &us, &remote).await?;
                port.merge(remote, true).await?;
                return Ok(());
            }
            // (a full exchange answers with a state or an error, never "in sync")
            Ok(None) => last = Some(PushPullError::Unexpected("in sync, to a join")),
            // A peer that closes without a word usually could not open our frame.
            Err(PushPullError::Frame(FrameError::Truncated { got: 0, .. })) => {
                last = Some(PushPullError::Refused)
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| PushPullError::Resolve(addr.to_string(), "no addresses".into())))
}

/// Tries each address until one lets us join (the node's re-announce while cut off).
pub(crate) async fn rejoin(port: PushPull, targets: Vec<String>) {
    for target in targets {
        if join_one(&port, &target).await.is_ok() {
            info!(%target, "rejoined the cluster");
            return;
        }
    }
}

/// Before joining: if the cluster lists a live member with our name at another address, ask
/// that address who it is. If it answers as us, two nodes would share a name: refuse. (If it
/// does not answer, it is a dead process of ours, e.g. from before a move.)
async fn check_name_is_free(
    port: &PushPull,
    us: &NodeId,
    remote: &ExchangeState,
) -> Result<(), PushPullError> {
    let Some(twin) = remote.members.iter().find(|m| {
        m.id.name == us.name
            && m.id.addr != us.addr
            && matches!(m.status, Status::Alive | Status::Leaving)
    }) else {
        return Ok(());
    };
    let probe = exchange(twin.id.addr, Mode::Full, false, port);
    match tokio::time::timeout(NAME_PROBE_TIMEOUT, probe).await {
        Ok(Ok(Some(answer))) if answer.from.name == us.name => Err(PushPullError::NameConflict {
            name: us.name.clone(),
            addr: twin.id.addr,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_addresses_with_and_without_ports() {
        assert_eq!(
            resolve("127.0.0.1:9").await.unwrap(),
            vec!["127.0.0.1:9".parse().unwrap()]
        );
        assert!(
            resolve("localhost")
                .await
                .unwrap()
                .iter()
                .all(|a| a.port() == DEFAULT_PORT)
        );
        assert!(matches!(
            resolve("no-such-host.invalid:1").await,
            Err(PushPullError::Resolve(..))
        ));
    }
}
