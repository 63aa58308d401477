//! Every route to a protected object, tried as an unprivileged managed
//! user whose Unix permissions allow it: ward alone stands in the way.
//! Each route is denied without a grant, and the same route works once a
//! grant for that operation exists (so a test fails if its hook is gone).

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
};

use ward_abi::{Effect, Op};
use ward_agent::enforcer::{Enforcer, EnforcerConfig, Entry, Expiry, Object, PathPattern, Subject};
use ward_tests::{Identity, OpenOutcome, TempDir, errno, lifecycle::protection};

/// The managed, unprivileged test user.
const USER: u32 = 4242;
const DENIED: OpenOutcome = OpenOutcome::Refused(libc::EACCES);
const GRANT: u64 = 77;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("NUL in path")
}

/// A protected tree the user may read and write by Unix permissions.
struct Fixture {
    dir: TempDir,
    /// `…/srv/prod/`, protected for read and write.
    tree: PathBuf,
    /// `…/srv/prod/secret.txt`, owned by the user, mode 0666.
    secret: PathBuf,
    /// `…/srv/prod/sub/`, 0777, holding `deep.txt`.
    sub: PathBuf,
    /// `…/out/`: a directory of the user's own, outside the tree.
    out: PathBuf,
    enforcer: Enforcer,
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).expect("chown");
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Fixture {
    fn new(tag: &str, ops: &[Op]) -> Fixture {
        let enforcer = Enforcer::load(EnforcerConfig {
            uid_ranges: vec![(4000, 4999)],
            ..Default::default()
        })
        .expect("load enforcer");
        Fixture::with(enforcer, tag, ops)
    }

    /// A fresh tree for the next case, on the same enforcer (loading one
    /// is the verifier's work: seconds under emulation). The grant is
    /// revoked and the table replaced.
    fn next(self, tag: &str, ops: &[Op]) -> Fixture {
        let mut enforcer = self.enforcer;
        enforcer.revoke(GRANT).expect("revoke");
        Fixture::with(enforcer, tag, ops)
    }

    fn with(mut enforcer: Enforcer, tag: &str, ops: &[Op]) -> Fixture {
        let dir = TempDir::new(&format!("route-{tag}"));
        chmod(dir.path(), 0o755);
        let secret = dir.file("srv/prod/secret.txt");
        let deep = dir.file("srv/prod/sub/deep.txt");
        let tree = dir.path().join("srv/prod");
        let sub = dir.path().join("srv/prod/sub");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        for d in [
            dir.path().join("srv"),
            tree.clone(),
            sub.clone(),
            out.clone(),
        ] {
            chmod(&d, 0o777);
            chown(&d, USER);
        }
        for f in [&secret, &deep] {
            chmod(f, 0o666);
            chown(f, USER);
        }
        let object = tree_object(&tree);
        let entries: Vec<Entry> = ops.iter().map(|op| protection(*op, &object)).collect();
        enforcer.apply(&entries).expect("apply protection");
        Fixture {
            dir,
            tree,
            secret,
            sub,
            out,
            enforcer,
        }
    }

    /// Grants the user `op` on the tree.
    fn grant(&mut self, op: Op) {
        self.grant_on(op, tree_object(&self.tree));
    }

    fn grant_on(&mut self, op: Op, object: Object) {
        let e = Entry {
            subject: Subject::Uid(USER),
            op,
            object,
            effect: Effect::Allow,
            expires: Expiry::Never,
            rule_id: GRANT,
            from_grant: true,
        };
        self.enforcer.grant(GRANT, vec![e]).expect("grant");
    }
}

fn tree_object(tree: &Path) -> Object {
    let s = format!("{}/", tree.display().to_string().trim_end_matches('/'));
    Object::Path(PathPattern::parse(&s).unwrap())
}

