//! Management follows cgroup paths: a unit's cgroup that systemd removes
//! and creates again (every restart; a oneshot's every run) is managed
//! from the moment it exists, and its grants follow it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ward_abi::{Effect, Op};
use ward_agent::{
    cgroup::{OwnedCgroup, cgroup2_mount},
    enforcer::{Entry, Expiry, Object, PathPattern, Subject},
};
use ward_tests::{OpenOutcome, TempDir, lifecycle::protection, open_as_child};

use crate::support::enforcer;

fn path(p: &std::path::Path) -> Object {
    Object::Path(PathPattern::parse(p.to_str().unwrap()).unwrap())
}

/// Reads `file` from a fresh process that joins `cgroup` (by path) first:
/// `None` if the cgroup was not there to join.
fn read_in(cgroup: &std::path::Path, file: &std::path::Path) -> Option<OpenOutcome> {
    use std::os::unix::ffi::OsStrExt;
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
    let target = std::ffi::CString::new(file.as_os_str().as_bytes()).unwrap();
    // SAFETY: fork; the child makes raw syscalls only, then _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(200);
            }
            libc::close(fd);
            let f = libc::open(target.as_ptr(), libc::O_RDONLY);
            if f < 0 {
                libc::_exit(*libc::__errno_location());
            }
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        match libc::WEXITSTATUS(status) {
            0 => Some(OpenOutcome::Opened),
            200 => None,
            e => Some(OpenOutcome::Refused(e)),
        }
    }
}

#[test]
fn a_managed_path_is_managed_from_the_moment_its_cgroup_exists_again() {
    let dir = TempDir::new("follow");
    let secret = dir.file("secret.txt");
    let granted = dir.file("granted.txt");
    let root = cgroup2_mount().unwrap();
    let slice = OwnedCgroup::create(&root, "ward-follow.slice").unwrap();
    let rel = "ward-follow.slice/backup.service";
    let unit = root.join(rel);
    let mut e = enforcer();
    // Managed before the unit ever ran, as for a oneshot at boot.
    let key = e.manage_path(&root, rel).unwrap();
    let (secret_o, granted_o) = (path(&secret), path(&granted));
    e.apply(&[
        protection(Op::Read, &secret_o),
        protection(Op::Read, &granted_o),
    ])
    .unwrap();
    e.grant(
        900,
        vec![Entry {
            subject: Subject::Cgroup(key),
            op: Op::Read,
            object: granted_o.clone(),
            effect: Effect::Allow,
            expires: Expiry::Never,
            rule_id: 900,
            from_grant: true,
        }],
    )
    .unwrap();

    // Restart after restart, the first process in the new cgroup is managed
    // and its grant holds.
    for round in 0..5 {
        let svc = OwnedCgroup::create(slice.path(), "backup.service").unwrap();
        assert_eq!(
            read_in(&unit, &secret),
            Some(OpenOutcome::Refused(libc::EACCES)),
            "round {round}: a fresh cgroup at the managed path ran unmanaged"
        );
        assert_eq!(
            read_in(&unit, &granted),
            Some(OpenOutcome::Opened),
            "round {round}: the workload's grant did not follow its path"
        );
        drop(svc);
    }
    let sibling = OwnedCgroup::create(slice.path(), "other.service").unwrap();
    assert_eq!(
        open_as_child(Some(&sibling), &secret, libc::O_RDONLY),
        OpenOutcome::Opened,
        "a sibling path is not managed"
    );
    drop(sibling);

    // A service restarting as fast as it can while processes keep trying
    // the protected file: not one of them reads it.
    let stop = Arc::new(AtomicBool::new(false));
    let restarts = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, restarts, parent) = (stop.clone(), restarts.clone(), slice.path().to_owned());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let cg = parent.join("backup.service");
                if std::fs::create_dir(&cg).is_ok() {
                    restarts.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
                // Fails while a prober is inside; the next round retries.
                let _ = std::fs::remove_dir(&cg);
            }
            let _ = std::fs::remove_dir(parent.join("backup.service"));
        })
    };
    let (mut tries, mut inside) = (0u32, 0u32);
    let started = Instant::now();
    while inside < 200 && started.elapsed() < Duration::from_secs(60) {
        tries += 1;
        match read_in(&unit, &secret) {
            None => {}
            Some(OpenOutcome::Opened) => {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "attempt {tries}: a process in a just-created cgroup read the protected file"
                );
            }
            Some(r) => {
                assert_eq!(r, OpenOutcome::Refused(libc::EACCES));
                inside += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    let restarts = restarts.load(Ordering::Relaxed);
    eprintln!("{restarts} cgroup creations, {tries} attempts, {inside} from inside: all denied");
    assert!(inside >= 50, "only {inside} attempts got into the cgroup");
    assert!(restarts >= 20, "only {restarts} restarts");
    // Removed cgroups are forgotten by the kernel: nothing piles up.
    let listed = e.stats().unwrap().managed_cgroups;
    assert!(
        listed <= 1,
        "{listed} cgroups still listed after their removal"
    );
    assert_eq!(e.cgroups_missed().unwrap(), 0);
}
