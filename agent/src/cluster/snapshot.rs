//! The snapshot: what a node knows that lets a restart rejoin without `--join` and without
//! confusing clocks — the alive members' addresses, the Lamport clocks, and whether the node
//! left on purpose.
//!
//! It is a [`Journal`]: an append-only file of JSON lines, written by a thread of its own (so
//! the cluster never waits on the disk), appended at most every half second and at once when
//! the node joins a cluster, and rewritten from the current state (compacted) when it grows.
//! Membership and leave records are synced to disk before anything else is written. Records
//! that only move the clocks are not: every user event moves the event clock, and a sync per
//! event would cost every agent CPU on every event. A crash of the agent loses none of
//! them (they are in the page cache); a power cut can lose the last few seconds of clock
//! movement, which the node makes up at its first push-pull, as the peer's clocks are
//! witnessed. Reading stops at the first damaged line (a crash can leave half a line) and says
//! so; the node starts with what came before it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::journal::{self, Journal};

/// Name of the snapshot file in the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.log";
/// The file is rewritten from the current state once it grows past this.
const COMPACT_BYTES: u64 = 256 * 1024;

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Alive {
        name: String,
        addr: SocketAddr,
    },
    NotAlive {
        name: String,
    },
    EventClock(u64),
    QueryClock(u64),
    /// `true` after a graceful leave; `false` once the node is back in a cluster.
    Left(bool),
}

impl Record {
    /// Whether a power cut must not lose it (see the module docs).
    fn durable(&self) -> bool {
        !matches!(self, Record::EventClock(_) | Record::QueryClock(_))
    }
}

/// What a previous run left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Alive members when the node stopped, by name.
    pub alive: BTreeMap<String, SocketAddr>,
    pub event_clock: u64,
    pub query_clock: u64,
    /// The node left gracefully last time.
    pub left: bool,
}

impl Restored {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Alive { name, addr } => {
                self.alive.insert(name, addr);
            }
            Record::NotAlive { name } => {
                self.alive.remove(&name);
            }
            Record::EventClock(t) => self.event_clock = self.event_clock.max(t),
            Record::QueryClock(t) => self.query_clock = self.query_clock.max(t),
            Record::Left(left) => self.left = left,
        }
    }

    fn records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = self
            .alive
            .iter()
            .map(|(name, addr)| Record::Alive {
                name: name.clone(),
                addr: *addr,
            })
            .collect();
        out.push(Record::EventClock(self.event_clock));
        out.push(Record::QueryClock(self.query_clock));
        out.push(Record::Left(self.left));
        out
    }
}

/// Reads a snapshot. A missing file is an empty snapshot; a damaged one gives what was read
/// before the damage and a description of it.
pub fn load(path: &Path) -> (Restored, Option<String>) {
    let mut restored = Restored::default();
    let problem = journal::load(path, |record| restored.apply(record));
    (restored, problem.map(|d| d.to_string()))
}

/// Keeps the snapshot file up to date. Owned by the cluster actor, which must never wait on
/// the disk: the state is kept here, and the writes are done by the journal's thread.
pub struct Snapshotter {
    state: Restored,
    pending: Vec<Record>,
    /// Bytes in the file once the queued writes are done.
    written: u64,
    journal: Journal,
}

impl Snapshotter {
    /// Starts from `state` (what was loaded): rewrites the file from it at once, which also
    /// drops any damaged tail, and reports an unwritable data directory to the caller.
    pub fn open(path: PathBuf, state: Restored) -> std::io::Result<Snapshotter> {
        let image = journal::lines(&state.records());
        let journal = Journal::create(path, &image, "rumor-snapshot", "the snapshot")?;
        Ok(Snapshotter {
            journal,
            state,
            pending: Vec::new(),
            written: image.len() as u64,
        })
    }

    pub fn alive(&mut self, name: &str, addr: SocketAddr) {
        if self.state.alive.get(name) != Some(&addr) {
            self.push(Record::Alive {
                name: name.to_string(),
                addr,
            });
        }
    }

    pub fn not_alive(&mut self, name: &str) {
        if self.state.alive.contains_key(name) {
            self.push(Record::NotAlive {
                name: name.to_string(),
            });
        }
    }

    pub fn clocks(&mut self, event: u64, query: u64) {
        if event > self.state.event_clock {
            self.push(Record::EventClock(event));
        }
        if query > self.state.query_clock {
            self.push(Record::QueryClock(query));
        }
    }

    pub fn left(&mut self, left: bool) {
        if self.state.left != left {
            self.push(Record::Left(left));
        }
    }

    fn push(&mut self, record: Record) {
        self.state.apply(record.clone());
        self.pending.push(record);
    }

    /// Queues what changed for the writer (appended, or the whole file rewritten from the
    /// current state once it has grown). Returns at once; failures are logged by the writer.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.written >= COMPACT_BYTES {
            self.pending.clear();
            let image = journal::lines(&self.state.records());
            self.written = image.len() as u64;
            self.journal.replace(image);
        } else {
            let durable = self.pending.iter().any(Record::durable);
            let lines = journal::lines(&self.pending);
            self.pending.clear();
            self.written += lines.len() as u64;
            self.journal.append(lines, durable);
        }
    }

    /// Waits until every queued write is on disk (used when the node stops).
    pub fn sync(&self) {
        self.journal.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn records_replay_into_the_last_known_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut s = Snapshotter::open(path.clone(), Restored::default()).unwrap();
        s.alive("a", addr(1));
        s.alive("b", addr(2));
        s.not_alive("a");
        s.clocks(7, 3);
        s.left(true);
        s.flush();
        s.sync();
        let (restored, problem) = load(&path);
        assert_eq!(problem, None);
        assert_eq!(restored.alive, BTreeMap::from([("b".to_string(), addr(2))]));
        assert_eq!(
            (restored.event_clock, restored.query_clock, restored.left),
            (7, 3, true)
        );
    }

    #[test]
    fn a_damaged_tail_is_reported_and_what_came_before_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        std::fs::write(
            &path,
            "{\"alive\":{\"name\":\"a\",\"addr\":\"10.0.0.1:1\"}}\n{\"event_clock\":5}\n{\"alive\":{\"na",
        )
        .unwrap();
        let (restored, problem) = load(&path);
        assert_eq!(restored.event_clock, 5);
        assert!(restored.alive.contains_key("a"));
        let problem = problem.unwrap();
        assert!(problem.contains(":3: damaged"), "{problem}");
        // Opening rewrites it clean.
        Snapshotter::open(path.clone(), restored.clone()).unwrap();
        assert_eq!(load(&path), (restored, None));
        // Garbage from the first byte: an empty start, reported.
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        let (restored, problem) = load(&path);
        assert_eq!(restored, Restored::default());
        assert!(problem.is_some());
    }

    #[test]
    fn the_file_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut s = Snapshotter::open(path.clone(), Restored::default()).unwrap();
        for i in 0..20_000u64 {
            s.clocks(i + 1, 0);
            if i % 50 == 0 {
                s.flush();
            }
        }
        s.flush();
        drop(s);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < COMPACT_BYTES + 1024, "{size} bytes");
        assert_eq!(load(&path).0.event_clock, 20_000);
    }
}
