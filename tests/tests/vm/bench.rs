//! Syscall overhead of ward's LSM hooks, for `cargo xtask bench`.
//!
//! Run in the VM under `qemu -icount shift=0` on one vCPU: guest time then
//! counts instructions, so timings repeat exactly and ratios between
//! conditions in the same run are meaningful. Ignored by `cargo test`.
//!
//! Six loops (open for read, open for write, execve, connect, and the uses
//! of what is open: a read through a file, a send and receive on a
//! connection) under:
//! no ward; the floor (an empty LSM program on the same hooks); ward loaded
//! with the caller unmanaged; managed caller and unprotected object; managed
//! caller and protected object allowed by a grant. Each ward condition runs
//! with 0, 1,000 and 100,000 entries of each family in the table.

use std::{net::SocketAddr, path::Path};

use aya::programs::Lsm;
use ward_abi::{Effect, Op, programs};
use ward_agent::{
    btf::KernelOffsets,
    cgroup::{OwnedCgroup, cgroup2_mount},
    enforcer::{Enforcer, EnforcerConfig, Entry, Expiry, NetPattern, Object, PathPattern, Subject},
};
use ward_tests::{
    TempDir,
    bench::filler_network,
    lifecycle::protection,
    syscall_loop::{Loop, Target, bpf_ns_per_op, bpf_ns_per_op_as, write_tiny_exit},
};

/// Runs of each measurement; the report gives median, min and max.
const RUNS: usize = 3;

/// Ops per timed run: enough for a stable figure, few enough that the
/// slow loops (exec, connect) finish in minutes under TCG.
fn ops(syscall: Loop) -> u32 {
    match syscall {
        Loop::OpenRead | Loop::OpenWrite | Loop::Read => 20_000,
        Loop::Exec => 2_000,
        Loop::Connect | Loop::SendRecv => 5_000,
    }
}

/// Ops for the untimed pass with the kernel's bpf stats on.
fn stats_ops(syscall: Loop) -> u32 {
    ops(syscall) / 10
}

/// ns per op over [`RUNS`] runs: (median, min, max). `between` runs
/// untimed every 1,000 ops.
fn measure(target: &Target, syscall: Loop, between: &mut dyn FnMut()) -> (f64, f64, f64) {
    // A use loop opens its file or connection again, as this caller.
    target.reopen();
    let mut v: Vec<f64> = (0..RUNS)
        .map(|_| target.ns_per_op_between(ops(syscall), 1_000, between))
        .collect();
    v.sort_by(f64::total_cmp);
    (v[RUNS / 2], v[0], v[RUNS - 1])
}

fn report(
    syscall: Loop,
    condition: &str,
    entries: Option<usize>,
    (median, min, max): (f64, f64, f64),
    bpf: &std::collections::BTreeMap<String, f64>,
) {
    println!(
        "BENCH {}",
        serde_json::json!({
            "syscall": syscall.name(), "condition": condition, "entries": entries,
            "ns": median, "min": min, "max": max, "bpf_ns": bpf,
        })
    );
}

fn join(cgroup: &Path) {
    std::fs::write(cgroup.join("cgroup.procs"), "0").unwrap();
}

/// The two objects of one loop.
struct Pair {
    syscall: Loop,
    protected: Target,
    unprotected: Target,
    /// The protection and grant that make `protected` protected-but-granted.
    op: Op,
    object: Object,
}

