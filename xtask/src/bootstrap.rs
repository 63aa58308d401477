//! Installs what the build and the VM tests need, once, and caches it.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace,
    process::{output, run, step},
};

/// The nightly that builds eBPF (`-Z build-std=core`).
pub const NIGHTLY: &str = "nightly";

/// What building and booting the VMs needs (the demo, `cargo xtask vm`);
/// the test command also installs [`node_parts`].
pub fn all(ws: &Workspace) -> Result<()> {
    ebpf_toolchain(ws)?;
    cargo_fuzz(ws)?;
    vm_packages()
}

/// The tests' Node.js parts (`tests/node`): the OpenID Connect provider
/// the SSO tests sign in through (panva/oidc-provider) and the browser
/// driver (playwright-core, for Debian's chromium). Installed with `npm
/// ci` from the lockfile under target/node; again only when it changes.
/// The scripts are copied each time: they are small and may have changed.
pub fn node_parts(ws: &Workspace) -> Result<()> {
    debian(BROWSER_PACKAGES)?;
    let from = ws.root.join("tests/node");
    let to = ws.target().join("node");
    let lock =
        std::fs::read(from.join("package-lock.json")).context("tests/node/package-lock.json")?;
    let installed = std::fs::read(to.join("package-lock.json")).ok();
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(&from).context("tests/node")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "mjs") {
            std::fs::copy(&path, to.join(file_name(&path)))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    if installed.as_deref() == Some(lock.as_slice()) && to.join("node_modules").exists() {
        return Ok(());
    }
    step("installing the tests' Node.js parts (npm ci, tests/node)");
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(from.join(f), to.join(f)).with_context(|| format!("copying {f}"))?;
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&to))
    .context("npm ci in tests/node (is Node.js with npm installed?)")
}

/// The browser the web page is tested in (driven by playwright-core).
const BROWSER_PACKAGES: &[(&str, &str)] = &[("chromium", "/usr/bin/chromium")];

/// rust-src for nightly, and bpf-linker built against nightly's own LLVM.
pub fn ebpf_toolchain(ws: &Workspace) -> Result<()> {
    rust_src()?;
    bpf_linker(ws)
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .context("listing nightly components (is the nightly toolchain installed?)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    step("installing rust-src for nightly (eBPF builds core from source)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// bpf-linker must link with the same LLVM as the nightly rustc; build it
/// against the libLLVM shipped inside that toolchain (ARCHITECTURE.md,
/// "Toolchains and kernels").
fn bpf_linker(ws: &Workspace) -> Result<()> {
    let bin = ws.tools_bin().join("bpf-linker");
    if bin.exists() {
        return Ok(());
    }
    step("building bpf-linker against nightly's libLLVM (once; about 2 minutes)");
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let libllvm = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    let major = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|v| v.split(['.', '-']).next())
        .context("cannot read LLVM major version from libLLVM file name")?
        .to_owned();
    let prefix = ws.target().join("llvm-prefix");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    for name in ["libLLVM.so".to_owned(), file_name(&libllvm)] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            // The release verified with nightly 1.97's LLVM 22 here.
            "--version",
            "=0.13.0",
            "--locked",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .arg("--root")
        .arg(ws.target().join("tools"))
        .env("LLVM_PREFIX", &prefix))
}

/// cargo-fuzz, for `cargo xtask fuzz`; it runs under nightly
/// (`cargo +nightly fuzz`), which libFuzzer's instrumentation needs.
pub fn cargo_fuzz(ws: &Workspace) -> Result<()> {
    if ws.tools_bin().join("cargo-fuzz").exists() {
        return Ok(());
    }
    step("installing cargo-fuzz (once; about a minute)");
    run(Command::new("cargo")
        .args(["install", "cargo-fuzz", "--version", "=0.13.2", "--locked"])
        .arg("--root")
        .arg(ws.target().join("tools")))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Debian packages the VM runner needs, and the file that proves each.
const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("cpio", "/usr/bin/cpio"),
    ("xz-utils", "/usr/bin/xz"),
    // systemd-analyze verifies the unit file in the tests.
    ("systemd", "/usr/bin/systemd-analyze"),
    // The coordinator's shared store is tested against a real server.
    ("postgresql", "/usr/bin/pg_ctlcluster"),
    // Metrics are scraped by a real Prometheus and linted by its promtool.
    ("prometheus", "/usr/bin/promtool"),
    // The packages are checked by lintian, and the journal fields are
    // read back from a real journald (part of systemd, above).
    ("lintian", "/usr/bin/lintian"),
    // The LDAP directory source is tested against a real OpenLDAP server,
    // written to with its own tools.
    ("slapd", "/usr/sbin/slapd"),
    ("ldap-utils", "/usr/bin/ldapmodify"),
];

/// What `cargo xtask dist` builds packages with.
pub const DIST_PACKAGES: &[(&str, &str)] = &[
    ("dpkg-dev", "/usr/bin/dpkg-shlibdeps"),
    ("binutils", "/usr/bin/strip"),
    ("help2man", "/usr/bin/help2man"),
];

pub fn vm_packages() -> Result<()> {
    debian(VM_PACKAGES)?;
    debian(DIST_PACKAGES)
}

/// Installs whichever of `packages` (name, a file it provides) is missing.
pub fn debian(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(pkg, file)| !Path::new(file).exists() || !dpkg_installed(pkg))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(format!("installing from Debian: {}", missing.join(" ")));
    let root = nix_is_root();
    let apt = |args: &[&str]| -> Command {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    // Package lists on a fresh machine may be stale; refresh once.
    run(&mut apt(&["-q", "update"])).context("apt-get update")?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    run(&mut install).with_context(|| {
        format!(
            "installing {} (run `apt-get install {}` as root)",
            missing.join(" "),
            missing.join(" ")
        )
    })?;
    for (pkg, file) in packages {
        if !Path::new(file).exists() {
            bail!("{pkg} is installed but {file} is missing");
        }
    }
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

pub fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
