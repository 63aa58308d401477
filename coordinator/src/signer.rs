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
    pub fn from_pkcs8(path: &std::path::Path) -> Result<Signer, SignerError> {
        let err = |message: String| SignerError::Key {
            path: path.display().to_string(),
            message,
        };
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

    pub fn sign(&self, grant: &Grant) -> SignedGrant {
        let bytes = grant.encode_to_vec();
        let signature = self.key.sign(&bytes).as_ref().to_vec();
        SignedGrant {
            grant: bytes,
            signature,
            key_id: self.key_id.clone(),
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
        std::fs::write(&path, generate().unwrap()).unwrap();
        let s = Signer::from_pkcs8(&path).unwrap();
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
}
