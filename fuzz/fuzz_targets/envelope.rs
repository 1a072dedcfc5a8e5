//! The envelope decoder — the first code every datagram from the network meets — with and
//! without a keyring, and the decoder of each kind's body for whatever gets through.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rumor::cluster::keyring::{Key, Keyring};
use rumor::cluster::message::{Broadcast, QueryReply};
use rumor::cluster::plumtree;
use rumor::cluster::wire::{self, Kind};

fn keys() -> &'static Keyring {
    static KEYS: OnceLock<Keyring> = OnceLock::new();
    KEYS.get_or_init(|| Keyring::new(vec![Key::generate()]))
}

fuzz_target!(|data: &[u8]| {
    let _ = wire::open(data, Some(keys()));
    let Ok((kind, body)) = wire::open(data, None) else {
        return;
    };
    match kind {
        Kind::QueryReply => {
            let _ = QueryReply::decode(&body);
        }
        // foca's packets carry our broadcasts; the node target drives foca itself.
        Kind::Swim | Kind::PushPull | Kind::Query => {
            let _ = Broadcast::decode(&body);
        }
        Kind::Tree => {
            if let Ok(plumtree::Frame::Gossip(msg) | plumtree::Frame::Direct(msg)) =
                plumtree::decode(&body)
            {
                let _ = Broadcast::decode(msg);
            }
        }
        Kind::Ping | Kind::Ack => {
            let _ = wire::parse_nonce(&body);
        }
        Kind::Heartbeat => {}
    }
});
