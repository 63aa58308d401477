//! `cargo xtask dist`: Debian packages, built with `dpkg-deb` from proper
//! control files.
//!
//! - `ward`: `wardd`, `ward`, the unit, the tmpfiles entry, and the sample
//!   config as conffiles under `/etc/ward`.
//! - `ward-coordinator`: the binary, a hardened unit, and its sample config
//!   under `/etc/ward-coordinator`.
//!
//! Maintainer scripts enable the units on first install without starting
//! them. An upgrade never stops `wardd` first: it is restarted once the new
//! files are in place, and meanwhile the pinned programs and maps go on
//! enforcing (ward's pins outlive the process).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace, bootstrap, ebpf,
    process::{run, step},
};

/// Which build of the binaries goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Release,
    /// The test build (`target/debug`): what `cargo xtask test` packages.
    Debug,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

const MAINTAINER: &str = "ward maintainers <ward@lists.ward.dev>";

struct File {
    from: PathBuf,
    to: &'static str,
    mode: u32,
    /// ELF binaries are stripped, and get a manual page made from their
    /// `--help` in this section, under this one-line name.
    binary: Option<(u8, &'static str)>,
}

struct Package {
    name: &'static str,
    summary: &'static str,
    description: &'static str,
    /// Beyond the shared libraries the binaries link.
    depends: &'static [&'static str],
    files: Vec<File>,
    /// Under /etc: kept across upgrades when edited.
    conffiles: Vec<&'static str>,
    postinst: String,
    prerm: String,
    postrm: String,
}

/// wardd, ward and the coordinator in release: what the packages ship and
/// the benchmarks run.
pub fn release_binaries(ws: &Workspace) -> Result<()> {
    step("building wardd, ward and ward-coordinator (release)");
    run(Command::new("cargo")
        .args([
            "build",
            "--release",
            "-p",
            "ward-agent",
            "-p",
            "ward-coordinator",
            "--bins",
        ])
        .current_dir(&ws.root))
}

/// Builds both packages into `out`; returns their paths.
pub fn build(ws: &Workspace, profile: Profile, revision: u32, out: &Path) -> Result<Vec<PathBuf>> {
    if profile == Profile::Release {
        bootstrap::ebpf_toolchain(ws)?;
        ebpf::build(ws)?;
        release_binaries(ws)?;
    }
    let bins = ws.target().join(profile.dir());
    for b in ["wardd", "ward", "ward-coordinator"] {
        if !bins.join(b).exists() {
            bail!("{} is not built", bins.join(b).display());
        }
    }
    let version = format!("{}-{revision}", env!("CARGO_PKG_VERSION"));
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut built = Vec::new();
    for p in packages(ws, &bins) {
        step(format!("packaging {} {version}", p.name));
        built.push(package(ws, &p, &version, profile, out)?);
    }
    for b in &built {
        println!("    {}", b.display());
    }
    Ok(built)
}