/// Runs `attempt` (raw syscalls only; 0 or an errno) as the managed user.
fn as_user(attempt: impl FnOnce() -> i32) -> OpenOutcome {
    let id = Identity {
        login_uid: None,
        uid: USER,
        gid: USER,
    };
    // SAFETY: every attempt below makes raw syscalls only.
    unsafe { ward_tests::as_identity(id, attempt) }
}

/// 0 if `r` is 0 (or a valid fd, closed), else errno.
fn ok(r: i32) -> i32 {
    if r < 0 {
        return errno();
    }
    0
}

fn open_close(path: &CString, flags: i32) -> i32 {
    // SAFETY: open and close.
    unsafe {
        let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o666);
        if fd < 0 {
            return errno();
        }
        libc::close(fd);
    }
    0
}

/// Asserts the route is denied, then granted `op`, that it works.
fn denied_then_granted(fx: &mut Fixture, op: Op, what: &str, attempt: impl Fn() -> i32) {
    assert_eq!(
        as_user(&attempt),
        DENIED,
        "{what}: must be denied without a grant"
    );
    fx.grant(op);
    assert_eq!(
        as_user(&attempt),
        OpenOutcome::Opened,
        "{what}: a grant for {op:?} must allow it"
    );
}

// ---- Another view of the same tree -------------------------------------

/// In the child: a new user and mount namespace, mapping root to USER.
///
/// # Safety
/// Raw syscalls in a forked child.
unsafe fn enter_userns(uid_map: &[u8]) -> i32 {
    // SAFETY: as above.
    unsafe {
        // setuid() left the process non-dumpable, so its /proc files are
        // root's; a login would have left it dumpable.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return 190;
        }
        for (file, data) in [
            (c"/proc/self/setgroups".as_ptr(), &b"deny"[..]),
            (c"/proc/self/uid_map".as_ptr(), uid_map),
            (c"/proc/self/gid_map".as_ptr(), uid_map),
        ] {
            let fd = libc::open(file, libc::O_WRONLY);
            if fd < 0 || libc::write(fd, data.as_ptr().cast(), data.len()) < 0 {
                return 191;
            }
            libc::close(fd);
        }
    }
    0
}

fn uid_map() -> Vec<u8> {
    format!("0 {USER} 1").into_bytes()
}

#[test]
fn a_bind_mount_in_a_user_namespace_is_the_same_tree() {
    let mut fx = Fixture::new("bind", &[Op::Read]);
    let view = fx.out.join("view");
    std::fs::create_dir(&view).unwrap();
    chown(&view, USER);
    let (src, dst) = (c(&fx.tree), c(&view));
    let target = c(&view.join("secret.txt"));
    let map = uid_map();
    let attempt = || {
        // SAFETY: raw syscalls in the child.
        unsafe {
            let r = enter_userns(&map);
            if r != 0 {
                return r;
            }
            if libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            {
                return 192;
            }
        }
        open_close(&target, libc::O_RDONLY)
    };
    denied_then_granted(&mut fx, Op::Read, "bind mount in a userns", attempt);
}

#[test]
fn a_chroot_in_a_user_namespace_is_the_same_tree() {
    let mut fx = Fixture::new("chroot", &[Op::Read]);
    let root = c(fx.tree.parent().unwrap());
    let inside = CString::new("/prod/secret.txt").unwrap();
    let map = uid_map();
    let attempt = || {
        // SAFETY: raw syscalls in the child.
        unsafe {
            let r = enter_userns(&map);
            if r != 0 {
                return r;
            }
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return 193;
            }
        }
        open_close(&inside, libc::O_RDONLY)
    };
    denied_then_granted(&mut fx, Op::Read, "chroot in a userns", attempt);
}