fn pairs(dir: &TempDir) -> Vec<Pair> {
    let data = PathPattern::parse(&format!("{}/data/", dir.path().display())).unwrap();
    let file = dir.file("data/f.txt");
    let other = dir.file("other/g.txt");
    let exe = write_tiny_exit(&dir.path().join("data/bin/exit0"));
    let other_exe = write_tiny_exit(&dir.path().join("other/bin/exit0"));
    let protected_net = Target::connect("127.0.0.1:0".parse().unwrap());
    let Target::Connect { addr, .. } = &protected_net else {
        unreachable!()
    };
    let net = NetPattern::parse(&format!("127.0.0.1/32:{}", addr.port())).unwrap();
    let other_addr: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let exe_rule = PathPattern::parse(&exe.display().to_string()).unwrap();
    let data_read = data.clone();
    let held_net = Target::send_recv("127.0.0.1:0".parse().unwrap());
    let Target::SendRecv { addr, .. } = &held_net else {
        unreachable!()
    };
    let held_pattern = NetPattern::parse(&format!("127.0.0.1/32:{}", addr.port())).unwrap();
    vec![
        Pair {
            syscall: Loop::OpenRead,
            protected: Target::file(&file, Loop::OpenRead),
            unprotected: Target::file(&other, Loop::OpenRead),
            op: Op::Read,
            object: Object::Path(data.clone()),
        },
        Pair {
            syscall: Loop::OpenWrite,
            protected: Target::file(&file, Loop::OpenWrite),
            unprotected: Target::file(&other, Loop::OpenWrite),
            op: Op::Write,
            object: Object::Path(data),
        },
        Pair {
            syscall: Loop::Exec,
            protected: Target::exec(&exe),
            unprotected: Target::exec(&other_exe),
            op: Op::Exec,
            object: Object::Path(exe_rule),
        },
        Pair {
            syscall: Loop::Connect,
            protected: protected_net,
            unprotected: Target::connect(other_addr),
            op: Op::Connect,
            object: Object::Net(net),
        },
        Pair {
            syscall: Loop::Read,
            protected: Target::read(&file),
            unprotected: Target::read(&other),
            op: Op::Read,
            object: Object::Path(data_read),
        },
        Pair {
            syscall: Loop::SendRecv,
            protected: held_net,
            unprotected: Target::send_recv("127.0.0.2:0".parse().unwrap()),
            op: Op::Connect,
            object: Object::Net(held_pattern),
        },
    ]
}

/// The empty program on every hook ward uses for `syscall`.
fn load_floor(syscall: Loop) -> Vec<aya::Ebpf> {
    let hooks: &[(&str, &str)] = match syscall {
        Loop::OpenRead | Loop::OpenWrite => &[(programs::PROBE_LSM, "file_open")],
        // exec opens the binary (file_open) and checks it (bprm_check_security).
        Loop::Exec => &[
            (programs::PROBE_LSM, "file_open"),
            (programs::PROBE_LSM, "bprm_check_security"),
        ],
        Loop::Connect => &[(programs::PROBE_LSM_CONNECT, "socket_connect")],
        Loop::Read => &[(programs::PROBE_LSM_ALLOW, "file_permission")],
        Loop::SendRecv => &[
            (programs::PROBE_LSM_ALLOW, "socket_sendmsg"),
            (programs::PROBE_LSM_ALLOW, "socket_recvmsg"),
        ],
    };
    let offsets = KernelOffsets::from_running_kernel().unwrap();
    let btf = ward_agent::btf::aya_btf().unwrap();
    hooks
        .iter()
        .map(|(name, hook)| {
            let mut ebpf = ward_agent::ebpf::load(&offsets).unwrap();
            let program: &mut Lsm = ebpf.program_mut(name).unwrap().try_into().unwrap();
            program.load(hook, &btf).unwrap();
            program.attach().unwrap();
            ebpf
        })
        .collect()
}

/// N path and N network protections of objects the loops never touch.
fn filler(entries: usize) -> Vec<Entry> {
    (0..entries)
        .flat_map(|i| {
            let p = PathPattern::parse(&format!("/srv/bench/{i}/")).unwrap();
            [
                protection(Op::Read, &Object::Path(p)),
                protection(Op::Connect, &Object::Net(filler_network(i))),
            ]
        })
        .collect()
}

/// The loops that open something: open for read and write, exec, connect.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn syscall_overhead() {
    overhead(|s| !matches!(s, Loop::Read | Loop::SendRecv));
}

/// The loops that use what is open: a read through a file, a send and
/// receive on a connection (held uses when granted).
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn use_overhead() {
    overhead(|s| matches!(s, Loop::Read | Loop::SendRecv));
}

