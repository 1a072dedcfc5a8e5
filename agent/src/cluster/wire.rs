//! Our envelope around every UDP packet and TCP frame: a magic byte, a protocol version and
//! the kind of body, so a stray packet or a future protocol is rejected with a reason before
//! any decoder sees it. Encryption (a later protocol feature) will be signalled by a flag bit
//! in the kind byte; this version rejects such packets with a clear message.

use std::borrow::Cow;

use thiserror::Error;

use super::keyring::{KeyError, Keyring};

/// First byte of every rumor packet and frame ('R').
pub const MAGIC: u8 = 0x52;
/// The wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 2;
/// Bytes the envelope adds before the body.
pub const HEADER_LEN: usize = 3;
/// Set in the kind byte when the body is sealed with a cluster key.
const FLAG_ENCRYPTED: u8 = 0x80;

/// foca gives up on packets larger than this; it is the same on every node. Our envelope
/// (and, later, the AEAD frame) is added on top and still fits a 1500-byte Ethernet MTU.
pub const SWIM_PACKET_SIZE: usize = 1400;
/// Largest datagram we accept from the socket (anything longer is not ours).
pub const MAX_DATAGRAM: usize = 2048;

/// What a packet or frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A foca (SWIM) packet, possibly carrying our broadcasts.
    Swim = 1,
    /// A push-pull state exchange frame (TCP).
    PushPull = 2,
    /// A query ack or answer sent straight to the asker.
    QueryReply = 3,
    /// "Are you there?" to a suspect member, confirming a suspicion; the body is a nonce.
    Ping = 4,
    /// The answer to a [`Kind::Ping`], echoing its nonce.
    Ack = 5,
    /// A query asked again, straight to a node that has not answered; the body is the
    /// query's broadcast encoding.
    Query = 6,
    /// A user event or query spreading over the broadcast tree, or the tree's own control
    /// messages (see `plumtree.rs`).
    Tree = 7,
    /// "Still here", to the next member on the heartbeat ring (see `heartbeat.rs`); empty, and
    /// never answered: its use is that a crashed agent's host refuses it.
    Heartbeat = 8,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Swim),
            2 => Some(Kind::PushPull),
            3 => Some(Kind::QueryReply),
            4 => Some(Kind::Ping),
            5 => Some(Kind::Ack),
            6 => Some(Kind::Query),
            7 => Some(Kind::Tree),
            8 => Some(Kind::Heartbeat),
            _ => None,
        }
    }
}

/// The body of a [`Kind::Ping`] or [`Kind::Ack`].
pub fn nonce_body(nonce: u64) -> [u8; 8] {
    nonce.to_be_bytes()
}

/// The nonce in a [`Kind::Ping`] or [`Kind::Ack`] body, if it is one.
pub fn parse_nonce(body: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(body.try_into().ok()?))
}

/// Why a packet was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated packet: {0} bytes is shorter than the 3-byte header")]
    Truncated(usize),
    #[error("not a rumor packet (first byte {0:#04x}, expected {MAGIC:#04x})")]
    BadMagic(u8),
    #[error("unsupported protocol version {0} (this agent speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown packet kind {0:#04x}")]
    UnknownKind(u8),
    #[error("packet is encrypted but this agent has no encryption key (start it with --encrypt)")]
    Encrypted,
    #[error("packet not encrypted: this agent requires encryption (the sender has no key)")]
    NotEncrypted,
    #[error("{0} (tampered, or sealed with a key this agent does not have)")]
    Undecryptable(KeyError),
}

impl WireError {
    /// The packet failed the encryption check (as opposed to being malformed).
    pub fn is_crypto(&self) -> bool {
        matches!(
            self,
            WireError::Encrypted | WireError::NotEncrypted | WireError::Undecryptable(_)
        )
    }
}

/// Appends a packet or frame body to `out`: the header, then `body` — sealed with the primary
/// key when a keyring is given (the header is the associated data), unless the keyring is set
/// to send in the clear while a cluster moves to encryption.
pub fn seal(kind: Kind, body: &[u8], keyring: Option<&Keyring>, out: &mut Vec<u8>) {
    match keyring.filter(|k| k.seals()) {
        None => {
            out.extend_from_slice(&[MAGIC, PROTOCOL_VERSION, kind as u8]);
            out.extend_from_slice(body);
        }
        Some(keys) => {
            let header = [MAGIC, PROTOCOL_VERSION, kind as u8 | FLAG_ENCRYPTED];
            out.extend_from_slice(&header);
            keys.seal(&header, body, out);
        }
    }
}

/// Checks a 3-byte header: the kind, and whether the body is sealed.
pub fn parse_header(header: [u8; HEADER_LEN]) -> Result<(Kind, bool), WireError> {
    let [magic, version, kind] = header;
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let encrypted = kind & FLAG_ENCRYPTED != 0;
    let kind = Kind::from_byte(kind & !FLAG_ENCRYPTED).ok_or(WireError::UnknownKind(kind))?;
    Ok((kind, encrypted))
}

/// Returns the plain body: as is, or opened with the keyring. A sealed body without a
/// keyring, or a plain one with a keyring, is refused: an encrypted cluster and an open one
/// never mix — except while a cluster moves to encryption, when a keyring may accept plain
/// bodies too ([`Keyring::staged`]).
pub fn unseal<'a>(
    header: [u8; HEADER_LEN],
    encrypted: bool,
    body: &'a [u8],
    keyring: Option<&Keyring>,
) -> Result<Cow<'a, [u8]>, WireError> {
    match (encrypted, keyring) {
        (false, None) => Ok(Cow::Borrowed(body)),
        (true, None) => Err(WireError::Encrypted),
        (false, Some(keys)) if keys.accepts_plain() => Ok(Cow::Borrowed(body)),
        (false, Some(_)) => Err(WireError::NotEncrypted),
        (true, Some(keys)) => keys
            .open(&header, body)
            .map(Cow::Owned)
            .map_err(WireError::Undecryptable),
    }
}

