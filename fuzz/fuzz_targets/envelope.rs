//! Fuzzes the envelope decoder — the first code every datagram from the network meets — with
//! and without a keyring, and the decoders behind it for whatever gets through.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rumor::cluster::keyring::{Key, Keyring};
use rumor::cluster::message::Broadcast;
use rumor::cluster::query::QueryReply;
use rumor::cluster::wire::{self, Kind};

fn keys() -> &'static Keyring {
    static KEYS: OnceLock<Keyring> = OnceLock::new();
    KEYS.get_or_init(|| Keyring::new(vec![Key::generate()]))
}

fuzz_target!(|data: &[u8]| {
    let _ = wire::open(data, Some(keys()));
    if let Ok((kind, body)) = wire::open(data, None) {
        match kind {
            Kind::QueryReply => {
                let _ = QueryReply::decode(&body);
            }
            Kind::Swim | Kind::PushPull => {
                let _ = Broadcast::decode(&body);
            }
        }
    }
});
