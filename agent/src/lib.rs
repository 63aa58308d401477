//! ward's host agent library: what `wardd` and `ward` share.
//!
//! - [`btf`]: struct offsets read from the running kernel's BTF;
//! - [`cgroup`]: cgroup v2 discovery and cgroup ids;
//! - [`client`]: the `ward` CLI's connections to the agent and coordinator;
//! - [`daemon`]: `wardd`: config, store, audit, the gRPC service;
//! - [`ebpf`]: the embedded kernel object and how to load it portably;
//! - [`enforcer`]: the kernel enforcement engine;
//! - [`enrol`]: joining a fleet with a token, and certificate renewal;
//! - [`doctor`]: what the running kernel can and cannot enforce;
//! - [`kernel`]: the running kernel's release and capabilities;
//! - [`memory`]: handing start-up heap back to the kernel.

pub mod btf;
pub mod cgroup;
pub mod client;
pub mod daemon;
pub mod doctor;
pub mod ebpf;
pub mod enforcer;
pub mod enrol;
pub mod kernel;
pub mod memory;
