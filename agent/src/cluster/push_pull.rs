//! Anti-entropy: a full-state exchange with one peer over TCP ("push-pull"). Used to join
//! (the joiner learns everyone at once) and periodically, so a node that missed a broadcast —
//! a tag change, an event, a leave — catches up.
//!
//! One exchange: the initiator sends its state frame, the responder answers with its own, and
//! both merge what they got. A frame is the envelope header, a 4-byte big-endian length and
//! the postcard-encoded [`Offer`] or [`Reply`]; the length is checked against a limit before
//! reading.
//!
//! Periodic exchanges open with a digest of the state instead ([`Mode::Digest`]): in a
//! converged cluster both sides hold the same members and events, the responder says so
//! ([`Reply::InSync`]) and nothing more crosses — this is most of the idle traffic otherwise.
//! When the digests differ the responder sends its state and the initiator follows with its
//! own, so both still merge everything.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumor_handlers::event::UserEvent;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::handle::{ClusterHandle, Command, Status};
use super::identity::NodeId;
use super::keyring::SharedKeyring;
use super::log_limit::LogLimiter;
use super::members::Member;
use super::message::TagVersion;
use super::rate_limit::{self, SourceLimiter};
use super::wire::{self, Kind, WireError};

/// Default port when a join address has none.
pub const DEFAULT_PORT: u16 = 7946;
/// Largest state frame accepted (about 40,000 members with tags).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Incoming exchanges served at once; more wait (a noisy peer cannot exhaust the agent).
const MAX_CONCURRENT_EXCHANGES: usize = 16;
const FRAME_HEADER_LEN: usize = wire::HEADER_LEN + 4;
/// How long a joiner waits for a member that seems to have its name.
const NAME_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything one node tells another in an exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The sender.
    pub from: NodeId,
    /// The sender is joining through us (so we tell foca about it at once).
    pub join: bool,
    /// The sender's member table (statuses, tags, leave intents).
    pub members: Vec<Member>,
    /// The sender's foca membership state (identities, incarnations, alive/suspect/down).
    pub swim: Vec<foca::Member<NodeId>>,
    /// The sender's event clock.
    pub event_ltime: u64,
    /// The user events in the sender's deduplication window.
    pub events: Vec<UserEvent>,
}

/// What the initiator of an exchange sends.
#[derive(Debug, Serialize, Deserialize)]
pub enum Offer {
    /// The initiator's whole state; the responder answers with its own.
    State(State),
    /// Only a digest of the initiator's state ([`digest`]).
    Digest { from: NodeId, digest: [u8; 16] },
}

/// What the responder answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    State(State),
    /// The offered digest matches the responder's state: nothing to exchange.
    InSync,
}

/// How an exchange opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send the whole state at once (joins, and members back from failure, which surely
    /// differ).
    Full,
    /// Offer a digest first (periodic anti-entropy, which usually finds nothing new).
    Digest,
}

/// A digest of what anti-entropy would exchange: each member's identity, status, tag version
/// and leave intent, and the recent user events — in a canonical order, so two nodes that know
/// the same things agree on it. foca's membership (incarnations) is left out: it is not the
/// same list on every node (none lists itself), and what it decides shows in the statuses.
pub fn digest(state: &State) -> [u8; 16] {
    type MemberKey<'a> = (&'a str, SocketAddr, u64, Status, TagVersion, Option<u64>);
    let mut members: Vec<MemberKey> = state
        .members
        .iter()
        .map(|m| {
            (
                m.id.name.as_str(),
                m.id.addr,
                m.id.generation,
                m.status,
                m.tag_version,
                m.left_generation,
            )
        })
        .collect();
    members.sort();
    let mut events: Vec<(u64, &str, &str, &[u8])> = state
        .events
        .iter()
        .map(|e| (e.ltime, e.origin.as_str(), e.name.as_str(), &e.payload[..]))
        .collect();
    events.sort();
    let canonical = postcard::to_allocvec(&(members, events)).expect("plain data encodes");
    let hash = ring::digest::digest(&ring::digest::SHA256, &canonical);
    *hash
        .as_ref()
        .first_chunk()
        .expect("a SHA-256 hash is 32 bytes")
}

#[derive(Debug, Error)]
pub enum PushPullError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("expected a push-pull frame, got a {0:?} frame")]
    WrongKind(Kind),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("truncated stream: it ended after {got} of {expected} bytes")]
    Truncated { got: usize, expected: usize },
    #[error("malformed state: {0}")]
    Decode(#[from] postcard::Error),
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

/// Reads exactly `buf.len()` bytes, reporting how far a short stream got.
async fn read_full<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    already: usize,
    total: usize,
) -> Result<(), PushPullError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]).await? {
            0 => {
                return Err(PushPullError::Truncated {
                    got: already + got,
                    expected: total,
                });
            }
            n => got += n,
        }
    }
    Ok(())
}

