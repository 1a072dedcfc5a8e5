//! How user events and queries spread: Plumtree (Leitão, Pereira and Rodrigues, "Epidemic
//! Broadcast Trees", SRDS 2007) over a small random set of peers drawn from foca's members.
//!
//! Each node links to a few random members (and to whoever links to it). A broadcast is pushed
//! in full to the *eager* peers and announced by id (IHAVE) to the *lazy* ones. A node that
//! gets a copy it already has answers PRUNE, and both ends make that link lazy: after the
//! first broadcast the eager links form a spanning tree, and every later broadcast reaches
//! each node once, plus a few 8-byte announcements per node. A node that hears an announcement
//! but not the broadcast within `graft_timeout` asks the announcer for it (GRAFT), which makes
//! that link eager again: a lost packet or a dead parent is repaired by the same means.
//!
//! Compared with pushing every item through foca's piggyback budget (4·log10(n) transmissions
//! per node, doubled), this costs a few packets per node per event whatever the cluster size.
//!
//! In a cluster of at most [`DIRECT_LIMIT`] members a node sends its own broadcasts straight to
//! every member instead ([`Plumtree::broadcast_own`]): one hop to everyone. A tree serves every
//! sender with the one spanning tree the first broadcasts shaped, so from a leaf a broadcast
//! climbs to the root and back down, several hops each of
//! which waits for its node to get a CPU — on a host busy starting handlers, milliseconds. A
//! member that gets such a direct push does not relay it; it announces it to its links like
//! any broadcast, so one that missed the push asks for it (GRAFT) as on the tree. The packets
//! per node are the same: one copy, and the announcements.
//! Membership-shaped broadcasts (tags, leaves, suspicions) still ride foca: they are rare, and
//! foca's piggyback is what makes them reach nodes that do not yet know each other.
//!
//! This type is sans-I/O: it takes frames and timer expiries and leaves frames to send and
//! timers to set in queues that the actor (and the simulation) drain. Peers are whatever
//! address type the caller uses (`SocketAddr` in the agent).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use thiserror::Error;

use super::recent::RecentSet;

/// A broadcast's id on the tree: the first 8 bytes of the SHA-256 of its encoding (the same on
/// every node and every build).
pub type MsgId = u64;

/// Links a node opens itself; whoever links to it adds to that, so a node has about twice as
/// many. A random graph of 3 links per node is already connected with high probability; the
/// fourth is for loss: a node that hears of a broadcast only through its links needs one
/// push or announcement to get through, and with 3 links the simulation at 10 % loss found
/// nodes that heard none. Each link costs about one 8-byte announcement per event.
pub const PEERS_PICKED: usize = 4;
/// Most peers kept (links opened by others beyond this are not kept).
const MAX_PEERS: usize = 32;
/// Broadcast ids remembered to recognise copies.
const SEEN_MEMORY: usize = 4096;
/// Broadcasts kept to answer GRAFTs.
const CACHE_SIZE: usize = 256;
/// Broadcasts announced but not received that are being waited for at once.
const MAX_MISSING: usize = 1024;
/// GRAFTs sent for one broadcast before giving up (push-pull then repairs it): under 10 %
/// loss each way one GRAFT and its answer get through about 4 times in 5.
const MAX_GRAFTS: u8 = 8;
/// Announcements wait `graft_timeout / ANNOUNCE_DELAY_DIVISOR` (25 ms on a LAN) before they
/// go out. The eager push reaches a LAN cluster in a few milliseconds; announcements sent at
/// the same time only compete with it (every one wakes a process that has nothing to do yet),
/// and held a little they share frames when events come in bursts. A lost push is repaired
/// that much later, which the graft timeout dwarfs anyway.
const ANNOUNCE_DELAY_DIVISOR: u32 = 4;
/// Ids per IHAVE or GRAFT frame (8 bytes each; the frame stays well under a datagram).
const IDS_PER_FRAME: usize = 128;
/// Largest cluster (members besides ourselves) whose every member gets our own broadcasts
/// straight from us. Each push costs the sender a datagram's worth of CPU, so at this size the
/// last one leaves well under a millisecond after the first, about what one hop of the tree
/// takes on a busy host.
pub const DIRECT_LIMIT: usize = 64;

const TAG_GOSSIP: u8 = 0;
const TAG_IHAVE: u8 = 1;
const TAG_GRAFT: u8 = 2;
const TAG_PRUNE: u8 = 3;
const TAG_LINK: u8 = 4;
const TAG_LINKED: u8 = 5;
const TAG_DIRECT: u8 = 6;
/// Times a LINK is sent before the peer is given up on (and another one picked).
const MAX_LINK_TRIES: u8 = 5;

