//! ward's gRPC API (the `ward.v1` package), and what its two sides
//! share: the wire vocabulary's conversions ([`ops`]), error and text
//! rendering, logging, metrics, join tokens, transport and caller names.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ward.v1");
}

/// An error and its sources, `: `-joined: the cause a wrapped error (a
/// TLS alert inside a transport error) does not show at the top.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

pub mod hostset;
pub mod join_token;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod text;
pub mod transport;

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

    /// Why a certificate does not name one identity.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum IdentityError {
        #[error("the client certificate names nobody (no common name or DNS name)")]
        Anonymous,
        #[error(
            "the client certificate names {0:?}: a certificate must name exactly one \
             identity, its common name and DNS names agreeing"
        )]
        Ambiguous(Vec<String>),
        #[error("the client certificate name {0:?} has characters other than printable ASCII")]
        Unprintable(String),
    }

    /// The one identity a certificate names, in canonical form: ASCII
    /// lowercase. Names are compared as DNS names are, without case, so
    /// `Alice` and `alice` are one identity; a certificate that names two
    /// identities (an agent's with a person's SAN, say) names none.
    pub fn canonical(names: &[String]) -> Result<String, IdentityError> {
        let mut canon: Vec<String> = Vec::new();
        for n in names {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(IdentityError::Unprintable(n.clone()));
            }
            let c = n.to_ascii_lowercase();
            if !canon.contains(&c) {
                canon.push(c);
            }
        }
        match canon.len() {
            0 => Err(IdentityError::Anonymous),
            1 => Ok(canon.remove(0)),
            _ => Err(IdentityError::Ambiguous(names.to_vec())),
        }
    }

    /// The canonical identity of a tonic request's client certificate.
    pub fn peer_identity<T>(req: &tonic::Request<T>) -> Result<String, IdentityError> {
        canonical(&peer_names(req))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn names(n: &[&str]) -> Vec<String> {
            n.iter().map(|s| s.to_string()).collect()
        }

        #[test]
        fn a_certificate_names_one_identity_without_case() {
            assert_eq!(canonical(&names(&["Alice", "alice"])), Ok("alice".into()));
            assert_eq!(
                canonical(&names(&["db1.agent", "DB1.agent"])),
                Ok("db1.agent".into())
            );
            assert!(matches!(
                canonical(&names(&["db1.agent", "dave"])),
                Err(IdentityError::Ambiguous(_))
            ));
            assert_eq!(canonical(&[]), Err(IdentityError::Anonymous));
            assert!(matches!(
                canonical(&names(&["al ice"])),
                Err(IdentityError::Unprintable(_))
            ));
            assert!(matches!(
                canonical(&names(&["\u{430}lice"])),
                Err(IdentityError::Unprintable(_))
            ));
        }
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
        // Bytes are sliced below: only ASCII hex may reach that.
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
            .collect()
    }
}
