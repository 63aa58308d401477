//! Coordinator sessions: what a person holds after signing in through an
//! identity provider, presented as `authorization: Bearer` on gRPC calls
//! and as the web page's cookie.
//!
//! A session is a small JSON document signed with the coordinator's key
//! (replicas share it, so any replica accepts any replica's session),
//! after a context no grant can start with. It names the person and the
//! issuer and subject their name is bound to; each call also checks that
//! binding in the store, so a name rebound or removed there ends the
//! sessions made for the old one. Each session also has an id of its own:
//! signing out records it as ended, which every replica reads.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};

use crate::{signer::Signer, store::Person};

/// What every session token starts with: easy to spot in a leak, and to
/// tell from a grant or an ID token.
pub const PREFIX: &str = "ward-session.v1.";

/// Signed before the payload: no protobuf `Grant` begins with these bytes
/// (0x77 is field 14 with wire type 7, which does not exist).
const CONTEXT: &[u8] = b"ward-session-v1\0";
/// The same for a browser sign-in's cookie; neither is the other.
const LOGIN_CONTEXT: &[u8] = b"ward-login-v1\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random, unique to this session: what signing out ends. Empty in a
    /// session issued before sessions had ids, which is refused.
    #[serde(default)]
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub issued_unix_ms: i64,
    pub expires_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("not a ward session token")]
    Malformed,
    #[error("the session's signature is not this coordinator's")]
    Signature,
    #[error("the session expired; sign in again (`ward login`)")]
    Expired,
    /// The issuer is no longer in the coordinator's config.
    #[error("the session's issuer {0} is no longer trusted")]
    Untrusted(String),
    /// The name is bound to another identity now, or to none.
    #[error("`{0}` is no longer bound to the identity this session names; sign in again")]
    Unbound(String),
    #[error("this session was signed out; sign in again (`ward login`)")]
    Ended,
    #[error("this session predates the coordinator's upgrade; sign in again (`ward login`)")]
    Outdated,
    #[error("the system's random source failed: no session id")]
    Random,
}

/// Issues sessions, and checks the ones callers present.
pub struct Sessions {
    signer: Arc<Signer>,
    /// The issuers in the config now.
    trusted: Vec<String>,
    ttl: Duration,
}

impl Sessions {
    pub fn new(signer: Arc<Signer>, trusted: Vec<String>, ttl: Duration) -> Sessions {
        Sessions {
            signer,
            trusted,
            ttl,
        }
    }

    /// A session for a person who has just signed in.
    pub fn issue(&self, person: &Person, now_ms: i64) -> Result<(String, Session), SessionError> {
        let s = Session {
            id: session_id()?,
            name: person.name.clone(),
            issuer: person.issuer.clone(),
            subject: person.subject.clone(),
            issued_unix_ms: now_ms,
            expires_unix_ms: now_ms.saturating_add(self.ttl.as_millis() as i64),
        };
        Ok((issue(&self.signer, &s), s))
    }

    /// The session `token` carries, if it is this coordinator's, current,
    /// and from a trusted issuer: everything but the binding, checked
    /// without the store.
    pub fn verified(&self, token: &str, now_ms: i64) -> Result<Session, SessionError> {
        let s = verify(&self.signer, token, now_ms)?;
        if !self.trusted.contains(&s.issuer) {
            return Err(SessionError::Untrusted(s.issuer));
        }
        Ok(s)
    }

    /// Whether `s` still holds in the store: not signed out (`ended`), and
    /// its name still bound (`bound`) to the identity it names.
    pub fn still_holds(
        &self,
        s: &Session,
        bound: Option<&Person>,
        ended: bool,
    ) -> Result<(), SessionError> {
        if ended {
            return Err(SessionError::Ended);
        }
        match bound {
            Some(p) if p.issuer == s.issuer && p.subject == s.subject => Ok(()),
            _ => Err(SessionError::Unbound(s.name.clone())),
        }
    }

    /// A browser sign-in's own state (state, nonce, PKCE verifier), sealed
    /// for its cookie: the callback, on any replica, reads it back intact.
    pub fn seal_login(&self, payload: &[u8]) -> String {
        let sig = self.signer.sign_in_context(LOGIN_CONTEXT, payload);
        format!("{}.{}", B64.encode(payload), B64.encode(sig))
    }

