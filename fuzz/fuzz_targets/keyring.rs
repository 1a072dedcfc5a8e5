//! The keyring file (`Keyring::load`): anything is a keyring or an error naming the file; a
//! keyring that loads saves and loads back to the same keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rumor::cluster::keyring::{KEYRING_FILE, Key, Keyring};
use rumor_fuzz::{scratch_file, scratch_path};

fuzz_target!(|data: &[u8]| {
    let path = scratch_file(KEYRING_FILE, data);
    match Keyring::load(&path) {
        Ok(ring) => {
            assert!(ring.keys().count() > 0, "a keyring with no keys loaded");
            let copy = scratch_path("copy.json");
            ring.save(&copy).expect("the scratch directory is writable");
            let again = Keyring::load(&copy).expect("a saved keyring loads");
            let keys = |r: &Keyring| r.keys().map(Key::to_base64).collect::<Vec<_>>();
            assert_eq!(keys(&again), keys(&ring));
        }
        Err(e) => assert!(e.contains(&path.display().to_string()), "{e}"),
    }
});