fn packages(ws: &Workspace, bins: &Path) -> Vec<Package> {
    let dist = ws.root.join("dist");
    let file = |from: PathBuf, to: &'static str, mode: u32| File {
        from,
        to,
        mode,
        binary: None,
    };
    let binary = |name: &str, to: &'static str, section: u8, what: &'static str| File {
        from: bins.join(name),
        to,
        mode: 0o755,
        binary: Some((section, what)),
    };
    vec![
        Package {
            name: "ward",
            summary: "host agent for attribute-based, just-in-time access, enforced with eBPF",
            description: "wardd compiles Cedar policy over user, resource and host attributes, \
                and short-lived grants, into BPF maps. BPF LSM and cgroup hooks enforce them \
                on protected files, executables and network destinations, and end access \
                in the kernel at each grant's deadline. `ward` is the command line for \
                people and operators.",
            depends: &[
                "systemd | systemd-standalone-sysusers | systemd-sysusers",
                "init-system-helpers (>= 1.65~)",
            ],
            files: vec![
                binary(
                    "wardd",
                    "/usr/sbin/wardd",
                    8,
                    "the ward host agent: ABAC and JIT access enforced with eBPF",
                ),
                binary(
                    "ward",
                    "/usr/bin/ward",
                    1,
                    "ask for, grant, explain and audit access on a ward host",
                ),
                file(
                    dist.join("wardd.service"),
                    "/lib/systemd/system/wardd.service",
                    0o644,
                ),
                file(
                    dist.join("ward.tmpfiles.conf"),
                    "/usr/lib/tmpfiles.d/ward.conf",
                    0o644,
                ),
                file(
                    dist.join("ward.sysusers.conf"),
                    "/usr/lib/sysusers.d/ward.conf",
                    0o644,
                ),
                file(dist.join("agent.toml"), "/etc/ward/agent.toml", 0o644),
                file(dist.join("policy.cedar"), "/etc/ward/policy.cedar", 0o644),
                file(
                    dist.join("directory.toml"),
                    "/etc/ward/directory.toml",
                    0o644,
                ),
            ],
            conffiles: vec![
                "/etc/ward/agent.toml",
                "/etc/ward/policy.cedar",
                "/etc/ward/directory.toml",
            ],
            postinst: postinst("wardd.service", "ward.conf", ""),
            prerm: prerm("wardd.service"),
            postrm: postrm(
                "wardd.service",
                "# The pinned programs keep enforcing after a remove (a\n\
                 \t# removed agent never opens what it protected); a purge\n\
                 \t# unpins them, and the state and logs go.\n\
                 \trm -rf /sys/fs/bpf/ward /var/lib/ward /var/log/ward",
            ),
        },
        Package {
            name: "ward-coordinator",
            summary: "coordinator for ward: JIT requests, reviews and signed grants",
            description: "ward-coordinator holds the just-in-time workflow for a fleet of \
                ward agents: requests, reviews and approvals decided by Cedar policy, \
                ed25519-signed grants streamed to agents over mutual TLS, revocation, \
                and the audit trail, on SQLite or a shared PostgreSQL.",
            depends: &[
                "systemd | systemd-standalone-sysusers | systemd-sysusers",
                "init-system-helpers (>= 1.65~)",
            ],
            files: vec![
                binary(
                    "ward-coordinator",
                    "/usr/bin/ward-coordinator",
                    8,
                    "JIT requests, reviews and signed grants for a ward fleet",
                ),
                file(
                    dist.join("ward-coordinator.service"),
                    "/lib/systemd/system/ward-coordinator.service",
                    0o644,
                ),
                file(
                    dist.join("ward-coordinator.sysusers.conf"),
                    "/usr/lib/sysusers.d/ward-coordinator.conf",
                    0o644,
                ),
                file(
                    dist.join("coordinator.toml"),
                    "/etc/ward-coordinator/coordinator.toml",
                    0o644,
                ),
                file(
                    dist.join("coordinator.cedar"),
                    "/etc/ward-coordinator/coordinator.cedar",
                    0o644,
                ),
                file(
                    dist.join("directory.toml"),
                    "/etc/ward-coordinator/directory.toml",
                    0o644,
                ),
            ],
            conffiles: vec![
                "/etc/ward-coordinator/coordinator.toml",
                "/etc/ward-coordinator/coordinator.cedar",
                "/etc/ward-coordinator/directory.toml",
            ],
            postinst: postinst(
                "ward-coordinator.service",
                "ward-coordinator.conf",
                "chgrp ward-coordinator /etc/ward-coordinator\n\
                 \t\tchmod 0750 /etc/ward-coordinator",
            ),
            prerm: prerm("ward-coordinator.service"),
            postrm: postrm(
                "ward-coordinator.service",
                "rm -rf /var/lib/ward-coordinator",
            ),
        },
    ]
}

/// On first install the unit is enabled, not started; on an upgrade a
/// running service is restarted (it was never stopped). With `DPKG_ROOT`
/// (installing into an image), deb-systemd-helper enables the unit there
/// and nothing on the running system is touched.
/// `conf` names the package's sysusers.d (and, for wardd, tmpfiles.d)
/// file; `setup` runs on the live system only.
fn postinst(unit: &str, conf: &str, setup: &str) -> String {
    let tmpfiles = if unit == "wardd.service" {
        format!("\t\tsystemd-tmpfiles --create {conf} >/dev/null || true\n")
    } else {
        String::new()
    };
    let setup = if setup.is_empty() {
        String::new()
    } else {
        format!("\tif [ -z \"${{DPKG_ROOT:-}}\" ]; then\n\t\t{setup}\n\tfi\n")
    };
    format!(
        r#"#!/bin/sh
set -e

if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]; then
	# The package's users and groups, in the root being installed.
	systemd-sysusers ${{DPKG_ROOT:+--root="$DPKG_ROOT"}} "${{DPKG_ROOT:-}}/usr/lib/sysusers.d/{conf}"
{setup}
	deb-systemd-helper unmask {unit} >/dev/null || true
	if deb-systemd-helper --quiet was-enabled {unit}; then
		deb-systemd-helper enable {unit} >/dev/null || true
	else
		deb-systemd-helper update-state {unit} >/dev/null || true
	fi
	if [ -z "${{DPKG_ROOT:-}}" ] && [ -d /run/systemd/system ]; then
{tmpfiles}		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			deb-systemd-invoke try-restart {unit} >/dev/null || true
		fi
	fi
fi

exit 0
"#
    )
}

