//! Push-pull frames on a TCP stream: the envelope header, a 4-byte big-endian length, then the
//! postcard-encoded body (sealed when the cluster encrypts).
//!
//! # Why frames are read a piece at a time
//!
//! A frame announces its length before anything in it can be checked: with encryption, the
//! body authenticates only once it is whole. Reserving the announced length up front let any
//! stranger who can open a TCP connection make the agent hold [`MAX_FRAME_BYTES`] per
//! connection for nothing. So the body is read into a buffer that grows with the bytes that
//! actually arrive (doubling, never past the announced length), and what a frame holds beyond
//! its first [`FREE_BYTES`] is charged to one process-wide budget of bytes buffered before
//! authentication ([`UNAUTHENTICATED_BUDGET`]). A frame that would exceed it fails at once
//! ([`FrameError::OverBudget`]); its charge is returned when the frame is decoded or dropped.
//! Small frames — a join, a digest — never need the budget, so a full budget cannot stop
//! them.
//!
//! # Who is watching
//!
//! The listener must tell strangers (no valid frame yet, or silent) from peers (a frame that
//! opened and decoded). The exchange protocol reads frames without knowing about that, so the
//! listener runs each connection inside [`watched`] with a [`Progress`]: every read marks it,
//! and the first frame that decodes calls [`Progress::authenticated`], which may wait for one
//! of the listener's exchange slots. Outside [`watched`] (the side that starts an exchange)
//! nothing is reported.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::keyring::SharedKeyring;
use super::wire::{self, Kind, WireError};

/// Largest state frame accepted (about 40,000 members with tags).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Bytes before the body: the envelope header and the length.
pub const FRAME_HEADER_LEN: usize = wire::HEADER_LEN + 4;
/// What a frame may buffer before it draws on the budget: joins and digests fit.
pub const FREE_BYTES: usize = 64 * 1024;
/// Bytes all frames still unauthenticated may hold beyond their [`FREE_BYTES`], together: two
/// frames of the largest size at once.
pub const UNAUTHENTICATED_BUDGET: usize = 2 * MAX_FRAME_BYTES;

/// The budget every frame read by this process draws on.
static BUDGET: Budget = Budget::new(UNAUTHENTICATED_BUDGET);

/// Why a frame could not be read or written.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
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
    #[error(
        "a frame of {len} bytes does not fit: frames not yet authenticated already hold the \
         agent's budget of {budget} bytes (many large frames at once, or a flood); retried later"
    )]
    OverBudget { len: usize, budget: usize },
}

/// Writes one frame: header, 4-byte length, then the body (sealed when encrypting).
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    message: &T,
    keyring: &SharedKeyring,
) -> Result<(), FrameError> {
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

/// Reads one frame of at most `max` bytes, drawing on the process's budget (see the module
/// docs).
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
    keyring: &SharedKeyring,
) -> Result<T, FrameError> {
    read_frame_within(r, max, keyring, &BUDGET).await
}

/// Bytes frames not yet authenticated hold beyond their free allowance, now.
pub fn buffered_bytes() -> usize {
    BUDGET.used()
}

/// [`read_frame`] with the budget given.
pub async fn read_frame_within<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
    keyring: &SharedKeyring,
    budget: &Budget,
) -> Result<T, FrameError> {
    let progress = PROGRESS.try_with(Arc::clone).ok();
    let mut head = [0u8; FRAME_HEADER_LEN];
    read_exact(r, &mut head, 0, FRAME_HEADER_LEN, progress.as_deref()).await?;
    let header: [u8; wire::HEADER_LEN] = *head.first_chunk().expect("7 bytes hold a header");
    let (kind, encrypted) = wire::parse_header(header)?;
    if kind != Kind::PushPull {
        return Err(FrameError::WrongKind(kind));
    }
    let len_bytes: [u8; 4] = *head.last_chunk().expect("7 bytes hold a length");
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let body = read_body(r, len, budget, progress.as_deref()).await?;
    let plain = wire::unseal(header, encrypted, &body.bytes, keyring.read().as_ref())?;
    let message = postcard::from_bytes(&plain)?;
    drop(plain);
    // Authenticated: what it holds is a peer's now, and off the budget.
    drop(body);
    if let Some(progress) = progress {
        progress.authenticated().await;
    }
    Ok(message)
}