/// The id of an encoded broadcast.
pub fn msg_id(encoded: &[u8]) -> MsgId {
    let digest = ring::digest::digest(&ring::digest::SHA256, encoded);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// The broadcast itself (its encoding).
    Gossip(Arc<[u8]>),
    /// A broadcast its sender pushed to every member itself: announce it, do not relay it.
    Direct(Arc<[u8]>),
    /// "I have these": ids of broadcasts, for a lazy peer.
    IHave(Vec<MsgId>),
    /// "Send me these, and push to me eagerly from now on."
    Graft(Vec<MsgId>),
    /// "I had that already: announce to me lazily from now on."
    Prune,
    /// "I took you as a peer": the receiver takes us as one too, and answers LINKED.
    Link,
    /// The answer to a LINK. Until one comes, the LINK is sent again: a node whose links
    /// were all lost would otherwise hear of nothing (nobody else knows it is there).
    Linked,
}

/// Something the tree wants done later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeTimer {
    /// Ask for this announced broadcast if it has not arrived.
    Graft(MsgId),
    /// Send LINK again to the peers that have not answered.
    Link,
    /// Send the announcements held since the first one was queued.
    Announce,
}

/// A received frame, borrowing the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Gossip(&'a [u8]),
    Direct(&'a [u8]),
    IHave(Vec<MsgId>),
    Graft(Vec<MsgId>),
    Prune,
    Link,
    Linked,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("empty tree frame")]
    Empty,
    #[error("unknown tree frame type {0}")]
    UnknownType(u8),
    #[error("tree frame ids are {0} bytes, not a multiple of 8")]
    RaggedIds(usize),
    #[error("tree frame carries {0} ids (at most {IDS_PER_FRAME})")]
    TooManyIds(usize),
    #[error("empty broadcast in a tree frame")]
    EmptyGossip,
}

