//! What runs inside a test VM: statically linked binaries packed with
//! busybox into an initramfs whose `/init` reports over a second serial port.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace,
    process::{output, step},
};

/// Host triple for the guest binaries; given explicitly so that the static
/// RUSTFLAGS apply to them and not to build scripts and proc macros.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Protocol lines `/init` writes to the results port (ttyS1).
pub const READY: &str = "WARD-VM-READY";
pub const EXIT: &str = "WARD-VM-EXIT";
pub const ERROR: &str = "WARD-VM-ERROR";

/// The guest's `/init`. It fails the run unless `bpf` is an active LSM.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/ward/bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
ip link set lo up
# Everything from here goes to the results port; the console keeps the kernel log.
exec >/dev/ttyS1 2>&1
# sock_diag's inet handlers (connection teardown), which a real host loads
# on demand.
for m in inet_diag tcp_diag overlay; do
  insmod /lib/modules/$(uname -r)/$m.ko || echo "WARD-VM-NOTE could not load $m"
done
finish() { echo "WARD-VM-EXIT $1"; sync; poweroff -f; }
lsm=$(cat /sys/kernel/security/lsm 2>/dev/null)
case ",$lsm," in
  *,bpf,*) ;;
  *) echo "WARD-VM-ERROR bpf is not an active LSM (lsm=$lsm)"; finish 97 ;;
esac
echo "WARD-VM-READY kernel=$(uname -r) lsm=$lsm"
cd /tmp
sh /ward/run.sh
finish $?
"#;

/// Binaries for the guest, built statically.
pub struct GuestBinaries {
    pub ward: PathBuf,
    pub wardd: PathBuf,
    /// The demo runs the coordinator beside the agent.
    pub coordinator: PathBuf,
    /// Test executables: (name in the guest, path on the host).
    pub tests: Vec<(String, PathBuf)>,
}

pub fn build(ws: &Workspace) -> Result<GuestBinaries> {
    step("building static binaries for the test VM");
    let cargo = |args: &[&str]| -> Command {
        let mut c = Command::new("cargo");
        c.args(args)
            .args(["--target", GUEST_TARGET, "--profile", "vm"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(&ws.root)
            .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
        c
    };
    let bins = executables(&output(&mut cargo(&[
        "build",
        "-p",
        "ward-agent",
        "-p",
        "ward-coordinator",
        "--bins",
    ]))?);
    let bin = |want: &str| {
        bins.iter()
            .find(|(name, _)| name == want)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("cargo built no `{want}` binary"))
    };
    let (ward, wardd, coordinator) = (bin("ward")?, bin("wardd")?, bin("ward-coordinator")?);
    let mut tests = Vec::new();
    for (suite, args) in [
        (
            "agent-unit",
            &["test", "--no-run", "-p", "ward-agent", "--lib"][..],
        ),
        (
            "kernel",
            &[
                "test",
                "--no-run",
                "-p",
                "ward-tests",
                "--no-default-features",
                "--test",
                "vm",
            ][..],
        ),
    ] {
        let found = executables(&output(&mut cargo(args))?);
        let Some((_, path)) = found.into_iter().next() else {
            bail!("cargo built no test executable for suite {suite}");
        };
        tests.push((suite.to_owned(), path));
    }
    Ok(GuestBinaries {
        ward,
        wardd,
        coordinator,
        tests,
    })
}

/// (target name, executable) from cargo's JSON messages.
fn executables(messages: &str) -> Vec<(String, PathBuf)> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let exe = m["executable"].as_str()?;
            let name = m["target"]["name"].as_str()?;
            Some((name.to_owned(), PathBuf::from(exe)))
        })
        .collect()
}

/// Packs an initramfs that runs `script` and reports over ttyS1.
pub fn pack(ws: &Workspace, bins: &GuestBinaries, script: &str) -> Result<PathBuf> {
    let vm = ws.target().join("vm");
    let root = vm.join("initramfs");
    let _ = fs::remove_dir_all(&root);
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "ward/bin",
        "ward/tests",
        "etc",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    install(Path::new("/bin/busybox"), &root.join("bin/busybox"))?;
    install(&bins.ward, &root.join("ward/bin/ward"))?;
    install(&bins.wardd, &root.join("ward/bin/wardd"))?;
    install(&bins.coordinator, &root.join("ward/bin/ward-coordinator"))?;
    for (name, path) in &bins.tests {
        install(path, &root.join("ward/tests").join(name))?;
    }
    write_exec(&root.join("init"), INIT)?;
    // Every fetched kernel's modules: one image boots each of them.
    for kernel in fs::read_dir(ws.target().join("kernels"))?.flatten() {
        let Ok(version) = fs::read_to_string(kernel.path().join("version")) else {
            continue;
        };
        let dir = root.join("lib/modules").join(version.trim());
        fs::create_dir_all(&dir)?;
        for module in crate::kernels::MODULES {
            let from = kernel.path().join("modules").join(module);
            fs::copy(&from, dir.join(module))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    write_exec(&root.join("ward/run.sh"), script)?;
    // Tests look users up by name; give root a passwd entry.
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/tmp:/bin/sh\nbob:x:1001:1001:Bob:/tmp:/bin/sh\n",
    )?;
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nalice:x:1000:\nbob:x:1001:\nward-admin:x:990:\n",
    )?;

    // Uncompressed: the guest runs under software emulation, where
    // decompressing tens of MiB costs more than reading them.
    let image = vm.join("initramfs.cpio");
    let list = output(Command::new("find").arg(".").current_dir(&root))?;
    let mut cpio = Command::new("sh");
    cpio.arg("-c")
        .arg(format!("cpio --quiet -o -H newc > '{}'", image.display()))
        .current_dir(&root)
        .stdin(std::process::Stdio::piped());
    let mut child = cpio.spawn().context("starting cpio")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("cpio stdin")?;
        stdin.write_all(list.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("cpio failed packing {}", root.display());
    }
    Ok(image)
}

fn install(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn write_exec(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Environment every guest script starts with.
pub const GUEST_ENV: &str = "export WARD_BIN=/ward/bin/ward WARDD_BIN=/ward/bin/wardd \
     WARD_COORDINATOR_BIN=/ward/bin/ward-coordinator RUST_BACKTRACE=1\n";

/// Quotes an argument for the guest's sh.
pub fn sh_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
