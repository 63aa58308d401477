//! `/etc/ward/agent.toml`: the agent's configuration.
//!
//! Unknown keys are errors, and every error names the key and the line, so
//! a typo never silently turns protection off.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Where `wardd` looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/ward/agent.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub enforce: EnforceSection,
    #[serde(default)]
    pub protect: ProtectSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// Cedar policy and the attribute directory.
    pub policy: Option<PolicySection>,
    /// The coordinator this agent takes signed grants from.
    pub coordinator: Option<CoordinatorSection>,
    pub tls: Option<TlsSection>,
    /// Prometheus `/metrics` and `/healthz`; off unless configured.
    pub metrics: Option<MetricsSection>,
    /// The file this was read from, if any: watched for host label edits.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[metrics]`: where `/metrics` (Prometheus text format) and
/// `/healthz` are served. Plain HTTP without authentication, on a listener
/// of its own: bind it to loopback or a management network.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `ADDR:PORT`, e.g. `127.0.0.1:9464`.
    pub listen: String,
}

/// Where the Cedar policy and its attributes come from. Edits to any of
/// these files (and to the user database) are picked up while running.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Cedar policy files, e.g. ["/etc/ward/policy.cedar"].
    pub files: Vec<PathBuf>,
    /// Users, groups, workloads and protected resources: TOML, or Cedar
    /// entities JSON for a `.json` file.
    pub directory: Option<PathBuf>,
    /// How often the files are checked for changes, e.g. "1s".
    #[serde(default = "default_reload", with = "humantime_serde_compat")]
    pub reload_interval: Duration,
    /// People and groups from an LDAP server, polled; workloads and
    /// resources stay in `directory`.
    pub ldap: Option<ward_ldap::LdapSource>,
}

/// The fleet channel: the agent dials the coordinator over mutual TLS and
/// keeps a stream open; grants on it must carry a valid signature.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorSection {
    /// e.g. "https://coordinator.example:7444".
    pub url: String,
    /// The name in the coordinator's certificate, if not the URL's host.
    pub domain: Option<String>,
    /// CA that signed the coordinator's certificate.
    pub ca: PathBuf,
    /// This agent's client certificate ("HOST.agent") and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// This host's name at the coordinator; default: the hostname.
    pub host: Option<String>,
    /// ed25519 public keys (hex) whose signatures are accepted.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// More keys, one hex key per line: written by `wardd --join` and by
    /// each certificate renewal (so a rotated coordinator key arrives by
    /// itself). Read at every (re)connect.
    pub public_keys_file: Option<PathBuf>,
    /// The coordinator's enrolment listener, e.g.
    /// "https://coordinator.example:7445": `wardd --join` (token on stdin) gets this
    /// host's certificate there, written to `cert`, `key` and `ca`, and
    /// wardd renews it over the fleet channel before it expires.
    pub join_url: Option<String>,
}

impl CoordinatorSection {
    /// Where and as whom the fleet channel dials.
    pub fn tls_target(&self) -> crate::client::TlsTarget {
        crate::client::TlsTarget {
            url: self.url.clone(),
            domain: self.domain.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// Every accepted signing key: the listed ones and the file's (a
    /// missing file adds none: the agent has not joined yet).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = parse_keys(&self.public_keys);
        if let Some(f) = &self.public_keys_file {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let listed: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
            keys.extend(parse_keys(&listed));
        }
        keys
    }
}

fn default_reload() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// The local control socket.
    pub socket: PathBuf,
    /// Durable state: the grant database.
    pub state_dir: PathBuf,
    /// Append-only JSON-lines audit log, hash-chained, rotated by size.
    pub audit_log: PathBuf,
    /// The grant lifecycle records, also chained, never rotated by ward;
    /// default: `lifecycle.jsonl` beside `audit_log`.
    pub lifecycle_log: Option<PathBuf>,
    /// Rotate the audit log beyond this size.
    pub audit_max_bytes: u64,
    /// Rotated audit files to keep.
    pub audit_keep: u32,
    /// Where maps and links are pinned; enforcement outlives the agent.
    pub pin_dir: PathBuf,
    /// Members may push and revoke grants on the local socket.
    pub admin_group: String,
    /// Longest grant accepted, e.g. "8h".
    #[serde(with = "humantime_serde_compat")]
    pub max_grant_duration: Duration,
    /// Host labels, e.g. env = "prod".
    pub host_labels: BTreeMap<String, String>,
    /// Local-socket connections one non-root user may hold open at once,
    /// and all non-root users together; root is never refused.
    pub max_local_connections_per_user: usize,
    pub max_local_connections: usize,
}

