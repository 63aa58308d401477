//! Grant signatures: ed25519 over the grant's exact protobuf bytes.

use prost::Message;
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use ward_proto::v1::{Grant, SignedGrant};

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("signing key {path}: {message}")]
    Key { path: String, message: String },
}

pub struct Signer {
    key: Ed25519KeyPair,
    key_id: String,
}

pub use ward_proto::signing::{VerifyError, key_id, parse_public_hex, verify};

/// A new PKCS#8 ed25519 key (`ward-coordinator keygen`).
pub fn generate() -> Result<Vec<u8>, ring::error::Unspecified> {
    Ok(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())?
        .as_ref()
        .to_vec())
}

impl Signer {
    /// Generates a key into a new file that is 0600 from its creation (it
    /// never exists with wider permissions), and loads it.
    pub fn create(path: &std::path::Path) -> Result<Signer, SignerError> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let err = |message: String| SignerError::Key {
            path: path.display().to_string(),
            message,
        };
        let der = generate().map_err(|_| err("generating a key failed".into()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    err("exists; refusing to overwrite a key".into())
                }
                _ => err(e.to_string()),
            })?;
        file.write_all(&der)
            .and_then(|()| file.sync_all())
            .map_err(|e| err(e.to_string()))?;
        Signer::from_pkcs8(path)
    }

    /// Loads a key; one that others may read is refused.
    pub fn from_pkcs8(path: &std::path::Path) -> Result<Signer, SignerError> {
        use std::os::unix::fs::MetadataExt;
        let err = |message: String| SignerError::Key {
            path: path.display().to_string(),
            message,
        };
        let mode = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .mode();
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "is readable or writable by others (mode {:04o}); run `chmod 600` on it",
                mode & 0o7777
            )));
        }
        let der = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let key = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|e| err(format!("not an ed25519 PKCS#8 key: {e}")))?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(Signer { key, key_id })
    }

    /// The public key agents configure, as hex.
    pub fn public_hex(&self) -> String {
        self.key
            .public_key()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Signs `msg` after a context that no grant's protobuf bytes can
    /// start with, so no signature over one is ever valid for the other.
    pub fn sign_in_context(&self, context: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(context.len() + msg.len());
        bytes.extend_from_slice(context);
        bytes.extend_from_slice(msg);
        self.key.sign(&bytes).as_ref().to_vec()
    }

    /// Whether `signature` is this key's over `context` then `msg`.
    pub fn verify_in_context(&self, context: &[u8], msg: &[u8], signature: &[u8]) -> bool {
        let mut bytes = Vec::with_capacity(context.len() + msg.len());
        bytes.extend_from_slice(context);
        bytes.extend_from_slice(msg);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, self.key.public_key())
            .verify(&bytes, signature)
            .is_ok()
    }

    pub fn sign(&self, grant: &Grant) -> SignedGrant {
        let bytes = grant.encode_to_vec();
        let signature = self.key.sign(&bytes).as_ref().to_vec();
        SignedGrant {
            grant: bytes,
            signature,
            key_id: self.key_id.clone(),
            host_proof: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_tampering_is_refused() {
        let dir = std::env::temp_dir().join(format!("ward-signer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.pk8");
        let _ = std::fs::remove_file(&path);
        let s = Signer::create(&path).unwrap();
        let key = parse_public_hex(&s.public_hex()).unwrap();
        let g = Grant {
            id: "r-1".into(),
            expires_at_unix_ms: 42,
            ..Default::default()
        };
        let signed = s.sign(&g);
        assert_eq!(verify(&signed, std::slice::from_ref(&key)).unwrap(), g);
        let mut tampered = signed.clone();
        let last = tampered.grant.len() - 1;
        tampered.grant[last] ^= 1;
        assert_eq!(
            verify(&tampered, std::slice::from_ref(&key)),
            Err(VerifyError::BadSignature)
        );
        let unsigned = SignedGrant {
            signature: Vec::new(),
            ..signed
        };
        assert_eq!(verify(&unsigned, &[key]), Err(VerifyError::Unsigned));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_key_is_created_0600_and_a_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ward-keymode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.pk8");
        Signer::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Signer::create(&path).err().expect("never overwritten");
        assert!(
            again.to_string().contains("refusing to overwrite"),
            "{again}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Signer::from_pkcs8(&path).err().expect("refused");
        assert!(err.to_string().contains("mode 0644"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
