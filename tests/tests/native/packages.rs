//! The Debian packages `cargo xtask dist` builds: lintian-clean, installed
//! into a scratch root with `dpkg --root` (maintainer scripts run with
//! `DPKG_ROOT` set, so nothing on this host changes), and upgraded in place
//! while the installed wardd enforces on the test cgroups, with no moment
//! in which a protected destination opens.
//!
//! `cargo xtask test` builds the packages from its own build (revisions 1
//! and 2) and names their directory in `WARD_TEST_DEBS`.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use ward_tests::{OpenOutcome, TempDir, run, wardd::Wardd};

use crate::daemon::host;

fn debs() -> PathBuf {
    PathBuf::from(
        std::env::var("WARD_TEST_DEBS")
            .expect("WARD_TEST_DEBS names the packages' directory: run under `cargo xtask test`"),
    )
}

/// `NAME_VERSION-REVISION_amd64.deb`.
fn deb(name: &str, revision: u32) -> PathBuf {
    let version = env!("CARGO_PKG_VERSION");
    let path = debs().join(format!("{name}_{version}-{revision}_amd64.deb"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// An empty root with a dpkg database of its own.
fn scratch_root(tag: &str) -> TempDir {
    let root = TempDir::new(tag);
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.path().join(f), "").unwrap();
    }
    root
}

/// `dpkg --root ROOT -i DEBS`: the scripts run outside a chroot with
/// `DPKG_ROOT` set; the scratch root has none of the dependencies.
fn dpkg_install(root: &Path, debs: &[PathBuf]) -> String {
    let mut args = vec![
        format!("--root={}", root.display()),
        "--force-script-chrootless".into(),
        "--force-depends".into(),
        "-i".into(),
    ];
    args.extend(debs.iter().map(|d| d.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(Path::new("dpkg"), &args);
    assert_eq!(code, 0, "dpkg -i: {out}{err}");
    out
}

fn query(root: &Path, package: &str, format: &str) -> String {
    let root = format!("--root={}", root.display());
    let format = format!("-f={format}");
    let (code, out, err) = run(
        Path::new("dpkg-query"),
        &[root.as_str(), "-W", format.as_str(), package],
    );
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn the_packages_are_lintian_clean() {
    let (ward, coordinator) = (deb("ward", 1), deb("ward-coordinator", 1));
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(&ward)
        .arg(&coordinator)
        .output()
        .expect("lintian (Debian package lintian; cargo xtask test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tags: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(out.status.success() && tags.is_empty(), "{text}");
}

#[test]
fn the_packages_install_their_files_conffiles_and_enabled_units() {
    let root = scratch_root("deb-install");
    let r = root.path();
    dpkg_install(r, &[deb("ward", 1), deb("ward-coordinator", 1)]);
    for (path, mode) in [
        ("usr/sbin/wardd", 0o755),
        ("usr/bin/ward", 0o755),
        ("usr/bin/ward-coordinator", 0o755),
        ("lib/systemd/system/wardd.service", 0o644),
        ("lib/systemd/system/ward-coordinator.service", 0o644),
        ("usr/lib/tmpfiles.d/ward.conf", 0o644),
        ("etc/ward/agent.toml", 0o644),
        ("etc/ward-coordinator/coordinator.toml", 0o644),
        ("usr/share/man/man8/wardd.8.gz", 0o644),
        ("usr/share/man/man1/ward.1.gz", 0o644),
        ("usr/share/doc/ward/copyright", 0o644),
    ] {
        let m = std::fs::metadata(r.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(m.permissions().mode() & 0o7777, mode, "{path}");
    }
    // The sample configuration is the operator's: conffiles, kept across
    // upgrades once edited.
    let conffiles = query(r, "ward", "${Conffiles}");
    for c in [
        "/etc/ward/agent.toml",
        "/etc/ward/policy.cedar",
        "/etc/ward/directory.toml",
    ] {
        assert!(conffiles.contains(c), "{c} in {conffiles}");
    }
    assert!(
        query(r, "ward-coordinator", "${Conffiles}")
            .contains("/etc/ward-coordinator/coordinator.toml")
    );
    // The packages' group and user, made by systemd-sysusers in the root.
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap_or_default();
    assert!(group.contains("ward-admin:"), "{group}");
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap_or_default();
    assert!(passwd.contains("ward-coordinator:"), "{passwd}");
    // Enabled on first install (into the root, not this host), not started.
    for unit in ["wardd.service", "ward-coordinator.service"] {
        let wants = r
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        let target = std::fs::read_link(&wants).unwrap_or_else(|e| panic!("{unit} enabled: {e}"));
        assert_eq!(target, Path::new("/lib/systemd/system").join(unit));
        assert!(
            !Path::new("/etc/systemd/system/multi-user.target.wants")
                .join(unit)
                .exists(),
            "the host's own units are untouched"
        );
    }
    // The installed units verify, pointed at the installed binaries.
    let units = TempDir::new("deb-units");
    let mut paths = Vec::new();
    for unit in ["wardd.service", "ward-coordinator.service"] {
        let text = std::fs::read_to_string(r.join("lib/systemd/system").join(unit)).unwrap();
        assert!(
            !text.contains("/usr/local/"),
            "{unit} names the packaged paths"
        );
        let text = text
            .replace("/usr/sbin/", &format!("{}/usr/sbin/", r.display()))
            .replace("/usr/bin/", &format!("{}/usr/bin/", r.display()));
        let path = units.path().join(unit);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains(".service:"), "{err}");
    // The installed binaries run, and the sample config they ship checks.
    let (code, out, err) = run(
        &r.join("usr/sbin/wardd"),
        &[
            "--config",
            r.join("etc/ward/agent.toml").to_str().unwrap(),
            "--check-config",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&r.join("usr/bin/ward-coordinator"), &["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ward-coordinator "), "{out}");
}

#[test]
fn an_upgrade_keeps_enforcement_on_throughout() {
    let root = scratch_root("deb-upgrade");
    let r = root.path();
    dpkg_install(r, &[deb("ward", 1)]);
    let h = host("deb-upgrade", "");
    let wardd = r.join("usr/sbin/wardd");
    let mut agent = Wardd::spawn(Command::new(&wardd), &h.config, &h.socket, &[]);
    assert_eq!(h.connect(), OpenOutcome::Refused(libc::EPERM));

    // A workload in the managed cgroup keeps trying the protected
    // destination for the whole upgrade.
    let stop = AtomicBool::new(false);
    let (tries, opened) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let wait_tries = |n: usize| {
        let start = tries.load(Ordering::SeqCst);
        while tries.load(Ordering::SeqCst) < start + n {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let (mut agent, stopped_at) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                if h.connect() == OpenOutcome::Opened {
                    opened.fetch_add(1, Ordering::SeqCst);
                }
                tries.fetch_add(1, Ordering::SeqCst);
            }
        });
        wait_tries(5);
        // The new files go in under the running agent (dpkg never stops it
        // on an upgrade); then it restarts, as `deb-systemd-invoke
        // try-restart` does: stopped, and the new binary started. Between
        // the two, only the pinned programs enforce.
        dpkg_install(r, &[deb("ward", 2)]);
        wait_tries(5);
        agent.stop();
        let stopped_at = tries.load(Ordering::SeqCst);
        wait_tries(20);
        let agent = Wardd::spawn(Command::new(&wardd), &h.config, &h.socket, &[]);
        wait_tries(5);
        stop.store(true, Ordering::SeqCst);
        (agent, stopped_at)
    });

    println!(
        "upgrade: {} connection attempts, {} from wardd's stop to the end, none may open",
        tries.load(Ordering::SeqCst),
        tries.load(Ordering::SeqCst) - stopped_at
    );
    assert_eq!(
        opened.load(Ordering::SeqCst),
        0,
        "no connection opened during the upgrade ({} tries, {} while wardd was down)",
        tries.load(Ordering::SeqCst),
        tries.load(Ordering::SeqCst) - stopped_at
    );
    assert_eq!(
        query(r, "ward", "${Version}"),
        format!("{}-2", env!("CARGO_PKG_VERSION"))
    );
    // The upgraded agent took over: it answers, and a grant opens.
    let (code, _, err) = h.grant("g-after-upgrade", "10m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.connect(), OpenOutcome::Opened);
    agent.stop();
}
