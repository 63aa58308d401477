//! The fleet's CA, and enrolling hosts with one-time join tokens.
//!
//! - `ward-coordinator ca init` makes the CA (it is `client_ca`: it signs
//!   agents' and people's certificates) and the coordinator's own
//!   certificate; or bring your own CA and its key.
//! - `ward-coordinator token create --host db1 --ttl 15m` prints a token:
//!   `wardjoin1.SECRET.CA_SHA256`. The store keeps only the SHA-256 of the
//!   secret, the host and the deadline; a token is taken once, in the same
//!   transaction that checks it.
//! - The agent (`wardd --join TOKEN`) makes its key and a CSR, checks the
//!   enrolment listener's chain against the CA fingerprint in the token,
//!   and receives a short-lived `HOST.agent` certificate, the CA and the
//!   grant-signing keys. The private key never leaves the host. It renews
//!   over mutual TLS before expiry; a revoked host is refused both.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, pem::PemObject};
use ward_proto::join_token::{JoinToken, fingerprint};

use crate::{
    service::AGENT_SUFFIX,
    store::TokenRefusal,
    workflow::{Workflow, WorkflowError, audit},
};

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{0} exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("csr: {0}")]
    Csr(String),
    #[error("token: {0}")]
    Token(&'static str),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> EnrolError {
    EnrolError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The fleet CA, able to sign.
pub struct FleetCa {
    issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
    /// SHA-256 of the CA certificate (DER): what join tokens pin.
    pub fingerprint: String,
    /// How long an agent's certificate lasts.
    pub agent_ttl: Duration,
}

impl FleetCa {
    pub fn load(cert: &Path, key: &Path, agent_ttl: Duration) -> Result<FleetCa, EnrolError> {
        let ca_pem = std::fs::read_to_string(cert).map_err(|e| file_error(cert, e))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| file_error(key, e))?;
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| file_error(key, e))?;
        let der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| file_error(cert, e))?;
        let issuer = Issuer::from_ca_cert_der(&der, key_pair).map_err(|e| file_error(cert, e))?;
        Ok(FleetCa {
            issuer,
            fingerprint: fingerprint(der.as_ref()),
            ca_pem,
            agent_ttl,
        })
    }

    /// `HOST.agent`'s certificate for the public key of `csr_der`, valid
    /// for `agent_ttl`. Nothing else in the CSR is used. Returns the PEM
    /// and its end (Unix ms).
    pub fn issue_agent(&self, host: &str, csr_der: &[u8]) -> Result<(String, i64), EnrolError> {
        let csr = parse_csr(csr_der)?;
        let name = format!("{host}{AGENT_SUFFIX}");
        let params = leaf_params(&name, std::slice::from_ref(&name), false, self.agent_ttl)?;
        // The end the certificate carries, not a second reading of the clock.
        let not_after = (params.not_after.unix_timestamp_nanos() / 1_000_000) as i64;
        let cert = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| EnrolError::Certificate(e.to_string()))?;
        Ok((cert.pem(), not_after))
    }
}

/// A CSR whose self-signature verifies.
pub fn parse_csr(csr_der: &[u8]) -> Result<CertificateSigningRequestParams, EnrolError> {
    CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
        .map_err(|e| EnrolError::Csr(e.to_string()))
}

/// Parameters of a leaf: `name` as common name, `sans` as DNS names,
/// client or server use, valid for `ttl` (from a little earlier).
fn leaf_params(
    name: &str,
    sans: &[String],
    server: bool,
    ttl: Duration,
) -> Result<CertificateParams, EnrolError> {
    let mut p = CertificateParams::new(sans.to_vec())
        .map_err(|e| EnrolError::Certificate(format!("`{name}`: {e}")))?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Backdated for clock skew, by a tenth of the life at most, so that a
    // short-lived certificate is not renewed the moment it arrives.
    let skew = (ttl / 10).min(Duration::from_secs(60));
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - skew;
    p.not_after = now + ttl;
    Ok(p)
}

/// Writes `text` to a new file with `mode`; an existing file is an error.
fn create(path: &Path, text: &str, mode: u32) -> Result<(), EnrolError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => EnrolError::Exists(path.to_owned()),
            _ => file_error(path, e),
        })?;
    f.write_all(text.as_bytes())
        .map_err(|e| file_error(path, e))
}

