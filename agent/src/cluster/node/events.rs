//! User events: which ones this node has delivered, and the ones it keeps for others.
//!
//! Why: an event must reach every handler once, even after a partition that lasted for
//! hundreds of events. Serf (and rumor before) deduplicated by a window of recent Lamport
//! times, so an event older than the window could no longer be told apart from one already
//! delivered, and was dropped: after a long partition the events of the other side were lost.
//!
//! How: every user event has a place in its origin's *stream*: an origin numbers its own events
//! 1, 2, 3, … within each process generation, so (origin, generation, sequence number)
//! identifies it. Per stream a node remembers the number up to which it has delivered every
//! event (`contiguous`) and the ones above it delivered out of order; that decides exactly,
//! with no window, whether an event is new. It also says what a node is missing: exchanges
//! (push-pull) carry each side's stream summary, and each side sends the events it keeps that
//! the other has not delivered.
//!
//! A node keeps the events it received for a bounded time and count ([`Retention`]); an
//! exchange can only supply what the other side still keeps. When a peer has moved past events
//! a node is missing and no longer keeps them, they are lost for that node: counted, logged at
//! WARN with the numbers, and skipped so the stream goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use rumor_handlers::event::UserEvent;
use serde::{Deserialize, Serialize};

use super::message::EventSeq;

/// Default number of events a node keeps for others.
pub const DEFAULT_RETENTION_COUNT: usize = 1024;
/// Default time a node keeps an event for others.
pub const DEFAULT_RETENTION_AGE: Duration = Duration::from_secs(3600);
/// Events delivered out of order a stream remembers above its contiguous mark; a gap that
/// keeps more waiting than this is given up as lost.
const MAX_OUT_OF_ORDER: usize = 4096;

/// How long and how many events a node keeps for peers that missed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub count: usize,
    pub age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            count: DEFAULT_RETENTION_COUNT,
            age: DEFAULT_RETENTION_AGE,
        }
    }
}

/// One stream as a node tells its peers about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamSummary {
    pub origin: String,
    pub generation: u64,
    /// Every event up to this number has been delivered (or written off).
    pub contiguous: u64,
    /// The highest number seen.
    pub high: u64,
    /// The lowest number still kept for others (`high + 1` when none is kept).
    pub kept_from: u64,
}

/// A user event with its place in its origin's stream, as exchanges carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEvent {
    pub event: UserEvent,
    pub seq: EventSeq,
}

/// A user event this node keeps, and when it first received it.
#[derive(Debug, Clone)]
pub struct KeptEvent {
    pub event: UserEvent,
    pub seq: EventSeq,
    pub received: SystemTime,
}

/// What [`EventStreams::observe`] decided about an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Observed {
    /// First sighting: deliver it.
    New,
    /// Delivered before (or history, or written off as lost).
    Duplicate,
}

/// Events some stream could not get back: a peer had moved past them and no longer kept them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub origin: String,
    pub generation: u64,
    /// Sequence numbers `first..=last` (those not delivered among them are lost).
    pub first: u64,
    pub last: u64,
    pub count: u64,
}

#[derive(Debug, Default)]
struct Stream {
    contiguous: u64,
    above: BTreeSet<u64>,
    high: u64,
    touched: Option<SystemTime>,
}

impl Stream {
    fn delivered(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.above.contains(&seq)
    }

    fn advance(&mut self) {
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
    }

    /// Counts everything up to `upto` as delivered; returns how many were not.
    fn write_off(&mut self, upto: u64) -> u64 {
        if upto <= self.contiguous {
            return 0;
        }
        let had = self.above.range(..=upto).count() as u64;
        let missing = upto - self.contiguous - had;
        self.above = self.above.split_off(&(upto + 1));
        self.contiguous = upto;
        self.high = self.high.max(upto);
        self.advance();
        missing
    }
}

type StreamKey = (String, u64);

/// Every stream this node knows, and the events it keeps; see the module docs.
#[derive(Debug, Default)]
pub struct EventStreams {
    streams: HashMap<StreamKey, Stream>,
    kept: BTreeMap<(String, u64, u64), KeptEvent>,
    /// Kept events in arrival order, the oldest first out.
    arrivals: VecDeque<(String, u64, u64)>,
    retention: Retention,
}

