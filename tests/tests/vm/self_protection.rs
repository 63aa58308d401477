//! ward cannot be switched off from inside: root with a managed login uid
//! (a managed human after `sudo`) tries every way at a running wardd, its
//! pins, files and the kernel, and is refused each time; the protected
//! file stays protected and the attempts are audited. Root without a
//! managed login uid (an administrator outside management) can still
//! reach everything.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use ward_tests::{Identity, OpenOutcome, TempDir, as_identity, open_as, wardd::Wardd};

/// Logged in as 1500, now root.
const SUDO: Identity = Identity {
    login_uid: Some(1500),
    uid: 0,
    gid: 0,
};
const HUMAN: Identity = Identity {
    login_uid: None,
    uid: 1500,
    gid: 1500,
};

const BPF_OBJ_GET: i64 = 7;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_MAP_GET_FD_BY_ID: i64 = 14;
const BPF_LINK_DETACH: i64 = 34;

/// `bpf(cmd, attr)` with the attribute's first words; the fd or -errno.
///
/// # Safety
/// Raw syscall, for forked children too.
unsafe fn bpf(cmd: i64, words: [u64; 3]) -> i64 {
    let mut attr = [0u64; 16];
    attr[..3].copy_from_slice(&words);
    // SAFETY: a zeroed, large enough bpf_attr.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), 128u32) };
    if r < 0 { -i64::from(errno()) } else { r }
}

fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// An attempt's raw result as a child exit code: 0 for success, else errno.
fn code(r: i64) -> i32 {
    if r < 0 { (-r) as i32 } else { 0 }
}

fn refused(what: &str, outcome: OpenOutcome) {
    assert!(
        matches!(
            outcome,
            OpenOutcome::Refused(libc::EPERM) | OpenOutcome::Refused(libc::EACCES)
        ),
        "{what}: expected a refusal, got {outcome:?}"
    );
}

struct Guarded {
    dir: TempDir,
    bpffs: PathBuf,
    pins: PathBuf,
    wardd: Wardd,
    secret: PathBuf,
}