/// `ca init`: a new fleet CA (P-256, ten years) at `cert`/`key`.
pub fn init_ca(cert: &Path, key: &Path, name: &str) -> Result<(), EnrolError> {
    for p in [cert, key] {
        if p.exists() {
            return Err(EnrolError::Exists(p.to_owned()));
        }
    }
    let key_pair = KeyPair::generate().map_err(|e| EnrolError::Certificate(e.to_string()))?;
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrolError::Certificate(e.to_string()))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(1);
    p.not_after = now + time::Duration::days(3650);
    let ca = p
        .self_signed(&key_pair)
        .map_err(|e| EnrolError::Certificate(e.to_string()))?;
    // The key first and private: a CA certificate without its key is
    // harmless, the reverse is not.
    create(key, &key_pair.serialize_pem(), 0o600)?;
    create(cert, &ca.pem(), 0o644)
}

/// `ca issue`: a certificate for `name` (a person, a tool, or with
/// `server` the coordinator itself, under each of `sans`), its key made
/// here, both written to `cert`/`key`.
pub fn issue_named(
    ca: &FleetCa,
    name: &str,
    sans: &[String],
    server: bool,
    ttl: Duration,
    cert: &Path,
    key: &Path,
) -> Result<(), EnrolError> {
    for p in [cert, key] {
        if p.exists() {
            return Err(EnrolError::Exists(p.to_owned()));
        }
    }
    let key_pair = KeyPair::generate().map_err(|e| EnrolError::Certificate(e.to_string()))?;
    let issued = leaf_params(name, sans, server, ttl)?
        .signed_by(&key_pair, &ca.issuer)
        .map_err(|e| EnrolError::Certificate(e.to_string()))?;
    create(key, &key_pair.serialize_pem(), 0o600)?;
    // A server sends its chain: the agents joining check the CA in it.
    let text = if server {
        format!("{}{}", issued.pem(), ca.ca_pem)
    } else {
        issued.pem()
    };
    create(cert, &text, 0o644)
}

/// A new token for the CA with `fingerprint`: (the token, the SHA-256 of
/// its secret, which is all the store keeps).
pub fn new_token(fingerprint: &str) -> Result<(String, String), EnrolError> {
    let mut secret = [0u8; 24];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| EnrolError::Token("the system's random source failed"))?;
    let token = JoinToken::new(&secret, fingerprint);
    Ok((token.reveal(), token.hash()))
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Host names as agents present them: lowercase DNS labels.
fn check_host(host: &str) -> Result<(), WorkflowError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !host.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(WorkflowError::Invalid {
            field: "host".into(),
            reason: format!("`{host}` is not a lowercase host name (a-z, 0-9, '-', '.')"),
        })
    }
}

/// The enrolment steps that touch the store, each audited.
impl Workflow {
    /// A new single-use token for `host`, valid for `ttl`: (token, its
    /// deadline in Unix ms). Only the secret's hash is stored.
    pub fn create_join_token(
        &mut self,
        fingerprint: &str,
        host: &str,
        ttl: Duration,
        actor: &str,
    ) -> Result<(String, i64), WorkflowError> {
        check_host(host)?;
        let (token, hash) =
            new_token(fingerprint).map_err(|e| WorkflowError::Enrolment(e.to_string()))?;
        let expires = unix_ms(SystemTime::now() + ttl);
        self.store.write(|tx| {
            if tx.host_revoked(host)? {
                return Err(WorkflowError::Enrolment(format!(
                    "host `{host}` is revoked; it cannot join again"
                )));
            }
            tx.insert_token(&hash, host, expires)?;
            audit(
                tx,
                "",
                actor,
                "token_created",
                format!(
                    "join token for host {host}, valid {}",
                    humantime::format_duration(ttl)
                ),
            )?;
            Ok((token, expires))
        })
    }

