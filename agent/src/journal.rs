//! An append-only file of JSON lines, written by a thread of its own: the mechanics shared by
//! the snapshot (`cluster::snapshot`) and the handler record (`handled`).
//!
//! * Writes never block the caller: they are queued for the writer thread, which does them in
//!   order. Appends that queue up while the disk is busy go out as one `write` and at most one
//!   `fdatasync`.
//! * An append is either *durable* (synced to disk before the writer takes the next job) or
//!   not (in the page cache at once, which survives a crash of the agent; on disk within the
//!   kernel's writeback interval, about 30 s, or at the next durable write or [`Journal::sync`]).
//!   An `fdatasync` costs CPU on every call (a trip to the disk, virtual or not), so callers
//!   sync what a power cut must not lose and nothing more.
//! * The file stays open between appends, and [`Journal::replace`] (compaction) writes a whole
//!   new image atomically: a temporary file, fsync, rename, fsync of the directory.
//! * [`load`] reads the lines back and stops at the first damaged one (a crash can leave half a
//!   line), reporting it; the caller starts from what came before.
//! * The writer thread runs at the handlers' priority, not the agent's boosted one
//!   ([`crate::priority`]): nothing waits on it, and its syncs should not take a CPU
//!   from the gossip.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::error;

use crate::log_limit::LogLimiter;

