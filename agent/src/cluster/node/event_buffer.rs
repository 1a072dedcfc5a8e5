//! Deduplication of user events, Serf's way: a ring of recent Lamport times, each slot holding
//! the (name, payload) pairs seen at that time. An event is new if its time is inside the
//! window and its pair is not in the slot; older events are dropped with a log line.

use std::time::SystemTime;

use rumor_handlers::event::UserEvent;

use super::lamport::LamportClock;

/// How many Lamport times the buffer remembers.
pub const EVENT_WINDOW: usize = 256;

/// What [`EventBuffer::observe`] decided about an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Observed {
    /// First sighting: deliver it.
    New,
    /// Already delivered.
    Duplicate,
    /// Older than the window: cannot tell whether it was delivered, so it is dropped.
    TooOld { current: u64 },
    /// Sent before this node joined the cluster (it asked not to replay history).
    BeforeJoin { min: u64 },
}

/// A user event and when this node first received it.
#[derive(Debug, Clone)]
pub struct SeenUserEvent {
    pub event: UserEvent,
    pub received: SystemTime,
}

struct Slot {
    ltime: u64,
    events: Vec<SeenUserEvent>,
}

/// The window of recent user events.
pub struct EventBuffer {
    slots: Vec<Option<Slot>>,
    /// Events before this time are ignored (set when joining so history is not replayed).
    min_ltime: u64,
}

impl Default for EventBuffer {
    fn default() -> Self {
        EventBuffer {
            slots: (0..EVENT_WINDOW).map(|_| None).collect(),
            min_ltime: 0,
        }
    }
}

impl EventBuffer {
    /// Ignore every event stamped before `ltime` (used on the first join: the new node does not
    /// run handlers for events the cluster sent before it existed).
    pub fn ignore_before(&mut self, ltime: u64) {
        self.min_ltime = self.min_ltime.max(ltime);
    }

    /// Witnesses the event's time on `clock` and records the event if it is new.
    pub fn observe(
        &mut self,
        event: &UserEvent,
        clock: &mut LamportClock,
        now: SystemTime,
    ) -> Observed {
        clock.witness(event.ltime);
        if event.ltime < self.min_ltime {
            return Observed::BeforeJoin {
                min: self.min_ltime,
            };
        }
        let current = clock.time();
        let window = EVENT_WINDOW as u64;
        if current > window && event.ltime < current - window {
            return Observed::TooOld { current };
        }
        let index = (event.ltime % window) as usize;
        let slot = &mut self.slots[index];
        match slot {
            Some(s) if s.ltime == event.ltime => {
                let seen = s
                    .events
                    .iter()
                    .any(|e| e.event.name == event.name && e.event.payload == event.payload);
                if seen {
                    return Observed::Duplicate;
                }
            }
            _ => {
                *slot = Some(Slot {
                    ltime: event.ltime,
                    events: Vec::new(),
                });
            }
        }
        if let Some(s) = slot {
            s.events.push(SeenUserEvent {
                event: event.clone(),
                received: now,
            });
        }
        Observed::New
    }

    /// Every event in the window, oldest first.
    pub fn recent(&self) -> Vec<&SeenUserEvent> {
        let mut all: Vec<&SeenUserEvent> = self
            .slots
            .iter()
            .flatten()
            .flat_map(|s| s.events.iter())
            .collect();
        all.sort_by_key(|e| (e.event.ltime, e.received));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ltime: u64, name: &str, payload: &str) -> UserEvent {
        UserEvent {
            ltime,
            name: name.into(),
            payload: payload.as_bytes().to_vec(),
            coalesce: true,
            origin: "a".into(),
        }
    }

    #[test]
    fn delivers_once_and_keeps_same_time_different_events_apart() {
        let mut buf = EventBuffer::default();
        let mut clock = LamportClock::default();
        assert_eq!(
            buf.observe(&ev(3, "deploy", "v1"), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::New
        );
        assert_eq!(
            buf.observe(&ev(3, "deploy", "v1"), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::Duplicate
        );
        // Two nodes may stamp different events with the same time.
        assert_eq!(
            buf.observe(&ev(3, "deploy", "v2"), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::New
        );
        assert_eq!(
            buf.observe(&ev(3, "other", "v1"), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::New
        );
        assert_eq!(clock.time(), 4);
        assert_eq!(buf.recent().len(), 3);
    }

    #[test]
    fn drops_events_older_than_the_window() {
        let mut buf = EventBuffer::default();
        let mut clock = LamportClock::default();
        clock.witness(1000);
        assert_eq!(
            buf.observe(&ev(10, "deploy", "v1"), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::TooOld { current: 1001 }
        );
        assert_eq!(
            buf.observe(&ev(900, "deploy", "v1"), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::New
        );
    }

    #[test]
    fn a_slot_reused_by_a_later_time_forgets_the_old_events() {
        let mut buf = EventBuffer::default();
        let mut clock = LamportClock::default();
        let w = EVENT_WINDOW as u64;
        assert_eq!(
            buf.observe(&ev(5, "e", ""), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::New
        );
        assert_eq!(
            buf.observe(&ev(5 + w, "e", ""), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::New
        );
        assert_eq!(buf.recent().len(), 1);
    }

    #[test]
    fn ignores_history_before_the_join() {
        let mut buf = EventBuffer::default();
        let mut clock = LamportClock::default();
        buf.ignore_before(20);
        assert_eq!(
            buf.observe(&ev(19, "e", ""), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::BeforeJoin { min: 20 }
        );
        assert_eq!(
            buf.observe(&ev(20, "e", ""), &mut clock, SystemTime::UNIX_EPOCH),
            Observed::New
        );
    }
}
