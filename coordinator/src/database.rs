//! How the coordinator reaches PostgreSQL. It re-reads requests there
//! before signing them and sends revocations through its outbox, so the
//! connection is TLS with the server's certificate verified (rustls),
//! required for any server that is not on this host, and never falls back
//! to plaintext once TLS is asked for.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use postgres::config::{Host, SslMode};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;

/// `database_tls` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseTls {
    /// Verify when the server is not on this host, or when a CA is named.
    #[default]
    Auto,
    /// Always TLS, verified against `database_ca`.
    Verify,
    /// In the clear, even to another host (warned about at start).
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("database: not a PostgreSQL URL: {0}")]
    Url(String),
    #[error(
        "database: `{host}` is not on this host, so TLS with certificate verification is \
         required: set database_ca to the CA that signed the server's certificate (or \
         database_tls = \"off\" to send requests and grants in the clear)"
    )]
    TlsRequired { host: String },
    #[error(
        "database_tls = \"verify\" needs database_ca: the CA that signed the server's certificate"
    )]
    NoCa,
    #[error("database_ca {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
}

/// A PostgreSQL server and how to secure the connection to it.
pub struct Target {
    pub config: postgres::Config,
    /// None: plaintext (a server on this host, or `database_tls = "off"`).
    pub tls: Option<rustls::ClientConfig>,
}

impl Target {
    /// The server(s) it reaches, `host:port` (or a socket directory),
    /// for messages: never the URL, which may carry a password.
    pub fn server(&self) -> String {
        let ports = self.config.get_ports();
        let hosts = self.config.get_hosts();
        if hosts.is_empty() {
            return "the default server".to_owned();
        }
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(dir) => format!("{} (port {port})", dir.display()),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn new(url: &str, ca: Option<&Path>, mode: DatabaseTls) -> Result<Target, DatabaseError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| DatabaseError::Url(e.to_string()))?;
        let remote = config.get_hosts().iter().find_map(|h| match h {
            Host::Tcp(name) if !is_loopback(name) => Some(name.clone()),
            _ => None,
        });
        let verify = match mode {
            DatabaseTls::Off => {
                if let Some(host) = &remote {
                    tracing::warn!(
                        host = %host,
                        "database_tls = \"off\": requests and grants travel to PostgreSQL in the clear"
                    );
                }
                false
            }
            DatabaseTls::Verify => true,
            DatabaseTls::Auto => ca.is_some() || remote.is_some(),
        };
        if !verify {
            return Ok(Target { config, tls: None });
        }
        let Some(ca) = ca else {
            return Err(match remote {
                Some(host) if mode == DatabaseTls::Auto => DatabaseError::TlsRequired { host },
                _ => DatabaseError::NoCa,
            });
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_error(ca, e))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
        // A server that declines TLS is refused, never used in the clear.
        config.ssl_mode(SslMode::Require);
        Ok(Target {
            config,
            tls: Some(tls),
        })
    }
}

fn ca_error(path: &Path, reason: impl std::fmt::Display) -> DatabaseError {
    DatabaseError::Ca {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, DatabaseError> {
    pem_roots(path).map_err(|reason| ca_error(path, reason))
}

/// The certificates of a PEM file, as trust roots (the database's CA, a
/// webhook's `ca_file`); Err says why not.
pub(crate) fn pem_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(roots)
}

/// This host: `localhost` or a loopback address.
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_another_host_needs_verified_tls() {
        let remote = "postgres://ward@db.internal:5432/ward";
        assert!(matches!(
            Target::new(remote, None, DatabaseTls::Auto),
            Err(DatabaseError::TlsRequired { host }) if host == "db.internal"
        ));
        assert!(matches!(
            Target::new("postgres://ward@10.1.2.3/ward", None, DatabaseTls::Auto),
            Err(DatabaseError::TlsRequired { .. })
        ));
        // On this host, plaintext by default; asked for, TLS needs a CA.
        for local in [
            "postgres://ward@127.0.0.1:5432/ward",
            "postgres://ward@localhost/ward",
            "postgres://ward@[::1]/ward",
        ] {
            let t = Target::new(local, None, DatabaseTls::Auto).unwrap();
            assert!(t.tls.is_none(), "{local}");
        }
        assert!(matches!(
            Target::new("postgres://ward@127.0.0.1/ward", None, DatabaseTls::Verify),
            Err(DatabaseError::NoCa)
        ));
        // Off is an explicit choice.
        assert!(
            Target::new(remote, None, DatabaseTls::Off)
                .unwrap()
                .tls
                .is_none()
        );
        let missing = Path::new("/nonexistent/ca.pem");
        assert!(matches!(
            Target::new(remote, Some(missing), DatabaseTls::Auto),
            Err(DatabaseError::Ca { .. })
        ));
    }

    #[test]
    fn a_server_is_named_without_its_password() {
        let t = Target::new(
            "postgres://ward:s3cret@127.0.0.1:6543/ward",
            None,
            DatabaseTls::Auto,
        )
        .unwrap();
        assert_eq!(t.server(), "127.0.0.1:6543");
        let t = Target::new(
            "host=/run/postgresql user=ward password=s3cret",
            None,
            DatabaseTls::Auto,
        )
        .unwrap();
        assert_eq!(t.server(), "/run/postgresql (port 5432)");
    }
}