/// Writes one frame: header, 4-byte length, then the body (sealed when encrypting).
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    message: &T,
    keyring: &SharedKeyring,
) -> Result<(), PushPullError> {
    let body = postcard::to_allocvec(message)?;
    let mut sealed = Vec::with_capacity(wire::HEADER_LEN + body.len() + 64);
    wire::seal(Kind::PushPull, &body, keyring.read().as_ref(), &mut sealed);
    let (header, payload) = sealed.split_at(wire::HEADER_LEN);
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(header);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; the length is checked against `max` before anything is allocated.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
    keyring: &SharedKeyring,
) -> Result<T, PushPullError> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    read_full(r, &mut head, 0, FRAME_HEADER_LEN).await?;
    let header: [u8; wire::HEADER_LEN] = *head.first_chunk().expect("7 bytes hold a header");
    let (kind, encrypted) = wire::parse_header(header)?;
    if kind != Kind::PushPull {
        return Err(PushPullError::WrongKind(kind));
    }
    let len_bytes: [u8; 4] = *head.last_chunk().expect("7 bytes hold a length");
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max {
        return Err(PushPullError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    read_full(r, &mut body, FRAME_HEADER_LEN, FRAME_HEADER_LEN + len).await?;
    let plain = wire::unseal(header, encrypted, &body, keyring.read().as_ref())?;
    Ok(postcard::from_bytes(&plain)?)
}

/// Starts an exchange with `addr`: sends `local` (or first its digest), returns the peer's
/// state, or `None` when the digests matched and there is nothing to merge.
pub async fn exchange(
    addr: SocketAddr,
    local: State,
    mode: Mode,
    handle: &ClusterHandle,
) -> Result<Option<State>, PushPullError> {
    let timeout = handle.push_pull_timeout;
    let (keys, max) = (&handle.keyring, handle.max_push_pull_bytes);
    let run = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        if mode == Mode::Full {
            write_frame(&mut stream, &Offer::State(local), keys).await?;
            return match read_frame(&mut stream, max, keys).await? {
                Reply::State(remote) => Ok(Some(remote)),
                Reply::InSync => Err(PushPullError::Unexpected("in sync, to a whole state")),
            };
        }
        let offer = Offer::Digest {
            from: local.from.clone(),
            digest: digest(&local),
        };
        write_frame(&mut stream, &offer, keys).await?;
        match read_frame(&mut stream, max, keys).await? {
            Reply::InSync => Ok(None),
            Reply::State(remote) => {
                write_frame(&mut stream, &Offer::State(local), keys).await?;
                Ok(Some(remote))
            }
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| PushPullError::Timeout(timeout))?
}

/// Answers one incoming exchange: reads the peer's offer, answers with our state (or "in
/// sync" to a matching digest), and merges theirs.
async fn answer(mut stream: TcpStream, handle: &ClusterHandle) -> Result<(), PushPullError> {
    let timeout = handle.push_pull_timeout;
    let (keys, max) = (&handle.keyring, handle.max_push_pull_bytes);
    let run = async {
        let offer: Offer = read_frame(&mut stream, max, keys).await?;
        let local = handle
            .snapshot(false)
            .await
            .map_err(|_| PushPullError::Stopped)?;
        match offer {
            Offer::State(remote) => {
                write_frame(&mut stream, &Reply::State(local), keys).await?;
                Ok::<Option<State>, PushPullError>(Some(remote))
            }
            Offer::Digest { digest: theirs, .. } if theirs == digest(&local) => {
                write_frame(&mut stream, &Reply::InSync, keys).await?;
                Ok(None)
            }
            Offer::Digest { .. } => {
                write_frame(&mut stream, &Reply::State(local), keys).await?;
                match read_frame(&mut stream, max, keys).await? {
                    Offer::State(remote) => Ok(Some(remote)),
                    Offer::Digest { .. } => Err(PushPullError::Unexpected("a second digest")),
                }
            }
        }
    };
    let remote = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| PushPullError::Timeout(timeout))??;
    match remote {
        Some(remote) => handle.merge(remote, false).await,
        None => handle.in_sync().await,
    }
    .map_err(|_| PushPullError::Stopped)
}

