//! Native integration tests: run on the host kernel, as real processes.
//! Enforcement here is confined to cgroups the tests create.

mod bench;
mod chaos;
mod connect;
mod coordinator;
mod daemon;
mod dist;
mod doctor;
mod journal;
mod ldap;
mod metrics;
mod oidc;
mod packages;
mod pinning;
mod policy;
mod teardown;
mod tls;
