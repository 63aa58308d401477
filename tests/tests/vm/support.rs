//! Setup shared by the VM suites.

use ward_agent::{
    cgroup::{OwnedCgroup, cgroup2_mount},
    enforcer::{Enforcer, EnforcerConfig},
};

/// A fresh enforcer with the LSM hooks, nothing pinned.
pub fn enforcer() -> Enforcer {
    Enforcer::load(EnforcerConfig::default()).expect("load enforcer")
}

/// A managed and an unmanaged cgroup, named after the test.
pub fn cgroups(tag: &str) -> (OwnedCgroup, OwnedCgroup) {
    let root = cgroup2_mount().expect("cgroup2 mounted");
    let managed = OwnedCgroup::create(&root, &format!("ward-{tag}-managed")).expect("cgroup");
    let unmanaged = OwnedCgroup::create(&root, &format!("ward-{tag}-other")).expect("cgroup");
    (managed, unmanaged)
}

/// Writes `dir/agent.toml` for a wardd whose socket, state and audit log
/// live in `dir`, pinned at `pin_dir`, on the BPF LSM hooks; `rest` is
/// what follows `hooks = "lsm"` (managed subjects, `[protect]`,
/// `[policy]`). Returns the config's path; the socket is
/// `dir/agent.sock`.
pub fn agent_config(dir: &std::path::Path, pin_dir: &str, rest: &str) -> std::path::PathBuf {
    let d = dir.display();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"[agent]
socket = "{d}/agent.sock"
state_dir = "{d}/state"
audit_log = "{d}/audit.jsonl"
pin_dir = "{pin_dir}"

[enforce]
hooks = "lsm"
{rest}"#
        ),
    )
    .expect("write agent.toml");
    config
}