impl AgentSection {
    /// Where the lifecycle records go.
    pub fn lifecycle_log(&self) -> PathBuf {
        self.lifecycle_log
            .clone()
            .unwrap_or_else(|| self.audit_log.with_file_name("lifecycle.jsonl"))
    }
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            socket: PathBuf::from("/run/ward/agent.sock"),
            state_dir: PathBuf::from("/var/lib/ward"),
            audit_log: PathBuf::from("/var/log/ward/audit.jsonl"),
            lifecycle_log: None,
            audit_max_bytes: 10 * 1024 * 1024,
            audit_keep: 5,
            pin_dir: PathBuf::from("/sys/fs/bpf/ward"),
            admin_group: "ward-admin".to_owned(),
            max_grant_duration: Duration::from_secs(8 * 3600),
            host_labels: BTreeMap::new(),
            max_local_connections_per_user: 32,
            max_local_connections: 512,
        }
    }
}

pub use crate::enforcer::HookMode;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforceSection {
    pub hooks: HookMode,
    /// cgroup v2 paths, relative to the cgroup2 mount, whose subtrees are
    /// managed, e.g. "user.slice".
    pub managed_cgroups: Vec<String>,
    /// Inclusive uid ranges that are managed, e.g. [[1000, 59999]].
    pub managed_uids: Vec<[u32; 2]>,
    /// cgroup (relative to the cgroup2 mount) the connect hooks attach to
    /// when BPF LSM is unavailable; "" means the whole hierarchy.
    pub connect_cgroup: String,
}

impl Default for EnforceSection {
    fn default() -> Self {
        EnforceSection {
            hooks: HookMode::Auto,
            managed_cgroups: Vec::new(),
            managed_uids: Vec::new(),
            connect_cgroup: String::new(),
        }
    }
}

/// Objects protected for every managed subject. Until Cedar policies
/// arrive, access to them comes only from grants.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectSection {
    /// Files, or trees ending in "/": protected for read and write.
    pub paths: Vec<String>,
    /// Protected for exec.
    pub executables: Vec<String>,
    /// ADDR[/PREFIX]:PORTS, protected for connect.
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_path_rules: u32,
    /// Inodes the file rules are about (trees, files, mounts inside trees).
    pub max_objects: u32,
    pub max_net_rules: u32,
    pub max_cgroups: u32,
    /// Users and workloads the Cedar policy puts in a principal class
    /// (every directory principal with a uid or cgroup on this host).
    pub max_principals: u32,
    /// Open files of protected objects, and connections to protected
    /// destinations, that the kernel holds to end at their deadline (each
    /// kind). One more open or connect is refused.
    pub max_held: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_path_rules: 65536,
            max_objects: 16384,
            max_net_rules: 16384,
            max_cgroups: 4096,
            max_principals: 16384,
            max_held: 65536,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// e.g. "0.0.0.0:7443".
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signs client (coordinator) certificates.
    pub client_ca: PathBuf,
    /// Accepted client identities: a DNS name or common name in the
    /// client certificate.
    pub allowed_clients: Vec<String>,
    /// ed25519 public keys (hex) whose signatures a grant pushed over TLS
    /// must carry; default: `coordinator.public_keys`. A certificate says
    /// who is calling, a signature says what was approved.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// Break-glass: accept unsigned grants from allowed clients over TLS.
    /// Off by default; wardd warns at start and on every such push.
    #[serde(default)]
    pub allow_unsigned_pushes: bool,
    /// TCP connections admitted at once, in all and from one address.
    #[serde(default = "default_tls_connections")]
    pub max_connections: usize,
    #[serde(default = "default_tls_connections_per_peer")]
    pub max_connections_per_peer: usize,
}

fn default_tls_connections() -> usize {
    64
}

fn default_tls_connections_per_peer() -> usize {
    8
}

