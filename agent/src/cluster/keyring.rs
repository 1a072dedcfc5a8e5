//! The cluster keyring: AES-256-GCM keys shared by every member. The primary key seals what
//! this node sends; every installed key opens what it receives, so keys rotate without a
//! partition (install everywhere → make primary everywhere → remove the old one).
//!
//! A sealed body is `nonce (12) ‖ ciphertext ‖ tag (16)`, with a fresh random nonce per
//! message (never a counter: the key is shared by many nodes and survives restarts), and the
//! envelope header as associated data so it cannot be altered either.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Bytes sealing adds to a message: the nonce and the tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;
/// Name of the keyring file in the data directory.
pub const KEYRING_FILE: &str = "keyring.json";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("invalid key: not base64 ({0})")]
    NotBase64(String),
    #[error(
        "invalid key: {0} bytes after base64 decoding, an AES-256 key is 32 bytes (make one with `rumor keygen`)"
    )]
    WrongLength(usize),
    #[error("key {0} is not installed")]
    NotInstalled(String),
    #[error(
        "key {0} is the primary key: make another key primary (`rumor keys --use`) before removing it"
    )]
    RemovePrimary(String),
    #[error("no key opens this message")]
    NoKeyOpens,
    #[error("sealed message too short: {0} bytes")]
    TooShort(usize),
}

/// One AES-256-GCM key.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; KEY_LEN],
}

impl Key {
    /// A new random key (`rumor keygen`).
    pub fn generate() -> Key {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random number generator works");
        Key { bytes }
    }