#[test]
fn a_bind_mount_made_by_root_elsewhere_is_the_same_tree() {
    // An administrator's bind mount in the initial namespace: another name
    // for the same inodes.
    let mut fx = Fixture::new("rootbind", &[Op::Read]);
    let view = fx.dir.path().join("view");
    std::fs::create_dir(&view).unwrap();
    let (src, dst) = (c(&fx.tree), c(&view));
    // SAFETY: mount(2) with valid paths.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "bind mount");
    let target = c(&view.join("sub/deep.txt"));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        denied_then_granted(&mut fx, Op::Read, "bind mount by root", || {
            open_close(&target, libc::O_RDONLY)
        })
    }));
    // SAFETY: umount2 of the mount made above.
    unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
    outcome.unwrap();
}

#[test]
fn a_filesystem_mounted_inside_the_tree_is_inside_it() {
    // The kernel's walk stops at a filesystem's root: ward lists the roots
    // of mounts inside a protected tree as part of it.
    let dir = TempDir::new("route-submount");
    let tree = dir.path().join("prod");
    let mnt = tree.join("data");
    std::fs::create_dir_all(&mnt).unwrap();
    let (none, at) = (c(Path::new("none")), c(&mnt));
    // SAFETY: mount(2) of a tmpfs on a directory of ours.
    let r = unsafe {
        libc::mount(
            none.as_ptr(),
            at.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"mode=0777".as_ptr().cast(),
        )
    };
    assert_eq!(r, 0, "mount tmpfs");
    std::fs::write(mnt.join("f.txt"), b"x").unwrap();
    chmod(&mnt.join("f.txt"), 0o666);
    let mut enforcer = Enforcer::load(EnforcerConfig {
        uid_ranges: vec![(4000, 4999)],
        ..Default::default()
    })
    .unwrap();
    enforcer
        .apply(&[protection(Op::Read, &tree_object(&tree))])
        .unwrap();
    let target = c(&mnt.join("f.txt"));
    let outcome = as_user(|| open_close(&target, libc::O_RDONLY));
    // SAFETY: umount of the tmpfs mounted above.
    unsafe { libc::umount2(at.as_ptr(), libc::MNT_DETACH) };
    assert_eq!(
        outcome, DENIED,
        "a file on a filesystem mounted inside the tree"
    );
}

// ---- Another name for the same file -------------------------------------

#[test]
fn a_hard_link_made_before_protection_is_the_same_file() {
    let mut fx = Fixture::new("oldlink", &[Op::Read]);
    let alias = fx.out.join("alias.txt");
    std::fs::hard_link(&fx.secret, &alias).unwrap();
    // The link was made after the tree was listed: wardd rescans trees for
    // files with several names every 30 s; do it now.
    fx.enforcer.refresh_objects(true).unwrap();
    let alias = c(&alias);
    denied_then_granted(&mut fx, Op::Read, "pre-existing hard link", || {
        open_close(&alias, libc::O_RDONLY)
    });
}

#[test]
fn making_a_hard_link_is_a_write() {
    let mut fx = Fixture::new("newlink", &[Op::Read, Op::Write]);
    let (from, to) = (c(&fx.secret), c(&fx.out.join("alias.txt")));
    // SAFETY: link(2).
    let attempt = || ok(unsafe { libc::link(from.as_ptr(), to.as_ptr()) });
    denied_then_granted(&mut fx, Op::Write, "link(2) to a protected file", attempt);
}

#[test]
fn a_link_into_the_tree_is_a_write() {
    let mut fx = Fixture::new("linkin", &[Op::Write]);
    let mine = fx.out.join("mine.txt");
    std::fs::write(&mine, b"x").unwrap();
    chown(&mine, USER);
    let (from, to) = (c(&mine), c(&fx.tree.join("planted.txt")));
    // SAFETY: link(2).
    let attempt = || ok(unsafe { libc::link(from.as_ptr(), to.as_ptr()) });
    denied_then_granted(&mut fx, Op::Write, "link(2) into the tree", attempt);
}