impl Guarded {
    fn start() -> Guarded {
        let dir = TempDir::new("guard");
        let secret = dir.file("secret.txt");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        // The pins on a bpffs of the test's own: if a refusal were missing,
        // the unmount below would take only this one with it.
        let bpffs = dir.path().join("bpffs");
        std::fs::create_dir(&bpffs).unwrap();
        nix::mount::mount(
            Some("bpf"),
            &bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount a bpffs");
        let pins = bpffs.join("ward");
        let config = crate::support::agent_config(
            dir.path(),
            &pins.display().to_string(),
            &format!(
                r#"managed_uids = [[1000, 1999]]

[protect]
paths = ["{secret}"]
"#,
                secret = secret.display()
            ),
        );
        let wardd = Wardd::start(&config, &dir.path().join("agent.sock"), &[]);
        Guarded {
            dir,
            bpffs,
            pins,
            wardd,
            secret,
        }
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // The administrator's way out: stop wardd, remove the pins.
        self.wardd.stop();
        let _ = nix::mount::umount2(&self.bpffs, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn attempt(what: &str, f: impl FnOnce() -> i32) {
    // SAFETY: every attempt below makes raw syscalls only.
    refused(what, unsafe { as_identity(SUDO, f) });
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn root_with_a_managed_login_uid_cannot_switch_ward_off() {
    let g = Guarded::start();
    let pid = g.wardd.pid().unwrap() as i32;
    let denied = OpenOutcome::Refused(libc::EACCES);
    assert_eq!(open_as(HUMAN, &g.secret), denied, "protected to begin with");
    assert_eq!(open_as(SUDO, &g.secret), denied, "sudo does not shed it");

    // The daemon: signals, ptrace, its memory.
    for sig in [libc::SIGKILL, libc::SIGTERM, libc::SIGSTOP] {
        // SAFETY: kill only.
        attempt(&format!("signal {sig}"), || unsafe {
            if libc::kill(pid, sig) < 0 { errno() } else { 0 }
        });
    }
    // SAFETY: ptrace only.
    attempt("ptrace attach", || unsafe {
        let r = libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0);
        if r < 0 { errno() } else { 0 }
    });
    let mem = CString::new(format!("/proc/{pid}/mem")).unwrap();
    // SAFETY: open only.
    attempt("/proc/PID/mem", || unsafe {
        let fd = libc::open(mem.as_ptr(), libc::O_RDWR);
        if fd < 0 { errno() } else { 0 }
    });

    // Its pins and their filesystem.
    let map_pin = cpath(&g.pins.join("maps").join("WARD_CONFIG"));
    let link_pin = cpath(&g.pins.join("links").join("ward_file_open"));
    assert!(g.pins.join("links/ward_file_open").exists(), "pinned link");
    // SAFETY: unlink, rename, umount2 only.
    attempt("unlink a map pin", || unsafe {
        if libc::unlink(map_pin.as_ptr()) < 0 {
            errno()
        } else {
            0
        }
    });
    attempt("unlink a link pin", || unsafe {
        if libc::unlink(link_pin.as_ptr()) < 0 {
            errno()
        } else {
            0
        }
    });
    let pins = cpath(&g.pins);
    let moved = cpath(&g.bpffs.join("moved"));
    attempt("rename the pin directory", || unsafe {
        if libc::rename(pins.as_ptr(), moved.as_ptr()) < 0 {
            errno()
        } else {
            0
        }
    });
    let bpffs = cpath(&g.bpffs);
    attempt("umount the pins' bpffs", || unsafe {
        if libc::umount2(bpffs.as_ptr(), libc::MNT_DETACH) < 0 {
            errno()
        } else {
            0
        }
    });

    // Its BPF objects, by pin and by id.
    // SAFETY: bpf only.
    attempt("BPF_OBJ_GET of a map pin", || unsafe {
        code(bpf(BPF_OBJ_GET, [map_pin.as_ptr() as u64, 0, 0]))
    });
    let map_id = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .find(|m| m.name_as_str() == Some("WARD_CONFIG"))
        .expect("ward's config map")
        .id();
    attempt("BPF_MAP_GET_FD_BY_ID", || unsafe {
        code(bpf(BPF_MAP_GET_FD_BY_ID, [u64::from(map_id), 0, 0]))
    });
    let prog_id = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.name_as_str() == Some("ward_file_open"))
        .expect("ward's file_open program")
        .id();
    attempt("BPF_PROG_GET_FD_BY_ID", || unsafe {
        code(bpf(BPF_PROG_GET_FD_BY_ID, [u64::from(prog_id), 0, 0]))
    });
    attempt("BPF_LINK_DETACH of a pinned link", || unsafe {
        // The link fd can be had from its pin (no hook sees links)...
        let fd = bpf(BPF_OBJ_GET, [link_pin.as_ptr() as u64, 0, 0]);
        if fd < 0 {
            return code(fd);
        }
        // ... but not used to detach.
        code(bpf(BPF_LINK_DETACH, [fd as u64, 0, 0]))
    });

    // Its files.
    for file in ["agent.toml", "audit.jsonl"] {
        let p = cpath(&g.dir.path().join(file));
        // SAFETY: open only.
        attempt(&format!("write {file}"), || unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_APPEND);
            if fd < 0 { errno() } else { 0 }
        });
    }
    let state_file = cpath(&g.dir.path().join("state").join("planted"));
    // SAFETY: open only.
    attempt("create a file in the state directory", || unsafe {
        let fd = libc::open(state_file.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600);
        if fd < 0 { errno() } else { 0 }
    });

    // The kernel: modules (the file is read before it is parsed, so junk
    // is enough to reach the hook).
    let junk = g.dir.file("junk.ko");
    let junk = cpath(&junk);
    // SAFETY: open, finit_module, init_module only.
    attempt("finit_module", || unsafe {
        let fd = libc::open(junk.as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return 100;
        }
        let params = c"";
        if libc::syscall(libc::SYS_finit_module, fd, params.as_ptr(), 0) < 0 {
            errno()
        } else {
            0
        }
    });
    attempt("init_module", || unsafe {
        let image = [0u8; 64];
        let params = c"";
        if libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            params.as_ptr(),
        ) < 0
        {
            errno()
        } else {
            0
        }
    });