    /// What [`Sessions::seal_login`] sealed, if this coordinator sealed it.
    pub fn open_login(&self, sealed: &str) -> Option<Vec<u8>> {
        let (payload, sig) = sealed.split_once('.')?;
        let (payload, sig) = (B64.decode(payload).ok()?, B64.decode(sig).ok()?);
        self.signer
            .verify_in_context(LOGIN_CONTEXT, &payload, &sig)
            .then_some(payload)
    }
}

/// 128 random bits: no two sessions share an id.
fn session_id() -> Result<String, SessionError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut id = [0u8; 16];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| SessionError::Random)?;
    Ok(B64.encode(id))
}

/// The token for `s`.
pub fn issue(signer: &Signer, s: &Session) -> String {
    // Serialising a struct of strings and integers cannot fail.
    let payload = serde_json::to_vec(s).unwrap_or_default();
    let sig = signer.sign_in_context(CONTEXT, &payload);
    format!("{PREFIX}{}.{}", B64.encode(&payload), B64.encode(sig))
}

/// The session `token` carries, if this coordinator signed it and it has
/// not expired at `now_ms`.
pub fn verify(signer: &Signer, token: &str, now_ms: i64) -> Result<Session, SessionError> {
    let rest = token.strip_prefix(PREFIX).ok_or(SessionError::Malformed)?;
    let (payload, sig) = rest.split_once('.').ok_or(SessionError::Malformed)?;
    let payload = B64.decode(payload).map_err(|_| SessionError::Malformed)?;
    let sig = B64.decode(sig).map_err(|_| SessionError::Malformed)?;
    if !signer.verify_in_context(CONTEXT, &payload, &sig) {
        return Err(SessionError::Signature);
    }
    let s: Session = serde_json::from_slice(&payload).map_err(|_| SessionError::Malformed)?;
    if s.expires_unix_ms <= now_ms {
        return Err(SessionError::Expired);
    }
    if s.id.is_empty() {
        return Err(SessionError::Outdated);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(tag: &str) -> Signer {
        let dir = std::env::temp_dir().join(format!("ward-session-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Signer::create(&dir.join("k.pk8")).unwrap()
    }

    /// alice's session from 1,000 ms to 2,000 ms, with an id of its own.
    fn alice() -> Session {
        Session {
            id: session_id().unwrap(),
            name: "alice".into(),
            issuer: "https://idp.example".into(),
            subject: "u-1".into(),
            issued_unix_ms: 1_000,
            expires_unix_ms: 2_000,
        }
    }

    #[test]
    fn a_session_verifies_until_it_expires_and_nothing_else_does() {
        let (ours, theirs) = (signer("ours"), signer("theirs"));
        let s = alice();
        let token = issue(&ours, &s);
        assert_eq!(verify(&ours, &token, 1_500), Ok(s.clone()));
        assert_eq!(verify(&ours, &token, 2_000), Err(SessionError::Expired));
        assert_eq!(verify(&theirs, &token, 1_500), Err(SessionError::Signature));
        // Another name in the same signature.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let forged = serde_json::to_vec(&Session {
            name: "root".into(),
            ..s.clone()
        })
        .unwrap();
        let forged = format!("{PREFIX}{}.{sig}", B64.encode(forged));
        assert_ne!(forged.rsplit_once('.').unwrap().0, head);
        assert_eq!(verify(&ours, &forged, 1_500), Err(SessionError::Signature));
        assert_eq!(
            verify(&ours, "Bearer x", 1_500),
            Err(SessionError::Malformed)
        );
        assert_eq!(
            verify(&ours, &format!("{PREFIX}!!.!!"), 1_500),
            Err(SessionError::Malformed)
        );
        // Issued before sessions had ids: it could not be signed out.
        let old = issue(
            &ours,
            &Session {
                id: String::new(),
                ..s.clone()
            },
        );
        assert_eq!(verify(&ours, &old, 1_500), Err(SessionError::Outdated));
    }

    #[test]
    fn a_signed_out_or_unbound_session_no_longer_holds() {
        let sessions = Sessions::new(
            Arc::new(signer("holds")),
            vec!["https://idp.example".into()],
            Duration::from_secs(60),
        );
        let s = alice();
        assert_ne!(s.id, session_id().unwrap(), "each session has its own id");
        assert_eq!(
            sessions.still_holds(&s, None, false),
            Err(SessionError::Unbound("alice".into()))
        );
        assert_eq!(
            sessions.still_holds(&s, None, true),
            Err(SessionError::Ended),
            "signed out comes first"
        );
    }
}