/// Stops the service on remove only: an upgrade restarts it in place.
fn prerm(unit: &str) -> String {
    format!(
        r#"#!/bin/sh
set -e

if [ -z "${{DPKG_ROOT:-}}" ] && [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
	deb-systemd-invoke stop {unit} >/dev/null || true
fi

exit 0
"#
    )
}

fn postrm(unit: &str, purge: &str) -> String {
    format!(
        r#"#!/bin/sh
set -e

if [ -n "${{DPKG_ROOT:-}}" ]; then
	exit 0
fi
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ] && command -v deb-systemd-helper >/dev/null; then
	deb-systemd-helper mask {unit} >/dev/null || true
fi
if [ "$1" = "purge" ]; then
	if command -v deb-systemd-helper >/dev/null; then
		deb-systemd-helper purge {unit} >/dev/null || true
		deb-systemd-helper unmask {unit} >/dev/null || true
	fi
	{purge}
fi

exit 0
"#
    )
}

fn package(
    ws: &Workspace,
    p: &Package,
    version: &str,
    profile: Profile,
    out: &Path,
) -> Result<PathBuf> {
    let stage = ws.target().join("dist/stage").join(p.name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let root = |to: &str| stage.join(to.trim_start_matches('/'));
    for f in &p.files {
        let dest = root(f.to);
        mkdir(dest.parent().unwrap_or(&stage))?;
        if let Some((section, what)) = f.binary {
            manual(&f.from, section, what, &root("/usr/share/man"))?;
            // Stripped, as Debian policy asks: the build's symbols stay in
            // the build tree.
            run(Command::new("strip")
                .args([
                    "--strip-unneeded",
                    "--remove-section=.comment",
                    "--remove-section=.note",
                    "-o",
                ])
                .arg(&dest)
                .arg(&f.from))?;
        } else {
            let text = fs::read_to_string(&f.from)
                .with_context(|| format!("reading {}", f.from.display()))?;
            // The samples name `cargo xtask install`'s /usr/local paths.
            let text = text
                .replace("/usr/local/sbin/", "/usr/sbin/")
                .replace("/usr/local/bin/", "/usr/bin/");
            fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(f.mode))?;
    }
    docs(p, version, &root(&format!("/usr/share/doc/{}", p.name)))?;
    let debian = stage.join("DEBIAN");
    mkdir(&debian)?;
    let binaries: Vec<PathBuf> = p
        .files
        .iter()
        .filter(|f| f.binary.is_some())
        .map(|f| root(f.to))
        .collect();
    let overrides = root(&format!("/usr/share/lintian/overrides/{}", p.name));
    mkdir(overrides.parent().unwrap_or(&stage))?;
    // Built outside Debian's archive: there is no bug for the first
    // upload to close.
    write(
        &overrides,
        &format!("{}: initial-upload-closes-no-bugs\n", p.name),
        0o644,
    )?;
    let mut depends = shlibdeps(ws, &binaries)?;
    depends.extend(p.depends.iter().map(|d| d.to_string()));
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: {MAINTAINER}\n\
         Installed-Size: {size}\nDepends: {depends}\nSection: admin\nPriority: optional\n\
         Homepage: https://github.com/ward/ward\nDescription: {summary}\n{long}",
        name = p.name,
        size = installed_kib(&stage)?,
        depends = depends.join(", "),
        summary = p.summary,
        long = wrap(p.description),
    );
    write(&debian.join("control"), &control, 0o644)?;
    let conffiles: String = p.conffiles.iter().map(|c| format!("{c}\n")).collect();
    write(&debian.join("conffiles"), &conffiles, 0o644)?;
    write(&debian.join("postinst"), &p.postinst, 0o755)?;
    write(&debian.join("prerm"), &p.prerm, 0o755)?;
    write(&debian.join("postrm"), &p.postrm, 0o755)?;
    write(&debian.join("md5sums"), &md5sums(&stage)?, 0o644)?;
    let deb = out.join(format!("{}_{version}_amd64.deb", p.name));
    // The test build is large and thrown away: compressed fast.
    let compress: &[&str] = match profile {
        Profile::Release => &["-Zxz"],
        Profile::Debug => &["-Zgzip", "-z1"],
    };
    run(Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .args(compress)
        .arg("--build")
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

/// `NAME.SECTION.gz` from the binary's `--help` and `--version`
/// (help2man).
fn manual(bin: &Path, section: u8, what: &str, man: &Path) -> Result<()> {
    let name = bin
        .file_name()
        .context("a binary without a name")?
        .to_string_lossy()
        .into_owned();
    let dir = man.join(format!("man{section}"));
    mkdir(&dir)?;
    let page = dir.join(format!("{name}.{section}"));
    run(Command::new("help2man")
        .args(["--no-info", "--no-discard-stderr", "--section"])
        .arg(section.to_string())
        .args(["--name", what, "--output"])
        .arg(&page)
        .arg(bin))?;
    fs::set_permissions(&page, fs::Permissions::from_mode(0o644))?;
    run(Command::new("gzip").args(["-9nf"]).arg(&page))
}

/// The copyright file and a Debian changelog, as policy requires of every
/// package.
fn docs(p: &Package, version: &str, dir: &Path) -> Result<()> {
    mkdir(dir)?;
    write(
        &dir.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: ward\nSource: https://github.com/ward/ward\n\n\
         Files: *\nCopyright: 2025-2026 the ward authors\nLicense: Apache-2.0\n \
         On Debian systems, the full text of the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
        0o644,
    )?;
    let changelog = format!(
        "{name} ({version}) unstable; urgency=medium\n\n  * Built by cargo xtask dist.\n\n \
         -- {MAINTAINER}  {date}\n",
        name = p.name,
        date = chrono_rfc2822()?,
    );
    let path = dir.join("changelog.Debian");
    write(&path, &changelog, 0o644)?;
    // -n: no name or time in the header, so the package is reproducible.
    run(Command::new("gzip").args(["-9nf"]).arg(&path))?;
    Ok(())
}

/// The date of the last commit (reproducible), in RFC 2822.
fn chrono_rfc2822() -> Result<String> {
    let out = Command::new("git")
        .args(["log", "-1", "--format=%cD"])
        .output()
        .context("running git log")?;
    let date = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if date.is_empty() {
        let out = Command::new("date")
            .arg("-R")
            .output()
            .context("running date")?;
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    Ok(date)
}

/// `Depends` for the shared libraries the binaries link, from
/// `dpkg-shlibdeps` (which needs a debian/control to run beside).
fn shlibdeps(ws: &Workspace, binaries: &[PathBuf]) -> Result<Vec<String>> {
    let dir = ws.target().join("dist/shlibdeps");
    mkdir(&dir.join("debian"))?;
    fs::write(
        dir.join("debian/control"),
        "Source: ward\n\nPackage: ward\nArchitecture: any\n",
    )?;
    let out = Command::new("dpkg-shlibdeps")
        .arg("-O")
        .args(binaries)
        .current_dir(&dir)
        .output()
        .context("running dpkg-shlibdeps (Debian package dpkg-dev)")?;
    if !out.status.success() {
        bail!(
            "dpkg-shlibdeps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let deps = text
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(deps.split(", ").map(str::to_owned).collect())
}

fn installed_kib(stage: &Path) -> Result<u64> {
    let mut total = 0;
    for f in walk(stage)? {
        total += fs::metadata(&f)?.len().div_ceil(1024);
    }
    Ok(total)
}

fn md5sums(stage: &Path) -> Result<String> {
    let mut lines = String::new();
    for f in walk(stage)? {
        let rel = f.strip_prefix(stage)?.to_string_lossy().into_owned();
        if rel.starts_with("DEBIAN/") || rel.starts_with("etc/") {
            continue;
        }
        let out = Command::new("md5sum")
            .arg(&f)
            .output()
            .context("running md5sum")?;
        let sum = String::from_utf8_lossy(&out.stdout);
        let sum = sum.split_whitespace().next().unwrap_or_default();
        lines.push_str(&format!("{sum}  {rel}\n"));
    }
    Ok(lines)
}

/// Every regular file under `dir`, sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                todo.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A long description: lines of at most 79 columns, each indented by one
/// space.
fn wrap(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 78 {
            out.push_str(&format!(" {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!(" {line}\n"));
    }
    out
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}