impl EventStreams {
    pub fn new(retention: Retention) -> EventStreams {
        EventStreams {
            retention,
            ..EventStreams::default()
        }
    }

    /// Decides whether an event is new; a new one is kept for others.
    pub fn observe(&mut self, event: &UserEvent, seq: EventSeq, now: SystemTime) -> Observed {
        let stream = self
            .streams
            .entry((event.origin.clone(), seq.generation))
            .or_default();
        if seq.seq == 0 || stream.delivered(seq.seq) {
            return Observed::Duplicate;
        }
        stream.above.insert(seq.seq);
        stream.high = stream.high.max(seq.seq);
        stream.touched = Some(now);
        stream.advance();
        let lost = if stream.above.len() > MAX_OUT_OF_ORDER {
            let first = *stream.above.first().expect("not empty");
            Some(stream.write_off(first))
        } else {
            None
        };
        if let Some(count) = lost {
            tracing::warn!(
                origin = %event.origin,
                count,
                "user events never arrived and too many later ones are waiting: written off as lost"
            );
        }
        self.keep(event, seq, now);
        Observed::New
    }

    fn keep(&mut self, event: &UserEvent, seq: EventSeq, now: SystemTime) {
        if self.retention.count == 0 {
            return;
        }
        let key = (event.origin.clone(), seq.generation, seq.seq);
        let kept = KeptEvent {
            event: event.clone(),
            seq,
            received: now,
        };
        if self.kept.insert(key.clone(), kept).is_none() {
            self.arrivals.push_back(key);
        }
        while self.arrivals.len() > self.retention.count {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some(key) = self.arrivals.pop_front() {
            self.kept.remove(&key);
        }
    }

    /// Forgets kept events past their age, and streams with nothing kept or pending that have
    /// been quiet for twice that (a copy of their events can no longer come from anyone).
    pub fn expire(&mut self, now: SystemTime) {
        let age = self.retention.age;
        let older =
            |t: SystemTime, limit: Duration| now.duration_since(t).unwrap_or_default() > limit;
        while let Some(key) = self.arrivals.front() {
            let expired = self.kept.get(key).is_none_or(|k| older(k.received, age));
            if !expired {
                break;
            }
            self.forget_oldest();
        }
        let kept = &self.kept;
        self.streams.retain(|(origin, generation), s| {
            let keeps = kept
                .range((origin.clone(), *generation, 0)..=(origin.clone(), *generation, u64::MAX))
                .next()
                .is_some();
            keeps || !s.above.is_empty() || s.touched.is_some_and(|t| !older(t, age * 2))
        });
    }

    /// What this node has delivered and keeps, stream by stream, for a peer.
    pub fn summary(&self) -> Vec<StreamSummary> {
        let mut out: Vec<StreamSummary> = self
            .streams
            .iter()
            .map(|((origin, generation), s)| {
                let kept_from = self
                    .kept
                    .range(
                        (origin.clone(), *generation, 0)..=(origin.clone(), *generation, u64::MAX),
                    )
                    .next()
                    .map_or(s.high + 1, |((_, _, seq), _)| *seq);
                StreamSummary {
                    origin: origin.clone(),
                    generation: *generation,
                    contiguous: s.contiguous,
                    high: s.high,
                    kept_from,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.origin, a.generation).cmp(&(&b.origin, b.generation)));
        out
    }

    /// The events this node keeps that a peer with `theirs` has not delivered (or may not
    /// have: a peer's out-of-order deliveries are not in its summary, it drops the copies).
    pub fn missing_for(&self, theirs: &[StreamSummary]) -> Vec<StreamEvent> {
        let marks: HashMap<(&str, u64), u64> = theirs
            .iter()
            .map(|s| ((s.origin.as_str(), s.generation), s.contiguous))
            .collect();
        self.kept
            .values()
            .filter(|k| {
                let mark = marks.get(&(k.event.origin.as_str(), k.seq.generation));
                mark.is_none_or(|&m| k.seq.seq > m)
            })
            .map(|k| StreamEvent {
                event: k.event.clone(),
                seq: k.seq,
            })
            .collect()
    }

    /// A first join: everything the cluster had sent (`theirs`: the answering peer's streams)
    /// is history, not for our handlers.
    pub fn adopt_history(&mut self, theirs: &[StreamSummary], now: SystemTime) {
        for s in theirs {
            let stream = self
                .streams
                .entry((s.origin.clone(), s.generation))
                .or_default();
            stream.write_off(s.high);
            stream.touched = Some(now);
        }
    }

    /// Events a peer has moved past and no longer keeps, which this node never got: written
    /// off so the streams go on, and returned so they are reported.
    pub fn write_off_unrecoverable(&mut self, theirs: &[StreamSummary]) -> Vec<Lost> {
        let mut lost = Vec::new();
        for s in theirs {
            let Some(stream) = self.streams.get_mut(&(s.origin.clone(), s.generation)) else {
                continue; // a stream we never saw: its events come with the exchange
            };
            // What the peer no longer keeps and we never had: below its oldest kept event,
            // and only what it delivered. A peer that never got an event does not keep it
            // either: its own gap (events that came out of order) is not a loss, another
            // peer may still send it (a nemesis run lost one so after a flapping partition).
            let gone_upto = s.kept_from.saturating_sub(1).min(s.contiguous);
            if gone_upto <= stream.contiguous {
                continue;
            }
            let first = stream.contiguous + 1;
            let count = stream.write_off(gone_upto);
            if count > 0 {
                lost.push(Lost {
                    origin: s.origin.clone(),
                    generation: s.generation,
                    first,
                    last: gone_upto,
                    count,
                });
            }
        }
        lost
    }

    /// The highest number seen in a stream (0 for a stream this node does not know).
    pub fn high(&self, origin: &str, generation: u64) -> u64 {
        self.streams
            .get(&(origin.to_string(), generation))
            .map_or(0, |s| s.high)
    }

    /// The events kept, in the order they arrived.
    pub fn kept(&self) -> impl Iterator<Item = &KeptEvent> {
        self.arrivals.iter().filter_map(|key| self.kept.get(key))
    }

    pub fn kept_len(&self) -> usize {
        self.kept.len()
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(origin: &str, name: &str) -> UserEvent {
        UserEvent {
            ltime: 1,
            name: name.into(),
            payload: vec![],
            coalesce: false,
            origin: origin.into(),
        }
    }

    fn seq(seq: u64) -> EventSeq {
        EventSeq { generation: 1, seq }
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn each_event_is_new_once_whatever_the_order_or_age() {
        let mut s = EventStreams::new(Retention::default());
        assert_eq!(s.observe(&ev("a", "x"), seq(2), T0), Observed::New);
        assert_eq!(s.observe(&ev("a", "x"), seq(2), T0), Observed::Duplicate);
        assert_eq!(s.observe(&ev("a", "y"), seq(1), T0), Observed::New);
        // Hundreds of events later, an old copy is still recognised.
        for n in 3..600 {
            assert_eq!(s.observe(&ev("a", "z"), seq(n), T0), Observed::New);
        }
        assert_eq!(s.observe(&ev("a", "x"), seq(2), T0), Observed::Duplicate);
        // Another origin, or another process of the same one, is another stream.
        assert_eq!(s.observe(&ev("b", "x"), seq(2), T0), Observed::New);
        let restarted = EventSeq {
            generation: 2,
            seq: 2,
        };
        assert_eq!(s.observe(&ev("a", "x"), restarted, T0), Observed::New);
        let a = s
            .summary()
            .into_iter()
            .find(|x| x.origin == "a" && x.generation == 1);
        assert_eq!(a.map(|a| (a.contiguous, a.high)), Some((599, 599)));
    }

    #[test]
    fn a_peer_gets_what_it_has_not_delivered() {
        let mut ahead = EventStreams::new(Retention::default());
        let mut behind = EventStreams::new(Retention::default());
        for n in 1..=300 {
            ahead.observe(&ev("a", &format!("e{n}")), seq(n), T0);
        }
        for n in 1..=10 {
            behind.observe(&ev("a", &format!("e{n}")), seq(n), T0);
        }
        let sent = ahead.missing_for(&behind.summary());
        assert_eq!(sent.len(), 290);
        for e in &sent {
            assert_eq!(behind.observe(&e.event, e.seq, T0), Observed::New);
        }
        assert!(ahead.missing_for(&behind.summary()).is_empty());
        assert!(behind.missing_for(&ahead.summary()).is_empty());
    }

    #[test]
    fn history_before_a_join_is_not_delivered() {
        let mut member = EventStreams::new(Retention::default());
        for n in 1..=5 {
            member.observe(&ev("a", "old"), seq(n), T0);
        }
        let mut joiner = EventStreams::new(Retention::default());
        joiner.adopt_history(&member.summary(), T0);
        assert_eq!(
            joiner.observe(&ev("a", "old"), seq(3), T0),
            Observed::Duplicate
        );
        assert_eq!(joiner.observe(&ev("a", "new"), seq(6), T0), Observed::New);
    }

    #[test]
    fn retention_is_bounded_and_what_a_peer_no_longer_keeps_is_written_off_loudly() {
        let small = Retention {
            count: 100,
            age: Duration::from_secs(60),
        };
        let mut ahead = EventStreams::new(small);
        for n in 1..=250 {
            ahead.observe(&ev("a", "e"), seq(n), T0);
        }
        assert_eq!(ahead.kept_len(), 100);
        let theirs = ahead.summary();
        assert_eq!(theirs[0].kept_from, 151);
        let mut behind = EventStreams::new(small);
        behind.observe(&ev("a", "e"), seq(1), T0);
        behind.observe(&ev("a", "e"), seq(160), T0);
        let lost = behind.write_off_unrecoverable(&theirs);
        assert_eq!(
            lost,
            [Lost {
                origin: "a".into(),
                generation: 1,
                first: 2,
                last: 150,
                count: 149
            }]
        );
        // What the peer still keeps comes through the exchange; nothing is delivered twice.
        let sent = ahead.missing_for(&behind.summary());
        assert_eq!(sent.len(), 100);
        let new = sent
            .iter()
            .filter(|e| behind.observe(&e.event, e.seq, T0) == Observed::New)
            .count();
        assert_eq!(new, 99, "all but 160, which it had");
        assert!(behind.write_off_unrecoverable(&ahead.summary()).is_empty());
    }

    #[test]
    fn a_peer_missing_the_same_event_does_not_make_it_lost() {
        // Both got 2 and 3 of a stream but not 1 (sent while they were cut off).
        let mut one = EventStreams::new(Retention::default());
        let mut other = EventStreams::new(Retention::default());
        for n in [2, 3] {
            one.observe(&ev("a", "e"), seq(n), T0);
            other.observe(&ev("a", "e"), seq(n), T0);
        }
        assert_eq!(other.summary()[0].kept_from, 2);
        assert!(one.write_off_unrecoverable(&other.summary()).is_empty());
        // Event 1 arrives later from a peer that has it: delivered, once.
        let mut origin = EventStreams::new(Retention::default());
        for n in 1..=3 {
            origin.observe(&ev("a", "e"), seq(n), T0);
        }
        let sent = one.missing_for(&origin.summary());
        assert!(sent.is_empty(), "one's summary says it lacks 1: {sent:?}");
        let sent = origin.missing_for(&one.summary());
        let new: Vec<u64> = sent
            .iter()
            .filter(|e| one.observe(&e.event, e.seq, T0) == Observed::New)
            .map(|e| e.seq.seq)
            .collect();
        assert_eq!(new, [1]);
    }

    #[test]
    fn kept_events_expire_with_age_and_quiet_streams_are_forgotten() {
        let mut s = EventStreams::new(Retention {
            count: 10,
            age: Duration::from_secs(60),
        });
        s.observe(&ev("a", "e"), seq(1), T0);
        s.expire(T0 + Duration::from_secs(30));
        assert_eq!(s.kept_len(), 1);
        s.expire(T0 + Duration::from_secs(61));
        assert_eq!(s.kept_len(), 0);
        assert_eq!(s.summary().len(), 1, "still remembered as delivered");
        s.expire(T0 + Duration::from_secs(121));
        assert!(s.summary().is_empty());
    }

    #[test]
    fn a_gap_that_never_fills_is_given_up_before_it_grows_without_bound() {
        let mut s = EventStreams::new(Retention {
            count: 10,
            age: Duration::from_secs(60),
        });
        for n in 2..=(MAX_OUT_OF_ORDER as u64 + 2) {
            s.observe(&ev("a", "e"), seq(n), T0);
        }
        let a = &s.summary()[0];
        assert_eq!(a.contiguous, MAX_OUT_OF_ORDER as u64 + 2);
    }
}
