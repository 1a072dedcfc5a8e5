//! The user events each handler has run, kept in memory, so that after a restart — when the
//! cluster delivers again what peers still hold — nothing runs twice and nothing that never ran
//! is skipped.
//!
//! The split with the agent: this module decides. A handler skips what its restored record
//! covers (`HandlerHistory::skips`), remembers each user event it runs
//! (`HandlerHistory::ran`), and hands each run over as a [`HandledRun`] (`NewRuns`). The
//! agent's `handled` module keeps that on disk, in `handled.log` in the data directory, and
//! gives the [`HandledEvents`] back to [`Dispatcher::restore_handled`] at the next start. Nothing
//! here touches a file.
//!
//! [`Dispatcher::restore_handled`]: crate::Dispatcher::restore_handled

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::event::UserEvent;
use crate::lock;

/// How many Lamport times of handled events are remembered: after a restart the cluster
/// delivers again what its peers keep (by default the last 1024 user events), and what a
/// handler ran among them must be recognised. Older events count as handled.
pub const HANDLED_WINDOW: u64 = 1024;

/// The user events a handler has run recently. An event is known by (Lamport time, origin,
/// name): an origin stamps each of its events with a new time. Delivery is not in Lamport order
/// (an event can be in flight when a node stops), so a single "newest time" would skip events;
/// the set does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandledEvents {
    /// Everything stamped before this counts as handled (for a handler added since the last
    /// run: it does not run the cluster's history).
    #[serde(default)]
    pub before: u64,
    /// (Lamport time, origin, name) of the events run, within the window.
    #[serde(default)]
    pub events: BTreeSet<(u64, String, String)>,
}

impl HandledEvents {
    /// Everything stamped before `ltime` counts as handled.
    pub fn before(ltime: u64) -> HandledEvents {
        HandledEvents {
            before: ltime,
            events: BTreeSet::new(),
        }
    }

    fn newest(&self) -> Option<u64> {
        self.events.last().map(|(ltime, _, _)| *ltime)
    }

    /// Whether `event` ran already (or is too old to be told apart).
    pub fn covers(&self, event: &UserEvent) -> bool {
        event.ltime < self.before
            || self
                .newest()
                .is_some_and(|n| event.ltime + HANDLED_WINDOW <= n)
            || self
                .events
                .contains(&(event.ltime, event.origin.clone(), event.name.clone()))
    }

    fn record(&mut self, event: &UserEvent) {
        self.insert(event.ltime, event.origin.clone(), event.name.clone());
    }

    /// Adds the event known by (Lamport time, origin, name) and forgets those that fell out of
    /// the window (for a record read back from disk).
    pub fn insert(&mut self, ltime: u64, origin: String, name: String) {
        self.events.insert((ltime, origin, name));
        // Ordered by Lamport time: what fell out of the window is at the front.
        let Some(newest) = self.newest() else { return };
        while self
            .events
            .first()
            .is_some_and(|(ltime, _, _)| ltime + HANDLED_WINDOW <= newest)
        {
            self.events.pop_first();
        }
    }
}

/// A user event a handler ran: one line of the agent's record, appended as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandledRun {
    pub handler: String,
    pub ltime: u64,
    pub origin: String,
    pub name: String,
    /// The handler had no record before this run (added or replaced by a reload since the
    /// agent started): its record starts here, with nothing before it counted as run. A
    /// replaced handler's name may still carry its predecessor's mark in the file.
    pub first: bool,
}

/// One handler's history: what it has run, and what it had run before this process started.
#[derive(Debug, Default)]
pub(crate) struct HandlerHistory {
    /// The user events this handler has run, for the next restart.
    ran: Mutex<Option<HandledEvents>>,
    /// What it had run before this process started: events the cluster delivers again that
    /// are in it are skipped. Fixed at start: while running, the cluster itself delivers each
    /// event once.
    restored: Mutex<Option<HandledEvents>>,
}

impl HandlerHistory {
    /// Whether `event` ran before the restart, and is not to run again.
    pub fn skips(&self, event: &UserEvent) -> bool {
        lock(&self.restored)
            .as_ref()
            .is_some_and(|mark| mark.covers(event))
    }

