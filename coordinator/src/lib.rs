//! ward's coordinator: the JIT half of ward.
//!
//! A person asks for access with a reason; Cedar policy decides whether
//! they are eligible, how long they may have, and how many reviewers must
//! approve (or approves at once). Approved access becomes a grant signed
//! with ed25519 and delivered, over each agent's open mutual-TLS stream,
//! to exactly the hosts it targets. Every state change is audited.
//!
//! - `config`: `coordinator.toml`;
//! - `signer`: ed25519 keys and grant signatures;
//! - `store`: SQLite or PostgreSQL: requests, grants, hosts, audit;
//! - `database`: reaching PostgreSQL over verified TLS;
//! - `fleet`: the connected agents and delivery to them;
//! - `enrolment`: the fleet CA, join tokens, host revocation;
//! - `join`: the `ward.v1.Enrolment` service (joining with a token);
//! - `workflow`: requests, reviews and their rules;
//! - `service`: the `ward.v1.Coordinator` gRPC service;
//! - `webhook`: HMAC-signed JSON notifications;
//! - `oidc`: people signed in through OpenID Connect providers;
//! - `session`: the signed sessions they hold afterwards;
//! - `web`: the reviewer's page (HTTPS);
//! - `server`: TLS, background sweeps, serving.

pub mod config;
pub mod database;
pub mod enrolment;
pub mod fleet;
pub mod join;
pub mod ldap;
pub mod metrics;
pub mod oidc;
pub mod server;
pub mod service;
pub mod session;
pub mod signer;
pub mod store;
pub mod web;
pub mod webhook;
pub mod workflow;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