/// ed25519 public keys from hex, skipping any that do not parse (config
/// validation has named those already).
pub fn parse_keys(keys: &[String]) -> Vec<Vec<u8>> {
    keys.iter()
        .filter_map(|k| ward_proto::signing::parse_public_hex(k))
        .collect()
}

/// Names the first key in `field` that is not an ed25519 public key.
fn check_keys(field: &str, keys: &[String]) -> Result<(), InvalidConfig> {
    match keys
        .iter()
        .position(|k| ward_proto::signing::parse_public_hex(k).is_none())
    {
        Some(i) => Err(invalid(
            format!("{field}[{i}]"),
            "not a 64-hex-digit ed25519 public key",
        )),
        None => Ok(()),
    }
}

/// What is wrong with a config's text, and where.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    /// Not TOML, an unknown key, or a value of the wrong type; the
    /// parser's message names the key and line.
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    /// A value that parsed but cannot be used.
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl std::fmt::Display) -> InvalidConfig {
    InvalidConfig::Field {
        field: field.into(),
        problem: problem.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        source: InvalidConfig,
    },
}

impl Config {
    /// The keys whose signatures TLS pushes must carry.
    pub fn tls_push_keys(&self) -> Vec<Vec<u8>> {
        let listed = match (&self.tls, &self.coordinator) {
            (Some(t), _) if !t.public_keys.is_empty() => &t.public_keys,
            (_, Some(c)) => &c.public_keys,
            _ => return Vec::new(),
        };
        parse_keys(listed)
    }

    /// This host's name in signed grants: `coordinator.host`, else the
    /// hostname.
    pub fn host_name(&self) -> String {
        self.coordinator
            .as_ref()
            .and_then(|c| c.host.clone())
            .unwrap_or_else(|| {
                nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_default()
            })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|source| ConfigError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        config.source = Some(path.to_owned());
        // Policy sources and coordinator files may be named relative to
        // the config file.
        if let Some(dir) = path.parent() {
            let policy = config.policy.iter_mut().flat_map(|p| {
                let ldap = p
                    .ldap
                    .iter_mut()
                    .flat_map(|l| l.ca_file.iter_mut().chain(l.bind_password_file.iter_mut()));
                p.files.iter_mut().chain(p.directory.iter_mut()).chain(ldap)
            });
            let coordinator = config
                .coordinator
                .iter_mut()
                .flat_map(|c| [&mut c.ca, &mut c.cert, &mut c.key]);
            for f in policy.chain(coordinator) {
                if f.is_relative() {
                    *f = dir.join(&*f);
                }
            }
        }
        Ok(config)
    }