    /// Parses the base64 form `rumor keygen` prints.
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        let raw = BASE64
            .decode(text.trim())
            .map_err(|e| KeyError::NotBase64(e.to_string()))?;
        let bytes: [u8; KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(raw.len()))?;
        Ok(Key { bytes })
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.bytes)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.bytes).expect("32 bytes is an AES-256 key"),
        )
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl fmt::Debug for Key {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The installed keys; the first is the primary. While a cluster moves to encryption (see
/// [`Keyring::staged`]) it may also send in the clear, or accept what is sent in the clear.
pub struct Keyring {
    keys: Vec<(Key, LessSafeKey)>,
    rng: SystemRandom,
    /// Send in the clear (`encrypt_verify_outgoing = false`).
    send_plain: bool,
    /// Accept what arrives in the clear (`encrypt_verify_incoming = false`).
    accept_plain: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Clone for Keyring {
    fn clone(&self) -> Self {
        Keyring::new(self.keys().cloned().collect()).staged(!self.accept_plain, !self.send_plain)
    }
}

impl Keyring {
    /// A keyring with `keys`, the first one primary. Duplicates are dropped.
    pub fn new(keys: Vec<Key>) -> Keyring {
        let mut ring = Keyring {
            keys: Vec::new(),
            rng: SystemRandom::new(),
            send_plain: false,
            accept_plain: false,
        };
        for key in keys {
            ring.install(key);
        }
        ring
    }

    /// How strictly the keys are used, for moving a live cluster to encryption in three
    /// steps: every node accepts both and sends in the clear (`false`, `false`), then sends
    /// sealed (`false`, `true`), then refuses the clear (`true`, `true`: the default).
    pub fn staged(mut self, verify_incoming: bool, verify_outgoing: bool) -> Keyring {
        self.accept_plain = !verify_incoming;
        self.send_plain = !verify_outgoing;
        self
    }

    /// Sets how strictly the keys are used (see [`Keyring::staged`]) in place.
    pub fn set_stage(&mut self, verify_incoming: bool, verify_outgoing: bool) {
        self.accept_plain = !verify_incoming;
        self.send_plain = !verify_outgoing;
    }

    /// Whether what is sent goes sealed.
    pub fn seals(&self) -> bool {
        !self.send_plain
    }

    /// Whether what arrives in the clear is accepted too.
    pub fn accepts_plain(&self) -> bool {
        self.accept_plain
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter().map(|(k, _)| k)
    }

    pub fn primary(&self) -> Option<&Key> {
        self.keys.first().map(|(k, _)| k)
    }

    /// Adds a key that opens messages (it does not seal until made primary).
    pub fn install(&mut self, key: Key) {
        if !self.keys.iter().any(|(k, _)| *k == key) {
            let aead = key.aead();
            self.keys.push((key, aead));
        }
    }

    /// Makes an installed key the primary (the one that seals).
    pub fn use_key(&mut self, key: &Key) -> Result<(), KeyError> {
        let at = self
            .keys
            .iter()
            .position(|(k, _)| k == key)
            .ok_or_else(|| KeyError::NotInstalled(key.to_base64()))?;
        let entry = self.keys.remove(at);
        self.keys.insert(0, entry);
        Ok(())
    }

    /// Removes a key; the primary cannot be removed.
    pub fn remove(&mut self, key: &Key) -> Result<(), KeyError> {
        if self.primary() == Some(key) {
            return Err(KeyError::RemovePrimary(key.to_base64()));
        }
        let before = self.keys.len();
        self.keys.retain(|(k, _)| k != key);
        if self.keys.len() == before {
            return Err(KeyError::NotInstalled(key.to_base64()));
        }
        Ok(())
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` of `plaintext` to `out`, sealed with the primary key
    /// and bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let (_, aead) = self
            .keys
            .first()
            .expect("a keyring always has a primary key");
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random number generator works");
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(start);
        aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .expect("AES-GCM sealing of an in-memory buffer");
        out.extend_from_slice(&body);
    }

    /// Opens a sealed message with whichever installed key sealed it.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(KeyError::TooShort(sealed.len()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        for (_, aead) in &self.keys {
            let mut buf = body.to_vec();
            if let Ok(plain) = aead.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            ) {
                let len = plain.len();
                buf.truncate(len);
                return Ok(buf);
            }
        }
        Err(KeyError::NoKeyOpens)
    }

    /// The keyring file in `data_dir`.
    pub fn file_in(data_dir: &Path) -> PathBuf {
        data_dir.join(KEYRING_FILE)
    }

    /// Reads a keyring file: a JSON list of base64 keys, primary first (Serf's format too).
    pub fn load(path: &Path) -> Result<Keyring, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the keyring {}: {e}", path.display()))?;
        let list: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| format!("keyring {} is not a JSON list of keys: {e}", path.display()))?;
        let keys = list
            .iter()
            .map(|k| Key::parse(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("keyring {}: {e}", path.display()))?;
        if keys.is_empty() {
            return Err(format!("keyring {} holds no keys", path.display()));
        }
        Ok(Keyring::new(keys))
    }

    /// Writes the keyring file (mode 0600) atomically: a crash leaves the old or the new one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let list: Vec<String> = self.keys().map(Key::to_base64).collect();
        let text = serde_json::to_string_pretty(&list).expect("a list of strings is JSON");
        write_private(path, &text)
    }
}

/// Writes `text` (and a newline) to `path` atomically with mode 0600.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    crate::journal::replace_file(path, format!("{text}\n").as_bytes(), 0o600)
}

/// Where a key change stands among all others: the Lamport time of the query that carried it,
/// then its asker's name. Every node orders changes the same way, and applies a change only
/// if it is later than the last one it applied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyChangeStamp {
    pub ltime: u64,
    pub origin: String,
}

impl KeyChangeStamp {
    /// Where the last change applied to the keyring at `keyring` is kept: beside it, in a
    /// file of its own, so the keyring stays a plain list (Serf's format, used in place).
    pub fn file_for(keyring: &Path) -> PathBuf {
        keyring.with_extension("order")
    }

    /// The last change applied, if one was recorded (an unreadable record reads as none, said
    /// in the log: the keys themselves are intact).
    fn read(path: &Path) -> Option<KeyChangeStamp> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text)
            .inspect_err(|e| {
                tracing::warn!("ignoring the key change record {}: {e}", path.display())
            })
            .ok()
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        write_private(
            path,
            &serde_json::to_string(self).expect("plain data is JSON"),
        )
    }
}

/// A change to the keyring, as `rumor keys` asks every node to make.
#[derive(Debug, Clone)]
pub enum KeyChange {
    Install(Key),
    Use(Key),
    Remove(Key),
}

/// The keyring as the actor and the push-pull tasks share it (`None`: encryption is off), and
/// the file it is persisted to.
#[derive(Clone, Default)]
pub struct SharedKeyring {
    keys: Arc<RwLock<Option<Keyring>>>,
    file: Option<PathBuf>,
    /// The last key change applied (kept beside the keyring file too).
    last_change: Arc<Mutex<Option<KeyChangeStamp>>>,
}

impl SharedKeyring {
    /// `keys` as the agent resolved them; the last change applied is read back from `file`.
    pub fn new(keys: Option<Keyring>, file: Option<PathBuf>) -> Self {
        let last_change = file
            .as_deref()
            .and_then(|f| KeyChangeStamp::read(&KeyChangeStamp::file_for(f)));
        SharedKeyring {
            keys: Arc::new(RwLock::new(keys)),
            file,
            last_change: Arc::new(Mutex::new(last_change)),
        }
    }

    /// The current keys. Do not hold the guard across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, Option<Keyring>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A running agent's encryption set anew (a reload): turned on with `key` when it is off
    /// (the keyring file is written first), and applied as strictly as `verify_incoming` and
    /// `verify_outgoing` say. Turning it off needs a restart. Returns what it is now.
    pub fn restage(
        &self,
        key: Option<&str>,
        verify_incoming: bool,
        verify_outgoing: bool,
    ) -> Result<String, String> {
        let mut guard = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let mut note = "";
        match (guard.as_mut(), key) {
            (Some(ring), key) => {
                let configured = key.and_then(|k| Key::parse(k).ok());
                if configured.is_some_and(|k| !ring.keys().any(|have| *have == k)) {
                    note = "; the config's `encrypt` key is not applied: change keys with `rumor keys`";
                }
                ring.set_stage(verify_incoming, verify_outgoing);
            }
            (None, None) => return Ok("encryption off".into()),
            (None, Some(key)) => {
                let key = Key::parse(key).map_err(|e| format!("encrypt: {e}"))?;
                let ring = Keyring::new(vec![key]).staged(verify_incoming, verify_outgoing);
                if let Some(file) = &self.file {
                    ring.save(file)
                        .map_err(|e| format!("cannot write the keyring {}: {e}", file.display()))?;
                }
                *guard = Some(ring);
            }
        }
        let ring = guard.as_ref().expect("set above");
        let sending = if ring.seals() {
            "sealed"
        } else {
            "in the clear"
        };
        let accepting = if ring.accepts_plain() {
            "both"
        } else {
            "sealed only"
        };
        Ok(format!(
            "encryption on (sending {sending}, accepting {accepting}){note}"
        ))
    }

    /// The installed keys in base64, primary first (empty when encryption is off).
    pub fn list(&self) -> Vec<String> {
        self.read()
            .as_ref()
            .map(|k| k.keys().map(Key::to_base64).collect())
            .unwrap_or_default()
    }

    /// Applies a change made at `stamp`, persists the keyring file, and returns the keys
    /// afterwards. A change no later than the last one applied is refused: a captured
    /// `rumor keys` sent again cannot undo a newer change. The file is written before the
    /// change takes effect in memory, so a node never runs with keys it would lose on restart.
    pub fn change(&self, change: &KeyChange, stamp: KeyChangeStamp) -> Result<Vec<String>, String> {
        let mut guard = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let Some(current) = guard.as_ref() else {
            return Err("encryption is not enabled on this node (start it with --encrypt)".into());
        };
        let mut last = self.last_change.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(applied) = last.as_ref()
            && stamp <= *applied
        {
            return Err(format!(
                "refused: this key change (time {} from {}) is not later than the last one applied (time {} from {}); a change sent again is never applied twice",
                stamp.ltime, stamp.origin, applied.ltime, applied.origin
            ));
        }
        let mut next = current.clone();
        match change {
            KeyChange::Install(key) => next.install(key.clone()),
            KeyChange::Use(key) => next.use_key(key).map_err(|e| e.to_string())?,
            KeyChange::Remove(key) => next.remove(key).map_err(|e| e.to_string())?,
        }
        if let Some(file) = &self.file {
            // The order first: a crash between the two leaves the change refused if sent
            // again, never an older change accepted.
            let order = KeyChangeStamp::file_for(file);
            stamp
                .save(&order)
                .map_err(|e| format!("cannot write {}: {e}", order.display()))?;
            next.save(file)
                .map_err(|e| format!("cannot write the keyring {}: {e}", file.display()))?;
        }
        let keys = next.keys().map(Key::to_base64).collect();
        *guard = Some(next);
        *last = Some(stamp);
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_with_any_installed_key() {
        let old = Key::generate();
        let new = Key::generate();
        let sender = Keyring::new(vec![old.clone()]);
        let mut sealed = b"hdr".to_vec();
        sender.seal(b"hdr", b"hello", &mut sealed);
        assert_eq!(sealed.len(), 3 + 5 + SEAL_OVERHEAD);
        let receiver = Keyring::new(vec![new.clone(), old.clone()]);
        assert_eq!(receiver.open(b"hdr", &sealed[3..]).unwrap(), b"hello");
        // The header is authenticated too.
        assert_eq!(
            receiver.open(b"HDR", &sealed[3..]),
            Err(KeyError::NoKeyOpens)
        );
        // A flipped bit anywhere is caught.
        for i in 3..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                receiver.open(b"hdr", &bad[3..]),
                Err(KeyError::NoKeyOpens),
                "byte {i}"
            );
        }
        let stranger = Keyring::new(vec![new]);
        assert_eq!(
            stranger.open(b"hdr", &sealed[3..]),
            Err(KeyError::NoKeyOpens)
        );
        assert_eq!(stranger.open(b"hdr", b"short"), Err(KeyError::TooShort(5)));
    }

    #[test]
    fn fresh_nonces_make_every_seal_different() {
        let ring = Keyring::new(vec![Key::generate()]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        ring.seal(b"", b"same", &mut a);
        ring.seal(b"", b"same", &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn rotation_install_use_remove() {
        let (k1, k2) = (Key::generate(), Key::generate());
        let mut ring = Keyring::new(vec![k1.clone()]);
        ring.install(k2.clone());
        assert_eq!(ring.primary(), Some(&k1));
        assert!(matches!(ring.remove(&k1), Err(KeyError::RemovePrimary(_))));
        ring.use_key(&k2).unwrap();
        assert_eq!(ring.primary(), Some(&k2));
        ring.remove(&k1).unwrap();
        assert_eq!(ring.keys().count(), 1);
        assert!(matches!(ring.remove(&k1), Err(KeyError::NotInstalled(_))));
        assert!(matches!(ring.use_key(&k1), Err(KeyError::NotInstalled(_))));
    }

    #[test]
    fn keys_parse_from_base64_and_say_what_is_wrong() {
        let k = Key::generate();
        assert_eq!(Key::parse(&k.to_base64()).unwrap(), k);
        assert!(matches!(
            Key::parse("not base64!"),
            Err(KeyError::NotBase64(_))
        ));
        assert_eq!(
            Key::parse(&BASE64.encode([0u8; 16])),
            Err(KeyError::WrongLength(16))
        );
        assert_eq!(format!("{k:?}"), "Key(..)", "no key material in logs");
    }

    #[test]
    fn the_keyring_file_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = Keyring::file_in(dir.path());
        let ring = Keyring::new(vec![Key::generate(), Key::generate()]);
        ring.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Keyring::load(&path).unwrap();
        assert!(back.keys().eq(ring.keys()));
        std::fs::write(&path, "[]").unwrap();
        assert!(Keyring::load(&path).unwrap_err().contains("no keys"));
        std::fs::write(&path, "{").unwrap();
        assert!(Keyring::load(&path).unwrap_err().contains("JSON"));
    }

    fn stamp(ltime: u64, origin: &str) -> KeyChangeStamp {
        KeyChangeStamp {
            ltime,
            origin: origin.into(),
        }
    }

    #[test]
    fn an_older_key_change_never_undoes_a_newer_one_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = Keyring::file_in(dir.path());
        let (first, second) = (Key::generate(), Key::generate());
        let shared =
            SharedKeyring::new(Some(Keyring::new(vec![first.clone()])), Some(path.clone()));
        let install = KeyChange::Install(second.clone());
        shared.change(&install, stamp(5, "a")).unwrap();
        shared
            .change(&KeyChange::Remove(second.clone()), stamp(6, "b"))
            .unwrap();
        // The install, sent again: refused, the key stays removed.
        let err = shared.change(&install, stamp(5, "a")).unwrap_err();
        assert!(err.contains("not later"), "{err}");
        assert_eq!(shared.list(), [first.to_base64()]);
        // After a restart the order is read back from the file.
        let restarted = SharedKeyring::new(Some(Keyring::load(&path).unwrap()), Some(path));
        assert!(restarted.change(&install, stamp(5, "a")).is_err());
        assert!(restarted.change(&install, stamp(7, "a")).is_ok());
    }
}