/// A body being read, and what it has drawn from the budget (returned on drop).
struct Body<'b> {
    bytes: Vec<u8>,
    budget: &'b Budget,
    charged: usize,
}

impl Drop for Body<'_> {
    fn drop(&mut self) {
        self.budget.refund(self.charged);
    }
}

/// Reads `len` bytes into a buffer that doubles as it fills, charging the budget for what it
/// holds beyond [`FREE_BYTES`].
async fn read_body<'b, R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    budget: &'b Budget,
    progress: Option<&Progress>,
) -> Result<Body<'b>, FrameError> {
    let mut body = Body {
        bytes: Vec::new(),
        budget,
        charged: 0,
    };
    let mut filled = 0;
    while filled < len {
        if filled == body.bytes.len() {
            let size = (body.bytes.len() * 2).clamp(len.min(FREE_BYTES), len);
            let charge = size.saturating_sub(FREE_BYTES) - body.charged;
            if !budget.charge(charge) {
                return Err(FrameError::OverBudget {
                    len,
                    budget: budget.limit,
                });
            }
            body.charged += charge;
            body.bytes.reserve_exact(size - body.bytes.len());
            body.bytes.resize(size, 0);
        }
        let end = body.bytes.len();
        read_exact_some(
            r,
            &mut body.bytes[filled..end],
            FRAME_HEADER_LEN + filled,
            FRAME_HEADER_LEN + len,
            progress,
        )
        .await
        .map(|n| filled += n)?;
    }
    Ok(body)
}

/// Fills `buf`, reporting how far a short stream got (`already` bytes came before it).
async fn read_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    already: usize,
    total: usize,
    progress: Option<&Progress>,
) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        got += read_exact_some(r, &mut buf[got..], already + got, total, progress).await?;
    }
    Ok(())
}

/// One read into `buf` (not empty); the end of the stream is an error.
async fn read_exact_some<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    already: usize,
    total: usize,
    progress: Option<&Progress>,
) -> Result<usize, FrameError> {
    match r.read(buf).await? {
        0 => Err(FrameError::Truncated {
            got: already,
            expected: total,
        }),
        n => {
            if let Some(progress) = progress {
                progress.read_now();
            }
            Ok(n)
        }
    }
}

