//! What each handler has run recently, kept across restarts in `<data dir>/handled.log`, so a
//! restarted agent does not run a user event twice when the cluster delivers it again.
//!
//! The file is a [`Journal`] of JSON lines: per handler a `before` mark (everything stamped
//! earlier counts as run) and one `ran` line per user event it ran, appended and synced to
//! disk as soon as the run ends — one short `write` and one `fdatasync`, where rewriting the
//! whole record (a new file, fsync, rename) cost about 0.5 ms of the agent's CPU per run. When
//! the file has grown to about twice what it holds, it is rewritten from the current record.

use std::collections::BTreeMap;
use std::path::Path;

use rumor_handlers::{Dispatcher, HandledEvents};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::warn;

use crate::journal::{self, Journal};

// Handlers remember as many Lamport times as the cluster deduplicates over.
const _: () =
    assert!(rumor_handlers::HANDLED_WINDOW == crate::cluster::event_buffer::EVENT_WINDOW as u64);

/// Name of the file in the data directory.
pub const HANDLED_FILE: &str = "handled.log";
/// The one-object JSON file earlier versions rewrote after every run: read when there is no
/// [`HANDLED_FILE`] yet, and removed once the journal is written.
const OLD_HANDLED_FILE: &str = "handled.json";
/// Lines the file may hold beyond twice the record's size before it is compacted.
const COMPACT_SLACK: usize = 512;

/// Handler name → the events it ran recently.
pub type Marks = BTreeMap<String, HandledEvents>;

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// Everything stamped before `ltime` counts as run by `handler`.
    Before { handler: String, ltime: u64 },
    /// `handler` ran the user event known by (`ltime`, `origin`, `name`).
    Ran {
        handler: String,
        ltime: u64,
        origin: String,
        name: String,
    },
}

/// Reads the record from `data_dir`: the journal, or an earlier version's `handled.json`. A
/// missing file is no record; a damaged one is reported, and what came before the damage kept.
pub fn load(data_dir: &Path) -> Marks {
    let path = data_dir.join(HANDLED_FILE);
    if !path.exists() {
        return load_old(&data_dir.join(OLD_HANDLED_FILE));
    }
    let mut marks = Marks::new();
    let problem = journal::load(&path, |record| apply(&mut marks, record));
    if let Some(problem) = problem {
        warn!("the handler record is damaged: {problem}");
    }
    marks
}

fn load_old(path: &Path) -> Marks {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(file = %path.display(), "ignoring a damaged handler record: {e}");
            Marks::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Marks::new(),
        Err(e) => {
            warn!(file = %path.display(), "cannot read the handler record: {e}");
            Marks::new()
        }
    }
}

fn apply(marks: &mut Marks, record: Record) {
    match record {
        Record::Before { handler, ltime } => marks.entry(handler).or_default().before = ltime,
        Record::Ran {
            handler,
            ltime,
            origin,
            name,
        } => marks
            .entry(handler)
            .or_default()
            .insert(ltime, origin, name),
    }
}

/// The whole record as lines.
fn image(marks: &Marks) -> Vec<u8> {
    let mut records = Vec::new();
    for (handler, mark) in marks {
        records.push(Record::Before {
            handler: handler.clone(),
            ltime: mark.before,
        });
        records.extend(ran(handler, mark.events.iter()));
    }
    journal::lines(&records)
}

fn ran<'a>(
    handler: &'a str,
    events: impl Iterator<Item = &'a (u64, String, String)> + 'a,
) -> impl Iterator<Item = Record> + 'a {
    events.map(move |(ltime, origin, name)| Record::Ran {
        handler: handler.to_string(),
        ltime: *ltime,
        origin: origin.clone(),
        name: name.clone(),
    })
}

fn size(marks: &Marks) -> usize {
    marks.values().map(|m| 1 + m.events.len()).sum()
}

/// The file and what it holds.
pub struct HandledRecord {
    journal: Journal,
    saved: Marks,
    /// Lines in the file once the queued writes are done.
    lines: usize,
}

impl HandledRecord {
    /// Writes `marks` as the whole file in `data_dir` (which also drops a damaged tail, and
    /// reports an unwritable directory), and removes an earlier version's `handled.json`.
    pub fn open(data_dir: &Path, marks: Marks) -> std::io::Result<HandledRecord> {
        let journal = Journal::create(
            data_dir.join(HANDLED_FILE),
            &image(&marks),
            "rumor-handled",
            "the handler record",
        )?;
        match std::fs::remove_file(data_dir.join(OLD_HANDLED_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!("cannot remove the old handler record handled.json: {e}")
            }
            _ => {}
        }
        Ok(HandledRecord {
            journal,
            lines: size(&marks),
            saved: marks,
        })
    }

