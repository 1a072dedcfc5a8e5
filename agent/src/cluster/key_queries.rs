//! rumor's own key queries (`rumor keys`): every node that receives one applies the change to
//! its keyring and answers with the keys it holds afterwards (a JSON list, primary first), or
//! with the error. The node hands them over as [`Effect::KeyQuery`](super::node::Effect) since
//! a change writes the keyring file; the actor answers them here.

use tracing::{info, warn};

use super::keyring::{Key, KeyChange, KeyChangeStamp, SharedKeyring};
use super::node::query;

/// Applies the key query `name` with `payload` (a base64 key, for changes) to `keyring`;
/// `stamp` (the query's Lamport time and asker) orders the change among all others.
pub fn answer(
    keyring: &SharedKeyring,
    name: &str,
    payload: &[u8],
    stamp: KeyChangeStamp,
) -> Result<Vec<u8>, String> {
    let change = |make: fn(Key) -> KeyChange| {
        let text = std::str::from_utf8(payload).map_err(|_| "the key is not text".to_string())?;
        Key::parse(text).map(make).map_err(|e| e.to_string())
    };
    let origin = stamp.origin.clone();
    let keys = match name {
        query::KEYS_LIST => {
            if keyring.read().is_none() {
                return Err("encryption is not enabled on this node".into());
            }
            Ok(keyring.list())
        }
        query::KEYS_INSTALL => keyring.change(&change(KeyChange::Install)?, stamp),
        query::KEYS_USE => keyring.change(&change(KeyChange::Use)?, stamp),
        query::KEYS_REMOVE => keyring.change(&change(KeyChange::Remove)?, stamp),
        other => Err(format!("unknown internal query {other:?}")),
    }
    .inspect_err(|e| warn!(query = name, %origin, "key change refused: {e}"))?;
    if name != query::KEYS_LIST {
        info!(query = name, keys = keys.len(), "keyring changed");
    }
    Ok(serde_json::to_vec(&keys).expect("a list of strings is JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keyring::Keyring;

    #[test]
    fn key_queries_change_the_keyring_and_answer_with_its_keys() {
        let first = Key::generate();
        let second = Key::generate();
        let keyring = SharedKeyring::new(Some(Keyring::new(vec![first.clone()])), None);
        let listed = |answer: Vec<u8>| serde_json::from_slice::<Vec<String>>(&answer).unwrap();
        let at = |ltime| KeyChangeStamp {
            ltime,
            origin: "ops".into(),
        };
        let install = second.to_base64();
        let keys =
            listed(answer(&keyring, query::KEYS_INSTALL, install.as_bytes(), at(1)).unwrap());
        assert_eq!(keys, [first.to_base64(), second.to_base64()]);
        let keys = listed(answer(&keyring, query::KEYS_LIST, b"", at(1)).unwrap());
        assert_eq!(keys.len(), 2);
        let err = answer(&keyring, query::KEYS_USE, b"not a key", at(2)).unwrap_err();
        assert!(!err.is_empty());
        let err = answer(&keyring, "_rumor_nonsense", b"", at(3)).unwrap_err();
        assert!(err.contains("_rumor_nonsense"), "{err}");
        let plain = SharedKeyring::default();
        let err = answer(&plain, query::KEYS_LIST, b"", at(4)).unwrap_err();
        assert!(err.contains("not enabled"), "{err}");
    }
}