/// A count of bytes with a limit, shared by every frame being read.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub const fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` if they fit.
    fn charge(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn refund(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

tokio::task_local! {
    /// The connection the current task serves, when a listener watches it.
    static PROGRESS: Arc<Progress>;
}

/// Runs `work` with its frame reads reported to `progress`.
pub async fn watched<F: Future>(progress: Arc<Progress>, work: F) -> F::Output {
    PROGRESS.scope(progress, work).await
}

/// How far one incoming connection has come: when it last sent anything, and whether a frame
/// of it has authenticated. Until then the connection is a stranger's.
#[derive(Debug)]
pub struct Progress {
    accepted: Instant,
    last_read: Mutex<Instant>,
    authenticated: AtomicBool,
    /// Where an authenticated connection takes its exchange slot from, and the slot it holds.
    slots: Option<Arc<Semaphore>>,
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Progress {
    /// A connection accepted now; once it authenticates it waits for one of `slots` (if given)
    /// and holds it until the connection ends.
    pub fn new(slots: Option<Arc<Semaphore>>) -> Progress {
        let now = Instant::now();
        Progress {
            accepted: now,
            last_read: Mutex::new(now),
            authenticated: AtomicBool::new(false),
            slots,
            slot: Mutex::new(None),
        }
    }

    fn read_now(&self) {
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// When the peer last sent anything (or connected).
    pub fn last_read(&self) -> Instant {
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    /// A frame of this connection opened and decoded: from now on it is a peer's, and it waits
    /// for an exchange slot (the first time only).
    async fn authenticated(&self) {
        if self.authenticated.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(slots) = &self.slots
            && let Ok(permit) = slots.clone().acquire_owned().await
        {
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
        }
    }

    /// Resolves when the connection, still unauthenticated, has been silent for `idle` or has
    /// not completed a valid frame within `first_frame` of its accept; never once it has
    /// authenticated.
    pub async fn stalled(&self, idle: Duration, first_frame: Duration) -> Stall {
        loop {
            if self.is_authenticated() {
                return std::future::pending().await;
            }
            let now = Instant::now();
            let silent_until = self.last_read() + idle;
            let first_frame_by = self.accepted + first_frame;
            if now >= first_frame_by {
                return Stall::NoValidFrame(first_frame);
            }
            if now >= silent_until {
                return Stall::Idle(idle);
            }
            tokio::time::sleep_until(silent_until.min(first_frame_by)).await;
        }
    }
}

/// Why a stranger's connection was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// It sent nothing for this long.
    Idle(Duration),
    /// It had not completed a valid frame this long after it connected.
    NoValidFrame(Duration),
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::Idle(d) => write!(f, "sent nothing for {d:?} before a valid frame"),
            Stall::NoValidFrame(d) => write!(f, "no valid frame within {d:?} of connecting"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keyring::{Key, Keyring};
    use proptest::prelude::*;

    type Message = (String, Vec<u8>);

    fn plain() -> SharedKeyring {
        SharedKeyring::default()
    }

    fn keyed(key: &Key) -> SharedKeyring {
        SharedKeyring::new(Some(Keyring::new(vec![key.clone()])), None)
    }

    fn message(len: usize) -> Message {
        ("state".into(), vec![7; len])
    }

    async fn frame(keys: &SharedKeyring, len: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        write_frame(&mut buf, &message(len), keys).await.unwrap();
        buf
    }

    async fn read(buf: &[u8], max: usize, keys: &SharedKeyring) -> Result<Message, FrameError> {
        read_frame_within(
            &mut &buf[..],
            max,
            keys,
            &Budget::new(UNAUTHENTICATED_BUDGET),
        )
        .await
    }

    #[tokio::test]
    async fn frames_round_trip_plain_and_sealed() {
        let buf = frame(&plain(), 10).await;
        assert_eq!(
            read(&buf, MAX_FRAME_BYTES, &plain()).await.unwrap(),
            message(10)
        );
        let key = Key::generate();
        // Larger than the free allowance, so the buffer grows (and is charged) on the way.
        let buf = frame(&keyed(&key), 3 * FREE_BYTES).await;
        assert_eq!(
            read(&buf, MAX_FRAME_BYTES, &keyed(&key)).await.unwrap(),
            message(3 * FREE_BYTES)
        );
    }

    #[tokio::test]
    async fn sealed_and_plain_frames_do_not_mix() {
        let key = Key::generate();
        let sealed = frame(&keyed(&key), 10).await;
        let err = read(&sealed, MAX_FRAME_BYTES, &plain()).await.unwrap_err();
        assert!(
            matches!(err, FrameError::Wire(WireError::Encrypted)),
            "{err}"
        );
        let other = keyed(&Key::generate());
        let err = read(&sealed, MAX_FRAME_BYTES, &other).await.unwrap_err();
        assert!(
            matches!(&err, FrameError::Wire(w) if w.is_crypto()),
            "{err}"
        );
        let open = frame(&plain(), 10).await;
        let err = read(&open, MAX_FRAME_BYTES, &keyed(&key))
            .await
            .unwrap_err();
        assert!(
            matches!(err, FrameError::Wire(WireError::NotEncrypted)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn truncated_oversized_and_foreign_frames_are_errors() {
        let buf = frame(&plain(), 10).await;
        for cut in [0, 2, 5, FRAME_HEADER_LEN, buf.len() - 1] {
            let err = read(&buf[..cut], MAX_FRAME_BYTES, &plain())
                .await
                .unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated { got, .. } if got == cut),
                "cut at {cut}: {err}"
            );
        }
        let err = read(&buf, 4, &plain()).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 4, .. }), "{err}");
        let err = read(b"GET / HTTP/1.1\r\n", MAX_FRAME_BYTES, &plain())
            .await
            .unwrap_err();
        assert!(
            matches!(err, FrameError::Wire(WireError::BadMagic(b'G'))),
            "{err}"
        );
        // A valid header whose body is garbage.
        let mut bad = buf[..FRAME_HEADER_LEN].to_vec();
        bad[3..7].copy_from_slice(&3u32.to_be_bytes());
        bad.extend_from_slice(&[0xff, 0xff, 0xff]);
        let err = read(&bad, MAX_FRAME_BYTES, &plain()).await.unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }

    /// A header announcing the largest frame, and then `sent` bytes of its body.
    fn announcing_the_largest(sent: usize) -> Vec<u8> {
        let mut stream = vec![wire::MAGIC, wire::PROTOCOL_VERSION, Kind::PushPull as u8];
        stream.extend_from_slice(&(MAX_FRAME_BYTES as u32).to_be_bytes());
        stream.extend(std::iter::repeat_n(0u8, sent));
        stream
    }

    #[tokio::test]
    async fn the_buffer_grows_with_what_arrives_not_with_what_is_announced() {
        let budget = Budget::new(UNAUTHENTICATED_BUDGET);
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let keys = plain();
        let reader = read_frame_within::<_, Message>(&mut ours, MAX_FRAME_BYTES, &keys, &budget);
        tokio::pin!(reader);
        // Announced 16 MiB, sent 100 KiB: the charge is what a doubling buffer holding those
        // bytes needs beyond the free allowance, nowhere near the announcement.
        theirs
            .write_all(&announcing_the_largest(100 * 1024))
            .await
            .unwrap();
        for _ in 0..100 {
            tokio::select! {
                biased;
                _ = &mut reader => panic!("the frame is not complete"),
                () = tokio::task::yield_now() => {}
            }
        }
        assert_eq!(budget.used(), 2 * FREE_BYTES - FREE_BYTES);
        drop(theirs);
        let err = reader.await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated { .. }), "{err}");
        assert_eq!(budget.used(), 0, "a dropped frame returns its charge");
    }

    #[tokio::test]
    async fn frames_past_the_budget_are_refused_and_small_ones_still_pass() {
        let budget = Budget::new(4 * FREE_BYTES);
        let big = announcing_the_largest(8 * FREE_BYTES);
        let err =
            read_frame_within::<_, Message>(&mut &big[..], MAX_FRAME_BYTES, &plain(), &budget)
                .await
                .unwrap_err();
        assert!(matches!(err, FrameError::OverBudget { .. }), "{err}");
        assert_eq!(budget.used(), 0);
        // With the budget all taken, a frame within the free allowance still reads.
        assert!(budget.charge(4 * FREE_BYTES));
        let small = frame(&plain(), 1000).await;
        let (keys, mut stream) = (plain(), &small[..]);
        let read = read_frame_within::<_, Message>(&mut stream, MAX_FRAME_BYTES, &keys, &budget);
        assert_eq!(read.await.unwrap(), message(1000));
    }

    #[tokio::test]
    async fn a_watched_connection_reports_reads_and_its_first_valid_frame() {
        let slots = Arc::new(Semaphore::new(1));
        let progress = Arc::new(Progress::new(Some(slots.clone())));
        let buf = frame(&plain(), 10).await;
        let read = watched(progress.clone(), async {
            read_frame::<_, Message>(&mut &buf[..], MAX_FRAME_BYTES, &plain()).await
        });
        assert!(!progress.is_authenticated());
        assert_eq!(read.await.unwrap(), message(10));
        assert!(progress.is_authenticated());
        assert_eq!(slots.available_permits(), 0, "it holds an exchange slot");
        drop(progress);
        assert_eq!(slots.available_permits(), 1, "and gives it back");
    }

    #[tokio::test]
    async fn strangers_stall_by_silence_or_by_time() {
        let progress = Progress::new(None);
        let idle = Duration::from_millis(40);
        let first = Duration::from_millis(200);
        assert_eq!(progress.stalled(idle, first).await, Stall::Idle(idle));
        // Talking keeps it from idling, not from the first-frame deadline.
        progress.read_now();
        let talking = async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                progress.read_now();
            }
        };
        tokio::select! {
            stall = progress.stalled(idle, first) => assert_eq!(stall, Stall::NoValidFrame(first)),
            _ = talking => unreachable!(),
        }
        progress.authenticated().await;
        let never = tokio::time::timeout(2 * first, progress.stalled(idle, first));
        assert!(never.await.is_err(), "a peer never stalls");
    }

    proptest! {
        /// Any stream — random, or a valid header with a random body and length — is an
        /// error or a message, never a panic, and never an allocation past the limit.
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
            let _ = runtime.block_on(read(&stream, 64 * 1024, &keys));
        }
    }
}
