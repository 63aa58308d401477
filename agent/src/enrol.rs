//! Enrolment, the agent's side: `wardd --join` (the token on stdin) and renewals.
//!
//! The key is made here and never leaves the host: the coordinator sees a
//! CSR. Before it trusts anything the enrolment listener says, the agent
//! checks that the listener's chain contains the CA whose SHA-256 the token
//! carries (as kubeadm's discovery hash does), and that the CA it is handed
//! is that one. Renewals go over the fleet channel's mutual TLS, with the
//! current certificate, at two thirds of its life.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use hyper_util::rt::TokioIo;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tonic::transport::{Channel, Endpoint};
use ward_proto::{
    join_token::{JoinToken, fingerprint},
    v1::{self as pb, coordinator_client::CoordinatorClient, enrolment_client::EnrolmentClient},
};

use crate::daemon::config::CoordinatorSection;

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("token: {0}")]
    Token(#[from] ward_proto::join_token::NotAToken),
    #[error("coordinator.{0}: is not set (needed to join)")]
    NotConfigured(&'static str),
    #[error("coordinator.join_url `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("making the key or CSR: {0}")]
    Key(String),
    #[error("connecting to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the coordinator refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("reading the certificate {path}: {reason}")]
    Certificate {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Joins the fleet as `host` with `token`; writes the key, certificate,
/// CA and signing keys where `section` says. Returns the certificate's end.
pub async fn join(
    section: &CoordinatorSection,
    host: &str,
    token: &str,
) -> Result<SystemTime, EnrolError> {
    let parsed = JoinToken::parse(token)?;
    let url = section
        .join_url
        .as_deref()
        .ok_or(EnrolError::NotConfigured("join_url"))?;
    let (key, csr) = key_and_csr(host)?;
    let channel = connect_pinned(url, &parsed.ca_sha256).await?;
    let enrolled = EnrolmentClient::new(channel)
        .join(pb::JoinRequest {
            token: parsed.reveal(),
            csr: Some(pb::CertificateRequest { csr_der: csr }),
        })
        .await
        .map_err(|s| EnrolError::Refused(s.message().to_owned()))?
        .into_inner();
    if enrolled.host != host {
        return Err(EnrolError::Mismatch(format!(
            "the token is for host `{}`, and this agent is `{host}`: set coordinator.host \
             to `{}`, or make a token for `{host}`",
            enrolled.host, enrolled.host
        )));
    }
    let ca = CertificateDer::from_pem_slice(enrolled.ca_pem.as_bytes())
        .map_err(|e| EnrolError::Mismatch(format!("the CA handed over does not parse: {e}")))?;
    if fingerprint(ca.as_ref()) != parsed.ca_sha256 {
        return Err(EnrolError::Mismatch(
            "the CA handed over is not the one the token names".into(),
        ));
    }
    install(section, &key, &enrolled)?;
    Ok(unix_ms_time(enrolled.not_after_unix_ms))
}

/// Renews the certificate at two thirds of its life, forever. A refusal
/// (a revoked host) is logged as an error and tried again: the stream
/// stops working when the certificate ends, never before.
pub async fn renew_forever(section: &CoordinatorSection, renewed: &tokio::sync::Notify) {
    loop {
        let wait = match renew_at(&section.cert) {
            Ok(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            Err(e) => {
                tracing::debug!(error = %e, "no certificate to renew yet (run `wardd --join`)");
                Duration::from_secs(2)
            }
        };
        tokio::time::sleep(wait).await;
        if !section.cert.exists() {
            continue;
        }
        match renew(section).await {
            Ok(until) => {
                tracing::info!(
                    not_after = %humantime::format_rfc3339_seconds(until),
                    "agent certificate renewed"
                );
                renewed.notify_waiters();
            }
            Err(e) => {
                tracing::error!(error = %e, "certificate renewal failed; retrying in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

async fn renew(section: &CoordinatorSection) -> Result<SystemTime, EnrolError> {
    // The coordinator names the certificate after the caller's current
    // one; the CSR's names are not used.
    let host = section.host.clone().unwrap_or_else(|| "renewal".into());
    let (key, csr) = key_and_csr(&host)?;
    let channel = crate::client::connect_tls(&section.tls_target())
        .await
        .map_err(|e| EnrolError::Connect {
            url: section.url.clone(),
            reason: e.to_string(),
        })?;
    let enrolled = CoordinatorClient::new(channel)
        .renew(pb::CertificateRequest { csr_der: csr })
        .await
        .map_err(|s| EnrolError::Refused(s.message().to_owned()))?
        .into_inner();
    install(section, &key, &enrolled)?;
    Ok(unix_ms_time(enrolled.not_after_unix_ms))
}

/// When the certificate at `path` is two thirds through its life.
fn renew_at(path: &Path) -> Result<SystemTime, EnrolError> {
    let bad = |reason: String| EnrolError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let der = CertificateDer::from_pem_slice(&pem).map_err(|e| bad(e.to_string()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let validity = cert.validity();
    let from = validity.not_before.timestamp();
    let to = validity.not_after.timestamp();
    let at = from + (to - from) * 2 / 3;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(at.max(0) as u64))
}

fn unix_ms_time(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A new P-256 key and a CSR for `HOST.agent` (the coordinator sets the
/// names itself; the CSR carries the public key).
fn key_and_csr(host: &str) -> Result<(rcgen::KeyPair, Vec<u8>), EnrolError> {
    let key = rcgen::KeyPair::generate().map_err(|e| EnrolError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(vec![format!("{host}.agent")])
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{host}.agent"));
    let csr = params
        .serialize_request(&key)
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    Ok((key, csr.der().to_vec()))
}

/// Writes the key (mode 0600), certificate, CA and signing keys, each
/// through a temporary file and a rename, the key and certificate last
/// and together so that they match as far as a crash allows.
fn install(
    section: &CoordinatorSection,
    key: &rcgen::KeyPair,
    enrolled: &pb::Enrolled,
) -> Result<(), EnrolError> {
    let keys_file = section
        .public_keys_file
        .as_ref()
        .ok_or(EnrolError::NotConfigured("public_keys_file"))?;
    let keys = format!(
        "# The coordinator's grant-signing keys, as of the last enrolment or renewal.\n{}\n",
        enrolled.signing_public_keys.join("\n")
    );
    let staged = [
        (section.ca.as_path(), enrolled.ca_pem.clone(), 0o644),
        (keys_file.as_path(), keys, 0o644),
        (section.key.as_path(), key.serialize_pem(), 0o600),
        (
            section.cert.as_path(),
            enrolled.certificate_pem.clone(),
            0o644,
        ),
    ]
    .into_iter()
    .map(|(path, text, mode)| stage(path, &text, mode).map(|tmp| (tmp, path)))
    .collect::<Result<Vec<_>, _>>()?;
    for (tmp, path) in staged {
        std::fs::rename(&tmp, path).map_err(|source| EnrolError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

fn stage(path: &Path, text: &str, mode: u32) -> Result<std::path::PathBuf, EnrolError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let err = |source| EnrolError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".new");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(tmp)
}

/// A gRPC channel to `url` over TLS whose server chain must contain the CA
/// with SHA-256 `ca_sha256` and verify to it.
async fn connect_pinned(url: &str, ca_sha256: &str) -> Result<Channel, EnrolError> {
    let bad = |reason: String| EnrolError::Url {
        url: url.to_owned(),
        reason,
    };
    let uri: tonic::transport::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must be https://".into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("names no host".into()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            ca_sha256: ca_sha256.to_owned(),
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| bad(e.to_string()))?;
    let addr = format!("{host}:{port}");
    let connect = |reason: String| EnrolError::Connect {
        url: url.to_owned(),
        reason,
    };
    // The URI is required by the API; the connector dials and does TLS.
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| connect(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, name, addr) = (connector.clone(), name.clone(), addr.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| connect(ward_proto::error_chain(&e)))
}

/// Trusts a server whose chain includes the pinned CA and verifies to it
/// (names, validity, signatures: webpki's checks, with that CA as the
/// only root).
#[derive(Debug)]
struct PinnedCa {
    ca_sha256: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c.as_ref()) == self.ca_sha256)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's chain does not include the CA the join token names".into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