/// Checks the envelope of a whole packet and returns its kind and plain body.
pub fn open<'a>(
    packet: &'a [u8],
    keyring: Option<&Keyring>,
) -> Result<(Kind, Cow<'a, [u8]>), WireError> {
    let header: [u8; HEADER_LEN] = *packet
        .first_chunk()
        .ok_or(WireError::Truncated(packet.len()))?;
    let (kind, encrypted) = parse_header(header)?;
    let body = unseal(header, encrypted, &packet[HEADER_LEN..], keyring)?;
    Ok((kind, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keyring::Key;
    use proptest::prelude::*;

    fn plain(kind: Kind, body: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        seal(kind, body, None, &mut p);
        p
    }

    #[test]
    fn round_trip_plain_and_sealed() {
        let p = plain(Kind::Swim, b"body");
        assert_eq!(
            open(&p, None),
            Ok((Kind::Swim, Cow::Borrowed(&b"body"[..])))
        );
        let keys = Keyring::new(vec![Key::generate()]);
        let mut s = Vec::new();
        seal(Kind::QueryReply, b"secret", Some(&keys), &mut s);
        assert!(
            !s.windows(6).any(|w| w == b"secret"),
            "the body is not readable"
        );
        let (kind, body) = open(&s, Some(&keys)).unwrap();
        assert_eq!((kind, &body[..]), (Kind::QueryReply, &b"secret"[..]));
    }

    #[test]
    fn encrypted_and_open_clusters_never_mix() {
        let keys = Keyring::new(vec![Key::generate()]);
        let other = Keyring::new(vec![Key::generate()]);
        let mut sealed = Vec::new();
        seal(Kind::Swim, b"x", Some(&keys), &mut sealed);
        assert_eq!(open(&sealed, None).unwrap_err(), WireError::Encrypted);
        assert_eq!(
            open(&plain(Kind::Swim, b"x"), Some(&keys)).unwrap_err(),
            WireError::NotEncrypted
        );
        assert_eq!(
            open(&sealed, Some(&other)).unwrap_err(),
            WireError::Undecryptable(KeyError::NoKeyOpens)
        );
        // The header is authenticated: changing the kind breaks the seal.
        let mut relabelled = sealed.clone();
        relabelled[2] = Kind::QueryReply as u8 | FLAG_ENCRYPTED;
        assert!(open(&relabelled, Some(&keys)).unwrap_err().is_crypto());
    }

    #[test]
    fn a_cluster_moves_to_encryption_in_three_steps() {
        let key = Key::generate();
        let open = |packet: &[u8], k: &Keyring| open(packet, Some(k)).map(|(_, b)| b.into_owned());
        let sealed_by = |k: &Keyring| {
            let mut out = Vec::new();
            seal(Kind::Swim, b"hi", Some(k), &mut out);
            out
        };
        let clear = plain(Kind::Swim, b"hi");
        // 1: keys everywhere, both accepted, sent in the clear.
        let step1 = Keyring::new(vec![key.clone()]).staged(false, false);
        assert_eq!(sealed_by(&step1), clear);
        assert_eq!(open(&clear, &step1).unwrap(), b"hi");
        // 2: sent sealed, both still accepted (a node still at step 1 is understood).
        let step2 = Keyring::new(vec![key.clone()]).staged(false, true);
        let sealed = sealed_by(&step2);
        assert_ne!(sealed, clear);
        assert_eq!(open(&sealed, &step1).unwrap(), b"hi");
        assert_eq!(open(&clear, &step2).unwrap(), b"hi");
        // 3: the clear is refused.
        let step3 = Keyring::new(vec![key]);
        assert_eq!(open(&sealed, &step3).unwrap(), b"hi");
        assert!(matches!(open(&clear, &step3), Err(WireError::NotEncrypted)));
    }

    #[test]
    fn rejects_with_a_reason() {
        assert_eq!(open(b"", None), Err(WireError::Truncated(0)));
        assert_eq!(open(b"R\x02", None), Err(WireError::Truncated(2)));
        assert_eq!(open(b"X\x02\x01", None), Err(WireError::BadMagic(b'X')));
        assert_eq!(
            open(b"R\x01\x01", None),
            Err(WireError::UnsupportedVersion(1))
        );
        assert_eq!(open(b"R\x02\x09", None), Err(WireError::UnknownKind(9)));
        assert_eq!(open(b"R\x02\x81", None), Err(WireError::Encrypted));
    }

    proptest! {
        /// Any bytes at all, with or without a keyring: an answer, never a panic.
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), keyed in any::<bool>()) {
            let keys = Keyring::new(vec![Key::generate()]);
            let _ = open(&bytes, keyed.then_some(&keys));
            // Also with a valid header in front, so the body decoders are reached.
            let mut p = vec![MAGIC, PROTOCOL_VERSION, if keyed { 0x81 } else { 0x01 }];
            p.extend_from_slice(&bytes);
            let _ = open(&p, keyed.then_some(&keys));
        }

        /// Flipping any bit of a sealed packet is always detected.
        #[test]
        fn any_flipped_bit_is_detected(body in proptest::collection::vec(any::<u8>(), 0..512), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let keys = Keyring::new(vec![Key::generate()]);
            let mut p = Vec::new();
            seal(Kind::Swim, &body, Some(&keys), &mut p);
            let i = at.index(p.len());
            p[i] ^= 1 << bit;
            prop_assert!(open(&p, Some(&keys)).is_err());
        }
    }
}