fn overhead(wanted: impl Fn(Loop) -> bool) {
    let dir = TempDir::new("bench");
    let pairs: Vec<Pair> = pairs(&dir)
        .into_iter()
        .filter(|p| wanted(p.syscall))
        .collect();
    let root = cgroup2_mount().unwrap();
    let managed = OwnedCgroup::create(&root, "ward-bench").unwrap();
    let none = std::collections::BTreeMap::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _rt = rt.enter();

    // The first runs after boot pay one-time kernel costs (slab growth,
    // caches, boot-time work on the single vCPU): throw them away. The
    // reference baseline is measured again at the end, when all is quiet.
    for p in &pairs {
        let _ = measure(&p.protected, p.syscall, &mut || {});
        let start = measure(&p.protected, p.syscall, &mut || {});
        report(p.syscall, "baseline_start", None, start, &none);
    }
    for p in &pairs {
        let floor = load_floor(p.syscall);
        let ns = measure(&p.protected, p.syscall, &mut || {});
        let bpf = bpf_ns_per_op(&p.protected, stats_ops(p.syscall));
        drop(floor);
        report(p.syscall, "floor", None, ns, &bpf);
    }

    for entries in [0usize, 1_000, 100_000] {
        let mut enforcer = Enforcer::load(EnforcerConfig {
            max_path_rules: 131_072,
            max_net_rules: 131_072,
            ..Default::default()
        })
        .unwrap();
        enforcer.manage_cgroup(managed.id()).unwrap();
        let mut table = filler(entries);
        let mut grants = Vec::new();
        for p in &pairs {
            table.push(protection(p.op, &p.object));
            grants.push(Entry {
                subject: Subject::Cgroup(managed.id()),
                op: p.op,
                object: p.object.clone(),
                effect: Effect::Allow,
                expires: Expiry::Never,
                rule_id: 9,
                from_grant: true,
            });
        }
        enforcer.apply(&table).unwrap();
        enforcer.grant(9, grants).unwrap();
        let none_classed = ward_agent::enforcer::Classes::new();
        // Drained between timed chunks, as wardd drains it: the granted
        // path is then timed with the event actually written.
        let mut events = enforcer.events().unwrap();
        let mut drain = || {
            events.discard_pending();
        };

        for p in &pairs {
            let ns = measure(&p.protected, p.syscall, &mut drain);
            let bpf = bpf_ns_per_op(&p.protected, stats_ops(p.syscall));
            report(p.syscall, "unmanaged", Some(entries), ns, &bpf);
        }
        join(managed.path());
        for p in &pairs {
            let ns = measure(&p.unprotected, p.syscall, &mut drain);
            let cgroups = Some((managed.path(), root.as_path()));
            let bpf = bpf_ns_per_op_as(&p.unprotected, stats_ops(p.syscall), cgroups);
            report(p.syscall, "managed_unprotected", Some(entries), ns, &bpf);
            let ns = measure(&p.protected, p.syscall, &mut drain);
            drain();
            let bpf = bpf_ns_per_op_as(&p.protected, stats_ops(p.syscall), cgroups);
            drain();
            report(p.syscall, "managed_granted", Some(entries), ns, &bpf);
        }
        join(&root);
        if entries == 100_000 {
            // The same granted opens on a host whose Cedar policy is in
            // use: the caller is in a principal class (whose entries do
            // not cover these objects), so every decision also looks up
            // its class and considers the class's row. What the class
            // lookup costs a managed caller.
            let classes = [(Subject::Cgroup(managed.id()), 1)].into();
            enforcer.apply_with(&table, classes).unwrap();
            join(managed.path());
            for p in &pairs {
                let cgroups = Some((managed.path(), root.as_path()));
                let ns = measure(&p.protected, p.syscall, &mut drain);
                drain();
                let bpf = bpf_ns_per_op_as(&p.protected, stats_ops(p.syscall), cgroups);
                drain();
                report(
                    p.syscall,
                    "managed_granted_classed",
                    Some(entries),
                    ns,
                    &bpf,
                );
            }
            join(&root);
            enforcer.apply_with(&table, none_classed).unwrap();
        }
        let lost = enforcer.stats().unwrap().events_lost;
        println!(
            "BENCH {}",
            serde_json::json!({"condition": "events_lost", "entries": entries, "lost": lost})
        );
        drop(events);
        drop(enforcer);
    }
    // With every program detached again: the baseline must not have drifted.
    for p in &pairs {
        let ns = measure(&p.protected, p.syscall, &mut || {});
        report(p.syscall, "baseline", None, ns, &none);
    }
}

/// Depths the walk benchmark measures: directories between `/` and the file.
const DEPTHS: [usize; 4] = [3, 6, 16, 32];
/// Open+close pairs per timed run of the walk benchmark.
const WALK_OPS: u32 = 5_000;
/// The managed, unprivileged user the walk benchmark measures as.
const WALK_USER: u32 = 4545;

