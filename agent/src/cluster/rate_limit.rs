//! Per-source rate limiting of incoming push-pull exchanges (joins and state pushes), so one
//! noisy or hostile peer cannot keep the agent busy serialising its state. A token bucket per
//! source IP; the table is bounded so spoofed sources cannot grow it without limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Exchanges one source may start in a burst.
pub const BURST: f64 = 10.0;
/// Sustained exchanges per second per source (a healthy node does one every few seconds).
pub const PER_SECOND: f64 = 2.0;
/// Sources tracked at once; idle ones are forgotten first.
const MAX_SOURCES: usize = 4096;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct SourceLimiter {
    buckets: HashMap<IpAddr, Bucket>,
    burst: f64,
    per_second: f64,
}

impl Default for SourceLimiter {
    fn default() -> Self {
        SourceLimiter::new(BURST, PER_SECOND)
    }
}

impl SourceLimiter {
    pub fn new(burst: f64, per_second: f64) -> Self {
        SourceLimiter {
            buckets: HashMap::new(),
            burst,
            per_second,
        }
    }

    /// Whether `source` may start an exchange at `now` (and takes a token if so).
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&source) {
            self.forget_idle(now);
        }
        let (burst, rate) = (self.burst, self.per_second);
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops sources whose bucket has refilled (they have been quiet); if every source is
    /// busy, drops the least recently seen half.
    fn forget_idle(&mut self, now: Instant) {
        let full_after = Duration::from_secs_f64(self.burst / self.per_second);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
        if self.buckets.len() >= MAX_SOURCES {
            let mut ages: Vec<Instant> = self.buckets.values().map(|b| b.updated).collect();
            ages.sort();
            let cutoff = ages[ages.len() / 2];
            self.buckets.retain(|_, b| b.updated > cutoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_source() {
        let mut limiter = SourceLimiter::new(3.0, 1.0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow(a, t0)));
        assert!(!limiter.allow(a, t0), "the burst is spent");
        assert!(limiter.allow(b, t0), "another source is not affected");
        assert!(!limiter.allow(a, t0 + Duration::from_millis(500)));
        assert!(
            limiter.allow(a, t0 + Duration::from_millis(1600)),
            "refilled at 1/s"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut limiter = SourceLimiter::new(1.0, 0.001);
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 * 2) {
            limiter.allow(
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_micros(u64::from(i)),
            );
        }
        assert!(limiter.buckets.len() <= MAX_SOURCES);
    }
}
