//! End-to-end test harness for rumor.
//!
//! Tests start real `rumor agent` processes, each with its own data directory, and drive them
//! only as a user would: through the `rumor` CLI (which talks to the agent's control API) and
//! the network. Nothing here links the agent's code.
//!
//! - [`Agent`]: one agent process (start, CLI, members, kill -9, SIGTERM, restart, log), on a
//!   127.0.0.1 port or inside a network namespace: its [`Site`].
//! - [`Control`]: the CLI against one agent's control socket, also from another thread.
//! - [`Monitor`]: `rumor monitor --format json`, collected line by line with arrival times.
//! - [`wait_for`] / [`wait_until`]: bounded polling; there are no fixed sleeps.
//! - [`free_port`]: a port free for both UDP and TCP.
//! - [`cluster_slot`]: limits how many multi-agent tests run at once on a small machine.
//! - [`netns`]: hosts as network namespaces on a bridge, partitions and loss, and a
//!   [`netns::Cluster`] of recording agents on them.
//! - [`nemesis`]: faults one after another while events flow, then the checker.
//! - [`Records`]: what each node's handler ran, and the checker that compares it with what was
//!   sent ([`records::check`]).
//! - [`services`]: real programs plugins drive (haproxy, memcached, a web backend) and their
//!   clients.
//! - [`skip_or_fail`]: for tests needing what this machine lacks (`RUMOR_REQUIRE_ALL=1` fails).
//!
//! The `rumor` binary is built on first use (see [`binary`]), or taken from `RUMOR_BIN`;
//! [`serf_symlink`] runs it under the name `serf`.

pub mod agent;
pub mod bench;
pub mod binary;
pub mod control;
pub mod docker;
pub mod monitor;
pub mod nemesis;
pub mod netns;
pub mod ports;
pub mod process;
pub mod records;
pub mod rng;
pub mod services;
pub mod wait;

use std::sync::{Condvar, Mutex};

pub use agent::{
    Agent, Site, live_monitors, start_cluster, test_tempdir, wait_push_pulls, write_file,
};
pub use binary::{LOG_TAIL_LINES, help_commands, rumor_bin, serf_symlink, tail};
pub use control::{Control, Member, rumor_command};
pub use monitor::{Monitor, is_user_event, is_user_event_prefixed, member_event_names};
pub use ports::free_port;
pub use process::{rss_bytes, run_with_stdin, run_with_timeout};
pub use records::{Expect, Records, Verdict};
pub use rng::Rng;
pub use wait::{wait_for, wait_until};

/// For a test that needs something this machine does not offer (root, a network namespace, a
/// tool): without `RUMOR_REQUIRE_ALL=1` it prints `SKIPPED: reason` and returns, and the test
/// should return too; with it (CI), it panics so that nothing is skipped silently.
pub fn skip_or_fail(reason: &str) {
    if require_all() {
        panic!("RUMOR_REQUIRE_ALL=1 but this test cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

fn require_all() -> bool {
    std::env::var("RUMOR_REQUIRE_ALL").is_ok_and(|v| !v.is_empty() && v != "0")
}

static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Held by a test while its agents run; see [`cluster_slot`].
pub struct ClusterSlot(());

impl Drop for ClusterSlot {
    fn drop(&mut self) {
        let (used, cv) = &SLOTS;
        *used.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        cv.notify_one();
    }
}

/// Waits until fewer than `RUMOR_TEST_CLUSTERS` (default: the number of CPUs, at least 2)
/// multi-agent tests of this process hold a slot, and takes one. Many clusters of debug-built
/// agents on a 2-core machine starve each other's timers, and the fast `local` failure detector
/// then declares live agents failed; this keeps timing assertions honest. Hold the guard for the
/// whole test (declare it before the agents, so it is dropped after them).
pub fn cluster_slot() -> ClusterSlot {
    let limit = std::env::var("RUMOR_TEST_CLUSTERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2)
        });
    let (used, cv) = &SLOTS;
    let mut n = used.lock().unwrap_or_else(|p| p.into_inner());
    while *n >= limit {
        n = cv.wait(n).unwrap_or_else(|p| p.into_inner());
    }
    *n += 1;
    ClusterSlot(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_without_require_all_returns() {
        if !require_all() {
            skip_or_fail("demonstration: nothing is missing");
        }
    }

    #[test]
    fn slots_are_released() {
        let a = cluster_slot();
        let b = cluster_slot();
        drop(a);
        drop(b);
        let _c = cluster_slot();
    }
}