/// Runs `ops` open+close pairs of `path` in a forked child, after `setup`
/// (raw syscalls only; non-zero aborts), and returns ns per pair on the
/// guest clock (instructions, under icount).
fn child_ns_per_open(path: &std::ffi::CStr, ops: u32, setup: &dyn Fn() -> i32) -> f64 {
    let mut fds = [0i32; 2];
    // SAFETY: pipe, fork; the child makes raw syscalls only, then _exit.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            if setup() != 0 {
                libc::_exit(1);
            }
            // Warm up, then time.
            for _ in 0..500 {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    libc::_exit(2);
                }
                libc::close(fd);
            }
            let mut a: libc::timespec = std::mem::zeroed();
            let mut b: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut a);
            for _ in 0..ops {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                libc::close(fd);
            }
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut b);
            let ns = (b.tv_sec - a.tv_sec) as f64 * 1e9 + (b.tv_nsec - a.tv_nsec) as f64;
            let per = (ns / f64::from(ops)).to_bits().to_ne_bytes();
            libc::write(fds[1], per.as_ptr().cast(), 8);
            libc::_exit(0);
        }
        libc::close(fds[1]);
        let mut buf = [0u8; 8];
        let n = libc::read(fds[0], buf.as_mut_ptr().cast(), 8);
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        assert!(
            n == 8 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "walk bench child failed: status {status}"
        );
        f64::from_bits(u64::from_ne_bytes(buf))
    }
}

/// Becomes the managed benchmark user (raw syscalls).
fn become_walk_user() -> i32 {
    // SAFETY: setgid, setuid.
    unsafe {
        if libc::setgid(WALK_USER) != 0 || libc::setuid(WALK_USER) != 0 {
            return 1;
        }
    }
    0
}

