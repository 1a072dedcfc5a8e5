//! The snapshot: what a node knows that lets a restart rejoin without `--join` and without
//! confusing clocks — the alive members' addresses, the Lamport clocks, and whether the node
//! left on purpose.
//!
//! It is an append-only file of JSON lines, flushed and fsync'd at most every half second,
//! and at once when the node joins a cluster (by a thread of its own, so the cluster never
//! waits on the disk), and rewritten from the current state (compacted) when it grows. Reading stops at the first
//! damaged line (a crash can leave half a line) and says so; the node starts with what came
//! before it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use tracing::error;

use super::log_limit::LogLimiter;

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
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (restored, None),
        Err(e) => {
            return (
                restored,
                Some(format!("cannot read {}: {e}", path.display())),
            );
        }
    };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                return (
                    restored,
                    Some(format!("{}:{}: unreadable: {e}", path.display(), i + 1)),
                );
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(record) => restored.apply(record),
            Err(e) => {
                return (
                    restored,
                    Some(format!(
                        "{}:{}: damaged ({e}); using the {} lines before it",
                        path.display(),
                        i + 1,
                        i
                    )),
                );
            }
        }
    }
    (restored, None)
}

/// Keeps the snapshot file up to date. Owned by the cluster actor, which must never wait on
/// the disk: the state is kept here, and the writes (each fsync'd, which can take a second on
/// a busy disk) are done in order by a thread of their own.
pub struct Snapshotter {
    state: Restored,
    pending: Vec<Record>,
    /// Bytes in the file once the queued writes are done.
    written: u64,
    writer: Writer,
}

impl Snapshotter {
    /// Starts from `state` (what was loaded): rewrites the file from it at once, which also
    /// drops any damaged tail, and reports an unwritable data directory to the caller.
    pub fn open(path: PathBuf, state: Restored) -> std::io::Result<Snapshotter> {
        let image = image(&state.records());
        replace(&path, &image)?;
        Ok(Snapshotter {
            writer: Writer::start(path)?,
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
            let image = image(&self.state.records());
            self.written = image.len() as u64;
            self.writer.send(Job::Replace(image));
        } else {
            let lines = image(&self.pending);
            self.pending.clear();
            self.written += lines.len() as u64;
            self.writer.send(Job::Append(lines));
        }
    }

    /// Waits until every queued write is on disk (used when the node stops).
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        self.writer.send(Job::Sync(done));
        let _ = wait.recv();
    }
}

/// The records as JSON lines.
fn image(records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::new();
    for record in records {
        serde_json::to_writer(&mut buf, record).expect("a record is JSON");
        buf.push(b'\n');
    }
    buf
}

/// Rewrites the file atomically: a temporary file, fsync, rename, fsync of the directory.
fn replace(path: &Path, image: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("log.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(image)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn append(path: &Path, lines: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(lines)?;
    f.sync_data()
}

enum Job {
    Append(Vec<u8>),
    Replace(Vec<u8>),
    /// Answered once every job before it is done.
    Sync(mpsc::Sender<()>),
}

/// The thread that does the file writes, in the order they were queued. Dropping it waits for
/// the queue to drain, so a stopping agent does not lose its last records.
struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(path: PathBuf) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rumor-snapshot".into())
            .spawn(move || write_jobs(&path, queue))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The thread only ends when `jobs` is dropped, so this cannot fail.
            let _ = jobs.send(job);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread. Appends that queued up while the disk was busy go out as one write and
/// one fsync.
fn write_jobs(path: &Path, queue: mpsc::Receiver<Job>) {
    let mut log = LogLimiter::default();
    let mut next = queue.recv().ok();
    while let Some(job) = next.take() {
        let result = match job {
            Job::Append(mut lines) => {
                loop {
                    match queue.try_recv() {
                        Ok(Job::Append(more)) => lines.extend_from_slice(&more),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                append(path, &lines)
            }
            Job::Replace(image) => replace(path, &image),
            Job::Sync(done) => {
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(e) = result
            && let Some(suppressed) = log.allow()
        {
            error!(file = %path.display(), suppressed, "cannot write the snapshot: {e}");
        }
        if next.is_none() {
            next = queue.recv().ok();
        }
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
        assert!(
            problem.contains(":3:") && problem.contains("damaged"),
            "{problem}"
        );
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