/// A journal file and the thread that writes it. Dropping it waits until every queued write is
/// done (and the durable ones are on disk).
pub struct Journal {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum Job {
    Append {
        lines: Vec<u8>,
        durable: bool,
    },
    Replace(Vec<u8>),
    /// Answered once every job before it is done and on disk.
    Sync(mpsc::Sender<()>),
}

impl Journal {
    /// Writes `image` as the whole file at once (atomically), so an unwritable directory is
    /// reported to the caller, then starts the writer thread (named `thread`). `what` names the
    /// file in log lines ("the snapshot").
    pub fn create(
        path: PathBuf,
        image: &[u8],
        thread: &str,
        what: &'static str,
    ) -> std::io::Result<Journal> {
        replace(&path, image)?;
        let file = open_append(&path)?;
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                // Failing leaves it at the agent's priority, which only costs the gossip.
                let _ = crate::priority::enter_handler_priority();
                Writer::new(path, file, what).run(queue)
            })?;
        Ok(Journal {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues `lines` (whole lines, each ending in `\n`) to be appended; `durable` ones are
    /// synced to disk before the writer goes on.
    pub fn append(&self, lines: Vec<u8>, durable: bool) {
        if !lines.is_empty() {
            self.send(Job::Append { lines, durable });
        }
    }

    /// Queues a rewrite of the whole file with `image` (compaction).
    pub fn replace(&self, image: Vec<u8>) {
        self.send(Job::Replace(image));
    }

    /// Waits until every queued write is done and on disk.
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        self.send(Job::Sync(done));
        let _ = wait.recv();
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // The thread only ends when `jobs` is dropped, so this cannot fail.
            let _ = jobs.send(job);
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The records as JSON lines.
pub fn lines<T: Serialize>(records: &[T]) -> Vec<u8> {
    let mut buf = Vec::new();
    for record in records {
        serde_json::to_writer(&mut buf, record).expect("a record is JSON");
        buf.push(b'\n');
    }
    buf
}

/// Why a journal could not be read to its end. A damaged line ends the reading, and what came
/// before it has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    message: String,
    /// The damage is the last line: a write cut short by a crash, which costs only the record
    /// being written. Otherwise the file lost records in its middle (a damaged disk, an edit).
    pub at_tail: bool,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Reads a journal, calling `apply` for each record in order. A missing file has no records.
pub fn load<T: DeserializeOwned>(path: &Path, mut apply: impl FnMut(T)) -> Option<Damage> {
    let damage = |message: String, at_tail: bool| Some(Damage { message, at_tail });
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return damage(format!("cannot read {}: {e}", path.display()), false),
    };
    // Numbered as the file's lines, so the message points an editor at the damage.
    let lines: Vec<(usize, &[u8])> = text
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    for (i, (number, line)) in lines.iter().enumerate() {
        match serde_json::from_slice::<T>(line) {
            Ok(record) => apply(record),
            Err(e) => {
                let at_tail = i + 1 == lines.len();
                return damage(
                    format!(
                        "{}:{}: damaged ({e}); using the {i} records before it",
                        path.display(),
                        number + 1,
                    ),
                    at_tail,
                );
            }
        }
    }
    None
}

/// Rewrites the file atomically: a temporary file, fsync, rename, fsync of the directory.
fn replace(path: &Path, image: &[u8]) -> std::io::Result<()> {
    replace_file(path, image, 0o666)
}

/// Writes `image` to `path` so that a crash leaves the old file or the new one: into
/// `PATH.tmp` (created with `mode`, less the umask), synced, renamed over `path`, and the
/// directory synced. Every file the agent rewrites whole goes through here.
pub fn replace_file(path: &Path, image: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(image)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    /// Open for appending; `None` after a failed reopen (the next write tries again).
    file: Option<File>,
    /// Appended since the last sync.
    unsynced: bool,
    what: &'static str,
    log: LogLimiter,
}

impl Writer {
    fn new(path: PathBuf, file: File, what: &'static str) -> Writer {
        Writer {
            path,
            file: Some(file),
            unsynced: false,
            what,
            log: LogLimiter::default(),
        }
    }

    fn run(mut self, queue: mpsc::Receiver<Job>) {
        let mut next = queue.recv().ok();
        while let Some(job) = next.take() {
            let result = match job {
                Job::Append {
                    mut lines,
                    mut durable,
                } => {
                    // Everything queued meanwhile goes out with it.
                    loop {
                        match queue.try_recv() {
                            Ok(Job::Append {
                                lines: more,
                                durable: d,
                            }) => {
                                lines.extend_from_slice(&more);
                                durable |= d;
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.append(&lines, durable)
                }
                Job::Replace(image) => self.replace(&image),
                Job::Sync(done) => {
                    let result = self.sync();
                    let _ = done.send(());
                    result
                }
            };
            if let Err(e) = result
                && let Some(suppressed) = self.log.allow()
            {
                error!(file = %self.path.display(), suppressed, "cannot write {}: {e}", self.what);
            }
            if next.is_none() {
                next = queue.recv().ok();
            }
        }
        if let Err(e) = self.sync() {
            error!(file = %self.path.display(), "cannot write {}: {e}", self.what);
        }
    }

    fn file(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            self.file = Some(open_append(&self.path)?);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    fn append(&mut self, lines: &[u8], durable: bool) -> std::io::Result<()> {
        self.unsynced = true;
        self.file()?.write_all(lines)?;
        if durable { self.sync() } else { Ok(()) }
    }

    fn replace(&mut self, image: &[u8]) -> std::io::Result<()> {
        // The old file's handle would append to the replaced inode.
        self.file = None;
        replace(&self.path, image)?;
        self.unsynced = false;
        self.file()?;
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        self.file()?.sync_data()?;
        self.unsynced = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Rec(u32);

    fn read(path: &Path) -> (Vec<Rec>, Option<Damage>) {
        let mut out = Vec::new();
        let problem = load(path, |r: Rec| out.push(r));
        (out, problem)
    }

    #[test]
    fn appends_replaces_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        let j = Journal::create(path.clone(), &lines(&[Rec(1)]), "test-journal", "it").unwrap();
        j.append(lines(&[Rec(2), Rec(3)]), false);
        j.append(lines(&[Rec(4)]), true);
        j.sync();
        assert_eq!(read(&path), (vec![Rec(1), Rec(2), Rec(3), Rec(4)], None));
        j.replace(lines(&[Rec(9)]));
        j.append(lines(&[Rec(10)]), false);
        drop(j); // waits for the queue
        assert_eq!(read(&path), (vec![Rec(9), Rec(10)], None));
        assert!(
            !dir.path().join("j.log.tmp").exists(),
            "the temporary file is renamed away"
        );
    }

    #[test]
    fn a_missing_file_has_no_records() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&dir.path().join("none.log")), (vec![], None));
    }

    #[test]
    fn a_damaged_line_ends_the_reading_and_is_reported_with_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.log");
        std::fs::write(&path, "1\n\n2\n{\"half\n3\n").unwrap();
        let (records, problem) = read(&path);
        assert_eq!(records, vec![Rec(1), Rec(2)]);
        let problem = problem.unwrap();
        let text = problem.to_string();
        assert!(
            text.contains("j.log:4: damaged") && text.contains("damaged"),
            "{text}"
        );
        assert!(!problem.at_tail, "records follow the damage");
        // A last line cut short: the tail.
        std::fs::write(&path, "1\n2\n{\"half").unwrap();
        let (records, problem) = read(&path);
        assert_eq!(records, vec![Rec(1), Rec(2)]);
        assert!(problem.unwrap().at_tail);
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        let (records, problem) = read(&path);
        assert!(records.is_empty());
        assert!(problem.unwrap().to_string().contains("j.log:1: damaged"));
    }

    #[test]
    fn an_unwritable_directory_is_reported_at_create() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("j.log");
        assert!(Journal::create(path, b"", "test-journal", "it").is_err());
    }
}
