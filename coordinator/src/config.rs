//! `coordinator.toml`. Unknown keys are errors naming the key and line.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// e.g. "0.0.0.0:7444". Mutual TLS only.
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signs agents' and people's client certificates.
    pub client_ca: PathBuf,
    /// The SQLite database lives here.
    pub state_dir: PathBuf,
    /// PostgreSQL instead of SQLite, e.g. "postgres://ward@db:5432/ward":
    /// replicas given the same URL share one state.
    pub database: Option<String>,
    /// The CA that signed the PostgreSQL server's certificate. Required
    /// for a server that is not on this host: TLS is verified there.
    pub database_ca: Option<PathBuf>,
    /// "auto" (verified TLS unless the server is on this host and no CA
    /// is named), "verify", or "off".
    #[serde(default)]
    pub database_tls: crate::database::DatabaseTls,
    /// ed25519 PKCS#8 key (`ward-coordinator keygen`).
    pub signing_key: PathBuf,
    /// People who may revoke any request.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Pending requests expire after this long.
    #[serde(default = "default_ttl", with = "duration")]
    pub pending_ttl: Duration,
    /// Connections admitted at once, in all and from one address.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Messages queued for one agent's stream; an agent that falls this
    /// far behind is disconnected and resyncs from a snapshot.
    #[serde(default = "default_stream_buffer")]
    pub stream_buffer: usize,
    /// How far ahead a request may schedule its start (`--at`).
    #[serde(default = "default_schedule_ahead", with = "duration")]
    pub max_schedule_ahead: Duration,
    pub policy: PolicySection,
    /// Notified of created, approved, denied, expired, released, revoked.
    #[serde(default)]
    pub webhooks: Vec<crate::webhook::Webhook>,
    /// Prometheus `/metrics` and `/healthz`; off unless configured.
    pub metrics: Option<MetricsSection>,
    /// Hosts join with one-time tokens; off unless configured.
    pub enrolment: Option<EnrolmentSection>,
    /// Identity providers people sign in through (`ward login`, the web
    /// page); without one, people use client certificates only.
    #[serde(default)]
    pub oidc: Vec<crate::oidc::OidcSection>,
    /// How long a session from a sign-in lasts.
    #[serde(default = "default_session_ttl", with = "duration")]
    pub session_ttl: Duration,
    /// The reviewer's web page; off unless configured (and needs `[[oidc]]`).
    pub web: Option<WebSection>,
}

/// `[web]`: the reviewer's page, served over HTTPS with the coordinator's
/// certificate; people sign in through the first `[[oidc]]` issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// `ADDR:PORT`, e.g. `0.0.0.0:7445`.
    pub listen: String,
    /// The page's address as browsers reach it, e.g.
    /// `https://ward.example.com:7445`: the provider redirects back to
    /// `{public_url}/callback`, which must be registered with it.
    pub public_url: String,
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

/// `[enrolment]`: the fleet CA is `client_ca`; its key signs agents'
/// certificates, which joining hosts fetch with a join token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentSection {
    /// `ADDR:PORT` of the enrolment listener: TLS with the coordinator's
    /// certificate, no client certificate (a joining host has none yet).
    pub listen: String,
    /// The private key of `client_ca`.
    pub ca_key: PathBuf,
    /// How long an agent's certificate lasts; agents renew at two thirds.
    #[serde(default = "default_agent_cert_ttl", with = "duration")]
    pub agent_cert_ttl: Duration,
}

fn default_agent_cert_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// `[metrics]`: where `/metrics` (Prometheus text format) and `/healthz` are
/// served. Plain HTTP without authentication, on a listener of its own:
/// bind it to loopback or a management network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `ADDR:PORT`, e.g. `127.0.0.1:9465`.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub files: Vec<PathBuf>,
    pub directory: Option<PathBuf>,
    /// People and groups from an LDAP server, polled: the `request`,
    /// `request_for` and `review` policies see them as agents do.
    pub ldap: Option<ward_ldap::LdapSource>,
}

fn default_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_connections() -> usize {
    16_384
}

fn default_max_connections_per_peer() -> usize {
    1_024
}

fn default_stream_buffer() -> usize {
    1_024
}

fn default_schedule_ahead() -> Duration {
    Duration::from_secs(30 * 86_400)
}

pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not a duration like 15m or 8h: {e}"))
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads the config; relative paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut c: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(l) = &c.policy.ldap {
            l.check().map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        for o in &c.oidc {
            o.check().map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(w) = &c.web {
            if c.oidc.is_empty() {
                return Err(invalid(
                    "[web] needs an [[oidc]] issuer: people sign in to the page through it".into(),
                ));
            }
            if !w.public_url.starts_with("https://") {
                return Err(invalid(format!(
                    "web.public_url `{}` must be an https:// URL",
                    w.public_url
                )));
            }
        }
        if c.session_ttl.is_zero() {
            return Err(invalid("session_ttl must be longer than 0s".into()));
        }
        if let Some(dir) = path.parent() {
            for p in [
                &mut c.cert,
                &mut c.key,
                &mut c.client_ca,
                &mut c.state_dir,
                &mut c.signing_key,
            ]
            .into_iter()
            .chain(c.policy.files.iter_mut())
            .chain(c.policy.directory.iter_mut())
            .chain(
                c.policy
                    .ldap
                    .iter_mut()
                    .flat_map(|l| l.ca_file.iter_mut().chain(l.bind_password_file.iter_mut())),
            )
            .chain(c.database_ca.iter_mut())
            .chain(c.enrolment.iter_mut().map(|e| &mut e.ca_key))
            .chain(
                c.oidc
                    .iter_mut()
                    .flat_map(|o| o.client_secret_file.iter_mut().chain(o.ca_file.iter_mut())),
            )
            .chain(
                c.webhooks
                    .iter_mut()
                    .flat_map(|w| std::iter::once(&mut w.secret_file).chain(w.ca_file.as_mut())),
            ) {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads a config of the required lines and `extra`; the error text.
    fn refused(tag: &str, extra: &str) -> String {
        let dir = std::env::temp_dir().join(format!("ward-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("coordinator.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\ncert = \"c.pem\"\nkey = \"c.key\"\nclient_ca = \"ca.pem\"\n\
                 state_dir = \"state\"\nsigning_key = \"s.key\"\n{extra}\n[policy]\nfiles = [\"p.cedar\"]\n"
            ),
        )
        .unwrap();
        Config::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn sign_in_settings_are_checked_and_named() {
        let web = "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://ward.example\"\n";
        assert!(refused("web-alone", web).contains("[web] needs an [[oidc]] issuer"));
        let oidc = "[[oidc]]\nissuer = \"https://idp.example\"\nclient_id = \"ward\"\n";
        assert_eq!(refused("ok", &format!("{oidc}{web}")), "");
        let http = "[web]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://ward.example\"\n";
        assert!(refused("http", &format!("{oidc}{http}")).contains("must be an https:// URL"));
        let mapping = format!("{oidc}[oidc.attributes]\nshoe_size = \"shoe\"\n");
        assert!(refused("mapping", &mapping).contains("oidc.attributes.shoe_size"));
        let typo = "[[oidc]]\nissuer = \"https://idp.example\"\nclient = \"ward\"\n";
        assert!(
            refused("typo", typo).contains("client"),
            "unknown keys are named"
        );
        assert!(refused("ttl", "session_ttl = \"0s\"").contains("session_ttl"));
    }
}
