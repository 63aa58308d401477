//! Ways around a path rule, and what each one meets.

use std::{net::TcpListener, os::fd::AsRawFd};

use ward_abi::Op;
use ward_agent::enforcer::{NetPattern, Object, PathPattern};
use ward_tests::{
    OpenOutcome, TempDir, connect_as_child, exec_as_child, lifecycle::protection, open_as_child,
};

use crate::support::{cgroups, enforcer};

const DENIED: OpenOutcome = OpenOutcome::Refused(libc::EACCES);

fn path(p: &std::path::Path) -> Object {
    Object::Path(PathPattern::parse(p.to_str().unwrap()).unwrap())
}

#[test]
fn symlinks_relative_paths_and_dotdot_resolve_to_the_protected_file() {
    let dir = TempDir::new("bypass-names");
    let secret = dir.file("vault/secret.txt");
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    let link = dir.path().join("innocent-link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let (managed, _) = cgroups("bypass-names");
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    enforcer
        .apply(&[protection(Op::Read, &path(&secret))])
        .unwrap();

    assert_eq!(
        open_as_child(Some(&managed), &link, libc::O_RDONLY),
        DENIED,
        "symlink"
    );
    let dotted = dir.path().join("x/../vault/./secret.txt");
    assert_eq!(
        open_as_child(Some(&managed), &dotted, libc::O_RDONLY),
        DENIED,
        ".."
    );
    // A relative path, from inside the directory.
    std::env::set_current_dir(dir.path().join("vault")).unwrap();
    let relative = std::path::Path::new("secret.txt");
    let outcome = open_as_child(Some(&managed), relative, libc::O_RDONLY);
    std::env::set_current_dir("/").unwrap();
    assert_eq!(outcome, DENIED, "relative path");
}

#[test]
fn reopening_through_proc_self_fd_is_denied() {
    let dir = TempDir::new("bypass-procfd");
    let secret = dir.file("secret.txt");
    let (managed, _) = cgroups("bypass-procfd");
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    enforcer
        .apply(&[protection(Op::Read, &path(&secret))])
        .unwrap();
    // An unmanaged parent opens the file; the managed child inherits the
    // descriptor and tries to turn it into a fresh open.
    let held = std::fs::File::open(&secret).unwrap();
    let via_proc = std::path::PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
    assert_eq!(
        open_as_child(Some(&managed), &via_proc, libc::O_RDONLY),
        DENIED
    );
}

#[test]
fn a_hard_link_made_before_protection_is_the_same_file() {
    // ward decides on the inode, not the name: a second name for a
    // protected file, even one made before protection and outside the
    // protected tree, reaches the same protected file.
    let dir = TempDir::new("bypass-hardlink");
    let secret = dir.file("vault/secret.txt");
    let alias = dir.path().join("elsewhere.txt");
    std::fs::hard_link(&secret, &alias).unwrap();
    let (managed, _) = cgroups("bypass-hardlink");
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    let vault = dir.path().join("vault/");
    let vault = format!("{}/", vault.display().to_string().trim_end_matches('/'));
    let object = Object::Path(PathPattern::parse(&vault).unwrap());
    enforcer.apply(&[protection(Op::Read, &object)]).unwrap();
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        DENIED
    );
    assert_eq!(
        open_as_child(Some(&managed), &alias, libc::O_RDONLY),
        DENIED,
        "a hard link outside the tree names the same protected inode"
    );
}

#[test]
fn exec_through_a_symlink_is_denied() {
    let dir = TempDir::new("bypass-exec");
    let tool = dir.path().join("bin/tool");
    std::fs::create_dir_all(tool.parent().unwrap()).unwrap();
    std::fs::copy("/bin/busybox", &tool).unwrap();
    let link = dir.path().join("friendly-name");
    std::os::unix::fs::symlink(&tool, &link).unwrap();
    let (managed, _) = cgroups("bypass-exec");
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    enforcer
        .apply(&[protection(Op::Exec, &path(&tool))])
        .unwrap();
    assert_eq!(exec_as_child(Some(&managed), &link, "true"), DENIED);
    assert_eq!(exec_as_child(Some(&managed), &tool, "true"), DENIED);
    assert_eq!(exec_as_child(None, &link, "true"), OpenOutcome::Opened);
}

#[test]
fn connect_to_an_ipv4_mapped_ipv6_address_is_denied() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (managed, _) = cgroups("bypass-mapped");
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.0/8:{port}")).unwrap());
    enforcer.apply(&[protection(Op::Connect, &object)]).unwrap();
    let v4 = format!("127.0.0.1:{port}").parse().unwrap();
    let mapped = format!("[::ffff:127.0.0.1]:{port}").parse().unwrap();
    let denied = OpenOutcome::Refused(libc::EPERM);
    assert_eq!(connect_as_child(Some(&managed), v4), denied);
    assert_eq!(connect_as_child(Some(&managed), mapped), denied);
    assert_eq!(connect_as_child(None, mapped), OpenOutcome::Opened);
}