    /// Remembers that `event` ran. Whether it is the first run this handler remembers (its
    /// record starts with it).
    pub fn ran(&self, event: &UserEvent) -> bool {
        let mut ran = lock(&self.ran);
        let first = ran.is_none();
        ran.get_or_insert_with(HandledEvents::default).record(event);
        first
    }

    /// Starts from what the handler ran before the restart.
    pub fn restore(&self, mark: Option<HandledEvents>) {
        *lock(&self.ran) = mark.clone();
        *lock(&self.restored) = mark;
    }

    /// What the handler has run, when it has a record.
    pub fn record(&self) -> Option<HandledEvents> {
        lock(&self.ran).clone()
    }

    /// Lines the record takes written out: its mark and one per event; 0 without a record.
    pub fn size(&self) -> usize {
        lock(&self.ran).as_ref().map_or(0, |m| 1 + m.events.len())
    }
}

/// Runs not yet taken by the record, and the signal that there are some (they wait until
/// taken: a dispatcher whose runs nobody takes keeps them, about 100 bytes each). Handing over
/// each run keeps the record's cost per run constant; copying every handler's whole set (up to
/// [`HANDLED_WINDOW`] events each) after each run made it grow with the window.
#[derive(Debug, Default)]
pub(crate) struct NewRuns {
    runs: Mutex<Vec<HandledRun>>,
    changed: tokio::sync::Notify,
}

impl NewRuns {
    /// Adds a run and wakes whoever waits in [`NewRuns::next`].
    pub fn push(&self, run: HandledRun) {
        lock(&self.runs).push(run);
        self.changed.notify_one();
    }

    /// The runs not taken yet, without waiting.
    pub fn take(&self) -> Vec<HandledRun> {
        std::mem::take(&mut *lock(&self.runs))
    }

    /// Waits until there are runs not taken yet, and takes them.
    pub async fn next(&self) -> Vec<HandledRun> {
        loop {
            let runs = self.take();
            if !runs.is_empty() {
                return runs;
            }
            self.changed.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(ltime: u64, name: &str) -> UserEvent {
        UserEvent {
            ltime,
            name: name.into(),
            payload: vec![],
            coalesce: false,
            origin: "ops".into(),
        }
    }

    #[test]
    fn a_history_skips_only_what_was_restored_and_starts_a_record_once() {
        let history = HandlerHistory::default();
        assert!(!history.skips(&user(1, "a")));
        assert_eq!(history.size(), 0);
        assert!(
            history.ran(&user(1, "a")),
            "the first run starts the record"
        );
        assert!(!history.ran(&user(2, "b")));
        // What ran in this process is not skipped: the cluster delivers each event once.
        assert!(!history.skips(&user(1, "a")));
        assert_eq!(history.size(), 1 + 2);

        let mut before = HandledEvents::before(3);
        before.insert(5, "ops".into(), "five".into());
        history.restore(Some(before.clone()));
        assert!(history.skips(&user(2, "old")));
        assert!(history.skips(&user(5, "five")));
        assert!(!history.skips(&user(4, "never ran")));
        assert!(!history.ran(&user(6, "six")), "a restored record goes on");
        assert!(!history.skips(&user(6, "six")), "restored marks are fixed");
        before.insert(6, "ops".into(), "six".into());
        assert_eq!(history.record(), Some(before));
    }

    #[test]
    fn the_window_forgets_what_the_cluster_no_longer_delivers() {
        let mut handled = HandledEvents::default();
        handled.insert(1, "ops".into(), "a".into());
        handled.insert(1 + HANDLED_WINDOW, "ops".into(), "b".into());
        assert_eq!(handled.events.len(), 1);
        assert!(
            handled.covers(&user(1, "a")),
            "too old to be told apart: covered"
        );
        assert!(!handled.covers(&user(2, "c")));
    }

    #[tokio::test]
    async fn new_runs_are_handed_over_once() {
        let runs = NewRuns::default();
        let run = |ltime| HandledRun {
            handler: "h".into(),
            ltime,
            origin: "ops".into(),
            name: "e".into(),
            first: false,
        };
        runs.push(run(1));
        runs.push(run(2));
        assert_eq!(runs.next().await, [run(1), run(2)]);
        assert!(runs.take().is_empty());
    }
}
