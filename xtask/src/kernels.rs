//! Test kernels: Debian cloud kernels, fetched with `apt-get download` from a
//! private apt root under `target/kernels` (the host's apt config is never
//! touched), unpacked with `dpkg -x`, cached.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace,
    process::{output, run, step},
};

/// A kernel line the tests boot, and the Debian suite whose cloud meta
/// package currently depends on it.
pub struct KernelLine {
    pub name: &'static str,
    suite: &'static str,
}

/// Every kernel the VM suites run on. Both have CONFIG_BPF_LSM=y, BTF, and
/// differ in struct layouts (`file.f_path` is at 16 on 6.1, 64 on 6.12).
pub const LINES: &[KernelLine] = &[
    KernelLine {
        name: "6.12",
        suite: "trixie",
    },
    KernelLine {
        name: "6.1",
        suite: "bookworm",
    },
];

pub struct Kernel {
    pub line: &'static str,
    /// Debian package version, e.g. `6.12.118+deb13-cloud-amd64`.
    pub version: String,
    pub vmlinuz: PathBuf,
}

pub fn select(which: &str) -> Result<Vec<&'static KernelLine>> {
    if which == "all" {
        return Ok(LINES.iter().collect());
    }
    match LINES.iter().find(|l| l.name == which) {
        Some(l) => Ok(vec![l]),
        None => bail!(
            "unknown kernel `{which}`; choose one of: all, {}",
            LINES.iter().map(|l| l.name).collect::<Vec<_>>().join(", ")
        ),
    }
}

pub fn fetch_all(ws: &Workspace) -> Result<Vec<Kernel>> {
    LINES.iter().map(|l| fetch(ws, l)).collect()
}

/// Returns the cached kernel, or downloads the current one for this line.
pub fn fetch(ws: &Workspace, line: &'static KernelLine) -> Result<Kernel> {
    let dir = ws.target().join("kernels").join(line.name);
    let vmlinuz = dir.join("vmlinuz");
    let version_file = dir.join("version");
    let modules = dir.join("modules");
    let complete = vmlinuz.exists() && MODULES.iter().all(|m| modules.join(m).exists());
    if let (true, Ok(version)) = (complete, fs::read_to_string(&version_file)) {
        return Ok(Kernel {
            line: line.name,
            version: version.trim().to_owned(),
            vmlinuz,
        });
    }
    step(format!(
        "fetching the Debian {} cloud kernel ({}) into {}",
        line.name,
        line.suite,
        dir.display()
    ));
    let apt = PrivateApt::new(&dir.join("apt"), line.suite)?;
    apt.update()?;
    let package = apt.resolve_meta("linux-image-cloud-amd64")?;
    let version = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_owned();
    if !version.starts_with(&format!("{}.", line.name)) {
        bail!(
            "Debian {}'s cloud kernel is now {version}, not {}.x; update LINES in xtask/src/kernels.rs",
            line.suite,
            line.name
        );
    }
    let deb = apt.download(&package)?;
    let unpacked = dir.join("root");
    let _ = fs::remove_dir_all(&unpacked);
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    let image = fs::read_dir(unpacked.join("boot"))
        .context("kernel package has no /boot")?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("kernel package has no /boot/vmlinuz-*")?;
    fs::copy(&image, &vmlinuz)?;
    keep_modules(&unpacked, &modules)?;
    fs::write(&version_file, format!("{version}\n"))?;
    let _ = fs::remove_dir_all(&unpacked);
    let _ = fs::remove_file(&deb);
    Ok(Kernel {
        line: line.name,
        version,
        vmlinuz,
    })
}

/// The modules the guest loads at boot (in this order): sock_diag's inet
/// handlers, which `SOCK_DESTROY` (connection teardown) needs. Debian
/// builds them as modules; a real host loads them on demand.
/// And overlayfs, which the route tests mount in a user namespace.
pub const MODULES: &[&str] = &["inet_diag.ko", "tcp_diag.ko", "overlay.ko"];

/// Copies [`MODULES`] out of an unpacked kernel package into `to`,
/// decompressed (the guest's busybox `insmod` reads plain ELF).
fn keep_modules(unpacked: &Path, to: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to)?;
    let found = output(Command::new("find").arg(unpacked).args(["-name", "*.ko*"]))?;
    for module in MODULES {
        let path = found
            .lines()
            .map(Path::new)
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n == *module || n.strip_suffix(".xz") == Some(*module)
                })
            })
            .with_context(|| format!("the kernel package has no {module}"))?;
        let target = to.join(module);
        if path.extension().is_some_and(|x| x == "xz") {
            let plain = Command::new("xz")
                .arg("-dc")
                .arg(path)
                .output()
                .context("running xz")?;
            if !plain.status.success() {
                bail!("xz could not decompress {}", path.display());
            }
            fs::write(&target, plain.stdout)?;
        } else {
            fs::copy(path, &target)?;
        }
    }
    Ok(())
}

/// apt with its own sources, lists and cache: only `update`, dependency
/// lookup and `download` are ever run with it.
struct PrivateApt {
    dir: PathBuf,
    options: Vec<String>,
}

impl PrivateApt {
    fn new(dir: &Path, suite: &str) -> Result<Self> {
        for sub in ["state/lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let key = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let sources = dir.join("sources.list");
        fs::write(
            &sources,
            format!(
                "deb [signed-by={key}] http://deb.debian.org/debian {suite} main\n\
                 deb [signed-by={key}] http://deb.debian.org/debian-security {suite}-security main\n"
            ),
        )?;
        let d = dir.display();
        let options = [
            format!("Dir::State={d}/state"),
            format!("Dir::Cache={d}/cache"),
            format!("Dir::Etc::SourceList={}", sources.display()),
            "Dir::Etc::SourceParts=/dev/null".to_owned(),
            "Debug::NoLocking=1".to_owned(),
            // Downloads land in our own directory, which _apt cannot enter.
            "APT::Sandbox::User=root".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect();
        Ok(PrivateApt {
            dir: dir.to_owned(),
            options,
        })
    }

    fn apt(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(&self.options);
        c
    }

    fn update(&self) -> Result<()> {
        run(self.apt("apt-get").args(["-q", "update"]))
    }

    /// The `linux-image-*` package a meta package currently depends on.
    fn resolve_meta(&self, meta: &str) -> Result<String> {
        let deps = output(self.apt("apt-cache").args(["depends", meta]))?;
        deps.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_owned)
            .with_context(|| format!("{meta} depends on no linux-image-* package"))
    }

    fn download(&self, package: &str) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        run(self
            .apt("apt-get")
            .args(["-q", "download", package])
            .current_dir(&debs))?;
        fs::read_dir(&debs)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| format!("apt-get download {package} produced no .deb"))
    }
}