    /// Parses and checks a config; the error names the key and line.
    pub fn parse(text: &str) -> Result<Self, InvalidConfig> {
        let config: Config = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), InvalidConfig> {
        use crate::enforcer::{NetPattern, PathPattern};
        for (i, p) in self.protect.paths.iter().enumerate() {
            PathPattern::parse(p).map_err(|e| invalid(format!("protect.paths[{i}]"), e))?;
        }
        for (i, p) in self.protect.executables.iter().enumerate() {
            match PathPattern::parse(p) {
                Ok(PathPattern::File(_)) => {}
                Ok(PathPattern::Subtree(_)) => {
                    return Err(invalid(
                        format!("protect.executables[{i}]"),
                        format!("`{p}` is a directory; name the executable file"),
                    ));
                }
                Err(e) => return Err(invalid(format!("protect.executables[{i}]"), e)),
            }
        }
        for (i, n) in self.protect.networks.iter().enumerate() {
            NetPattern::parse(n).map_err(|e| invalid(format!("protect.networks[{i}]"), e))?;
        }
        for (i, [a, b]) in self.enforce.managed_uids.iter().enumerate() {
            if a > b {
                return Err(invalid(
                    format!("enforce.managed_uids[{i}]"),
                    format!("first uid {a} is above last uid {b}"),
                ));
            }
        }
        if self.enforce.managed_uids.len() > ward_abi::MAX_UID_RANGES {
            return Err(invalid(
                "enforce.managed_uids",
                format!(
                    "{} ranges; at most {} are supported",
                    self.enforce.managed_uids.len(),
                    ward_abi::MAX_UID_RANGES
                ),
            ));
        }
        if let Some(p) = &self.policy {
            if p.files.is_empty() {
                return Err(invalid(
                    "policy.files",
                    "name at least one Cedar policy file",
                ));
            }
            if p.reload_interval.is_zero() {
                return Err(invalid("policy.reload_interval", "must be longer than 0s"));
            }
            if let Some(l) = &p.ldap {
                l.check()
                    .map_err(|e| invalid(format!("policy.ldap.{}", e.field), e.problem))?;
            }
        }
        if let Some(c) = &self.coordinator {
            if c.public_keys.is_empty() && c.public_keys_file.is_none() {
                return Err(invalid(
                    "coordinator.public_keys",
                    "list the coordinator's signing keys (or name public_keys_file, which \
                     `wardd --join` writes); unsigned grants are refused",
                ));
            }
            if c.join_url.is_some() && c.public_keys_file.is_none() {
                return Err(invalid(
                    "coordinator.public_keys_file",
                    "name where `wardd --join` writes the coordinator's signing keys",
                ));
            }
            if let Some(u) = &c.join_url
                && !u.starts_with("https://")
            {
                return Err(invalid(
                    "coordinator.join_url",
                    format!("`{u}`: must be https://"),
                ));
            }
            check_keys("coordinator.public_keys", &c.public_keys)?;
            if !c.url.starts_with("https://") {
                return Err(invalid(
                    "coordinator.url",
                    format!("`{}`: must be https://", c.url),
                ));
            }
        }
        if let Some(t) = &self.tls {
            check_keys("tls.public_keys", &t.public_keys)?;
            if self.tls_push_keys().is_empty() && !t.allow_unsigned_pushes {
                return Err(invalid(
                    "tls.public_keys",
                    "grants pushed over TLS must be signed; list the coordinator's signing \
                     keys here or in coordinator.public_keys (or, as break-glass, set \
                     tls.allow_unsigned_pushes = true)",
                ));
            }
        }
        if self.agent.max_grant_duration.is_zero() {
            return Err(invalid(
                "agent.max_grant_duration",
                "must be longer than 0s",
            ));
        }
        Ok(())
    }
}

/// Durations written like "15m", "8h" (humantime).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not a duration like 15m or 8h: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_missing() {
        let c = Config::parse("[protect]\npaths = [\"/srv/prod/\"]\n").unwrap();
        assert_eq!(c.agent.socket, PathBuf::from("/run/ward/agent.sock"));
        assert_eq!(c.agent.max_grant_duration, Duration::from_secs(8 * 3600));
        assert_eq!(c.protect.paths, ["/srv/prod/"]);
        assert!(c.tls.is_none());
    }

    #[test]
    fn a_typo_names_the_key_and_line() {
        let err = Config::parse("[agent]\nsocket = \"/x\"\nmax_grant_duraton = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_grant_duraton"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = Config::parse("[protect]\npaths = [\"relative/path\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("protect.paths[0]") && err.contains("not absolute"),
            "{err}"
        );
        let err = Config::parse("[protect]\nnetworks = [\"10.0.0.1/8:80\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("protect.networks[0]"), "{err}");
        let err = Config::parse("[agent]\nmax_grant_duration = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a duration") && err.contains("line 2"),
            "{err}"
        );
        let err = Config::parse("[enforce]\nmanaged_uids = [[2000, 1000]]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("enforce.managed_uids[0]"), "{err}");
    }

    #[test]
    fn a_tls_listener_needs_keys_to_verify_pushes() {
        let tls = "[tls]\nlisten = \"127.0.0.1:7443\"\ncert = \"/c\"\nkey = \"/k\"\n\
                   client_ca = \"/ca\"\nallowed_clients = [\"coordinator\"]\n";
        let err = Config::parse(tls).unwrap_err().to_string();
        assert!(err.contains("tls.public_keys"), "{err}");
        let err = Config::parse(&format!("{tls}public_keys = [\"abc\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.public_keys[0]"), "{err}");
        let key = "ab".repeat(32);
        let c = Config::parse(&format!("{tls}public_keys = [\"{key}\"]\n")).unwrap();
        assert_eq!(c.tls_push_keys(), vec![vec![0xab; 32]]);
        let c = Config::parse(&format!("{tls}allow_unsigned_pushes = true\n")).unwrap();
        assert!(c.tls_push_keys().is_empty());
    }
}
