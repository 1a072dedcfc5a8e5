//! Broadcast-tree frames (`cluster::node::plumtree::decode`): any bytes decode to a frame or
//! an error; a frame encodes back to the bytes it came from (those of a PRUNE, LINK or LINKED
//! may be followed by more, which are ignored on purpose: a later version may add to them);
//! and a broadcast it carries decodes or is refused.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rumor::cluster::message::Broadcast;
use rumor::cluster::plumtree::{self, Frame, Out};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = plumtree::decode(data) else {
        return;
    };
    let out = match &frame {
        Frame::Gossip(msg) => Out::Gossip(Arc::from(*msg)),
        Frame::Direct(msg) => Out::Direct(Arc::from(*msg)),
        Frame::IHave(ids) => Out::IHave(ids.clone()),
        Frame::Graft(ids) => Out::Graft(ids.clone()),
        Frame::Prune => Out::Prune,
        Frame::Link => Out::Link,
        Frame::Linked => Out::Linked,
    };
    let mut encoded = Vec::new();
    plumtree::encode(&out, &mut encoded);
    let carries_nothing = matches!(frame, Frame::Prune | Frame::Link | Frame::Linked);
    if carries_nothing {
        assert!(
            data.starts_with(&encoded),
            "{frame:?} does not encode back to its bytes"
        );
    } else {
        assert_eq!(encoded, data, "{frame:?} does not encode back to its bytes");
    }
    if let Frame::Gossip(msg) | Frame::Direct(msg) = frame
        && let Ok(broadcast) = Broadcast::decode(msg)
    {
        // What decodes re-encodes and decodes to the same.
        let again = Broadcast::decode(&broadcast.encode()).expect("a re-encoded broadcast decodes");
        assert_eq!(again, broadcast);
    }
});
