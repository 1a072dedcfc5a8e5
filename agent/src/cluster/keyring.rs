//! The cluster keyring: AES-256-GCM keys shared by every member. The primary key seals what
//! this node sends; every installed key opens what it receives, so keys rotate without a
//! partition (install everywhere → make primary everywhere → remove the old one).
//!
//! A sealed body is `nonce (12) ‖ ciphertext ‖ tag (16)`, with a fresh random nonce per
//! message (never a counter: the key is shared by many nodes and survives restarts), and the
//! envelope header as associated data so it cannot be altered either.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
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

/// The installed keys; the first is the primary.
pub struct Keyring {
    keys: Vec<(Key, LessSafeKey)>,
    rng: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Clone for Keyring {
    fn clone(&self) -> Self {
        Keyring::new(self.keys().cloned().collect())
    }
}

impl Keyring {
    /// A keyring with `keys`, the first one primary. Duplicates are dropped.
    pub fn new(keys: Vec<Key>) -> Keyring {
        let mut ring = Keyring {
            keys: Vec::new(),
            rng: SystemRandom::new(),
        };
        for key in keys {
            ring.install(key);
        }
        ring
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

    /// Reads a keyring file: a JSON list of base64 keys, primary first.
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
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let list: Vec<String> = self.keys().map(Key::to_base64).collect();
        let text = serde_json::to_string_pretty(&list).expect("a list of strings is JSON");
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
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
}

impl SharedKeyring {
    pub fn new(keys: Option<Keyring>, file: Option<PathBuf>) -> Self {
        SharedKeyring {
            keys: Arc::new(RwLock::new(keys)),
            file,
        }
    }

    /// The current keys. Do not hold the guard across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, Option<Keyring>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The installed keys in base64, primary first (empty when encryption is off).
    pub fn list(&self) -> Vec<String> {
        self.read()
            .as_ref()
            .map(|k| k.keys().map(Key::to_base64).collect())
            .unwrap_or_default()
    }

    /// Applies a change, persists the keyring file, and returns the keys afterwards. The file
    /// is written before the change takes effect in memory, so a node never runs with keys it
    /// would lose on restart.
    pub fn change(&self, change: &KeyChange) -> Result<Vec<String>, String> {
        let mut guard = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let Some(current) = guard.as_ref() else {
            return Err("encryption is not enabled on this node (start it with --encrypt)".into());
        };
        let mut next = current.clone();
        match change {
            KeyChange::Install(key) => next.install(key.clone()),
            KeyChange::Use(key) => next.use_key(key).map_err(|e| e.to_string())?,
            KeyChange::Remove(key) => next.remove(key).map_err(|e| e.to_string())?,
        }
        if let Some(file) = &self.file {
            next.save(file)
                .map_err(|e| format!("cannot write the keyring {}: {e}", file.display()))?;
        }
        let keys = next.keys().map(Key::to_base64).collect();
        *guard = Some(next);
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
}
