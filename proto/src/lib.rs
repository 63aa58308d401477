//! ward's gRPC API: the `ward.v1` package.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ward.v1");
}

/// How callers are named on the mutual-TLS channels.
pub mod identity {
    /// The common names and DNS names of a DER certificate: the names a
    /// client presents.
    pub fn certificate_names(der: &[u8]) -> Vec<String> {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Vec::new();
        };
        let mut names: Vec<String> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push((*d).to_owned());
                }
            }
        }
        names
    }

    /// The names of a tonic request's client certificate.
    pub fn peer_names<T>(req: &tonic::Request<T>) -> Vec<String> {
        req.peer_certs()
            .and_then(|c| c.first().map(|leaf| certificate_names(leaf.as_ref())))
            .unwrap_or_default()
    }
}

/// Grant signatures: ed25519 over the encoded `Grant`, checked by agents
/// against the coordinator keys they are configured with.
pub mod signing {
    use prost::Message;
    use ring::signature::{ED25519, UnparsedPublicKey};

    use crate::v1::{Grant, SignedGrant};

    /// The short name of a public key: hex of its first 8 bytes.
    pub fn key_id(public: &[u8]) -> String {
        public.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Why a signed grant was refused.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum VerifyError {
        #[error("no signature")]
        Unsigned,
        #[error("signature does not verify against any configured coordinator key")]
        BadSignature,
        #[error("signed bytes are not a grant: {0}")]
        Decode(String),
    }

    /// Verifies against any of `keys` (raw 32-byte ed25519 public keys) and
    /// decodes the grant that was signed.
    pub fn verify(signed: &SignedGrant, keys: &[Vec<u8>]) -> Result<Grant, VerifyError> {
        if signed.signature.is_empty() {
            return Err(VerifyError::Unsigned);
        }
        let ok = keys.iter().any(|k| {
            UnparsedPublicKey::new(&ED25519, k)
                .verify(&signed.grant, &signed.signature)
                .is_ok()
        });
        if !ok {
            return Err(VerifyError::BadSignature);
        }
        Grant::decode(signed.grant.as_slice()).map_err(|e| VerifyError::Decode(e.to_string()))
    }

    /// Parses a hex public key from a config file.
    pub fn parse_public_hex(s: &str) -> Option<Vec<u8>> {
        let s = s.trim();
        if s.len() != 64 {
            return None;
        }
        (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
            .collect()
    }
}
