//! What each handler has run recently, kept across restarts in `<data dir>/handled.json`, so a
//! restarted agent does not run a user event twice when the cluster delivers it again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rumor_handlers::{Dispatcher, HandledEvents};
use tracing::{error, warn};

// Handlers remember as many Lamport times as the cluster deduplicates over.
const _: () =
    assert!(rumor_handlers::HANDLED_WINDOW == crate::cluster::event_buffer::EVENT_WINDOW as u64);

/// Name of the file in the data directory.
pub const HANDLED_FILE: &str = "handled.json";

/// Handler name → the events it ran recently.
pub type Marks = BTreeMap<String, HandledEvents>;

pub fn file_in(data_dir: &Path) -> PathBuf {
    data_dir.join(HANDLED_FILE)
}

/// Reads the marks; a missing file is none, a damaged one is reported and ignored.
pub fn load(path: &Path) -> Marks {
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

/// Writes the marks atomically (temporary file, fsync, rename).
pub fn save(path: &Path, marks: &Marks) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        // Encoded in memory and written at once: serde_json writes a file token by token, and
        // a record of 180 events took 8,232 write calls per save, i.e. per handler run.
        let mut bytes = serde_json::to_vec(marks).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Saves the dispatcher's record each time a handler finishes a user event — at once, so a
/// crash right after a run does not make it run again after the restart. Call [`save`] once
/// more at shutdown.
///
/// Each save fsyncs, which can take a second on a busy disk, so it runs on the blocking pool:
/// a runtime worker stuck in fsync would stall the control API and the handlers. Runs that
/// finish during a save are written together by the next one.
pub async fn keep_saved(path: PathBuf, dispatcher: Dispatcher) {
    let mut saved = Marks::new();
    loop {
        dispatcher.handled_changed().await;
        let marks = dispatcher.handled();
        if marks == saved {
            continue;
        }
        let file = path.clone();
        let written = tokio::task::spawn_blocking(move || save(&file, &marks).map(|()| marks));
        match written.await {
            Ok(Ok(marks)) => saved = marks,
            Ok(Err(e)) => {
                error!(file = %path.display(), "cannot record what the handlers ran: {e}")
            }
            Err(e) => error!("the handler record writer failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_in(dir.path());
        assert!(load(&path).is_empty());
        let marks = Marks::from([(
            "deploy".to_string(),
            HandledEvents {
                before: 0,
                events: [(9, "a".to_string(), "deploy".to_string())].into(),
            },
        )]);
        save(&path, &marks).unwrap();
        assert_eq!(load(&path), marks);

        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&path).is_empty());
    }
}
