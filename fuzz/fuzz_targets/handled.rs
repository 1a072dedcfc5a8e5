//! The handler record (`<data dir>/handled.log`, read by `rumor::handled::load`): any file
//! loads as a record (what came before the damage), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rumor::handled;
use rumor_fuzz::scratch_file;

fuzz_target!(|data: &[u8]| {
    let path = scratch_file(handled::HANDLED_FILE, data);
    let dir = path.parent().expect("a scratch file has a directory");
    let _ = handled::load(dir);
});
