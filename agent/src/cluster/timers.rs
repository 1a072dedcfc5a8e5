//! The actor's single timer queue: the node's timers (foca's among them), delivered in
//! deadline order by the one task that owns the node (never a task per timer, which reorders
//! them under load).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tokio::time::Instant;

use super::node::Tick;
use super::node::identity::NodeId;

/// Something due at `at`, ordered by time and then by insertion, so items due at the same
/// time come out in the order they were scheduled (deterministic, and what foca expects).
/// Wrap in [`Reverse`] for a `BinaryHeap` that yields the earliest first. The actor uses it
/// with real time; the simulation with simulated time.
pub struct Scheduled<At, T> {
    pub at: At,
    pub seq: u64,
    pub item: T,
}

impl<At: Ord, T> PartialEq for Scheduled<At, T> {
    fn eq(&self, other: &Self) -> bool {
        (&self.at, self.seq) == (&other.at, other.seq)
    }
}
impl<At: Ord, T> Eq for Scheduled<At, T> {}
impl<At: Ord, T> PartialOrd for Scheduled<At, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<At: Ord, T> Ord for Scheduled<At, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.at, self.seq).cmp(&(&other.at, other.seq))
    }
}

/// Ticks ordered by deadline, then by insertion.
#[derive(Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<Scheduled<Instant, Tick>>>,
    seq: u64,
}

impl TimerQueue {
    pub fn schedule(&mut self, at: Instant, tick: Tick) {
        self.seq += 1;
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            item: tick,
        }));
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes every tick due at `now`. foca's own timers come first, sorted the way foca
    /// asks (its `Timer` order), then ours in deadline order.
    pub fn pop_due(&mut self, now: Instant) -> (Vec<foca::Timer<NodeId>>, Vec<Tick>) {
        let mut swim = Vec::new();
        let mut ours = Vec::new();
        while let Some(Reverse(entry)) = self.heap.peek() {
            if entry.at > now {
                break;
            }
            let Some(Reverse(entry)) = self.heap.pop() else {
                break;
            };
            match entry.item {
                Tick::Swim(t) => swim.push(t),
                other => ours.push(other),
            }
        }
        swim.sort();
        (swim, ours)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_only_due_ticks_in_deadline_order() {
        let mut q = TimerQueue::default();
        let t0 = Instant::now();
        q.schedule(t0 + Duration::from_secs(2), Tick::Reap);
        q.schedule(t0 + Duration::from_secs(1), Tick::PushPull);
        q.schedule(t0 + Duration::from_secs(1), Tick::LeaveCheck);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let (swim, ours) = q.pop_due(t0 + Duration::from_secs(1));
        assert!(swim.is_empty());
        assert!(matches!(ours[..], [Tick::PushPull, Tick::LeaveCheck]));
        assert_eq!(q.len(), 1);
        let (_, ours) = q.pop_due(t0 + Duration::from_secs(5));
        assert!(matches!(ours[..], [Tick::Reap]));
        assert_eq!(q.next_deadline(), None);
    }
}
