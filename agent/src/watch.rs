//! Hot reload: the agent watches its config file, the templates its config's handlers read,
//! and its plugin directory, and reloads ([`crate::reload`]) when one changes, so an edit is
//! live within about a second without a restart or a SIGHUP.
//!
//! notify reports changes on its own thread; the debouncer (notify-debouncer-full) folds a
//! burst of them (an editor's write, rename and chmod; an archive unpacked file by file) into
//! one batch after [`DEBOUNCE`] of quiet, and this module turns a batch that concerns a watched
//! file into one message on a channel of capacity one: a reload already asked for is not asked
//! for twice. What changed does not matter: the reload re-reads everything and applies what
//! differs.
//!
//! Files are watched through their directories (editors replace a file by renaming a new one
//! over it, which a watch on the file itself would lose). Reads are not changes: the reload
//! reading a template must not trigger another reload. Folders of the plugin directory whose
//! names start with `.` are installs in progress and are ignored.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// Quiet time that ends a burst of file system events.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// A running watch; dropping it stops watching.
pub struct Watcher {
    debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    watched: Arc<Mutex<Watched>>,
    dirs: HashSet<PathBuf>,
}

/// What counts as a change.
struct Watched {
    plugin_dir: PathBuf,
    files: HashSet<PathBuf>,
}

impl Watched {
    fn concerns(&self, path: &Path) -> bool {
        if self.files.contains(path) {
            return true;
        }
        match path.strip_prefix(&self.plugin_dir) {
            Ok(rest) => match rest.components().next() {
                Some(Component::Normal(first)) => !first.to_string_lossy().starts_with('.'),
                _ => true,
            },
            Err(_) => false,
        }
    }
}

impl Watcher {
    /// Watches `plugin_dir` (created if missing) and `files`; each change sends `()` on the
    /// returned channel.
    pub fn start(
        plugin_dir: &Path,
        files: Vec<PathBuf>,
    ) -> Result<(Watcher, mpsc::Receiver<()>), String> {
        std::fs::create_dir_all(plugin_dir)
            .map_err(|e| format!("cannot create {}: {e}", plugin_dir.display()))?;
        let watched = Arc::new(Mutex::new(Watched {
            plugin_dir: absolute(plugin_dir),
            files: HashSet::new(),
        }));
        let (tx, rx) = mpsc::channel(1);
        let filter = watched.clone();
        let debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            let watched = filter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = events.iter().any(|e| {
                is_change(&e.event.kind) && e.event.paths.iter().any(|p| watched.concerns(p))
            });
            if changed {
                // Full: a reload is already pending, and it will see this change too.
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| format!("cannot watch for changes: {e}"))?;
        let mut watcher = Watcher {
            debouncer,
            watched,
            dirs: HashSet::new(),
        };
        watcher
            .debouncer
            .watch(absolute(plugin_dir), RecursiveMode::Recursive)
            .map_err(|e| format!("cannot watch {}: {e}", plugin_dir.display()))?;
        watcher.set_files(files);
        Ok((watcher, rx))
    }

    /// Watches these files from now on (the config's templates change with the config).
    pub fn set_files(&mut self, files: Vec<PathBuf>) {
        let files: HashSet<PathBuf> = files.iter().map(|f| absolute(f)).collect();
        for file in &files {
            let Some(dir) = file.parent() else { continue };
            if self.dirs.contains(dir) {
                continue;
            }
            match self.debouncer.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir.to_path_buf());
                }
                Err(e) => tracing::warn!(
                    file = %file.display(),
                    "cannot watch {} for changes ({e}); edits to it apply on `rumor reload`",
                    dir.display()
                ),
            }
        }
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .files = files;
    }
}

/// Writes, creations, removals and renames; not reads.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_folders_and_other_files_are_not_changes() {
        let watched = Watched {
            plugin_dir: "/d/plugins".into(),
            files: ["/etc/rumor/rumor.toml".into()].into(),
        };
        assert!(watched.concerns(Path::new("/etc/rumor/rumor.toml")));
        assert!(!watched.concerns(Path::new("/etc/rumor/.rumor.toml.swp")));
        assert!(watched.concerns(Path::new("/d/plugins/haproxy/haproxy.cfg.j2")));
        assert!(watched.concerns(Path::new("/d/plugins/haproxy")));
        assert!(!watched.concerns(Path::new("/d/plugins/.install-1-2/plugin.toml")));
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
    }

    #[tokio::test]
    async fn an_edit_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("rumor.toml");
        std::fs::write(&config, "a").unwrap();
        let (_watcher, mut changes) =
            Watcher::start(&dir.path().join("plugins"), vec![config.clone()]).unwrap();
        std::fs::write(dir.path().join("unrelated"), "x").unwrap();
        std::fs::write(&config, "b").unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("the edit is reported")
            .unwrap();
        std::fs::read(&config).unwrap();
        assert!(
            tokio::time::timeout(DEBOUNCE * 4, changes.recv())
                .await
                .is_err(),
            "a read is not a change"
        );
    }
}