/// Serves incoming exchanges until the listener fails or the agent stops.
pub async fn serve(listener: TcpListener, handle: ClusterHandle) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_EXCHANGES));
    let mut limiter = SourceLimiter::default();
    let mut limited_log = LogLimiter::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!("push-pull listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Loopback peers are processes on this host, which can do anything anyway (and many
        // agents on one machine share 127.0.0.1).
        if !peer.ip().is_loopback() && !limiter.allow(peer.ip(), std::time::Instant::now()) {
            // Closed at once: the peer retries later, as every rumor node does.
            let _ = handle.commands.try_send(Command::PushPullRateLimited);
            if let Some(suppressed) = limited_log.allow() {
                warn!(%peer, suppressed, "push-pull refused: this source exceeds {} exchanges per second", rate_limit::PER_SECOND);
            }
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match answer(stream, &handle).await {
                Ok(()) => debug!(%peer, "push-pull answered"),
                Err(PushPullError::Stopped) => {}
                Err(e) => {
                    if matches!(&e, PushPullError::Wire(w) if w.is_crypto()) {
                        let _ = handle.commands.send(Command::PushPullUndecryptable).await;
                    }
                    warn!(%peer, "rejected push-pull stream: {e}");
                }
            }
        });
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
pub(crate) async fn join_one(handle: &ClusterHandle, addr: &str) -> Result<(), PushPullError> {
    let mut last = None;
    for sa in resolve(addr).await? {
        let local = handle
            .snapshot(true)
            .await
            .map_err(|_| PushPullError::Stopped)?;
        match exchange(sa, local.clone(), Mode::Full, handle).await {
            Ok(Some(remote)) => {
                check_name_is_free(handle, &local, &remote).await?;
                handle
                    .merge(remote, true)
                    .await
                    .map_err(|_| PushPullError::Stopped)?;
                return Ok(());
            }
            // (a full exchange answers with a state or an error, never "in sync")
            Ok(None) => last = Some(PushPullError::Unexpected("in sync, to a join")),
            // A peer that closes without a word usually could not open our frame.
            Err(PushPullError::Truncated { got: 0, .. }) => last = Some(PushPullError::Refused),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| PushPullError::Resolve(addr.to_string(), "no addresses".into())))
}