/// Appends the wire form of `frame` to `out`: a type byte, then the broadcast or the ids
/// (8 bytes each, big-endian).
pub fn encode(frame: &Out, out: &mut Vec<u8>) {
    match frame {
        Out::Gossip(msg) => {
            out.push(TAG_GOSSIP);
            out.extend_from_slice(msg);
        }
        Out::Direct(msg) => {
            out.push(TAG_DIRECT);
            out.extend_from_slice(msg);
        }
        Out::IHave(ids) | Out::Graft(ids) => {
            out.push(if matches!(frame, Out::IHave(_)) {
                TAG_IHAVE
            } else {
                TAG_GRAFT
            });
            for id in ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        Out::Prune => out.push(TAG_PRUNE),
        Out::Link => out.push(TAG_LINK),
        Out::Linked => out.push(TAG_LINKED),
    }
}

pub fn decode(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (&tag, rest) = body.split_first().ok_or(FrameError::Empty)?;
    let ids = || -> Result<Vec<MsgId>, FrameError> {
        if rest.len() % 8 != 0 {
            return Err(FrameError::RaggedIds(rest.len()));
        }
        if rest.len() / 8 > IDS_PER_FRAME {
            return Err(FrameError::TooManyIds(rest.len() / 8));
        }
        Ok(rest
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("chunks of 8")))
            .collect())
    };
    match tag {
        TAG_GOSSIP | TAG_DIRECT if rest.is_empty() => Err(FrameError::EmptyGossip),
        TAG_GOSSIP => Ok(Frame::Gossip(rest)),
        TAG_DIRECT => Ok(Frame::Direct(rest)),
        TAG_IHAVE => Ok(Frame::IHave(ids()?)),
        TAG_GRAFT => Ok(Frame::Graft(ids()?)),
        TAG_PRUNE => Ok(Frame::Prune),
        TAG_LINK => Ok(Frame::Link),
        TAG_LINKED => Ok(Frame::Linked),
        other => Err(FrameError::UnknownType(other)),
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeCounters {
    /// Copies of a broadcast received that the node already had (each answered by PRUNE).
    pub duplicates: u64,
    /// Broadcasts asked for after an announcement alone arrived (lost packet, dead parent).
    pub grafts: u64,
}

/// A broadcast announced to us that has not arrived.
struct Missing<P> {
    /// Who announced it, in the order they are asked.
    announcers: VecDeque<P>,
    grafts: u8,
}

struct Cached {
    id: MsgId,
    msg: Arc<[u8]>,
    direct: bool,
}

/// Plumtree state of one node.
pub struct Plumtree<P> {
    eager: Vec<P>,
    lazy: Vec<P>,
    seen: RecentSet<MsgId>,
    /// Recent broadcasts, to answer GRAFTs with, and whether each was pushed directly.
    cache: VecDeque<Cached>,
    /// Broadcasts announced to us but not received.
    missing: HashMap<MsgId, Missing<P>>,
    outbox: VecDeque<(P, Out)>,
    /// Announcements waiting to go out, grouped into one IHAVE per peer when drained.
    announce: Vec<(P, MsgId)>,
    /// An [`TreeTimer::Announce`] is set; `announce` waits for it.
    announce_timer: bool,
    /// The announce timer fired: `announce` goes out now.
    announce_due: bool,
    /// Timers to set: after this long, call [`Plumtree::timer_due`].
    timers: Vec<(Duration, TreeTimer)>,
    /// Peers we linked to that have not answered yet, with the LINKs sent so far.
    unconfirmed: Vec<(P, u8)>,
    graft_timeout: Duration,
    /// See [`DIRECT_LIMIT`].
    direct_limit: usize,
    pub counters: TreeCounters,
}

impl<P: Copy + Eq + Hash> Plumtree<P> {
    /// `graft_timeout`: how long an announced broadcast may take to arrive by the tree before
    /// it is asked for.
    pub fn new(graft_timeout: Duration) -> Self {
        Plumtree {
            eager: Vec::new(),
            lazy: Vec::new(),
            seen: RecentSet::new(SEEN_MEMORY),
            cache: VecDeque::new(),
            missing: HashMap::new(),
            outbox: VecDeque::new(),
            announce: Vec::new(),
            announce_timer: false,
            announce_due: false,
            timers: Vec::new(),
            unconfirmed: Vec::new(),
            graft_timeout,
            direct_limit: DIRECT_LIMIT,
            counters: TreeCounters::default(),
        }
    }

    /// Sends our own broadcasts straight to every member in clusters of at most `limit`
    /// other members instead of [`DIRECT_LIMIT`] (0: always on the tree).
    pub fn with_direct_limit(mut self, limit: usize) -> Self {
        self.direct_limit = limit;
        self
    }

    pub fn eager_peers(&self) -> &[P] {
        &self.eager
    }

    pub fn lazy_peers(&self) -> &[P] {
        &self.lazy
    }

    fn knows(&self, peer: &P) -> bool {
        self.eager.contains(peer) || self.lazy.contains(peer)
    }

    fn peers(&self) -> usize {
        self.eager.len() + self.lazy.len()
    }

    /// Whether fewer than [`PEERS_PICKED`] peers are linked (call [`Plumtree::link`]).
    pub fn wants_peers(&self) -> bool {
        self.peers() < PEERS_PICKED
    }

    /// Links to random `candidates` (live members, not ourselves) until [`PEERS_PICKED`]
    /// peers are linked or none are left.
    pub fn link(&mut self, candidates: &[P], rng: &mut impl Rng) {
        let wanted = PEERS_PICKED.saturating_sub(self.peers());
        if wanted == 0 {
            return;
        }
        let fresh: Vec<P> = candidates
            .iter()
            .filter(|c| !self.knows(c))
            .copied()
            .collect();
        let picked: Vec<P> = fresh.sample(rng, wanted).copied().collect();
        if !picked.is_empty() && self.unconfirmed.is_empty() {
            self.timers.push((self.graft_timeout, TreeTimer::Link));
        }
        for peer in picked {
            self.eager.push(peer);
            self.unconfirmed.push((peer, 1));
            self.outbox.push_back((peer, Out::Link));
        }
    }

    /// Sends LINK again to peers that have not answered; gives up on those that never do.
    fn relink(&mut self) {
        let mut given_up = Vec::new();
        for (peer, tries) in &mut self.unconfirmed {
            if *tries >= MAX_LINK_TRIES {
                given_up.push(*peer);
            } else {
                *tries += 1;
                self.outbox.push_back((*peer, Out::Link));
            }
        }
        for peer in &given_up {
            self.remove_peer(peer);
        }
        if !self.unconfirmed.is_empty() {
            self.timers.push((self.graft_timeout, TreeTimer::Link));
        }
    }

    /// Anything from a peer we linked to confirms the link.
    fn heard_from(&mut self, peer: &P) {
        if !self.unconfirmed.is_empty() {
            self.unconfirmed.retain(|(p, _)| p != peer);
        }
    }

    /// A timer set through [`Plumtree::next_timer`] is due.
    pub fn timer_due(&mut self, timer: TreeTimer) {
        match timer {
            TreeTimer::Graft(id) => self.graft_due(id),
            TreeTimer::Link => self.relink(),
            TreeTimer::Announce => {
                self.announce_timer = false;
                self.announce_due = true;
            }
        }
    }

    /// A peer left or was declared down: forget it.
    pub fn remove_peer(&mut self, peer: &P) {
        self.unconfirmed.retain(|(p, _)| p != peer);
        self.eager.retain(|p| p != peer);
        self.lazy.retain(|p| p != peer);
        for missing in self.missing.values_mut() {
            missing.announcers.retain(|p| p != peer);
        }
    }

    /// Keeps the peers for which `live` holds; returns whether any was dropped.
    pub fn retain_peers(&mut self, mut live: impl FnMut(&P) -> bool) -> bool {
        let before = self.peers();
        self.eager.retain(|p| live(p));
        self.lazy.retain(|p| live(p));
        self.unconfirmed.retain(|(p, _)| live(p));
        before != self.peers()
    }

    fn make_eager(&mut self, peer: P) {
        self.lazy.retain(|p| *p != peer);
        if !self.eager.contains(&peer) && self.peers() < MAX_PEERS {
            self.eager.push(peer);
        }
    }

    fn make_lazy(&mut self, peer: P) {
        self.eager.retain(|p| *p != peer);
        if !self.lazy.contains(&peer) && self.peers() < MAX_PEERS {
            self.lazy.push(peer);
        }
    }

    /// Records a broadcast; `false` if it was seen already (received, or sent by us).
    fn remember(&mut self, id: MsgId, msg: &Arc<[u8]>, direct: bool) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        if self.cache.len() >= CACHE_SIZE {
            self.cache.pop_front();
        }
        self.cache.push_back(Cached {
            id,
            msg: msg.clone(),
            direct,
        });
        self.missing.remove(&id);
        true
    }

    /// Spreads a broadcast of our own (or one learned outside the tree, e.g. by push-pull).
    /// Returns `false` if it was already seen here.
    pub fn broadcast(&mut self, encoded: &[u8]) -> bool {
        let msg: Arc<[u8]> = Arc::from(encoded);
        let id = msg_id(&msg);
        if !self.remember(id, &msg, false) {
            return false;
        }
        self.push(id, &msg, None);
        true
    }

    /// Spreads a broadcast of our own: straight to each of `members` (every live member but
    /// ourselves) when there are at most [`DIRECT_LIMIT`] of them (see
    /// [`Plumtree::with_direct_limit`]), else on the tree. Returns
    /// `false` if it was already seen here.
    pub fn broadcast_own<I>(&mut self, encoded: &[u8], members: I) -> bool
    where
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let members = members.into_iter();
        if members.len() > self.direct_limit {
            return self.broadcast(encoded);
        }
        let msg: Arc<[u8]> = Arc::from(encoded);
        let id = msg_id(&msg);
        if !self.remember(id, &msg, true) {
            return false;
        }
        for peer in members {
            self.outbox.push_back((peer, Out::Direct(msg.clone())));
        }
        true
    }

    /// A broadcast its sender pushed to every member itself (see the module docs). Returns
    /// whether it is new here: then the caller applies it. It is announced to every link but
    /// relayed to none, and a copy we had already is not answered by PRUNE: the sender is not
    /// a tree link.
    ///
    /// The announcements wait the whole graft timeout (100 ms on a LAN), not a quarter of it:
    /// every member got the push itself, so they only repair a lost one, and sent 25 ms after
    /// it they woke every process of the cluster in the middle of the handler runs the event
    /// had just started. A lost push is repaired after about twice the graft timeout.
    pub fn on_direct(&mut self, from: P, encoded: &[u8]) -> bool {
        self.heard_from(&from);
        let msg: Arc<[u8]> = Arc::from(encoded);
        let id = msg_id(&msg);
        if !self.remember(id, &msg, true) {
            self.counters.duplicates += 1;
            return false;
        }
        let links = self.eager.iter().chain(&self.lazy);
        self.announce
            .extend(links.filter(|&&p| p != from).map(|&p| (p, id)));
        self.start_announce_timer(self.graft_timeout);
        true
    }

    fn push(&mut self, id: MsgId, msg: &Arc<[u8]>, except: Option<P>) {
        for &peer in &self.eager {
            if Some(peer) != except {
                self.outbox.push_back((peer, Out::Gossip(msg.clone())));
            }
        }
        for &peer in &self.lazy {
            if Some(peer) != except {
                self.announce.push((peer, id));
            }
        }
        self.start_announce_timer(self.graft_timeout / ANNOUNCE_DELAY_DIVISOR);
    }

    /// Sets the timer that releases the held announcements after `hold`, unless one is set
    /// already (then they all go with it).
    fn start_announce_timer(&mut self, hold: Duration) {
        if !self.announce.is_empty() && !self.announce_timer && !self.announce_due {
            self.announce_timer = true;
            self.timers.push((hold, TreeTimer::Announce));
        }
    }

    /// A broadcast arrived from `from` (eager push, or the answer to a GRAFT). Returns whether
    /// it is new here: then the caller applies it.
    pub fn on_gossip(&mut self, from: P, encoded: &[u8]) -> bool {
        self.heard_from(&from);
        let msg: Arc<[u8]> = Arc::from(encoded);
        let id = msg_id(&msg);
        if self.remember(id, &msg, false) {
            self.make_eager(from);
            self.push(id, &msg, Some(from));
            true
        } else {
            self.counters.duplicates += 1;
            self.make_lazy(from);
            self.outbox.push_back((from, Out::Prune));
            false
        }
    }

    /// Announcements from `from`: wait for what we lack, and ask if it does not come.
    pub fn on_ihave(&mut self, from: P, ids: &[MsgId]) {
        if !self.knows(&from) {
            self.make_lazy(from);
        }
        for &id in ids {
            if self.seen.contains(&id) {
                continue;
            }
            if let Some(missing) = self.missing.get_mut(&id) {
                if !missing.announcers.contains(&from) {
                    missing.announcers.push_back(from);
                }
            } else if self.missing.len() < MAX_MISSING {
                let missing = Missing {
                    announcers: VecDeque::from([from]),
                    grafts: 0,
                };
                self.missing.insert(id, missing);
                self.timers.push((self.graft_timeout, TreeTimer::Graft(id)));
            }
        }
    }

    /// The wait for an announced broadcast is over: if it still has not arrived, ask the
    /// next announcer for it (and make that link eager), and wait again — half as long, as
    /// the tree is then repaired and only a lost packet can delay it. Announcers are asked in
    /// turn, again from the first when all were, up to [`MAX_GRAFTS`] times.
    fn graft_due(&mut self, id: MsgId) {
        let Some(missing) = self.missing.get_mut(&id) else {
            return; // arrived meanwhile
        };
        let Some(peer) = missing.announcers.pop_front() else {
            self.missing.remove(&id);
            return;
        };
        missing.announcers.push_back(peer);
        missing.grafts += 1;
        if missing.grafts >= MAX_GRAFTS {
            self.missing.remove(&id);
        } else {
            self.timers
                .push((self.graft_timeout / 2, TreeTimer::Graft(id)));
        }
        self.counters.grafts += 1;
        self.make_eager(peer);
        self.outbox.push_back((peer, Out::Graft(vec![id])));
    }

    /// `from` wants these broadcasts, and eager pushes from now on. A broadcast that was
    /// pushed directly goes out as such again, so the asker announces it and relays nothing.
    pub fn on_graft(&mut self, from: P, ids: &[MsgId]) {
        self.make_eager(from);
        for id in ids {
            if let Some(cached) = self.cache.iter().find(|c| c.id == *id) {
                let frame = if cached.direct {
                    Out::Direct(cached.msg.clone())
                } else {
                    Out::Gossip(cached.msg.clone())
                };
                self.outbox.push_back((from, frame));
            }
        }
    }

    pub fn on_prune(&mut self, from: P) {
        self.make_lazy(from);
    }

    /// `from` took us as a peer.
    pub fn on_link(&mut self, from: P) {
        if !self.knows(&from) {
            self.make_eager(from);
        }
        self.outbox.push_back((from, Out::Linked));
    }

    /// Handles a decoded frame other than a broadcast (the caller decodes and checks those
    /// itself, then calls [`Plumtree::on_gossip`]).
    pub fn on_control(&mut self, from: P, frame: &Frame<'_>) {
        self.heard_from(&from);
        match frame {
            Frame::Gossip(_) | Frame::Direct(_) => {}
            Frame::IHave(ids) => self.on_ihave(from, ids),
            Frame::Graft(ids) => self.on_graft(from, ids),
            Frame::Prune => self.on_prune(from),
            Frame::Link => self.on_link(from),
            Frame::Linked => {}
        }
    }

    /// The next frame to send; announcements come last, one IHAVE per peer, once their timer
    /// fired.
    pub fn next_out(&mut self) -> Option<(P, Out)> {
        if let Some(out) = self.outbox.pop_front() {
            return Some(out);
        }
        if !self.announce_due {
            return None;
        }
        let Some(&(peer, _)) = self.announce.first() else {
            self.announce_due = false;
            return None;
        };
        let mut ids = Vec::new();
        self.announce.retain(|&(p, id)| {
            if p == peer && ids.len() < IDS_PER_FRAME {
                ids.push(id);
                false
            } else {
                true
            }
        });
        Some((peer, Out::IHave(ids)))
    }

    /// The next timer to set: call [`Plumtree::timer_due`] with it after the duration.
    pub fn next_timer(&mut self) -> Option<(Duration, TreeTimer)> {
        self.timers.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const T: Duration = Duration::from_millis(100);

    fn drain(tree: &mut Plumtree<u32>) -> Vec<(u32, Out)> {
        std::iter::from_fn(|| tree.next_out()).collect()
    }

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let frames = [
            Out::Gossip(Arc::from(&b"event"[..])),
            Out::Direct(Arc::from(&b"event"[..])),
            Out::IHave(vec![1, u64::MAX]),
            Out::Graft(vec![7]),
            Out::Prune,
            Out::Link,
            Out::Linked,
        ];
        for frame in frames {
            let mut buf = Vec::new();
            encode(&frame, &mut buf);
            let back = match decode(&buf).unwrap() {
                Frame::Gossip(m) => Out::Gossip(Arc::from(m)),
                Frame::Direct(m) => Out::Direct(Arc::from(m)),
                Frame::IHave(ids) => Out::IHave(ids),
                Frame::Graft(ids) => Out::Graft(ids),
                Frame::Prune => Out::Prune,
                Frame::Link => Out::Link,
                Frame::Linked => Out::Linked,
            };
            assert_eq!(back, frame);
        }
        assert_eq!(decode(&[]), Err(FrameError::Empty));
        assert_eq!(decode(&[9]), Err(FrameError::UnknownType(9)));
        assert_eq!(
            decode(&[TAG_LINK, 1]),
            Ok(Frame::Link),
            "trailing bytes are ignored"
        );
        assert_eq!(decode(&[TAG_IHAVE, 1, 2, 3]), Err(FrameError::RaggedIds(3)));
        assert_eq!(decode(&[TAG_GOSSIP]), Err(FrameError::EmptyGossip));
        assert_eq!(decode(&[TAG_DIRECT]), Err(FrameError::EmptyGossip));
        let many = [vec![TAG_GRAFT], vec![0; 8 * (IDS_PER_FRAME + 1)]].concat();
        assert_eq!(
            decode(&many),
            Err(FrameError::TooManyIds(IDS_PER_FRAME + 1))
        );
    }

    #[test]
    fn links_pick_new_peers_and_tell_them() {
        let mut tree = Plumtree::<u32>::new(T);
        let mut rng = StdRng::seed_from_u64(1);
        tree.link(&[1, 2, 3, 4, 5], &mut rng);
        assert!(!tree.wants_peers());
        let out = drain(&mut tree);
        assert_eq!(out.len(), PEERS_PICKED);
        assert!(out.iter().all(|(_, o)| *o == Out::Link));
        tree.remove_peer(&out[0].0);
        assert!(tree.wants_peers());
        tree.link(&[1, 2, 3, 4, 5], &mut rng);
        let again = drain(&mut tree);
        assert_eq!(again.len(), 1);
        assert!(!out.iter().any(|(p, _)| *p == again[0].0 && p != &out[0].0));
    }

    #[test]
    fn a_link_is_sent_again_until_answered_and_given_up_after_a_few_tries() {
        let mut tree = Plumtree::<u32>::new(T);
        let mut rng = StdRng::seed_from_u64(1);
        tree.link(&[1, 2, 3], &mut rng);
        assert_eq!(drain(&mut tree).len(), 3);
        tree.on_control(1, &Frame::Linked);
        tree.on_gossip(2, b"anything answers");
        drain(&mut tree);
        assert_eq!(tree.next_timer(), Some((T, TreeTimer::Link)));
        tree.timer_due(TreeTimer::Link);
        assert_eq!(
            drain(&mut tree),
            vec![(3, Out::Link)],
            "only the silent peer"
        );
        for _ in 0..MAX_LINK_TRIES {
            while let Some((_, timer)) = tree.next_timer() {
                tree.timer_due(timer);
            }
            drain(&mut tree);
        }
        assert!(tree.wants_peers(), "peer 3 never answered and was dropped");
        assert!(!tree.eager_peers().contains(&3));
        // The answering side takes the linker as an eager peer.
        let mut other = Plumtree::<u32>::new(T);
        other.on_link(9);
        assert_eq!(drain(&mut other), vec![(9, Out::Linked)]);
        assert_eq!(other.eager_peers(), &[9]);
    }

    #[test]
    fn a_copy_prunes_the_link_and_later_broadcasts_are_only_announced_on_it() {
        let mut tree = Plumtree::<u32>::new(T);
        tree.on_link(1);
        tree.on_link(2);
        drain(&mut tree);
        assert!(tree.on_gossip(1, b"first"));
        // Pushed on to the other eager peer, not back to the sender.
        assert_eq!(
            drain(&mut tree),
            vec![(2, Out::Gossip(Arc::from(&b"first"[..])))]
        );
        assert!(!tree.on_gossip(2, b"first"));
        assert_eq!(drain(&mut tree), vec![(2, Out::Prune)]);
        assert_eq!(tree.counters.duplicates, 1);
        assert!(tree.broadcast(b"second"));
        assert_eq!(
            drain(&mut tree),
            vec![(1, Out::Gossip(Arc::from(&b"second"[..])))],
            "the push goes out at once"
        );
        assert_eq!(tree.next_timer(), Some((T / 4, TreeTimer::Announce)));
        tree.timer_due(TreeTimer::Announce);
        assert_eq!(
            drain(&mut tree),
            vec![(2, Out::IHave(vec![msg_id(b"second")]))],
            "the announcement once its timer fired"
        );
        assert!(!tree.broadcast(b"second"), "already seen");
    }

    #[test]
    fn a_missing_broadcast_is_grafted_from_its_announcers_in_turn() {
        let mut tree = Plumtree::<u32>::new(T);
        let id = msg_id(b"lost");
        tree.on_ihave(5, &[id]);
        tree.on_ihave(6, &[id]);
        assert_eq!(tree.next_timer(), Some((T, TreeTimer::Graft(id))));
        assert_eq!(tree.next_timer(), None, "one wait per broadcast");
        tree.timer_due(TreeTimer::Graft(id));
        assert_eq!(drain(&mut tree), vec![(5, Out::Graft(vec![id]))]);
        assert_eq!(tree.eager_peers(), &[5]);
        assert_eq!(tree.next_timer(), Some((T / 2, TreeTimer::Graft(id))));
        tree.timer_due(TreeTimer::Graft(id));
        assert_eq!(drain(&mut tree), vec![(6, Out::Graft(vec![id]))]);
        tree.timer_due(TreeTimer::Graft(id));
        assert_eq!(
            drain(&mut tree),
            vec![(5, Out::Graft(vec![id]))],
            "from the first again"
        );
        assert_eq!(tree.counters.grafts, 3);
        // Once it arrives, nothing more is asked.
        assert!(tree.on_gossip(6, b"lost"));
        tree.timer_due(TreeTimer::Graft(id));
        assert!(
            drain(&mut tree)
                .iter()
                .all(|(_, o)| !matches!(o, Out::Graft(_)))
        );
    }

    #[test]
    fn grafting_gives_up_after_a_bounded_number_of_tries() {
        let mut tree = Plumtree::<u32>::new(T);
        let id = msg_id(b"gone");
        tree.on_ihave(5, &[id]);
        while let Some((_, due)) = tree.next_timer() {
            tree.timer_due(due);
        }
        assert_eq!(tree.counters.grafts, u64::from(MAX_GRAFTS));
    }

    #[test]
    fn an_announcement_of_something_we_have_is_ignored() {
        let mut tree = Plumtree::<u32>::new(T);
        assert!(tree.broadcast(b"mine"));
        tree.on_ihave(3, &[msg_id(b"mine")]);
        assert_eq!(tree.next_timer(), None);
        assert_eq!(tree.lazy_peers(), &[3]);
    }

    #[test]
    fn a_graft_is_answered_from_the_cache_and_makes_the_link_eager() {
        let mut tree = Plumtree::<u32>::new(T);
        tree.on_ihave(4, &[]);
        assert!(tree.broadcast(b"kept"));
        drain(&mut tree);
        tree.on_graft(4, &[msg_id(b"kept"), 12345]);
        assert_eq!(
            drain(&mut tree),
            vec![(4, Out::Gossip(Arc::from(&b"kept"[..])))]
        );
        assert_eq!(tree.eager_peers(), &[4]);
        assert!(tree.lazy_peers().is_empty());
    }

    #[test]
    fn announcements_to_one_peer_share_a_frame() {
        let mut tree = Plumtree::<u32>::new(T);
        tree.on_ihave(1, &[]);
        tree.broadcast(b"a");
        tree.broadcast(b"b");
        assert_eq!(drain(&mut tree), vec![], "held for the announce timer");
        assert_eq!(tree.next_timer(), Some((T / 4, TreeTimer::Announce)));
        assert_eq!(tree.next_timer(), None, "one timer for both");
        tree.timer_due(TreeTimer::Announce);
        assert_eq!(
            drain(&mut tree),
            vec![(1, Out::IHave(vec![msg_id(b"a"), msg_id(b"b")]))]
        );
        tree.broadcast(b"c");
        assert_eq!(
            tree.next_timer(),
            Some((T / 4, TreeTimer::Announce)),
            "armed again"
        );
    }

    #[test]
    fn own_broadcasts_go_straight_to_every_member_of_a_small_cluster() {
        let mut tree = Plumtree::<u32>::new(T);
        tree.on_link(1);
        drain(&mut tree);
        let members: Vec<u32> = (1..=DIRECT_LIMIT as u32).collect();
        assert!(tree.broadcast_own(b"small", members.clone()));
        let out = drain(&mut tree);
        assert_eq!(out.len(), DIRECT_LIMIT);
        for ((to, frame), member) in out.iter().zip(&members) {
            assert_eq!(to, member);
            assert_eq!(*frame, Out::Direct(Arc::from(&b"small"[..])));
        }
        assert_eq!(
            tree.next_timer(),
            None,
            "nothing to announce: everyone got it"
        );
        assert!(!tree.broadcast_own(b"small", members), "already seen");
        // One member more: the tree carries it (here: the one eager link).
        let members: Vec<u32> = (1..=DIRECT_LIMIT as u32 + 1).collect();
        assert!(tree.broadcast_own(b"large", members));
        assert_eq!(
            drain(&mut tree),
            vec![(1, Out::Gossip(Arc::from(&b"large"[..])))]
        );
    }

    #[test]
    fn a_direct_push_is_announced_to_every_link_and_relayed_to_none() {
        let mut tree = Plumtree::<u32>::new(T);
        tree.on_link(1);
        tree.on_link(2);
        tree.on_ihave(3, &[]);
        drain(&mut tree);
        assert!(tree.on_direct(2, b"news"));
        assert_eq!(drain(&mut tree), vec![], "no relay, announcements held");
        assert_eq!(
            tree.next_timer(),
            Some((T, TreeTimer::Announce)),
            "for the whole graft timeout: they only repair a lost push"
        );
        tree.timer_due(TreeTimer::Announce);
        let id = msg_id(b"news");
        assert_eq!(
            drain(&mut tree),
            vec![(1, Out::IHave(vec![id])), (3, Out::IHave(vec![id]))],
            "every link but the sender, eager or lazy"
        );
        // A copy from a link is counted, not answered by PRUNE: nobody relayed it on a tree.
        assert!(!tree.on_direct(1, b"news"));
        assert_eq!(drain(&mut tree), vec![]);
        assert_eq!(tree.counters.duplicates, 1);
        assert_eq!(
            tree.eager_peers(),
            &[1, 2],
            "the links are left as they were"
        );
        // Someone that missed it asks; it gets it the way it was sent.
        tree.on_graft(9, &[id]);
        assert_eq!(
            drain(&mut tree),
            vec![(9, Out::Direct(Arc::from(&b"news"[..])))]
        );
    }

    /// A sender pushes to every member; the push to one is lost. That node hears of it from
    /// its links, asks one of them when the graft timer fires, and gets it then — once.
    #[test]
    fn a_lost_direct_push_is_repaired_by_a_graft() {
        const N: u32 = 40;
        let mut rng = StdRng::seed_from_u64(3);
        let mut nodes: Vec<Plumtree<u32>> = (0..N).map(|_| Plumtree::new(T)).collect();
        let all: Vec<u32> = (0..N).collect();
        for i in 0..N {
            let others: Vec<u32> = all.iter().copied().filter(|&j| j != i).collect();
            nodes[i as usize].link(&others, &mut rng);
        }
        let (origin, unlucky) = (5u32, 22u32);
        let mut received = vec![0u32; N as usize];
        let deliver = |nodes: &mut Vec<Plumtree<u32>>, received: &mut [u32], drop_to: u32| loop {
            let mut sent = Vec::new();
            for i in 0..N {
                while let Some((to, out)) = nodes[i as usize].next_out() {
                    sent.push((i, to, out));
                }
            }
            if sent.is_empty() {
                break;
            }
            for (from, to, out) in sent {
                let node = &mut nodes[to as usize];
                match out {
                    Out::Direct(_) if to == drop_to && from == origin => {}
                    Out::Direct(m) => received[to as usize] += u32::from(node.on_direct(from, &m)),
                    Out::Gossip(m) => received[to as usize] += u32::from(node.on_gossip(from, &m)),
                    Out::IHave(ids) => node.on_ihave(from, &ids),
                    Out::Graft(ids) => node.on_graft(from, &ids),
                    Out::Prune => node.on_prune(from),
                    Out::Link => node.on_link(from),
                    Out::Linked => node.on_control(from, &Frame::Linked),
                }
            }
        };
        deliver(&mut nodes, &mut received, unlucky);
        let members: Vec<u32> = all.iter().copied().filter(|&j| j != origin).collect();
        assert!(nodes[origin as usize].broadcast_own(b"event", members));
        deliver(&mut nodes, &mut received, unlucky);
        assert_eq!(received[unlucky as usize], 0);
        // Rounds of firing the timers that are set: announcements go out, then the graft
        // (a timer a firing one sets waits for the next round).
        for _ in 0..3 {
            for node in nodes.iter_mut() {
                let due: Vec<TreeTimer> = std::iter::from_fn(|| node.next_timer())
                    .map(|(_, timer)| timer)
                    .collect();
                for timer in due {
                    node.timer_due(timer);
                }
            }
            deliver(&mut nodes, &mut received, unlucky);
        }
        for i in 0..N {
            let want = u32::from(i != origin);
            assert_eq!(received[i as usize], want, "node {i}");
        }
        assert_eq!(nodes[unlucky as usize].counters.grafts, 1);
    }

    /// Many nodes wired at random: after the first broadcast the eager links form a tree, so
    /// the second reaches every node exactly once.
    #[test]
    fn after_one_broadcast_the_next_reaches_everyone_once() {
        const N: u32 = 200;
        let mut rng = StdRng::seed_from_u64(7);
        let mut nodes: Vec<Plumtree<u32>> = (0..N).map(|_| Plumtree::new(T)).collect();
        let all: Vec<u32> = (0..N).collect();
        let mut queue: VecDeque<(u32, u32, Out)> = VecDeque::new();
        for i in 0..N {
            let others: Vec<u32> = all.iter().copied().filter(|&j| j != i).collect();
            nodes[i as usize].link(&others, &mut rng);
        }
        let run = |nodes: &mut Vec<Plumtree<u32>>,
                   queue: &mut VecDeque<(u32, u32, Out)>|
         -> (usize, usize) {
            let (mut received, mut copies) = (0, 0);
            loop {
                for i in 0..N {
                    while let Some((to, out)) = nodes[i as usize].next_out() {
                        queue.push_back((i, to, out));
                    }
                }
                let Some((from, to, out)) = queue.pop_front() else {
                    break;
                };
                let node = &mut nodes[to as usize];
                match out {
                    Out::Gossip(m) => {
                        copies += 1;
                        if node.on_gossip(from, &m) {
                            received += 1;
                        }
                    }
                    Out::Direct(m) => {
                        copies += 1;
                        if node.on_direct(from, &m) {
                            received += 1;
                        }
                    }
                    Out::IHave(ids) => node.on_ihave(from, &ids),
                    Out::Graft(ids) => node.on_graft(from, &ids),
                    Out::Prune => node.on_prune(from),
                    Out::Link => node.on_link(from),
                    Out::Linked => node.on_control(from, &Frame::Linked),
                }
            }
            (received, copies)
        };
        run(&mut nodes, &mut queue);
        nodes[0].broadcast(b"first");
        let (received, copies) = run(&mut nodes, &mut queue);
        assert_eq!(received, N as usize - 1);
        assert!(copies > received, "the first broadcast floods the graph");
        nodes[17].broadcast(b"second");
        let (received, copies) = run(&mut nodes, &mut queue);
        assert_eq!(received, N as usize - 1);
        assert_eq!(copies, received, "the second follows the tree");
    }
}
