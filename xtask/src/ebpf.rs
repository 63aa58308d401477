//! Builds ward's eBPF object with nightly and bpf-linker.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{
    Workspace,
    bootstrap::NIGHTLY,
    process::{run, step},
};

pub const TARGET: &str = "bpfel-unknown-none";

/// Where the object lands; `.cargo/config.toml` points WARD_EBPF_OBJ here.
pub fn object(ws: &Workspace) -> PathBuf {
    ws.target()
        .join("ebpf")
        .join(TARGET)
        .join("release/ward-ebpf")
}

pub fn build(ws: &Workspace) -> Result<()> {
    step("building the eBPF object (nightly, bpf-linker)");
    run(Command::new("cargo")
        .arg(format!("+{NIGHTLY}"))
        .args([
            "build",
            "--package",
            "ward-ebpf",
            "--release",
            "--target",
            TARGET,
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(ws.target().join("ebpf"))
        .current_dir(&ws.root)
        .env("PATH", ws.path_env())
        // BTF in the object lets the kernel (and bpftool) show map and
        // program types; debuginfo is what bpf-linker derives it from.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        // The nightly toolchain must not pick up the stable RUSTC a parent
        // `cargo xtask` exported.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTUP_TOOLCHAIN"))?;
    println!("    eBPF object: {}", object(ws).display());
    Ok(())
}
