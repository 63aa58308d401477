//! `cargo xtask install`: binaries, the systemd unit, tmpfiles entry and a
//! sample config, under a root (default `/`).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{
    Workspace, bootstrap, ebpf,
    process::{run, step},
};

pub fn install(ws: &Workspace, root: &Path) -> Result<()> {
    bootstrap::ebpf_toolchain(ws)?;
    ebpf::build(ws)?;
    step("building wardd and ward (release)");
    run(Command::new("cargo")
        .args(["build", "--release", "-p", "ward-agent", "--bins"])
        .current_dir(&ws.root))?;
    let release = ws.target().join("release");
    let dist = ws.root.join("dist");
    let place = |from: PathBuf, to: &str, mode: u32| -> Result<()> {
        let dest = root.join(to.trim_start_matches('/'));
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::copy(&from, &dest).with_context(|| format!("installing {}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        println!("    {}", dest.display());
        Ok(())
    };
    step(format!("installing under {}", root.display()));
    place(release.join("wardd"), "/usr/local/sbin/wardd", 0o755)?;
    place(release.join("ward"), "/usr/local/bin/ward", 0o755)?;
    place(
        dist.join("wardd.service"),
        "/etc/systemd/system/wardd.service",
        0o644,
    )?;
    place(
        dist.join("ward.tmpfiles.conf"),
        "/usr/lib/tmpfiles.d/ward.conf",
        0o644,
    )?;
    // Operators' own files are never overwritten.
    for name in ["agent.toml", "policy.cedar", "directory.toml"] {
        let target = root.join("etc/ward").join(name);
        if target.exists() {
            println!("    {} exists; left unchanged", target.display());
        } else {
            place(dist.join(name), &format!("/etc/ward/{name}"), 0o640)?;
        }
    }
    if root == Path::new("/") {
        println!(
            "next: edit /etc/ward/agent.toml, policy.cedar and directory.toml (check with `ward policy check`), then `systemctl daemon-reload && systemctl enable --now wardd`"
        );
    }
    Ok(())
}