/// A Landlock domain handling READ_FILE, with one rule allowing it
/// beneath `dir` (raw syscalls; x86_64 numbers).
fn landlock_beneath(dir: &std::ffi::CStr) -> i32 {
    const READ_FILE: u64 = 1 << 2;
    #[repr(C, packed)]
    struct PathBeneath {
        allowed: u64,
        parent_fd: i32,
    }
    // SAFETY: the Landlock syscalls with valid attribute structs.
    unsafe {
        let handled: u64 = READ_FILE;
        let ruleset = libc::syscall(444, &handled as *const u64, 8usize, 0u32) as i32;
        if ruleset < 0 {
            return 1;
        }
        let parent = libc::open(dir.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if parent < 0 {
            return 2;
        }
        let rule = PathBeneath {
            allowed: READ_FILE,
            parent_fd: parent,
        };
        if libc::syscall(445, ruleset, 1u32, &rule as *const PathBeneath, 0u32) != 0 {
            return 3;
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        if libc::syscall(446, ruleset, 0u32) != 0 {
            return 4;
        }
    }
    0
}

/// The least of three runs: under icount, anything else the guest does
/// during a run (a kworker, an RCU callback) only ever adds instructions.
fn least_ns_per_open(path: &std::ffi::CStr, setup: &dyn Fn() -> i32) -> f64 {
    (0..3)
        .map(|_| child_ns_per_open(path, WALK_OPS, setup))
        .fold(f64::INFINITY, f64::min)
}

fn walk_report(depth: usize, condition: &str, entries: usize, ns: f64) {
    println!(
        "BENCH_WALK {}",
        serde_json::json!({ "depth": depth, "condition": condition, "entries": entries, "ns": ns })
    );
}

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn file_walk_against_landlock() {
    use std::ffi::CString;
    // /tmp/ward-walk-PID is 2 deep; add directories to reach each depth.
    let top = TempDir::new("walk");
    std::fs::set_permissions(
        top.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let files: Vec<(usize, std::path::PathBuf)> = DEPTHS
        .iter()
        .map(|&d| {
            let mut p = top.path().join(format!("d{d}"));
            for i in 0..d.saturating_sub(3) {
                p = p.join(format!("l{i}"));
            }
            std::fs::create_dir_all(&p).unwrap();
            let f = p.join("f.txt");
            std::fs::write(&f, b"x").unwrap();
            for a in f.ancestors().skip(1) {
                if a.starts_with(top.path()) {
                    std::fs::set_permissions(
                        a,
                        std::os::unix::fs::PermissionsExt::from_mode(0o755),
                    )
                    .unwrap();
                }
            }
            (d, f)
        })
        .collect();
    let none = &|| 0;
    // Let boot-time work settle: it would count as instructions of the loop.
    std::thread::sleep(std::time::Duration::from_secs(5));
    for (d, f) in &files {
        let c = CString::new(f.to_str().unwrap()).unwrap();
        let parent = CString::new(f.parent().unwrap().to_str().unwrap()).unwrap();
        walk_report(*d, "no ward", 0, least_ns_per_open(&c, none));
        walk_report(
            *d,
            "landlock, rule on the parent",
            0,
            least_ns_per_open(&c, &|| landlock_beneath(&parent)),
        );
        walk_report(
            *d,
            "landlock, rule at /",
            0,
            least_ns_per_open(&c, &|| landlock_beneath(c"/")),
        );
    }
    let mut enforcer = Enforcer::load(EnforcerConfig {
        uid_ranges: vec![(WALK_USER, WALK_USER)],
        max_path_rules: 1 << 18,
        ..Default::default()
    })
    .unwrap();
    // Something is protected (elsewhere), so managed callers walk.
    let elsewhere = TempDir::new("walk-elsewhere");
    let other =
        Object::Path(PathPattern::parse(&format!("{}/", elsewhere.path().display())).unwrap());
    enforcer.apply(&[protection(Op::Read, &other)]).unwrap();
    for (d, f) in &files {
        let c = CString::new(f.to_str().unwrap()).unwrap();
        walk_report(*d, "ward, unmanaged", 0, least_ns_per_open(&c, none));
        walk_report(
            *d,
            "ward, managed, unprotected",
            0,
            least_ns_per_open(&c, &become_walk_user),
        );
    }
    // The top directory protected, the user granted: every depth walks to
    // the root through the object.
    let tree = Object::Path(PathPattern::parse(&format!("{}/", top.path().display())).unwrap());
    for entries in [0usize, 100_000] {
        let mut table = vec![protection(Op::Read, &other), protection(Op::Read, &tree)];
        table.extend((0..entries).map(|i| Entry {
            subject: Subject::Uid(100_000 + i as u32),
            op: Op::Read,
            object: tree.clone(),
            effect: Effect::Allow,
            expires: Expiry::Never,
            rule_id: 10 + i as u64,
            from_grant: false,
        }));
        // The user's allow is a policy entry, not a grant: a grant's use is
        // an audit event, which the syscall benchmark above measures; this
        // one measures the walk and the decision.
        table.push(Entry {
            subject: Subject::Uid(WALK_USER),
            op: Op::Read,
            object: tree.clone(),
            effect: Effect::Allow,
            expires: Expiry::Never,
            rule_id: 7,
            from_grant: false,
        });
        enforcer.apply(&table).unwrap();
        for (d, f) in &files {
            let c = CString::new(f.to_str().unwrap()).unwrap();
            let ns = least_ns_per_open(&c, &become_walk_user);
            walk_report(*d, "ward, managed, protected, allowed", entries, ns);
        }
    }
}

/// The connection reset at a grant's deadline, through wardd with BPF LSM
/// (the held-connection map iterator), in wall-clock time under plain
/// emulation (no icount): every instruction runs many times slower than
/// on hardware, so the figure is an upper bound. Run with `cargo xtask vm
/// -- /ward/tests/kernel --ignored --nocapture teardown_precision_lsm`
/// (`WARD_BENCH_EXPIRIES` grants, deadlines 2-4 s ahead).
#[test]
#[ignore = "benchmark: wall-clock under emulation"]
fn teardown_precision_lsm() {
    let dir = TempDir::new("bench-teardown");
    let root = cgroup2_mount().unwrap();
    let managed = OwnedCgroup::create(&root, "ward-bench-teardown").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = crate::support::agent_config(
        dir.path(),
        "/sys/fs/bpf/ward-bench-teardown",
        &format!(
            r#"managed_cgroups = ["ward-bench-teardown"]

[protect]
networks = ["127.0.0.1/32:{port}"]
"#
        ),
    );
    let socket = dir.path().join("agent.sock");
    let wardd = ward_tests::wardd::Wardd::start(&config, &socket, &[]);
    let s = ward_tests::bench::teardown_precision(
        &socket,
        managed.path(),
        "ward-bench-teardown",
        &listener,
        // Emulation makes a push and a connect take hundreds of ms.
        2000,
        true,
    );
    println!("BENCH {}", serde_json::json!({"teardown_precision_lsm": s}));
    if std::env::var_os("WARD_BENCH_LOG").is_some() {
        println!("{}", wardd.log());
    }
    drop(wardd);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward-bench-teardown");
}
