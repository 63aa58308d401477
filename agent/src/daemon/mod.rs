//! `wardd`: the agent daemon. Config, durable grants, audit, and the
//! `ward.v1.Agent` gRPC service on a unix socket and over mutual TLS.

pub mod audit;
pub mod authz;
pub mod classes;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod grant;
pub mod journal;
pub mod ldap;
pub mod metrics;
pub mod peer;
pub mod policy;
pub mod repeats;
pub mod server;
pub mod service;
pub mod store;
pub mod users;
