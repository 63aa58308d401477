//! ward's LDAP directory source.
//!
//! The people and groups of ward's attribute directory, read from an LDAP
//! server (OpenLDAP, Active Directory, FreeIPA) and mapped onto ward's
//! schema; resources and workloads stay in the directory file. Both the
//! agent and the coordinator read it, each polling on its own.
//!
//! - [`source`]: the `[policy.ldap]` section and its checks;
//! - [`mapping`]: entries onto the schema, bad entries named by DN and
//!   attribute;
//! - [`fetch`]: one read of the server over verified TLS, paged.

mod fetch;
mod mapping;
mod source;

pub use fetch::{FetchError, Fetched, fetch};
pub use mapping::{BadEntry, Entry, Mapped, map_entries};
pub use source::{GroupMapping, LdapSource, SourceError, UserMapping};
