//! What each handler has run recently, kept across restarts in `<data dir>/handled.log`, so a
//! restarted agent does not run a user event twice when the cluster delivers it again.
//!
//! The file is a [`Journal`] of JSON lines: per handler a `before` mark (everything stamped
//! earlier counts as run) and one `ran` line per user event it ran, appended and synced to
//! disk as soon as the run ends — one short `write` and one `fdatasync`, far cheaper than
//! rewriting the whole record (a new file, fsync, rename) after every run. The
//! dispatcher hands over each run ([`Dispatcher::handled_runs`]), so a run costs the same
//! whatever the record holds. When the file has grown to about twice what it holds, it is
//! rewritten from the current record.
//!
//! The split with the handlers crate: [`rumor_handlers::handled_events`] decides, in memory,
//! what a handler skips and remembers; this module only keeps that on disk and gives it back to
//! [`Dispatcher::restore_handled`] at the next start.

use std::collections::BTreeMap;
use std::path::Path;

use rumor_handlers::{Dispatcher, HandledEvents, HandledRun};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::warn;

use crate::journal::{self, Journal};

// After a restart the cluster delivers again up to its retention of events: handlers remember
// at least as many Lamport times, so what they ran is recognised (see docs/operations.md on what
// a restart during a long partition can still miss).
const _: () = assert!(
    rumor_handlers::HANDLED_WINDOW >= crate::cluster::node::events::DEFAULT_RETENTION_COUNT as u64
);

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
///
/// A last record cut short (a crash while it was written) costs only the run it recorded, which
/// may run again. A record damaged before its end (a damaged disk) cannot say which of the
/// events before the restart ran: then nothing of it is used, and every handler skips the events
/// that arrived before the restart — some may never have run — rather than run any of them a
/// second time; the agent says so at ERROR. Events that arrive afterwards run as usual.
pub fn load(data_dir: &Path) -> Marks {
    let path = data_dir.join(HANDLED_FILE);
    if !path.exists() {
        return load_old(&data_dir.join(OLD_HANDLED_FILE));
    }
    let mut marks = Marks::new();
    match journal::load(&path, |record| apply(&mut marks, record)) {
        None => marks,
        Some(damage) if damage.at_tail => {
            warn!(
                "the handler record's last line was cut short (a crash while it was written); the run it recorded may run again: {damage}"
            );
            marks
        }
        Some(damage) => {
            tracing::error!(
                "the handler record is damaged before its end: {damage}. Which user events ran before this restart is unknown: handlers will not run any event that arrived before it (some may never have run on this node), and run every event from now on"
            );
            Marks::new()
        }
    }
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

/// The file.
pub struct HandledRecord {
    journal: Journal,
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
        })
    }

    /// Queues `runs` to be appended and synced. Returns at once.
    pub fn append(&mut self, runs: &[HandledRun]) {
        if runs.is_empty() {
            return;
        }
        let mut records = Vec::with_capacity(runs.len());
        for run in runs {
            if run.first {
                // Whatever mark an earlier handler of that name left in the file is not this
                // one's.
                records.push(Record::Before {
                    handler: run.handler.clone(),
                    ltime: HandledEvents::default().before,
                });
            }
            records.push(Record::Ran {
                handler: run.handler.clone(),
                ltime: run.ltime,
                origin: run.origin.clone(),
                name: run.name.clone(),
            });
        }
        self.lines += records.len();
        self.journal.append(journal::lines(&records), true);
    }

    /// Whether the file holds so many lines more than a record of `size` lines (see
    /// [`Dispatcher::handled_size`]) that it should be rewritten.
    pub fn needs_compaction(&self, size: usize) -> bool {
        self.lines > 2 * size + COMPACT_SLACK
    }

    /// Queues the whole file's rewrite as `marks`. Returns at once.
    pub fn compact(&mut self, marks: &Marks) {
        self.lines = size(marks);
        self.journal.replace(image(marks));
    }

    /// Waits until everything saved is on disk.
    pub fn sync(&self) {
        self.journal.sync();
    }
}

