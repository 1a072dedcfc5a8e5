//! Quiescence (`wait = { min = "...", max = "..." }`): render once the cluster has been quiet
//! for `min`, but never later than `max` after the change that asked for the render.
//!
//! A burst of 30 joins arrives over some hundreds of milliseconds: rendering after each would
//! write and reload 30 times. Waiting for `min` of quiet collapses the burst into one render;
//! `max` bounds the wait, so a cluster that never stops changing still gets a render at least
//! every `max`. This is consul-template's `wait`, as pure logic: the template runtime feeds it
//! the instants of member-list changes and sleeps until [`Quiet::deadline`].

use std::time::Duration;

use tokio::time::Instant;

/// `min` and `max` of a template's `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Quiet time that ends the wait.
    pub min: Duration,
    /// The longest wait, from its start.
    pub max: Duration,
}

impl Wait {
    /// `max` must be at least `min`; both zero means no wait.
    pub fn new(min: Duration, max: Duration) -> Result<Wait, String> {
        if max < min {
            return Err(format!(
                "wait max ({max:?}) is shorter than wait min ({min:?}); max bounds the wait, so \
                 it must be at least min"
            ));
        }
        Ok(Wait { min, max })
    }
}

/// One wait in progress.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    wait: Wait,
    started: Instant,
    last_change: Instant,
}

impl Quiet {
    /// A wait that starts at `now` (the change that asked for a render).
    pub fn start(wait: Wait, now: Instant) -> Quiet {
        Quiet {
            wait,
            started: now,
            last_change: now,
        }
    }

    /// Another change at `now` restarts the quiet time (never past `max`).
    pub fn changed(&mut self, now: Instant) {
        self.last_change = now;
    }

    /// When to render: `min` after the last change, at most `max` after the start.
    pub fn deadline(&self) -> Instant {
        (self.last_change + self.wait.min).min(self.started + self.wait.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn quiet_time_moves_with_changes_until_max() {
        let t0 = Instant::now();
        let mut quiet = Quiet::start(Wait::new(100 * MS, 250 * MS).unwrap(), t0);
        assert_eq!(quiet.deadline(), t0 + 100 * MS);
        quiet.changed(t0 + 80 * MS);
        assert_eq!(quiet.deadline(), t0 + 180 * MS);
        quiet.changed(t0 + 170 * MS);
        assert_eq!(quiet.deadline(), t0 + 250 * MS, "capped at max");
    }

    #[test]
    fn max_below_min_is_refused() {
        let err = Wait::new(2000 * MS, 1000 * MS).unwrap_err();
        assert!(err.contains("shorter than wait min"), "{err}");
        assert!(Wait::new(MS, MS).is_ok());
    }
}
