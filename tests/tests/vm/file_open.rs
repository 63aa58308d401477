//! The LSM `file_open` program denies managed cgroups and nobody else.

use ward_abi::Effect;
use ward_agent::{
    cgroup::{OwnedCgroup, cgroup2_mount},
    enforcer::{Decision, Enforcer, PathPattern},
};
use ward_tests::{OpenOutcome, TempDir, open_as_child};

const DENY: Decision = Decision {
    effect: Effect::Deny,
    rule_id: 7,
};

fn managed_cgroup(enforcer: &mut Enforcer, name: &str) -> OwnedCgroup {
    let root = cgroup2_mount().expect("cgroup2 mounted");
    let cg = OwnedCgroup::create(&root, name).expect("create test cgroup");
    enforcer.manage_cgroup(cg.id()).expect("manage cgroup");
    cg
}

#[test]
fn protected_file_is_denied_in_the_managed_cgroup_only() {
    let dir = TempDir::new("file-open");
    let secret = dir.file("secret.txt");
    let public = dir.file("public.txt");
    let mut enforcer = Enforcer::load().expect("load enforcer");
    let managed = managed_cgroup(&mut enforcer, "ward-test-managed");
    let pattern = PathPattern::parse(secret.to_str().unwrap()).unwrap();
    enforcer.protect_path(&pattern, DENY).expect("protect");

    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Refused(libc::EACCES),
        "a managed process must not open the protected file"
    );
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_WRONLY),
        OpenOutcome::Refused(libc::EACCES),
        "nor open it for writing"
    );
    assert_eq!(
        open_as_child(None, &secret, libc::O_RDONLY),
        OpenOutcome::Opened,
        "a process outside the managed cgroup opens the same file"
    );
    let other = OwnedCgroup::create(&cgroup2_mount().unwrap(), "ward-test-unmanaged").unwrap();
    assert_eq!(
        open_as_child(Some(&other), &secret, libc::O_RDONLY),
        OpenOutcome::Opened,
        "a process in another, unmanaged cgroup opens it too"
    );
    assert_eq!(
        open_as_child(Some(&managed), &public, libc::O_RDONLY),
        OpenOutcome::Opened,
        "a managed process still opens files that are not protected"
    );
}

#[test]
fn subtree_rule_covers_its_subtree_and_not_its_siblings() {
    let dir = TempDir::new("subtree");
    let inside = dir.file("prod/app.log");
    let nested = dir.file("prod/deep/er.log");
    let sibling = dir.file("production/app.log");
    let mut enforcer = Enforcer::load().expect("load enforcer");
    let managed = managed_cgroup(&mut enforcer, "ward-test-subtree");
    let prefix = format!("{}/prod/", dir.path().display());
    enforcer
        .protect_path(&PathPattern::parse(&prefix).unwrap(), DENY)
        .expect("protect");

    for denied in [&inside, &nested] {
        assert_eq!(
            open_as_child(Some(&managed), denied, libc::O_RDONLY),
            OpenOutcome::Refused(libc::EACCES),
            "{} is under {prefix}",
            denied.display()
        );
    }
    assert_eq!(
        open_as_child(Some(&managed), &sibling, libc::O_RDONLY),
        OpenOutcome::Opened,
        "{prefix} must not cover {}",
        sibling.display()
    );
}

#[test]
fn symlink_and_relative_paths_reach_the_same_decision() {
    let dir = TempDir::new("bypass");
    let secret = dir.file("secret.txt");
    let link = dir.path().join("innocent-link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let mut enforcer = Enforcer::load().expect("load enforcer");
    let managed = managed_cgroup(&mut enforcer, "ward-test-bypass");
    enforcer
        .protect_path(&PathPattern::parse(secret.to_str().unwrap()).unwrap(), DENY)
        .expect("protect");

    assert_eq!(
        open_as_child(Some(&managed), &link, libc::O_RDONLY),
        OpenOutcome::Refused(libc::EACCES),
        "a symlink resolves to the protected file"
    );
    let dotted = dir.path().join("./x/../secret.txt");
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    assert_eq!(
        open_as_child(Some(&managed), &dotted, libc::O_RDONLY),
        OpenOutcome::Refused(libc::EACCES),
        "a path with . and .. resolves to the protected file"
    );
}