    // Shedding management: clearing the login uid.
    // SAFETY: open and write only.
    attempt("clear /proc/self/loginuid", || unsafe {
        let fd = libc::open(c"/proc/self/loginuid".as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return errno();
        }
        let unset = b"4294967295";
        if libc::write(fd, unset.as_ptr().cast(), unset.len()) < 0 {
            errno()
        } else {
            0
        }
    });
    // Its own BPF program (an fmod_ret on security_bpf_map returning 1
    // would skip every LSM): no program loads at all. A minimal socket
    // filter ("r0 = 0; exit") is enough to reach the check.
    // SAFETY: bpf only.
    attempt("BPF_PROG_LOAD", || unsafe {
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        // prog_type 1 (socket filter), insn_cnt 2, insns, license.
        let mut attr = [0u64; 16];
        attr[0] = 1 | (2u64 << 32);
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        let r = libc::syscall(libc::SYS_bpf, 5i64, attr.as_ptr(), 128u32);
        if r < 0 { errno() } else { 0 }
    });
    // A bind mount over its config: a write to it.
    let config = cpath(&g.dir.path().join("agent.toml"));
    let fake = cpath(&g.dir.file("fake.toml"));
    // SAFETY: unshare and mount only (a private mount namespace, so a
    // missing refusal would not leak out of this child).
    attempt("bind mount over agent.toml", || unsafe {
        if libc::unshare(libc::CLONE_NEWNS) < 0 {
            return 100;
        }
        let none = c"none";
        let root = c"/";
        libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        if libc::mount(
            fake.as_ptr(),
            config.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) < 0
        {
            errno()
        } else {
            0
        }
    });
    // Kernel settings that name helpers the kernel runs as unmanaged root.
    // SAFETY: open only.
    attempt("write core_pattern", || unsafe {
        let fd = libc::open(c"/proc/sys/kernel/core_pattern".as_ptr(), libc::O_WRONLY);
        if fd < 0 { errno() } else { 0 }
    });
    // Its control socket: as root, but a managed human's root, no grant.
    let out = {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(ward_tests::ward_bin());
        cmd.args([
            "grant",
            "--user",
            "ward-nobody",
            "--read",
            g.secret.to_str().unwrap(),
            "--for",
            "5m",
            "--reason",
            "INC-1",
        ])
        .env("WARD_SOCKET", g.dir.path().join("agent.sock"));
        // SAFETY: open and write in the forked child before exec.
        unsafe {
            cmd.pre_exec(|| {
                std::fs::write("/proc/self/loginuid", "1500")?;
                Ok(())
            });
        }
        cmd.output().expect("run ward")
    };
    assert_eq!(
        out.status.code(),
        Some(4),
        "a managed human's root may not push grants: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing of that switched anything off.
    assert!(g.wardd.pid().is_some_and(|p| p as i32 == pid));
    // SAFETY: signal 0 probes only.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "wardd is alive");
    assert_eq!(open_as(SUDO, &g.secret), denied, "still protected");
    assert_eq!(open_as(HUMAN, &g.secret), denied, "still protected");
    assert!(g.pins.join("links/ward_file_open").exists());

    // Every refusal is audited, by what was tried.
    let start = Instant::now();
    let wanted = [
        "\"signal\"",
        "\"ptrace\"",
        "\"umount\"",
        "\"bpf-map\"",
        "\"bpf-prog\"",
        "\"bpf-link\"",
        "\"module\"",
    ];
    loop {
        let audit = g.audit();
        let missing: Vec<_> = wanted.iter().filter(|w| !audit.contains(*w)).collect();
        if missing.is_empty() {
            assert!(audit.contains("\"kind\":\"tamper\""), "{audit}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "tamper records missing {missing:?}:\n{audit}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // An administrator outside management is not refused: a map by id.
    // SAFETY: bpf and close only.
    let fd = unsafe { bpf(BPF_MAP_GET_FD_BY_ID, [u64::from(map_id), 0, 0]) };
    assert!(fd >= 0, "unmanaged root refused: {fd}");
    // SAFETY: our own fd.
    unsafe { libc::close(fd as i32) };
}
