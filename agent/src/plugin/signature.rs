//! Optional Ed25519 signatures: `plugin.sig` holds the signature of `plugin.toml` (which holds
//! the SHA-256 of every other file, so the signature covers them all). An agent that lists
//! trusted public keys (`plugin_trusted_keys`) refuses a plugin that is unsigned or not signed
//! by one of them; an agent without trusted keys does not look at signatures.
//!
//! Keys: `rumor plugin keygen` writes a private key (PKCS#8, base64, mode 0600) and prints the
//! public key (32 bytes, base64) to put in the agents' configs.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::PluginError;

/// The signature's file name in a plugin's folder.
pub const SIGNATURE: &str = "plugin.sig";

/// A trusted Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(Vec<u8>);

impl PublicKey {
    /// Parses the base64 form `rumor plugin keygen` prints.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| format!("plugin key {text:?} is not base64: {e}"))?;
        if bytes.len() != 32 {
            return Err(format!(
                "plugin key {text:?} is {} bytes, an Ed25519 public key is 32 (as `rumor plugin \
                 keygen` prints it)",
                bytes.len()
            ));
        }
        Ok(PublicKey(bytes))
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.0)
    }
}

/// A new private key, as the key file holds it (base64 PKCS#8), and its public key.
pub fn generate() -> Result<(String, PublicKey), PluginError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| PluginError::Signature("cannot generate a key".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| PluginError::Signature("cannot read the generated key".into()))?;
    Ok((
        BASE64.encode(pkcs8.as_ref()),
        PublicKey(pair.public_key().as_ref().to_vec()),
    ))
}

/// Signs `manifest` with the private key in `key_text`; the signature as `plugin.sig` holds it,
/// and the public key to trust.
pub fn sign(manifest: &[u8], key_text: &str) -> Result<(String, PublicKey), PluginError> {
    let pkcs8 = BASE64.decode(key_text.trim()).map_err(|e| {
        PluginError::Signature(format!(
            "the key file is not base64 ({e}); make one with `rumor plugin keygen`"
        ))
    })?;
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| {
        PluginError::Signature(
            "the key file is not an Ed25519 private key; make one with `rumor plugin keygen`"
                .into(),
        )
    })?;
    let signature = pair.sign(manifest);
    Ok((
        format!("{}\n", BASE64.encode(signature.as_ref())),
        PublicKey(pair.public_key().as_ref().to_vec()),
    ))
}

/// With trusted keys, the folder's `plugin.sig` must be a signature of its manifest by one of
/// them. Without, nothing is checked.
pub fn verify(dir: &Path, manifest: &[u8], trusted: &[PublicKey]) -> Result<(), PluginError> {
    if trusted.is_empty() {
        return Ok(());
    }
    let text = match std::fs::read_to_string(dir.join(SIGNATURE)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PluginError::Signature(format!(
                "the plugin is not signed ({SIGNATURE} is missing) and this agent accepts only \
                 plugins signed by its plugin_trusted_keys"
            )));
        }
        Err(e) => return Err(PluginError::Io(format!("cannot read {SIGNATURE}: {e}"))),
    };
    let signature = BASE64
        .decode(text.trim())
        .map_err(|e| PluginError::Signature(format!("{SIGNATURE} is not base64: {e}")))?;
    if trusted.iter().any(|key| {
        UnparsedPublicKey::new(&ED25519, &key.0)
            .verify(manifest, &signature)
            .is_ok()
    }) {
        Ok(())
    } else {
        Err(PluginError::Signature(format!(
            "{SIGNATURE} is not a valid signature of {} by any of this agent's \
             plugin_trusted_keys (signed by another key, or the manifest changed since)",
            super::manifest::MANIFEST
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_signature_by_a_trusted_key_passes() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = b"name = \"x\"\n";
        let (key, public) = generate().unwrap();
        let (other_key, other) = generate().unwrap();
        assert_eq!(PublicKey::parse(&public.to_base64()).unwrap(), public);

        verify(dir.path(), manifest, &[]).unwrap();
        let err = verify(dir.path(), manifest, std::slice::from_ref(&public)).unwrap_err();
        assert!(err.to_string().contains("not signed"), "{err}");

        let (sig, signer) = sign(manifest, &key).unwrap();
        assert_eq!(signer, public);
        std::fs::write(dir.path().join(SIGNATURE), sig).unwrap();
        verify(dir.path(), manifest, &[other.clone(), public.clone()]).unwrap();
        let err = verify(dir.path(), b"name = \"y\"\n", std::slice::from_ref(&public)).unwrap_err();
        assert!(err.to_string().contains("not a valid signature"), "{err}");
        let err = verify(dir.path(), manifest, &[other]).unwrap_err();
        assert!(err.to_string().contains("not a valid signature"), "{err}");

        let (sig, _) = sign(manifest, &other_key).unwrap();
        std::fs::write(dir.path().join(SIGNATURE), sig).unwrap();
        assert!(verify(dir.path(), manifest, &[public]).is_err());
        assert!(PublicKey::parse("abc").is_err());
    }
}
