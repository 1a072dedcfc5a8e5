//! A Lamport clock, as Serf keeps one per kind of message (events, queries).

/// Logical time: advances on every local send and jumps past every time witnessed.
#[derive(Debug, Default, Clone, Copy)]
pub struct LamportClock {
    counter: u64,
}

impl LamportClock {
    /// The current time.
    pub fn time(&self) -> u64 {
        self.counter
    }

    /// Stamps a local message: returns the current time and moves the clock past it.
    pub fn tick(&mut self) -> u64 {
        let now = self.counter;
        self.counter = self.counter.saturating_add(1);
        now
    }

    /// Records a time seen on a message: afterwards our clock is later than it.
    pub fn witness(&mut self, seen: u64) {
        if seen >= self.counter {
            self.counter = seen.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_witnesses() {
        let mut c = LamportClock::default();
        assert_eq!(c.tick(), 0);
        assert_eq!(c.tick(), 1);
        c.witness(10);
        assert_eq!(c.time(), 11);
        c.witness(3);
        assert_eq!(c.time(), 11, "an older time does not move the clock back");
        assert_eq!(c.tick(), 11);
    }
}
