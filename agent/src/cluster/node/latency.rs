//! How long user events take to reach this node: from the origin's send time (its wall clock)
//! to the first receipt here. Across hosts this includes their clock difference, so it is as
//! good as the hosts' time sync.

use serde::{Deserialize, Serialize};

/// Upper bounds of the histogram buckets, in milliseconds.
pub const BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// A cumulative histogram in Prometheus' shape: `counts[i]` events took at most
/// `BUCKETS_MS[i]` ms; `count` and `sum_ms` cover all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum_ms: u64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, ms: u64) {
        if self.counts.len() != BUCKETS_MS.len() {
            self.counts = vec![0; BUCKETS_MS.len()];
        }
        for (bound, count) in BUCKETS_MS.iter().zip(self.counts.iter_mut()) {
            if ms <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let mut h = LatencyHistogram::default();
        h.observe(3);
        h.observe(3000);
        assert_eq!(
            h.counts[BUCKETS_MS.iter().position(|b| *b == 5).unwrap()],
            1
        );
        assert_eq!(h.counts[BUCKETS_MS.len() - 1], 2);
        assert_eq!(h.counts[0], 0);
        assert_eq!((h.count, h.sum_ms), (2, 3003));
    }
}
