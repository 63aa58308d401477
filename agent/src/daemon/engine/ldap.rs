//! People and groups from an LDAP server: each read applied like an edit
//! of the directory file, a bad entry reported by DN and attribute while
//! the rest applies, and an unreachable server reported while the last
//! good directory keeps enforcing. The last good read is cached in the
//! state directory, so a restart during an outage enforces it too.

use std::collections::BTreeSet;

use ward_ldap::{BadEntry, Fetched};
use ward_policy::EntityDef;

use super::*;

/// What the agent knows of its LDAP source, for `ward policy show`.
#[derive(Debug, Clone, Default)]
pub struct LdapState {
    pub url: String,
    pub read_at: Option<SystemTime>,
    pub users: usize,
    pub groups: usize,
    pub bad: Vec<BadEntry>,
    /// Why the server cannot be read now.
    pub unreachable: Option<String>,
}

impl LdapState {
    pub fn status(&self) -> pb::LdapStatus {
        pb::LdapStatus {
            url: self.url.clone(),
            read_unix_ms: self.read_at.map_or(0, unix_ms),
            users: self.users as u64,
            groups: self.groups as u64,
            bad_entries: self.bad.iter().map(ToString::to_string).collect(),
            unreachable: self.unreachable.clone().unwrap_or_default(),
        }
    }
}

/// The cache of the last good read.
pub(super) fn cache_path(config: &Config) -> PathBuf {
    config.agent.state_dir.join("ldap-directory.json")
}

/// The last good read, if one was cached; a cache that does not read is
/// said and ignored (the next read replaces it).
pub(super) fn read_cache(config: &Config) -> Vec<EntityDef> {
    let path = cache_path(config);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::error!(cache = %path.display(), error = %e, "the cached LDAP directory does not read; starting without it");
        Vec::new()
    })
}

fn write_cache(config: &Config, defs: &[EntityDef]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = cache_path(config);
    let tmp = path.with_extension("json.new");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(defs).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

impl Engine {
    /// The people and groups of the last good read: a bad entry in the
    /// next one keeps what it had here.
    pub fn ldap_defs(&self) -> Vec<EntityDef> {
        self.cedar
            .as_ref()
            .map(|c| c.ldap_defs().to_vec())
            .unwrap_or_default()
    }

    /// A read of the server: reported, and applied if it changed anything.
    pub fn ldap_read(&mut self, fetched: Fetched) -> Result<(), EngineError> {
        let was_unreachable = self.ldap.unreachable.take();
        if let Some(why) = was_unreachable {
            tracing::info!(url = %self.ldap.url, "LDAP directory reachable again");
            self.record(
                "directory_reachable",
                None,
                "ldap",
                serde_json::json!({ "url": self.ldap.url, "was": why }),
                true,
            )?;
        }
        let known: BTreeSet<String> = self.ldap.bad.iter().map(ToString::to_string).collect();
        for b in &fetched.mapped.bad {
            if known.contains(&b.to_string()) {
                continue;
            }
            tracing::warn!(dn = %b.dn, attribute = %b.attribute, problem = %b.problem, kept_previous = b.kept_previous, "LDAP entry refused");
            self.record(
                "directory_entry_refused",
                None,
                "ldap",
                serde_json::json!({
                    "dn": b.dn, "attribute": b.attribute, "problem": b.problem,
                    "kept_previous": b.kept_previous,
                }),
                true,
            )?;
        }
        self.ldap.read_at = Some(SystemTime::now());
        self.ldap.users = fetched.users;
        self.ldap.groups = fetched.groups;
        self.ldap.bad = fetched.mapped.bad;
        let defs = fetched.mapped.defs;
        if self.ldap_defs() == defs {
            return Ok(());
        }
        let env = self.host_env();
        let Some(p) = self.cedar.as_mut() else {
            return Ok(());
        };
        match p.set_ldap_defs(defs, &env) {
            Ok(r) => {
                let applied = self.apply_policy_entries(r, "ldap", "directory changed");
                self.metrics.policy_reload(applied.is_ok());
                applied?;
                if let Err(e) = write_cache(&self.config, &self.ldap_defs()) {
                    tracing::error!(cache = %cache_path(&self.config).display(), error = %e, "could not cache the LDAP directory");
                }
                Ok(())
            }
            Err(e) => {
                self.metrics.policy_reload(false);
                tracing::error!(error = %e, "LDAP directory refused; the previous directory keeps enforcing");
                self.record(
                    "policy_rejected",
                    None,
                    "ldap",
                    serde_json::json!({ "error": e.to_string() }),
                    true,
                )
            }
        }
    }

    /// The server could not be read: said once per outage (and again if
    /// the reason changes); the last good directory keeps enforcing.
    pub fn ldap_unreachable(&mut self, why: String) -> Result<(), EngineError> {
        if self.ldap.unreachable.as_deref() == Some(why.as_str()) {
            return Ok(());
        }
        tracing::error!(url = %self.ldap.url, error = %why, "LDAP directory unreachable; the last good directory keeps enforcing");
        self.ldap.unreachable = Some(why.clone());
        self.record(
            "directory_unreachable",
            None,
            "ldap",
            serde_json::json!({ "url": self.ldap.url, "error": why }),
            true,
        )
    }
}