    /// Takes a join token (by its secret's hash): the host it was made for,
    /// or why it is refused. Refusals are audited too, never the token.
    pub fn join(&mut self, hash: &str) -> Result<String, WorkflowError> {
        let now = unix_ms(SystemTime::now());
        let outcome = self.store.write(|tx| -> Result<_, WorkflowError> {
            let refused = match tx.take_token(hash, now)? {
                Ok(host) if tx.host_revoked(&host)? => {
                    format!("host `{host}` is revoked")
                }
                Ok(host) => {
                    audit(
                        tx,
                        "",
                        &format!("{host}{AGENT_SUFFIX}"),
                        "host_joined",
                        format!("host {host} joined with a token"),
                    )?;
                    return Ok(Ok(host));
                }
                Err(TokenRefusal::Unknown) => "the join token is not valid".to_owned(),
                Err(TokenRefusal::Used(host)) => {
                    format!("the join token for host `{host}` was used already")
                }
                Err(TokenRefusal::Expired(host)) => {
                    format!("the join token for host `{host}` has expired")
                }
            };
            audit(tx, "", "enrolment", "join_refused", refused.clone())?;
            Ok(Err(refused))
        })?;
        outcome.map_err(WorkflowError::Enrolment)
    }

    /// Whether `host` may renew its certificate (it is not revoked); the
    /// renewal is audited.
    pub fn renew(&mut self, host: &str, not_after_ms: i64) -> Result<(), WorkflowError> {
        self.store
            .write(|tx| -> Result<Result<(), String>, WorkflowError> {
                let actor = format!("{host}{AGENT_SUFFIX}");
                if tx.host_revoked(host)? {
                    audit(
                        tx,
                        "",
                        &actor,
                        "renewal_refused",
                        format!("host {host} is revoked"),
                    )?;
                    return Ok(Err(format!("host `{host}` is revoked")));
                }
                audit(
                    tx,
                    "",
                    &actor,
                    "agent_renewed",
                    format!("certificate for host {host} until {not_after_ms} (unix ms)"),
                )?;
                Ok(Ok(()))
            })?
            .map_err(WorkflowError::Enrolment)
    }

    /// Revokes a host: its streams close, and it may neither renew nor
    /// join again.
    pub fn revoke_host(&mut self, host: &str, actor: &str) -> Result<(), WorkflowError> {
        check_host(host)?;
        let now = unix_ms(SystemTime::now());
        self.store.write(|tx| {
            tx.revoke_host(host, now)?;
            audit(
                tx,
                "",
                actor,
                "host_revoked",
                format!("host {host} revoked"),
            )?;
            Ok(())
        })
    }

    pub fn host_revoked(&mut self, host: &str) -> Result<bool, WorkflowError> {
        Ok(self.store.read(|tx| tx.host_revoked(host))?)
    }

    pub fn revoked_hosts(&mut self) -> Result<Vec<String>, WorkflowError> {
        Ok(self.store.read(|tx| tx.revoked_hosts())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_pins_the_ca_and_the_store_sees_only_a_hash() {
        let (token, hash) = new_token(&"ab".repeat(32)).unwrap();
        let parsed = JoinToken::parse(&token).unwrap();
        assert_eq!(parsed.hash(), hash);
        assert_eq!(parsed.ca_sha256, "ab".repeat(32));
        assert!(!token.contains(&hash));
    }

    #[test]
    fn an_agent_certificate_names_only_its_host_whatever_the_csr_asks() {
        let dir = std::env::temp_dir().join(format!("ward-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        init_ca(&cert, &key, "test fleet").unwrap();
        assert!(matches!(
            init_ca(&cert, &key, "again"),
            Err(EnrolError::Exists(_))
        ));
        let ca = FleetCa::load(&cert, &key, Duration::from_secs(3600)).unwrap();
        let agent_key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["root-admin".to_owned()]).unwrap();
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = asked.serialize_request(&agent_key).unwrap();
        let (pem, not_after) = ca.issue_agent("db1", csr.der()).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let names: Vec<String> = x509
            .subject()
            .iter_common_name()
            .filter_map(|c| c.as_str().ok().map(str::to_owned))
            .collect();
        assert_eq!(names, ["db1.agent"]);
        assert!(!x509.is_ca());
        assert!(not_after > unix_ms(SystemTime::now()));
        assert!(ca.issue_agent("db1", b"garbage").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
