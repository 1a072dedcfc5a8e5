//! What a handler has done: its counters (runs, failures, timeouts, dropped events), whether a
//! run is in progress, and how its last run ended, as `rumor info` and the metrics show them
//! ([`HandlerStatus`], [`LastRun`]).
//!
//! The dispatcher updates a handler's `Stats` as it queues, drops and runs events, and reads
//! them for [`Dispatcher::status`](crate::Dispatcher::status). Dropped events are counted at
//! once but logged at most once per [`DROP_LOG_INTERVAL`] while a queue stays full, and again
//! after the next run: a handler that cannot keep up must not flood the log.

use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::runtime::{RunResult, RuntimeDetails};

/// How often, at most, a handler's dropped events are logged while its queue stays full.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One handler as `rumor info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerStatus {
    pub name: String,
    /// The filter as text, e.g. `member-join,member-leave`.
    pub filter: String,
    /// What the handler runs: a shell handler's command.
    pub command: String,
    /// Runs finished.
    pub runs: u64,
    /// Runs that did not exit 0 (timeouts included).
    pub failures: u64,
    pub timeouts: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Attempts at a run that could not start (each retried; see the dispatcher).
    #[serde(default)]
    pub start_failures: u64,
    /// Events waiting in the queue.
    pub queued: usize,
    /// A run is in progress.
    pub running: bool,
    pub last: Option<LastRun>,
    /// What the handler's runtime adds (a template's renders and reloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeDetails>,
}

/// How a handler's last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// When it ended, in milliseconds since the Unix epoch.
    pub finished_at_unix_ms: u64,
    /// Why it failed, when it did not simply exit non-zero (a template's refused check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LastRun {
    fn of(result: &RunResult) -> LastRun {
        LastRun {
            exit_code: result.exit_code,
            signal: result.signal,
            timed_out: result.timed_out,
            duration_ms: result.duration.as_millis() as u64,
            finished_at_unix_ms: result
                .finished_at()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            error: result.error.clone(),
        }
    }
}

/// One handler's counters, as the dispatcher keeps them.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub runs: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub dropped: u64,
    pub start_failures: u64,
    /// Dropped since the last log line about drops.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
    pub running: bool,
    /// A run is waiting for its serial group's turn (busy, but not running yet).
    pub waiting_turn: bool,
    pub last: Option<LastRun>,
}

impl Stats {
    /// Counts a run that ended with `result`.
    pub fn finished(&mut self, result: &RunResult) {
        self.running = false;
        self.runs += 1;
        if !result.success() {
            self.failures += 1;
        }
        if result.timed_out {
            self.timeouts += 1;
        }
        self.last = Some(LastRun::of(result));
    }

    /// Counts an event dropped at `now` because the queue was full. Returns how many drops to
    /// log now (this one and those not logged yet), or `None` when the last such line is
    /// younger than [`DROP_LOG_INTERVAL`].
    pub fn dropped(&mut self, now: Instant) -> Option<u64> {
        self.dropped += 1;
        self.unlogged_drops += 1;
        if self
            .last_drop_log
            .is_some_and(|at| now.duration_since(at) < DROP_LOG_INTERVAL)
        {
            return None;
        }
        Some(self.take_unlogged(now))
    }

    /// After a run (the queue has room again): the drops not logged yet, if any.
    pub fn unlogged_drops(&mut self, now: Instant) -> Option<u64> {
        (self.unlogged_drops > 0).then(|| self.take_unlogged(now))
    }

    fn take_unlogged(&mut self, now: Instant) -> u64 {
        self.last_drop_log = Some(now);
        std::mem::take(&mut self.unlogged_drops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_at_once_and_logged_at_most_once_an_interval() {
        let mut stats = Stats::default();
        let start = Instant::now();
        assert_eq!(stats.dropped(start), Some(1), "the first drop is logged");
        assert_eq!(stats.dropped(start + Duration::from_millis(10)), None);
        assert_eq!(stats.dropped(start + Duration::from_millis(20)), None);
        // A line a second later carries the drops in between.
        assert_eq!(stats.dropped(start + DROP_LOG_INTERVAL), Some(3));
        assert_eq!(stats.dropped, 4);
        // After a run, the drops not logged yet are, once.
        let later = start + DROP_LOG_INTERVAL + Duration::from_millis(1);
        assert_eq!(stats.dropped(later), None);
        assert_eq!(stats.unlogged_drops(later), Some(1));
        assert_eq!(stats.unlogged_drops(later), None);
        assert_eq!(stats.dropped, 5);
    }
}
