//! Push-pull frames and the states they carry (`read_frame` for an `Offer` or a `Reply`, over
//! a byte slice), with and without a keyring. The first byte picks how the rest is read: as
//! the raw stream, or as a body wrapped in a well-formed (and, with a keyring, sealed) frame so
//! that the state decoder itself gets the bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rumor::cluster::keyring::{Key, Keyring, SharedKeyring};
use rumor::cluster::wire::{self, Kind};
use rumor::cluster::{FrameError, MAX_FRAME_BYTES, Offer, Reply, read_frame, write_frame};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    plain: SharedKeyring,
    keyed: SharedKeyring,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        runtime: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime"),
        plain: SharedKeyring::new(None, None),
        keyed: SharedKeyring::new(Some(Keyring::new(vec![Key::generate()])), None),
    })
}

/// `body` as one frame: the envelope header, its length, then the (sealed) body.
fn framed(body: &[u8], keys: &SharedKeyring) -> Vec<u8> {
    let mut sealed = Vec::new();
    wire::seal(Kind::PushPull, body, keys.read().as_ref(), &mut sealed);
    let (header, payload) = sealed.split_at(wire::HEADER_LEN);
    let mut frame = header.to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let keys = if mode & 1 == 0 { &f.plain } else { &f.keyed };
    let stream = if mode & 2 == 0 {
        rest.to_vec()
    } else {
        framed(rest, keys)
    };
    f.runtime.block_on(async {
        let offer = read_frame::<_, Offer>(&mut &stream[..], MAX_FRAME_BYTES, keys).await;
        let reply = read_frame::<_, Reply>(&mut &stream[..], MAX_FRAME_BYTES, keys).await;
        // A small limit refuses the length before reading the body.
        if let Err(FrameError::TooLarge { len, max }) =
            read_frame::<_, Offer>(&mut &stream[..], 64, keys).await
        {
            assert!(len > max);
        }
        // What decodes, encodes and decodes again.
        if let Ok(offer) = offer {
            let mut again = Vec::new();
            write_frame(&mut again, &offer, keys)
                .await
                .expect("a frame to memory");
            read_frame::<_, Offer>(&mut &again[..], MAX_FRAME_BYTES, keys)
                .await
                .expect("a re-encoded offer reads back");
        }
        if let Ok(reply) = reply {
            let mut again = Vec::new();
            write_frame(&mut again, &reply, keys)
                .await
                .expect("a frame to memory");
            read_frame::<_, Reply>(&mut &again[..], MAX_FRAME_BYTES, keys)
                .await
                .expect("a re-encoded reply reads back");
        }
    });
});
