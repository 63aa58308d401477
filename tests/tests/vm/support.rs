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
