//! `[policy.ldap]`: where the directory's people and groups come from, and
//! how LDAP's attributes map onto ward's schema.
//!
//! ```toml
//! [policy.ldap]
//! url = "ldaps://ldap.example.com"
//! ca_file = "/etc/ward/ldap-ca.pem"
//! bind_dn = "cn=ward,ou=services,dc=example,dc=com"
//! bind_password_file = "/etc/ward/ldap.secret"
//! poll_interval = "30s"
//!
//! [policy.ldap.users]
//! base = "ou=people,dc=example,dc=com"
//! attributes = { department = "departmentNumber", clearance = "employeeType" }
//!
//! [policy.ldap.groups]
//! base = "ou=groups,dc=example,dc=com"
//! ```

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;
use ward_policy::Kind;

/// An LDAP server as the directory's source of users and groups.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSource {
    /// `ldaps://HOST[:PORT]`, or `ldap://HOST[:PORT]` with `starttls`
    /// (plain `ldap://` only to this host).
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// PEM certificates that verify the server; without it, the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// Simple bind as this DN; without it, anonymous.
    pub bind_dn: Option<String>,
    /// The bind password, alone in a file only wardd can read.
    pub bind_password_file: Option<PathBuf>,
    /// How often the directory is read again, e.g. "30s".
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
    /// How long one connection, bind or search may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    pub users: UserMapping,
    pub groups: Option<GroupMapping>,
}

/// Which entries are ward's users, and their attributes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserMapping {
    /// Searched with subtree scope.
    pub base: String,
    #[serde(default = "default_user_filter")]
    pub filter: String,
    /// The attribute holding the login name (the Cedar `User` id).
    #[serde(default = "default_user_name")]
    pub name: String,
    /// ward's attribute -> the LDAP attribute it is read from, e.g.
    /// `department = "departmentNumber"`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Which entries are groups, and how they list members.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    pub base: String,
    #[serde(default = "default_group_filter")]
    pub filter: String,
    /// The attribute holding the group's name (the Cedar `Group` id).
    #[serde(default = "default_group_name")]
    pub name: String,
    /// Members by DN: users, and groups, which nest.
    #[serde(default = "default_members")]
    pub members: String,
    /// Members by login name (`memberUid` of `posixGroup`).
    #[serde(default = "default_member_uids")]
    pub member_uids: String,
}

fn default_poll() -> Duration {
    Duration::from_secs(60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_user_filter() -> String {
    "(|(objectClass=posixAccount)(objectClass=inetOrgPerson))".into()
}

fn default_user_name() -> String {
    "uid".into()
}

fn default_group_filter() -> String {
    "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))".into()
}

fn default_group_name() -> String {
    "cn".into()
}

fn default_members() -> String {
    "member".into()
}

fn default_member_uids() -> String {
    "memberUid".into()
}

/// What is wrong with an `[policy.ldap]` section, by field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("policy.ldap.{field}: {problem}")]
pub struct SourceError {
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> SourceError {
    SourceError {
        field: field.into(),
        problem: problem.into(),
    }
}

impl LdapSource {
    /// Checks what can be checked without the server: the URL's scheme
    /// and transport security, the mapping against ward's schema, and
    /// that a bind DN comes with its password.
    pub fn check(&self) -> Result<(), SourceError> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| invalid("url", format!("`{}` is not ldap:// or ldaps://", self.url)))?;
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        match scheme {
            "ldaps" if self.starttls => {
                return Err(invalid(
                    "starttls",
                    "is for ldap:// URLs; ldaps:// is TLS already",
                ));
            }
            "ldaps" => {}
            "ldap" if self.starttls || is_loopback(host) => {}
            "ldap" => {
                return Err(invalid(
                    "url",
                    format!(
                        "`{}` would send the bind password and every attribute in the clear: \
                         use ldaps://, or set starttls = true",
                        self.url
                    ),
                ));
            }
            _ => {
                return Err(invalid(
                    "url",
                    format!("`{}` is not ldap:// or ldaps://", self.url),
                ));
            }
        }
        if self.bind_dn.is_some() != self.bind_password_file.is_some() {
            return Err(invalid(
                "bind_password_file",
                "name it together with bind_dn (or neither, to bind anonymously)",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(invalid("poll_interval", "must be longer than 0s"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be longer than 0s"));
        }
        for (ward, ldap) in &self.users.attributes {
            if ward_policy::attribute_type(Kind::User, ward).is_none() {
                return Err(invalid(
                    format!("users.attributes.{ward}"),
                    "is not an attribute of User in ward's schema",
                ));
            }
            if ldap.is_empty() {
                return Err(invalid(
                    format!("users.attributes.{ward}"),
                    "names no LDAP attribute",
                ));
            }
        }
        Ok(())
    }

    /// The bind password: the file's first line.
    pub fn password(&self) -> Result<Option<String>, std::io::Error> {
        let Some(path) = &self.bind_password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)?;
        Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Durations written like "30s", "5m" (humantime).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not a duration like 30s or 5m: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> Result<LdapSource, String> {
        let text = format!("{extra}\n[users]\nbase = \"ou=people,dc=x\"\n");
        toml::from_str::<LdapSource>(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn clear_text_is_refused_off_this_host_and_the_field_is_named() {
        let s = source("url = \"ldap://ldap.example.com\"").unwrap();
        let e = s.check().unwrap_err();
        assert_eq!(e.field, "url", "{e}");
        assert!(e.to_string().contains("in the clear"), "{e}");
        source("url = \"ldap://ldap.example.com\"\nstarttls = true")
            .unwrap()
            .check()
            .unwrap();
        source("url = \"ldap://127.0.0.1:3389\"")
            .unwrap()
            .check()
            .unwrap();
        source("url = \"ldaps://ldap.example.com\"")
            .unwrap()
            .check()
            .unwrap();
        let e = source("url = \"http://x\"").unwrap().check().unwrap_err();
        assert_eq!(e.field, "url");
    }

    #[test]
    fn a_mapping_names_only_attributes_of_the_schema() {
        let s = source("url = \"ldaps://x\"\n[users_extra]\n");
        assert!(s.is_err(), "unknown keys are errors");
        let text = "url = \"ldaps://x\"\n[users]\nbase = \"ou=p\"\n\
                    attributes = { department = \"departmentNumber\", shoe_size = \"x\" }\n";
        let s: LdapSource = toml::from_str(text).unwrap();
        let e = s.check().unwrap_err();
        assert_eq!(e.field, "users.attributes.shoe_size", "{e}");
    }

    #[test]
    fn a_bind_dn_needs_its_password_file() {
        let s = source("url = \"ldaps://x\"\nbind_dn = \"cn=ward\"").unwrap();
        assert_eq!(s.check().unwrap_err().field, "bind_password_file");
    }
}
