//! A small seeded random generator (xorshift) for tests that pick random senders, victims and
//! moments, without a dependency. The seed is printed so a failing run can be replayed with
//! `RUMOR_TEST_SEED`.

use std::time::Duration;

pub struct Rng(u64);

impl Rng {
    /// Seeded from `RUMOR_TEST_SEED` if set, else from the clock; prints the seed under `what`.
    pub fn new(what: &str) -> Rng {
        let seed = std::env::var("RUMOR_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                u64::from(nanos) ^ (u64::from(std::process::id()) << 32) | 1
            });
        eprintln!("{what}: RUMOR_TEST_SEED={seed}");
        Rng::seeded(seed)
    }

    /// A generator from `seed` (0 is taken as 1: xorshift stays at 0 forever).
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A duration in `lo..=hi`, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (
            lo.as_millis() as u64,
            hi.as_millis().max(lo.as_millis()) as u64,
        );
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }

    /// `k` distinct numbers of `0..n`, in random order.
    pub fn pick(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            all.swap(i, self.below(i + 1));
        }
        all.truncate(k.min(n));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_replay_from_the_seed() {
        let mut a = Rng::seeded(42);
        let mut b = Rng::seeded(42);
        for _ in 0..100 {
            let x = a.below(7);
            assert!(x < 7);
            assert_eq!(x, b.below(7));
            let d = a.between(Duration::from_millis(10), Duration::from_millis(20));
            assert!((10..=20).contains(&d.as_millis()));
            b.between(Duration::ZERO, Duration::ZERO);
        }
        let picked = a.pick(5, 3);
        assert_eq!(picked.len(), 3);
        assert!(picked.iter().all(|&i| i < 5));
        assert!(picked[0] != picked[1] && picked[1] != picked[2] && picked[0] != picked[2]);
    }
}
