//! The join token's format, read by both ends: `wardjoin1.SECRET.CA_SHA256`.
//! The secret (24 random bytes, hex) authenticates the host once; the
//! fingerprint (SHA-256 of the fleet CA's DER, hex) is what the joining
//! agent checks the coordinator's chain against, before it trusts anything
//! the coordinator says.

use ring::digest;

/// What every token starts with, so that a pasted one is recognised.
pub const PREFIX: &str = "wardjoin1";

/// A parsed token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    secret: String,
    /// SHA-256 of the fleet CA certificate (DER), lowercase hex.
    pub ca_sha256: String,
}

// Never print the secret, even in a debug log.
impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_sha256", &self.ca_sha256)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a ward join token (expected {PREFIX}.SECRET.CA_SHA256)")]
pub struct NotAToken;

impl JoinToken {
    /// A token from 24 secret bytes and the CA's fingerprint.
    pub fn new(secret: &[u8; 24], ca_sha256: &str) -> JoinToken {
        JoinToken {
            secret: hex(secret),
            ca_sha256: ca_sha256.to_ascii_lowercase(),
        }
    }

    pub fn parse(text: &str) -> Result<JoinToken, NotAToken> {
        let mut parts = text.trim().split('.');
        let (Some(PREFIX), Some(secret), Some(pin), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NotAToken);
        };
        let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(secret, 48) || !is_hex(pin, 64) {
            return Err(NotAToken);
        }
        Ok(JoinToken {
            secret: secret.to_ascii_lowercase(),
            ca_sha256: pin.to_ascii_lowercase(),
        })
    }

    /// The text to hand to the host.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}.{}.{}", self.secret, self.ca_sha256)
    }

    /// SHA-256 of the secret, hex: all the coordinator stores.
    pub fn hash(&self) -> String {
        hex(digest::digest(&digest::SHA256, self.secret.as_bytes()).as_ref())
    }
}

/// SHA-256 of DER bytes, lowercase hex: a certificate's fingerprint.
pub fn fingerprint(der: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, der).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_malformed_ones_are_refused() {
        let t = JoinToken::new(&[7; 24], &"AB".repeat(32));
        let parsed = JoinToken::parse(&t.reveal()).unwrap();
        assert_eq!(parsed, t);
        assert_eq!(parsed.ca_sha256, "ab".repeat(32));
        assert!(!t.reveal().contains(&t.hash()));
        assert!(
            !format!("{t:?}").contains("0707"),
            "the secret is not in Debug"
        );
        let good = t.reveal();
        for bad in [
            "",
            PREFIX,
            &good.replace(PREFIX, "wardjoin2"),
            &format!("{good}.x"),
            &good[..good.len() - 1],
        ] {
            assert_eq!(JoinToken::parse(bad), Err(NotAToken), "{bad}");
        }
    }
}
