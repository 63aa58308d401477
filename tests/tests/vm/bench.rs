//! Syscall overhead of ward's file_open hook, for `cargo xtask bench`.
//!
//! Run in the VM under `qemu -icount shift=0` on one vCPU: guest time then
//! counts instructions, so timings repeat exactly and ratios between
//! conditions in the same run are meaningful. Ignored by `cargo test`.

use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path, time::Instant};

use ward_abi::{Effect, Op, programs};
use ward_agent::{
    btf::KernelOffsets,
    cgroup::{OwnedCgroup, cgroup2_mount},
    enforcer::{Enforcer, EnforcerConfig, Entry, Expiry, Object, PathPattern, Subject},
};
use ward_tests::{TempDir, lifecycle::protection};

const OPS: u32 = 20_000;

/// Runs of each measurement; the report gives median, min and max.
const RUNS: usize = 3;

/// ns per open+close of `path` over [`RUNS`] runs: (median, min, max).
fn measure(path: &Path) -> (f64, f64, f64) {
    let mut v: Vec<f64> = (0..RUNS).map(|_| open_close(path)).collect();
    v.sort_by(f64::total_cmp);
    (v[RUNS / 2], v[0], v[RUNS - 1])
}

fn report(condition: &str, entries: Option<usize>, (median, min, max): (f64, f64, f64), lost: u64) {
    println!(
        "BENCH {}",
        serde_json::json!({
            "condition": condition, "entries": entries, "ns": median, "min": min, "max": max,
            "events_lost": lost,
        })
    );
}

/// ns per open+close of `path`, by the guest clock.
fn open_close(path: &Path) -> f64 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // Warm the dentry cache and the code paths first.
    for _ in 0..1000 {
        // SAFETY: open/close of a valid C string.
        unsafe { libc::close(libc::open(c.as_ptr(), libc::O_RDONLY)) };
    }
    let started = Instant::now();
    for _ in 0..OPS {
        // SAFETY: as above.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
        assert!(
            fd >= 0,
            "open {} failed during the benchmark",
            path.display()
        );
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(fd) };
    }
    started.elapsed().as_nanos() as f64 / f64::from(OPS)
}

fn join(cgroup: &Path) {
    std::fs::write(cgroup.join("cgroup.procs"), "0").unwrap();
}

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn file_open_overhead() {
    let dir = TempDir::new("bench");
    let protected = dir.file("data/f.txt");
    let unprotected = dir.file("other/g.txt");
    let root = cgroup2_mount().unwrap();
    let managed = OwnedCgroup::create(&root, "ward-bench").unwrap();

    // The first runs after boot pay one-time kernel costs (slab growth,
    // caches, boot-time work on the single vCPU): throw them away. The
    // reference baseline is measured again at the end, when all is quiet.
    let _ = measure(&protected);
    let baseline = measure(&protected);
    let floor = {
        let offsets = KernelOffsets::from_running_kernel().unwrap();
        let mut ebpf = ward_agent::ebpf::load(&offsets).unwrap();
        let btf = ward_agent::btf::aya_btf().unwrap();
        let program: &mut aya::programs::Lsm = ebpf
            .program_mut(programs::PROBE_LSM)
            .unwrap()
            .try_into()
            .unwrap();
        program.load("file_open", &btf).unwrap();
        program.attach().unwrap();
        measure(&protected)
    };
    report("baseline_start", None, baseline, 0);
    report("floor", None, floor, 0);

    let data = PathPattern::parse(&format!("{}/data/", dir.path().display())).unwrap();
    for entries in [0usize, 1_000, 100_000] {
        let mut enforcer = Enforcer::load(EnforcerConfig {
            max_path_rules: 131_072,
            ..Default::default()
        })
        .unwrap();
        enforcer.manage_cgroup(managed.id()).unwrap();
        let mut table: Vec<Entry> = (0..entries)
            .map(|i| {
                let p = PathPattern::parse(&format!("/srv/bench/{i}/")).unwrap();
                protection(Op::Read, &Object::Path(p))
            })
            .collect();
        table.push(protection(Op::Read, &Object::Path(data.clone())));
        enforcer.apply(&table).unwrap();
        let grant = Entry {
            subject: Subject::Cgroup(managed.id()),
            op: Op::Read,
            object: Object::Path(data.clone()),
            effect: Effect::Allow,
            expires: Expiry::Never,
            rule_id: 9,
            from_grant: true,
        };
        enforcer.grant(9, vec![grant]).unwrap();

        let unmanaged = measure(&protected);
        join(managed.path());
        let managed_unprotected = measure(&unprotected);
        let managed_granted = measure(&protected);
        join(&root);
        let lost = enforcer.stats().unwrap().events_lost;
        drop(enforcer);
        report("unmanaged", Some(entries), unmanaged, lost);
        report(
            "managed_unprotected",
            Some(entries),
            managed_unprotected,
            lost,
        );
        report("managed_granted", Some(entries), managed_granted, lost);
    }
    // With every program detached again: the baseline must not have drifted.
    report("baseline", None, measure(&protected), 0);
}