#[test]
fn renaming_out_of_the_tree_is_a_write_and_a_renamed_file_stays_protected() {
    let mut fx = Fixture::new("renameout", &[Op::Read, Op::Write]);
    let (from, to) = (c(&fx.secret), c(&fx.out.join("taken.txt")));
    // SAFETY: rename(2).
    let attempt = || ok(unsafe { libc::rename(from.as_ptr(), to.as_ptr()) });
    assert_eq!(as_user(attempt), DENIED, "rename out of the tree");
    fx.grant(Op::Write);
    assert_eq!(
        as_user(attempt),
        OpenOutcome::Opened,
        "rename with a write grant"
    );
    // Moved out, the file is the same file: still protected for read.
    let taken = c(&fx.out.join("taken.txt"));
    assert_eq!(
        as_user(|| open_close(&taken, libc::O_RDONLY)),
        OpenOutcome::Opened,
        "the write grant's holder moved it; a read grant is separate"
    );
}

#[test]
fn a_directory_above_the_tree_renamed_keeps_the_tree_protected() {
    let mut fx = Fixture::new("renameup", &[Op::Read, Op::Write]);
    // The user may rename `srv` (it is theirs, in a directory they may
    // write): that is not a change to the tree, and the tree, under its
    // new name, is still the protected tree.
    chmod(fx.dir.path(), 0o777);
    let srv = fx.tree.parent().unwrap().to_owned();
    let moved = fx.dir.path().join("srv2");
    let (a, b) = (c(&srv), c(&moved));
    // SAFETY: rename(2).
    let renamed = as_user(|| ok(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) }));
    assert_eq!(
        renamed,
        OpenOutcome::Opened,
        "renaming a directory above the tree"
    );
    let now = c(&moved.join("prod/sub/deep.txt"));
    denied_then_granted(
        &mut fx,
        Op::Read,
        "read after a rename above the tree",
        || open_close(&now, libc::O_RDONLY),
    );
    // And the tree itself renamed by root: the same tree.
    let again = fx.dir.path().join("elsewhere");
    std::fs::rename(moved.join("prod"), &again).unwrap();
    fx.enforcer.revoke(GRANT).unwrap();
    let now = c(&again.join("secret.txt"));
    assert_eq!(
        as_user(|| open_close(&now, libc::O_RDONLY)),
        DENIED,
        "the tree renamed by root stays protected"
    );
}

#[test]
fn rename_exchange_with_a_file_outside_is_a_write() {
    let mut fx = Fixture::new("exchange", &[Op::Read, Op::Write]);
    let decoy = fx.out.join("decoy.txt");
    std::fs::write(&decoy, b"x").unwrap();
    chown(&decoy, USER);
    let (a, b) = (c(&fx.secret), c(&decoy));
    let attempt = || {
        // SAFETY: renameat2(2) with RENAME_EXCHANGE.
        ok(unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        })
    };
    denied_then_granted(&mut fx, Op::Write, "RENAME_EXCHANGE", attempt);
}

// ---- A change without an open --------------------------------------------

#[test]
fn truncate_is_a_write() {
    let mut fx = Fixture::new("truncate", &[Op::Write]);
    let p = c(&fx.secret);
    // SAFETY: truncate(2).
    let attempt = || ok(unsafe { libc::truncate(p.as_ptr(), 0) });
    denied_then_granted(&mut fx, Op::Write, "truncate(2)", attempt);
}

#[test]
fn open_with_o_trunc_is_a_write() {
    let mut fx = Fixture::new("otrunc", &[Op::Write]);
    let p = c(&fx.secret);
    denied_then_granted(&mut fx, Op::Write, "O_TRUNC", || {
        open_close(&p, libc::O_WRONLY | libc::O_TRUNC)
    });
}

#[test]
fn unlink_and_rmdir_are_writes() {
    let mut fx = Fixture::new("unlink", &[Op::Write]);
    let f = c(&fx.secret);
    // SAFETY: unlink(2).
    denied_then_granted(&mut fx, Op::Write, "unlink", || {
        ok(unsafe { libc::unlink(f.as_ptr()) })
    });
    let mut fx = fx.next("rmdir", &[Op::Write]);
    std::fs::remove_file(fx.sub.join("deep.txt")).unwrap();
    let d = c(&fx.sub);
    // SAFETY: rmdir(2).
    denied_then_granted(&mut fx, Op::Write, "rmdir", || {
        ok(unsafe { libc::rmdir(d.as_ptr()) })
    });
}

