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

/// Opens `path` read-only in a child running as `uid` (no cgroup move).
fn open_as_uid(uid: u32, path: &std::path::Path) -> OpenOutcome {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: setuid, open, close only.
    unsafe {
        ward_tests::in_child(None, || {
            if libc::setuid(uid) != 0 {
                return 199;
            }
            let fd = libc::open(target.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return *libc::__errno_location();
            }
            libc::close(fd);
            0
        })
    }
}

#[test]
fn managed_uid_ranges_are_subjects_too() {
    let dir = TempDir::new("uid");
    let secret = dir.file("secret.txt");
    let mut enforcer = ward_agent::enforcer::Enforcer::load(ward_agent::enforcer::EnforcerConfig {
        uid_ranges: vec![(1000, 1999)],
        ..Default::default()
    })
    .unwrap();
    let object = path(secret.to_str().unwrap());
    enforcer.apply(&[protection(Op::Read, &object)]).unwrap();
    assert_eq!(
        open_as_uid(1500, &secret),
        OpenOutcome::Refused(libc::EACCES)
    );
    assert_eq!(
        open_as_uid(2000, &secret),
        OpenOutcome::Opened,
        "outside the range"
    );
    assert_eq!(
        open_as_uid(0, &secret),
        OpenOutcome::Opened,
        "root is not in the range"
    );
    let grant = ward_agent::enforcer::Entry {
        subject: ward_agent::enforcer::Subject::Uid(1500),
        op: Op::Read,
        object,
        effect: ward_abi::Effect::Allow,
        expires: ward_agent::enforcer::Expiry::Never,
        rule_id: 300,
        from_grant: true,
    };
    enforcer.grant(300, vec![grant]).unwrap();
    assert_eq!(
        open_as_uid(1500, &secret),
        OpenOutcome::Opened,
        "granted to uid 1500"
    );
    assert_eq!(
        open_as_uid(1501, &secret),
        OpenOutcome::Refused(libc::EACCES),
        "and to nobody else"
    );
}
