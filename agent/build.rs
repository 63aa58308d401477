//! Embeds the eBPF object that `cargo xtask build-ebpf` produces.
//!
//! The object is built with nightly and bpf-linker for bpfel-unknown-none,
//! which a stable build script cannot do by itself, so this script only checks
//! that the object is there (and not older than its sources) and says exactly
//! which command makes it.

use std::{fs, path::Path, time::SystemTime};

fn main() {
    let obj = std::env::var("WARD_EBPF_OBJ")
        .expect("WARD_EBPF_OBJ is set by .cargo/config.toml; run cargo from the ward workspace");
    println!("cargo:rerun-if-env-changed=WARD_EBPF_OBJ");
    println!("cargo:rerun-if-changed={obj}");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent-ebpf");
    println!("cargo:rerun-if-changed={}", sources.display());

    let Ok(meta) = fs::metadata(&obj) else {
        panic!(
            "\n\nward's eBPF object is missing: {obj}\n\
             Build it first with:\n\n    cargo xtask build-ebpf\n\n\
             (it installs rust-src and bpf-linker under target/ if they are missing).\n"
        );
    };
    let built = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if let Some(newer) = newest_source(&sources).filter(|(t, _)| *t > built) {
        println!(
            "cargo:warning=eBPF object {obj} is older than {}; run `cargo xtask build-ebpf`",
            newer.1
        );
    }
}

fn newest_source(dir: &Path) -> Option<(SystemTime, String)> {
    let mut newest: Option<(SystemTime, String)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
            let t = entry.metadata().ok()?.modified().ok()?;
            Some((t, path.display().to_string()))
        } else {
            None
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.0 > n.0)
        {
            newest = Some(c);
        }
    }
    newest
}