#[test]
fn creating_anything_inside_the_tree_is_a_write() {
    type Make = fn(&CString) -> i32;
    let cases: [(&str, Make); 4] = [
        ("O_CREAT", |p| open_close(p, libc::O_WRONLY | libc::O_CREAT)),
        // SAFETY (each): one syscall on a valid path.
        ("mkdir", |p| ok(unsafe { libc::mkdir(p.as_ptr(), 0o777) })),
        ("mknod (fifo)", |p| {
            ok(unsafe { libc::mknod(p.as_ptr(), libc::S_IFIFO | 0o666, 0) })
        }),
        ("symlink", |p| {
            ok(unsafe { libc::symlink(c"/etc/hostname".as_ptr(), p.as_ptr()) })
        }),
    ];
    let mut fx = Fixture::new("create", &[Op::Write]);
    for (i, (what, make)) in cases.into_iter().enumerate() {
        if i > 0 {
            fx = fx.next(&format!("create{i}"), &[Op::Write]);
        }
        let p = c(&fx.sub.join("new"));
        denied_then_granted(&mut fx, Op::Write, what, || make(&p));
    }
}

#[test]
fn attribute_changes_are_writes() {
    type Change = fn(&CString) -> i32;
    let cases: [(&str, Change); 4] = [
        // SAFETY (each): one syscall on a valid path.
        ("chmod", |p| ok(unsafe { libc::chmod(p.as_ptr(), 0o600) })),
        ("chown", |p| {
            ok(unsafe { libc::chown(p.as_ptr(), USER, USER) })
        }),
        ("utimes", |p| {
            ok(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0) })
        }),
        ("setxattr", |p| {
            let r = unsafe {
                libc::setxattr(
                    p.as_ptr(),
                    c"user.ward".as_ptr(),
                    b"x".as_ptr().cast(),
                    1,
                    0,
                )
            };
            // tmpfs before 6.6 has no user xattrs: past ward, that is fine.
            if r != 0 && errno() == libc::EOPNOTSUPP {
                0
            } else {
                ok(r)
            }
        }),
    ];
    let mut fx = Fixture::new("attrs", &[Op::Write]);
    for (i, (what, change)) in cases.into_iter().enumerate() {
        if i > 0 {
            fx = fx.next(&format!("attrs{i}"), &[Op::Write]);
        }
        let p = c(&fx.secret);
        denied_then_granted(&mut fx, Op::Write, what, || change(&p));
    }
}

#[test]
fn listing_a_protected_directory_is_a_read() {
    let mut fx = Fixture::new("list", &[Op::Read]);
    let p = c(&fx.tree);
    denied_then_granted(&mut fx, Op::Read, "opendir", || {
        open_close(&p, libc::O_RDONLY | libc::O_DIRECTORY)
    });
}

#[test]
fn openat2_and_o_path_reopens_are_the_same_file() {
    let mut fx = Fixture::new("openat2", &[Op::Read]);
    let p = c(&fx.secret);
    let attempt = || {
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: 0x04, // RESOLVE_NO_SYMLINKS
        };
        // SAFETY: openat2(2) with a valid open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                p.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        } as i32;
        if fd < 0 {
            return errno();
        }
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(fd) };
        // An O_PATH descriptor opens nothing; reopening it through /proc
        // is a new open of the same inode.
        // SAFETY: open(2), then a reopen through /proc/self/fd.
        unsafe {
            let opath = libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if opath < 0 {
                return 170;
            }
            let mut buf = [0u8; 32];
            let n = libc::snprintf(
                buf.as_mut_ptr().cast(),
                buf.len(),
                c"/proc/self/fd/%d".as_ptr(),
                opath,
            );
            if n <= 0 {
                return 171;
            }
            let fd = libc::open(buf.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            libc::close(opath);
            if fd < 0 {
                return errno();
            }
            libc::close(fd);
        }
        0
    };
    denied_then_granted(&mut fx, Op::Read, "openat2 / O_PATH reopen", attempt);
}

