//! Embeds the eBPF object that `cargo xtask build-ebpf` produces.
//!
//! The object is built with nightly and bpf-linker for bpfel-unknown-none,
//! which a stable build script cannot do by itself, so this script only checks
//! that the object is there and says exactly
//! which command makes it. An object older than its sources stops the
//! build.

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
    // Never embed an object older than its sources: the kernel would run
    // other code than the user-space half (and `ward explain`) expects.
    // Its sources are what the compiler read for it (cargo's dep-info
    // beside it), so a file the eBPF build never reads (a test, a
    // user-space-only module) cannot make it stale for ever.
    let newest = match dep_info_sources(&obj) {
        Some(files) => files
            .iter()
            .filter_map(|f| Some((fs::metadata(f).ok()?.modified().ok()?, f.clone())))
            .max(),
        None => newest_source(&sources),
    };
    if let Some(newer) = newest.filter(|(t, _)| *t > built) {
        panic!(
            "\n\nward's eBPF object {obj} is older than {}.\n\
             Rebuild it with:\n\n    cargo xtask build-ebpf\n\n\
             (cargo xtask test, demo, bench and fuzz rebuild it themselves).\n",
            newer.1
        );
    }
}

/// The source files listed in `OBJ.d` (`OBJ: a.rs b.rs ...`).
fn dep_info_sources(obj: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("{obj}.d")).ok()?;
    let line = text.lines().find(|l| l.starts_with(obj))?;
    let (_, files) = line.split_once(": ")?;
    let files: Vec<String> = files
        .replace("\\ ", "\u{0}")
        .split_whitespace()
        .map(|f| f.replace('\u{0}', " "))
        .collect();
    (!files.is_empty()).then_some(files)
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
