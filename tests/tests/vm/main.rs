//! Kernel suites that need BPF LSM. They run inside the test VMs (6.1 and
//! 6.12), booted by `cargo xtask test`; the host kernel here refuses LSM
//! programs.

mod bench;
mod bypass;
mod cgroup_paths;
mod demo;
mod doctor;
mod events;
mod explain;
mod file_open;
mod in_use;
mod lifecycle;
mod pinning;
mod policy;
mod routes;
mod self_protection;
mod subjects;
mod support;
mod uring;