// ---- Executables -----------------------------------------------------------

/// A protected executable (a copy of busybox), readable and executable by
/// everyone, protected for exec (and so for read).
fn exec_fixture(tag: &str) -> (Fixture, PathBuf) {
    let fx = Fixture::new(tag, &[]);
    let tool = fx.tree.join("tool");
    std::fs::copy("/bin/busybox", &tool).unwrap();
    chmod(&tool, 0o755);
    let mut fx = fx;
    let object = Object::Path(PathPattern::parse(tool.to_str().unwrap()).unwrap());
    fx.enforcer
        .apply(&[protection(Op::Exec, &object), protection(Op::Read, &object)])
        .unwrap();
    (fx, tool)
}

fn grant_file(fx: &mut Fixture, op: Op, file: &Path) {
    fx.grant_on(
        op,
        Object::Path(PathPattern::parse(file.to_str().unwrap()).unwrap()),
    );
}

#[test]
fn an_executable_cannot_be_copied_or_loaded_into_a_memfd() {
    let (mut fx, tool) = exec_fixture("copy");
    let p = c(&tool);
    let attempt = || {
        // Copy its bytes into a memfd: the first step of running a copy.
        // SAFETY: open, memfd_create, sendfile, close.
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return errno();
            }
            let m = libc::memfd_create(c"copy".as_ptr(), libc::MFD_CLOEXEC);
            let n = libc::sendfile(m, fd, std::ptr::null_mut(), 4096);
            libc::close(fd);
            libc::close(m);
            if n <= 0 {
                return 172;
            }
        }
        0
    };
    assert_eq!(as_user(attempt), DENIED, "reading an exec-protected file");
    grant_file(&mut fx, Op::Exec, &tool);
    assert_eq!(
        as_user(attempt),
        DENIED,
        "an exec grant does not let its code be copied"
    );
    grant_file(&mut fx, Op::Read, &tool);
    assert_eq!(as_user(attempt), OpenOutcome::Opened, "a read grant does");
}

#[test]
fn mapping_a_protected_file_executable_is_exec() {
    // The dynamic loader's route (`ld.so /path/tool`): open for read, then
    // mmap(PROT_EXEC), or mmap then mprotect(PROT_EXEC).
    let (mut fx, tool) = exec_fixture("mmap");
    grant_file(&mut fx, Op::Read, &tool);
    let p = c(&tool);
    let p = &p;
    let map_exec = |later: bool| {
        move || {
            // SAFETY: open, mmap, mprotect, munmap, close.
            unsafe {
                let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return 160;
                }
                let prot = if later {
                    libc::PROT_READ
                } else {
                    libc::PROT_READ | libc::PROT_EXEC
                };
                let m = libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_PRIVATE, fd, 0);
                libc::close(fd);
                if m == libc::MAP_FAILED {
                    return errno();
                }
                let r = if later {
                    libc::mprotect(m, 4096, libc::PROT_READ | libc::PROT_EXEC)
                } else {
                    0
                };
                let e = if r != 0 { errno() } else { 0 };
                libc::munmap(m, 4096);
                e
            }
        }
    };
    assert_eq!(as_user(map_exec(false)), DENIED, "mmap(PROT_EXEC)");
    assert_eq!(as_user(map_exec(true)), DENIED, "mprotect(PROT_EXEC)");
    grant_file(&mut fx, Op::Exec, &tool);
    // The grant above replaced the read grant (one grant id): put both.
    let object = Object::Path(PathPattern::parse(tool.to_str().unwrap()).unwrap());
    let both = [Op::Read, Op::Exec].map(|op| Entry {
        subject: Subject::Uid(USER),
        op,
        object: object.clone(),
        effect: Effect::Allow,
        expires: Expiry::Never,
        rule_id: GRANT,
        from_grant: true,
    });
    fx.enforcer.grant(GRANT, both.to_vec()).unwrap();
    assert_eq!(
        as_user(map_exec(false)),
        OpenOutcome::Opened,
        "mmap with a grant"
    );
    assert_eq!(
        as_user(map_exec(true)),
        OpenOutcome::Opened,
        "mprotect with a grant"
    );
}