/// Appends each user event a handler finishes to the record — at once, so a crash right after
/// a run does not make it run again after the restart — until `stop` fires; then returns the
/// record for the last runs at shutdown ([`save_last`]). The writes happen on the journal's
/// thread: the runtime never waits on the disk.
pub async fn keep_saved(
    mut record: HandledRecord,
    dispatcher: Dispatcher,
    mut stop: oneshot::Receiver<()>,
) -> HandledRecord {
    loop {
        tokio::select! {
            runs = dispatcher.handled_runs() => {
                record.append(&runs);
                if record.needs_compaction(dispatcher.handled_size()) {
                    // What was just appended is in it, and a run taken after this is
                    // appended again: a duplicate line reads back as one.
                    record.compact(&dispatcher.handled());
                }
            }
            _ = &mut stop => return record,
        }
    }
}

/// Appends the runs [`keep_saved`] has not taken and waits until everything is on disk: the
/// process ends next.
pub fn save_last(mut record: HandledRecord, dispatcher: &Dispatcher) {
    record.append(&dispatcher.take_handled());
    record.sync();
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

    fn run(handler: &str, ltime: u64, origin: &str, name: &str) -> HandledRun {
        HandledRun {
            handler: handler.into(),
            ltime,
            origin: origin.into(),
            name: name.into(),
            first: false,
        }
    }

    #[test]
    fn a_handler_replaced_by_a_reload_does_not_inherit_the_old_mark() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Marks::from([("deploy".to_string(), mark(40, &[]))]);
        let mut record = HandledRecord::open(dir.path(), opened).unwrap();
        record.append(&[HandledRun {
            first: true,
            ..run("deploy", 41, "a", "deploy")
        }]);
        record.sync();
        assert_eq!(
            load(dir.path()),
            Marks::from([("deploy".to_string(), mark(0, &[(41, "a", "deploy")]))])
        );
    }

    #[test]
    fn runs_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Marks::from([("deploy".to_string(), mark(4, &[]))]);
        let mut record = HandledRecord::open(dir.path(), opened).unwrap();
        record.append(&[run("deploy", 9, "a", "deploy")]);
        record.append(&[]);
        record.append(&[
            run("deploy", 10, "b", "deploy"),
            run("other", 10, "b", "deploy"),
        ]);
        record.sync();
        let expected = Marks::from([
            (
                "deploy".to_string(),
                mark(4, &[(9, "a", "deploy"), (10, "b", "deploy")]),
            ),
            ("other".to_string(), mark(0, &[(10, "b", "deploy")])),
        ]);
        assert_eq!(load(dir.path()), expected);
        // The mark, then one line per run; nothing was written twice.
        let text = std::fs::read_to_string(dir.path().join(HANDLED_FILE)).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[test]
    fn the_file_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = HandledRecord::open(dir.path(), Marks::new()).unwrap();
        let mut marks = Marks::new();
        let mut compactions = 0;
        for t in 1..=5_000u64 {
            marks
                .entry("h".into())
                .or_default()
                .insert(t, "a".into(), "e".into());
            record.append(&[run("h", t, "a", "e")]);
            if record.needs_compaction(size(&marks)) {
                record.compact(&marks);
                compactions += 1;
            }
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
        assert!(compactions > 1, "{compactions} compactions");
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

    #[test]
    fn damage_before_the_end_uses_nothing_of_the_record() {
        // With no marks, the agent gives every handler "everything before the restart ran":
        // no event that arrived before it runs again, and the agent says so (module docs).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(HANDLED_FILE),
            "{\"before\":{\"handler\":\"h\",\"ltime\":2}}\n\
             \u{0}\u{0}\u{0}garbage\n\
             {\"ran\":{\"handler\":\"h\",\"ltime\":5,\"origin\":\"a\",\"name\":\"e\"}}\n",
        )
        .unwrap();
        assert_eq!(load(dir.path()), Marks::new());
    }
}
