//! Logging a noisy condition (bad packets, refused connections) at most once a second, with a
//! count of the lines swallowed in between — so a flood cannot fill the disk or the journal.

use std::time::{Duration, Instant};

#[derive(Default)]
pub struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(n)` when a line may be logged now (`n` lines were suppressed since the last one).
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_then_a_count_of_the_rest() {
        let mut l = LogLimiter::default();
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        l.last = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(l.allow(), Some(2));
    }
}