/// Before joining: if the cluster lists a live member with our name at another address, ask
/// that address who it is. If it answers as us, two nodes would share a name: refuse. (If it
/// does not answer, it is a dead process of ours, e.g. from before a move.)
async fn check_name_is_free(
    handle: &ClusterHandle,
    local: &State,
    remote: &State,
) -> Result<(), PushPullError> {
    let Some(twin) = remote.members.iter().find(|m| {
        m.id.name == local.from.name
            && m.id.addr != local.from.addr
            && matches!(m.status, Status::Alive | Status::Leaving)
    }) else {
        return Ok(());
    };
    let probe = exchange(twin.id.addr, local.clone(), Mode::Full, handle);
    match tokio::time::timeout(NAME_PROBE_TIMEOUT, probe).await {
        Ok(Ok(Some(answer))) if answer.from.name == local.from.name => {
            Err(PushPullError::NameConflict {
                name: local.from.name.clone(),
                addr: twin.id.addr,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keyring::{Key, Keyring};
    use proptest::prelude::*;

    fn state() -> State {
        State {
            from: NodeId {
                name: "a".into(),
                addr: "127.0.0.1:7946".parse().unwrap(),
                generation: 7,
            },
            join: true,
            members: vec![],
            swim: vec![],
            event_ltime: 3,
            events: vec![],
        }
    }

    fn plain() -> SharedKeyring {
        SharedKeyring::default()
    }

    fn keyed(key: &Key) -> SharedKeyring {
        SharedKeyring::new(Some(Keyring::new(vec![key.clone()])), None)
    }

    async fn frame(keys: &SharedKeyring) -> Vec<u8> {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Offer::State(state()), keys)
            .await
            .unwrap();
        buf
    }

    async fn read_offer(
        buf: &[u8],
        max: usize,
        keys: &SharedKeyring,
    ) -> Result<Offer, PushPullError> {
        read_frame(&mut &buf[..], max, keys).await
    }

    fn offered_state(offer: Offer) -> State {
        match offer {
            Offer::State(s) => s,
            Offer::Digest { .. } => panic!("a digest, not a state"),
        }
    }

    fn member(name: &str, status: Status, counter: u64) -> Member {
        Member {
            id: NodeId {
                name: name.into(),
                addr: "10.0.0.1:7946".parse().unwrap(),
                generation: 1,
            },
            status,
            tags: Default::default(),
            tag_version: TagVersion {
                generation: 1,
                counter,
            },
            left_generation: None,
            status_since: std::time::SystemTime::now(),
        }
    }

    fn event(ltime: u64, name: &str) -> UserEvent {
        UserEvent {
            ltime,
            name: name.into(),
            payload: b"p".to_vec(),
            coalesce: true,
            origin: "a".into(),
        }
    }

    #[test]
    fn the_digest_covers_members_and_events_in_any_order() {
        let mut a = state();
        a.members = vec![member("x", Status::Alive, 1), member("y", Status::Alive, 2)];
        a.events = vec![event(1, "deploy"), event(2, "restart")];
        // Another node, same knowledge: listed in another order, another sender and clock,
        // another foca view.
        let mut b = a.clone();
        b.from.name = "b".into();
        b.event_ltime = 9;
        b.join = false;
        b.members.reverse();
        b.events.reverse();
        b.swim = vec![foca::Member::alive(a.from.clone())];
        assert_eq!(digest(&a), digest(&b));
        let changed: [fn(&mut State); 4] = [
            |s| s.members[0].status = Status::Failed,
            |s| s.members[0].tag_version.counter += 1,
            |s| s.events.push(event(3, "new")),
            |s| s.events[0].payload.push(b'!'),
        ];
        for change in changed {
            let mut c = a.clone();
            change(&mut c);
            assert_ne!(digest(&a), digest(&c));
        }
    }

    #[tokio::test]
    async fn frames_round_trip_plain_and_sealed() {
        let buf = frame(&plain()).await;
        let back = offered_state(read_offer(&buf, MAX_FRAME_BYTES, &plain()).await.unwrap());
        assert_eq!((back.from, back.event_ltime), (state().from, 3));
        let key = Key::generate();
        let buf = frame(&keyed(&key)).await;
        let back = offered_state(
            read_offer(&buf, MAX_FRAME_BYTES, &keyed(&key))
                .await
                .unwrap(),
        );
        assert_eq!(back.from, state().from);
    }

    #[tokio::test]
    async fn sealed_and_plain_frames_do_not_mix() {
        let key = Key::generate();
        let sealed = frame(&keyed(&key)).await;
        let err = read_offer(&sealed, MAX_FRAME_BYTES, &plain())
            .await
            .unwrap_err();
        assert!(
            matches!(err, PushPullError::Wire(WireError::Encrypted)),
            "{err}"
        );
        let other = keyed(&Key::generate());
        let err = read_offer(&sealed, MAX_FRAME_BYTES, &other)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PushPullError::Wire(w) if w.is_crypto()),
            "{err}"
        );
        let open = frame(&plain()).await;
        let err = read_offer(&open, MAX_FRAME_BYTES, &keyed(&key))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PushPullError::Wire(WireError::NotEncrypted)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn truncated_oversized_and_foreign_frames_are_errors() {
        let buf = frame(&plain()).await;
        for cut in [0, 2, 5, FRAME_HEADER_LEN, buf.len() - 1] {
            let err = read_offer(&buf[..cut], MAX_FRAME_BYTES, &plain())
                .await
                .unwrap_err();
            assert!(
                matches!(err, PushPullError::Truncated { got, .. } if got == cut),
                "cut at {cut}: {err}"
            );
        }
        let err = read_offer(&buf, 4, &plain()).await.unwrap_err();
        assert!(
            matches!(err, PushPullError::TooLarge { max: 4, .. }),
            "{err}"
        );
        let err = read_offer(b"GET / HTTP/1.1\r\n", MAX_FRAME_BYTES, &plain())
            .await
            .unwrap_err();
        assert!(
            matches!(err, PushPullError::Wire(WireError::BadMagic(b'G'))),
            "{err}"
        );
        // A valid header whose body is garbage.
        let mut bad = buf[..FRAME_HEADER_LEN].to_vec();
        bad[3..7].copy_from_slice(&3u32.to_be_bytes());
        bad.extend_from_slice(&[0xff, 0xff, 0xff]);
        let err = read_offer(&bad, MAX_FRAME_BYTES, &plain())
            .await
            .unwrap_err();
        assert!(matches!(err, PushPullError::Decode(_)), "{err}");
    }

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

    proptest! {
        /// Any stream — random, or a valid header with a random body and length — is an
        /// error or a state, never a panic, and never an allocation past the limit.
        #[test]
        fn read_frame_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..4096),
            len in any::<u32>(),
            with_header in any::<bool>(),
            sealed in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let keys = if sealed { keyed(&Key::generate()) } else { plain() };
            let mut stream = Vec::new();
            if with_header {
                stream.extend_from_slice(&[wire::MAGIC, wire::PROTOCOL_VERSION, if sealed { 0x82 } else { 0x02 }]);
                stream.extend_from_slice(&len.to_be_bytes());
            }
            stream.extend_from_slice(&body);
            let _ = runtime.block_on(read_offer(&stream, 64 * 1024, &keys));
            let _ = runtime.block_on(read_frame::<_, Reply>(&mut &stream[..], 64 * 1024, &keys));
        }
    }
}
