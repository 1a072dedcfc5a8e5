//! Which incoming push-pull connections the agent keeps, and what the ones it dropped cost.
//!
//! # Why
//!
//! The push-pull port is open to anyone who can reach it, and a connection proves itself only
//! with its first valid frame. Before, the accept loop waited for one of 16 exchange slots and
//! every connection took one at once, each for up to the exchange timeout: a few dozen idle
//! connections held every slot, and members' joins timed out behind them.
//!
//! # How
//!
//! [`Admission`] lists the connections being served, each with its [`Progress`] (held weakly:
//! a connection's task owns it, so a finished task leaves the list by itself). Connections
//! whose first frame has not authenticated yet are capped at
//! [`MAX_UNAUTHENTICATED`](super::push_pull::MAX_UNAUTHENTICATED): the next one in makes the
//! list drop the stranger that has been silent the longest, so a newcomer that talks — as a
//! joining member does at once — always gets in. Peers whose frame authenticated are never
//! dropped for room. [`ConnectionStats`] counts what was dropped and why, for `rumor info` and
//! `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;

use super::frames::{self, Progress};

/// The incoming connections being served.
#[derive(Debug)]
pub struct Admission {
    max_unauthenticated: usize,
    serving: Vec<Serving>,
}

#[derive(Debug)]
struct Serving {
    progress: Weak<Progress>,
    task: AbortHandle,
}

impl Admission {
    /// At most `max_unauthenticated` connections kept before their first valid frame.
    pub fn new(max_unauthenticated: usize) -> Admission {
        Admission {
            max_unauthenticated: max_unauthenticated.max(1),
            serving: Vec::new(),
        }
    }

    /// Lists a new connection (its task and progress). Returns `true` when that made the list
    /// drop the stranger silent the longest (its task is aborted, which closes it).
    pub fn admit(&mut self, progress: &Arc<Progress>, task: AbortHandle) -> bool {
        self.serving.retain(|s| s.progress.strong_count() > 0);
        let evicted = self.unauthenticated() >= self.max_unauthenticated && self.evict_stalest();
        self.serving.push(Serving {
            progress: Arc::downgrade(progress),
            task,
        });
        evicted
    }

    fn evict_stalest(&mut self) -> bool {
        let stalest = self
            .serving
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.progress.upgrade()?)))
            .filter(|(_, p)| !p.is_authenticated())
            .min_by_key(|(_, p)| p.last_read())
            .map(|(i, _)| i);
        let Some(i) = stalest else { return false };
        self.serving.swap_remove(i).task.abort();
        true
    }

    /// Connections still waiting for their first valid frame.
    pub fn unauthenticated(&self) -> usize {
        self.serving
            .iter()
            .filter_map(|s| s.progress.upgrade())
            .filter(|p| !p.is_authenticated())
            .count()
    }
}

/// Incoming connections the listener dropped, by reason, since the agent started.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    evicted: AtomicU64,
    idle: AtomicU64,
    no_valid_frame: AtomicU64,
    over_budget: AtomicU64,
    malformed: AtomicU64,
}

/// Why the listener dropped a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Silent the longest while the unauthenticated connections were at their cap.
    Evicted,
    /// Sent nothing for the idle timeout before a valid frame.
    Idle,
    /// No valid frame within the exchange timeout.
    NoValidFrame,
    /// Its frame did not fit the budget of unauthenticated bytes.
    OverBudget,
    /// Sent something that is not a push-pull frame (garbage, a wrong kind, a bad length).
    Malformed,
}

impl ConnectionStats {
    pub fn count(&self, why: Dropped) {
        let counter = match why {
            Dropped::Evicted => &self.evicted,
            Dropped::Idle => &self.idle,
            Dropped::NoValidFrame => &self.no_valid_frame,
            Dropped::OverBudget => &self.over_budget,
            Dropped::Malformed => &self.malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The incoming push-pull connections, as `rumor info` and `/metrics` show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCounts {
    /// Connections now waiting for their first valid frame.
    pub unauthenticated: usize,
    /// Bytes frames not yet authenticated hold now beyond their free allowance.
    pub unauthenticated_bytes: usize,
    /// Dropped, since the start: to make room for a newer connection …
    pub evicted: u64,
    /// … silent too long before a valid frame …
    pub idle: u64,
    /// … no valid frame in time …
    pub no_valid_frame: u64,
    /// … a frame past the budget of unauthenticated bytes …
    pub over_budget: u64,
    /// … or not push-pull at all.
    pub malformed: u64,
}

/// The listener's table and counters, shared with whoever reports them.
#[derive(Debug)]
pub struct Connections {
    pub admission: Mutex<Admission>,
    pub stats: ConnectionStats,
}

impl Connections {
    pub fn new(max_unauthenticated: usize) -> Connections {
        Connections {
            admission: Mutex::new(Admission::new(max_unauthenticated)),
            stats: ConnectionStats::default(),
        }
    }

    /// The counts now.
    pub fn counts(&self) -> ConnectionCounts {
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConnectionCounts {
            unauthenticated: self
                .admission
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .unauthenticated(),
            unauthenticated_bytes: frames::buffered_bytes(),
            evicted: load(&s.evicted),
            idle: load(&s.idle),
            no_valid_frame: load(&s.no_valid_frame),
            over_budget: load(&s.over_budget),
            malformed: load(&s.malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn connection() -> (Arc<Progress>, tokio::task::JoinHandle<()>) {
        (
            Arc::new(Progress::new(None)),
            tokio::spawn(std::future::pending()),
        )
    }

    #[tokio::test]
    async fn the_stranger_silent_the_longest_makes_room() {
        let mut admission = Admission::new(2);
        let (oldest, oldest_task) = connection();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (newer, newer_task) = connection();
        assert!(!admission.admit(&oldest, oldest_task.abort_handle()));
        assert!(!admission.admit(&newer, newer_task.abort_handle()));
        assert_eq!(admission.unauthenticated(), 2);

        let (third, third_task) = connection();
        assert!(admission.admit(&third, third_task.abort_handle()));
        assert!(oldest_task.await.unwrap_err().is_cancelled());
        assert!(!newer_task.is_finished());
        assert_eq!(admission.unauthenticated(), 2);
    }

    #[tokio::test]
    async fn finished_connections_leave_and_peers_are_never_evicted() {
        let mut admission = Admission::new(1);
        let (gone, gone_task) = connection();
        assert!(!admission.admit(&gone, gone_task.abort_handle()));
        drop(gone);
        // Its task ended (its progress is gone): room without evicting anyone.
        let (peer, peer_task) = connection();
        assert!(!admission.admit(&peer, peer_task.abort_handle()));
        assert_eq!(admission.unauthenticated(), 1);

        // A valid frame makes it a peer: it no longer counts, and is not evicted for room.
        let keys = crate::cluster::keyring::SharedKeyring::default();
        let mut frame = Vec::new();
        frames::write_frame(&mut frame, &"hello", &keys)
            .await
            .unwrap();
        let mut stream = &frame[..];
        let read = frames::read_frame::<_, String>(&mut stream, 1024, &keys);
        frames::watched(peer.clone(), read).await.unwrap();
        assert_eq!(admission.unauthenticated(), 0);
        let (stranger, stranger_task) = connection();
        assert!(!admission.admit(&stranger, stranger_task.abort_handle()));
        let (another, another_task) = connection();
        assert!(admission.admit(&another, another_task.abort_handle()));
        assert!(!peer_task.is_finished());
        assert!(stranger_task.await.unwrap_err().is_cancelled());
    }
}
