//! The snapshot a restart rejoins from (`cluster::snapshot::load`): any file gives what came
//! before its first damaged line (and says what the damage was), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rumor::cluster::snapshot;
use rumor_fuzz::scratch_file;

fuzz_target!(|data: &[u8]| {
    let path = scratch_file(snapshot::SNAPSHOT_FILE, data);
    let (_restored, problem) = snapshot::load(&path);
    if let Some(problem) = problem {
        assert!(!problem.is_empty());
    }
});