#[test]
fn execveat_of_a_descriptor_is_exec() {
    let (mut fx, tool) = exec_fixture("execveat");
    let p = c(&tool);
    let arg0 = CString::new("true").unwrap();
    let argv = [arg0.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let attempt = || {
        // SAFETY: open(O_PATH) then execveat(AT_EMPTY_PATH).
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_PATH);
            if fd < 0 {
                return 150;
            }
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            errno()
        }
    };
    assert_eq!(as_user(attempt), DENIED, "execveat");
    grant_file(&mut fx, Op::Exec, &tool);
    assert_eq!(
        as_user(attempt),
        OpenOutcome::Opened,
        "execveat with a grant"
    );
}

// ---- A walk remembered, then the tree changes --------------------------
//
// The kernel keeps each walk's answer on the inode it started from (the
// walk cache). Each case below lets the managed user open a file first, so
// its walk is kept, then changes what lies above it the way root (or a
// deploy) would: the next open must see the change.

/// A file of the user's outside the tree, opened once by the user.
fn opened_outside(fx: &Fixture, name: &str) -> PathBuf {
    let f = fx.out.join(name);
    std::fs::write(&f, b"x").unwrap();
    chown(&f, USER);
    chmod(&f, 0o666);
    let cf = c(&f);
    for _ in 0..2 {
        assert_eq!(
            as_user(|| open_close(&cf, libc::O_RDONLY)),
            OpenOutcome::Opened,
            "{name} outside the tree"
        );
    }
    f
}

#[test]
fn a_file_moved_into_the_tree_after_it_was_opened_is_protected() {
    let mut fx = Fixture::new("cache-mv", &[Op::Read, Op::Write]);
    let f = opened_outside(&fx, "moved.txt");
    let inside = fx.tree.join("moved.txt");
    std::fs::rename(&f, &inside).unwrap();
    let ci = c(&inside);
    denied_then_granted(&mut fx, Op::Read, "a file root moved in", || {
        open_close(&ci, libc::O_RDONLY)
    });
}

#[test]
fn a_directory_moved_into_the_tree_after_its_files_were_opened_protects_them() {
    let mut fx = Fixture::new("cache-dir", &[Op::Read, Op::Write]);
    let d = fx.out.join("bundle");
    std::fs::create_dir(&d).unwrap();
    chmod(&d, 0o777);
    let f = d.join("inner.txt");
    std::fs::write(&f, b"x").unwrap();
    chmod(&f, 0o666);
    let cf = c(&f);
    assert_eq!(
        as_user(|| open_close(&cf, libc::O_RDONLY)),
        OpenOutcome::Opened,
        "outside the tree"
    );
    // The file's own name is unchanged: only a directory above it moves.
    std::fs::rename(&d, fx.sub.join("bundle")).unwrap();
    let ci = c(&fx.sub.join("bundle/inner.txt"));
    denied_then_granted(&mut fx, Op::Read, "a directory root moved in", || {
        open_close(&ci, libc::O_RDONLY)
    });
}

#[test]
fn a_file_linked_into_the_tree_and_unlinked_outside_is_protected() {
    let mut fx = Fixture::new("cache-ln", &[Op::Read, Op::Write]);
    let f = opened_outside(&fx, "linked.txt");
    let inside = fx.tree.join("linked.txt");
    std::fs::hard_link(&f, &inside).unwrap();
    std::fs::remove_file(&f).unwrap();
    let ci = c(&inside);
    denied_then_granted(&mut fx, Op::Read, "a file root linked in", || {
        open_close(&ci, libc::O_RDONLY)
    });
}