    /// Queues what is new in `marks` since the last save, to be appended and synced (or the
    /// whole file rewritten, once it has grown). Returns at once.
    pub fn save(&mut self, marks: Marks) {
        if marks == self.saved {
            return;
        }
        if self.lines > 2 * size(&marks) + COMPACT_SLACK {
            self.lines = size(&marks);
            self.journal.replace(image(&marks));
            self.saved = marks;
            return;
        }
        let mut records = Vec::new();
        for (handler, mark) in &marks {
            let before = self.saved.get(handler);
            if before.is_none_or(|b| b.before != mark.before) {
                records.push(Record::Before {
                    handler: handler.clone(),
                    ltime: mark.before,
                });
            }
            let new = mark
                .events
                .iter()
                .filter(|e| before.is_none_or(|b| !b.events.contains(*e)));
            records.extend(ran(handler, new));
        }
        self.lines += records.len();
        self.journal.append(journal::lines(&records), true);
        self.saved = marks;
    }

    /// Waits until everything saved is on disk.
    pub fn sync(&self) {
        self.journal.sync();
    }
}

/// Saves the dispatcher's record each time a handler finishes a user event — at once, so a
/// crash right after a run does not make it run again after the restart — until `stop`
/// fires; then returns the record for a last [`HandledRecord::save`] at shutdown. The writes
/// happen on the journal's thread: the runtime never waits on the disk.
pub async fn keep_saved(
    mut record: HandledRecord,
    dispatcher: Dispatcher,
    mut stop: oneshot::Receiver<()>,
) -> HandledRecord {
    loop {
        tokio::select! {
            _ = dispatcher.handled_changed() => record.save(dispatcher.handled()),
            _ = &mut stop => return record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(before: u64, events: &[(u64, &str, &str)]) -> HandledEvents {
        HandledEvents {
            before,
            events: events
                .iter()
                .map(|(t, o, n)| (*t, o.to_string(), n.to_string()))
                .collect(),
        }
    }

    #[test]
    fn saves_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = HandledRecord::open(dir.path(), Marks::new()).unwrap();
        let mut marks = Marks::from([("deploy".to_string(), mark(4, &[(9, "a", "deploy")]))]);
        record.save(marks.clone());
        marks
            .get_mut("deploy")
            .unwrap()
            .insert(10, "b".into(), "deploy".into());
        marks.insert("other".into(), mark(0, &[(10, "b", "deploy")]));
        record.save(marks.clone());
        record.sync();
        assert_eq!(load(dir.path()), marks);
        // Each run added one line; nothing was written twice.
        let text = std::fs::read_to_string(dir.path().join(HANDLED_FILE)).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
    }

    #[test]
    fn the_file_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = HandledRecord::open(dir.path(), Marks::new()).unwrap();
        let mut marks = Marks::new();
        for t in 1..=5_000u64 {
            marks
                .entry("h".into())
                .or_default()
                .insert(t, "a".into(), "e".into());
            record.save(marks.clone());
        }
        record.sync();
        drop(record);
        let text = std::fs::read_to_string(dir.path().join(HANDLED_FILE)).unwrap();
        let window = rumor_handlers::HANDLED_WINDOW as usize;
        assert!(
            text.lines().count() <= 3 * window + COMPACT_SLACK,
            "{} lines",
            text.lines().count()
        );
        assert_eq!(load(dir.path()), marks);
        assert_eq!(marks["h"].events.len(), window);
    }

    #[test]
    fn an_earlier_handled_json_is_read_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let marks = Marks::from([("deploy".to_string(), mark(3, &[(9, "a", "deploy")]))]);
        std::fs::write(
            dir.path().join(OLD_HANDLED_FILE),
            serde_json::to_vec(&marks).unwrap(),
        )
        .unwrap();
        assert_eq!(load(dir.path()), marks);
        let record = HandledRecord::open(dir.path(), load(dir.path())).unwrap();
        record.sync();
        assert!(!dir.path().join(OLD_HANDLED_FILE).exists());
        assert_eq!(load(dir.path()), marks);
    }

    #[test]
    fn a_damaged_tail_keeps_what_came_before() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(HANDLED_FILE),
            "{\"before\":{\"handler\":\"h\",\"ltime\":2}}\n\
             {\"ran\":{\"handler\":\"h\",\"ltime\":5,\"origin\":\"a\",\"name\":\"e\"}}\n\
             {\"ran\":{\"handler\":\"h\",\"lti",
        )
        .unwrap();
        assert_eq!(
            load(dir.path()),
            Marks::from([("h".to_string(), mark(2, &[(5, "a", "e")]))])
        );
    }
}
