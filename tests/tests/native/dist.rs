//! What `cargo xtask install` ships: the unit, the tmpfiles entry, the
//! sample config.

use std::path::PathBuf;

use ward_tests::{run, wardd_bin};

fn dist(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(name)
}

#[test]
fn the_sample_config_is_valid() {
    let (code, out, err) = run(
        &wardd_bin(),
        &[
            "--config",
            dist("agent.toml").to_str().unwrap(),
            "--check-config",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_sample_ldap_config_is_valid() {
    let (code, out, err) = run(
        &wardd_bin(),
        &[
            "--config",
            dist("agent-ldap.toml").to_str().unwrap(),
            "--check-config",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_sample_policy_checks_and_compiles() {
    let (code, out, err) = run(
        &ward_tests::ward_bin(),
        &[
            "policy",
            "check",
            dist("policy.cedar").to_str().unwrap(),
            "--directory",
            dist("directory.toml").to_str().unwrap(),
            "--label",
            "env=prod",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("ok: 4 policies valid against ward's schema"),
        "{out}"
    );
    assert!(out.contains("compiled: 3 principals"), "{out}");
}

#[test]
fn the_sample_coordinator_policy_checks() {
    let (code, out, err) = run(
        &ward_tests::ward_bin(),
        &[
            "policy",
            "check",
            dist("coordinator.cedar").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: 6 policies"), "{out}");
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    // verify insists that ExecStart exists: point it at the built binary.
    let unit = std::fs::read_to_string(dist("wardd.service")).unwrap();
    assert!(unit.contains("CapabilityBoundingSet=") && unit.contains("NoNewPrivileges=yes"));
    let dir = ward_tests::TempDir::new("unit");
    let path = dir.path().join("wardd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/sbin/wardd", wardd_bin().to_str().unwrap()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; cargo xtask bootstrap installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("wardd.service:"),
        "no warnings about the unit: {err}"
    );
}

#[test]
fn the_tmpfiles_entry_creates_the_socket_directory() {
    let text = std::fs::read_to_string(dist("ward.tmpfiles.conf")).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("d /run/ward ")),
        "{text}"
    );
}
