//! Path matching in `file_open`: exact files, subtrees, and their neighbours.

use ward_abi::Op;
use ward_agent::enforcer::{Object, PathPattern};
use ward_tests::{OpenOutcome, TempDir, lifecycle::protection, open_as_child};

use crate::support::{cgroups, enforcer};

fn path(p: &str) -> Object {
    Object::Path(PathPattern::parse(p).unwrap())
}

#[test]
fn exact_file_rule_covers_the_file_only() {
    let dir = TempDir::new("exact");
    let secret = dir.file("secret.txt");
    let longer = dir.file("secret.txt-old");
    let public = dir.file("public.txt");
    let (managed, unmanaged) = cgroups("exact");
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    let object = path(secret.to_str().unwrap());
    enforcer
        .apply(&[
            protection(Op::Read, &object),
            protection(Op::Write, &object),
        ])
        .unwrap();

    let denied = OpenOutcome::Refused(libc::EACCES);
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        denied
    );
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_WRONLY),
        denied
    );
    assert_eq!(open_as_child(Some(&managed), &secret, libc::O_RDWR), denied);
    assert_eq!(
        open_as_child(Some(&unmanaged), &secret, libc::O_RDONLY),
        OpenOutcome::Opened
    );
    assert_eq!(
        open_as_child(None, &secret, libc::O_RDONLY),
        OpenOutcome::Opened
    );
    assert_eq!(
        open_as_child(Some(&managed), &longer, libc::O_RDONLY),
        OpenOutcome::Opened,
        "a file rule does not cover a longer name"
    );
    assert_eq!(
        open_as_child(Some(&managed), &public, libc::O_RDONLY),
        OpenOutcome::Opened
    );
}

#[test]
fn subtree_rule_covers_its_subtree_and_not_its_siblings() {
    let dir = TempDir::new("subtree");
    let inside = dir.file("prod/app.log");
    let nested = dir.file("prod/deep/er.log");
    let sibling = dir.file("production/app.log");
    let (managed, _unmanaged) = cgroups("subtree");
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    let prefix = format!("{}/prod/", dir.path().display());
    enforcer
        .apply(&[protection(Op::Read, &path(&prefix))])
        .unwrap();

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
    assert_eq!(
        open_as_child(Some(&managed), &inside, libc::O_WRONLY),
        OpenOutcome::Opened,
        "only reads are protected here"
    );
}

#[test]
fn descendants_of_a_managed_cgroup_are_managed() {
    let dir = TempDir::new("nested-cg");
    let secret = dir.file("secret.txt");
    let (managed, _unmanaged) = cgroups("nested-cg");
    let child = ward_agent::cgroup::OwnedCgroup::create(managed.path(), "child").unwrap();
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    enforcer
        .apply(&[protection(Op::Read, &path(secret.to_str().unwrap()))])
        .unwrap();
    assert_eq!(
        open_as_child(Some(&child), &secret, libc::O_RDONLY),
        OpenOutcome::Refused(libc::EACCES)
    );
    enforcer.unmanage_cgroup(managed.id()).unwrap();
    assert_eq!(
        open_as_child(Some(&child), &secret, libc::O_RDONLY),
        OpenOutcome::Opened,
        "unmanaging takes effect at once, despite the cached ancestor walk"
    );
}
