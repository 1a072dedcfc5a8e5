//! What the fuzz targets share: a scratch file for the decoders that read from disk, and a
//! small deterministic world of real cluster nodes ([`world::World`]) for the target that
//! feeds datagrams to a node.

pub mod world;

use std::path::PathBuf;

/// A path in a directory of this process's own, for a target that hands a file to a loader:
/// in memory (`/dev/shm`) where there is one, as tens of thousands of files are written. The
/// same path every call: each input overwrites the last.
pub fn scratch_path(name: &str) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("rumor-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory in the temp dir");
    dir.join(name)
}

/// Writes `bytes` to [`scratch_path`]`(name)` and returns the path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_path(name);
    std::fs::write(&path, bytes).expect("the scratch file is writable");
    path
}