#[test]
fn files_opened_before_a_tree_is_protected_are_protected_at_once() {
    let mut fx = Fixture::new("cache-new", &[Op::Read]);
    let later = fx.dir.path().join("later");
    std::fs::create_dir(&later).unwrap();
    chmod(&later, 0o777);
    let f = later.join("data.txt");
    std::fs::write(&f, b"x").unwrap();
    chmod(&f, 0o666);
    let cf = c(&f);
    assert_eq!(
        as_user(|| open_close(&cf, libc::O_RDONLY)),
        OpenOutcome::Opened,
        "before protection"
    );
    let mut entries = vec![protection(Op::Read, &tree_object(&fx.tree))];
    entries.push(protection(Op::Read, &tree_object(&later)));
    fx.enforcer.apply(&entries).expect("apply protection");
    assert_eq!(
        as_user(|| open_close(&cf, libc::O_RDONLY)),
        DENIED,
        "protected after it was opened"
    );
    fx.grant_on(Op::Read, tree_object(&later));
    assert_eq!(
        as_user(|| open_close(&cf, libc::O_RDONLY)),
        OpenOutcome::Opened,
        "with a grant"
    );
}

#[test]
fn an_overlay_in_a_user_namespace_over_the_tree_is_the_same_tree() {
    let mut fx = Fixture::new("overlay", &[Op::Read, Op::Exec]);
    let other = fx.out.join("lower2");
    let merged = fx.out.join("merged");
    for d in [&other, &merged] {
        std::fs::create_dir(d).unwrap();
        chown(d, USER);
    }
    // Two lower layers and no upper one: a read-only overlay needs no
    // xattrs on the layers (tmpfs before 6.6 has no user xattrs).
    let options = c(Path::new(&format!(
        "lowerdir={}:{}",
        fx.tree.display(),
        other.display()
    )));
    let target = c(&merged.join("secret.txt"));
    let dst = c(&merged);
    let map = uid_map();
    let mount_overlay = || {
        // SAFETY: raw syscalls in the child.
        unsafe {
            let r = enter_userns(&map);
            if r != 0 {
                return r;
            }
            if libc::mount(
                c"overlay".as_ptr(),
                dst.as_ptr(),
                c"overlay".as_ptr(),
                0,
                options.as_ptr().cast(),
            ) != 0
            {
                return 193;
            }
        }
        0
    };
    let read = || match mount_overlay() {
        0 => open_close(&target, libc::O_RDONLY),
        r => r,
    };
    denied_then_granted(
        &mut fx,
        Op::Read,
        "read through an overlay in a userns",
        read,
    );
    // With read granted, its code still needs exec: mapping it executable
    // through the overlay runs the real file's code.
    let map_exec = || {
        let r = mount_overlay();
        if r != 0 {
            return r;
        }
        // SAFETY: open, mmap and close in the child.
        unsafe {
            let fd = libc::open(target.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return errno();
            }
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            let r = if p == libc::MAP_FAILED { errno() } else { 0 };
            libc::close(fd);
            r
        }
    };
    assert_eq!(
        as_user(map_exec),
        DENIED,
        "mapping it executable through the overlay needs exec"
    );
    // One grant for both (a grant's id names all of its entries).
    let both = [Op::Read, Op::Exec]
        .map(|op| Entry {
            subject: Subject::Uid(USER),
            op,
            object: tree_object(&fx.tree),
            effect: Effect::Allow,
            expires: Expiry::Never,
            rule_id: GRANT,
            from_grant: true,
        })
        .to_vec();
    fx.enforcer.grant(GRANT, both).expect("grant read and exec");
    assert_eq!(
        as_user(map_exec),
        OpenOutcome::Opened,
        "with an exec grant too"
    );
}
