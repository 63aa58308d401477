//! Syscall overhead of ward's LSM hooks, for `cargo xtask bench`.
//!
//! Run in the VM under `qemu -icount shift=0` on one vCPU: guest time then
//! counts instructions, so timings repeat exactly and ratios between
//! conditions in the same run are meaningful. Ignored by `cargo test`.
//!
//! Four loops (open for read, open for write, execve, connect) under:
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
    syscall_loop::{Syscall, Target, bpf_ns_per_op, write_tiny_exit},
};

/// Runs of each measurement; the report gives median, min and max.
const RUNS: usize = 3;

/// Ops per timed run: enough for a stable figure, few enough that the
/// slow loops (exec, connect) finish in minutes under TCG.
fn ops(syscall: Syscall) -> u32 {
    match syscall {
        Syscall::OpenRead | Syscall::OpenWrite => 20_000,
        Syscall::Exec => 2_000,
        Syscall::Connect => 5_000,
    }
}

/// Ops for the untimed pass with the kernel's bpf stats on.
fn stats_ops(syscall: Syscall) -> u32 {
    ops(syscall) / 10
}

/// ns per op over [`RUNS`] runs: (median, min, max). `between` runs
/// untimed every 1,000 ops.
fn measure(target: &Target, syscall: Syscall, between: &mut dyn FnMut()) -> (f64, f64, f64) {
    let mut v: Vec<f64> = (0..RUNS)
        .map(|_| target.ns_per_op_between(ops(syscall), 1_000, between))
        .collect();
    v.sort_by(f64::total_cmp);
    (v[RUNS / 2], v[0], v[RUNS - 1])
}

fn report(
    syscall: Syscall,
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
    syscall: Syscall,
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
    vec![
        Pair {
            syscall: Syscall::OpenRead,
            protected: Target::file(&file, Syscall::OpenRead),
            unprotected: Target::file(&other, Syscall::OpenRead),
            op: Op::Read,
            object: Object::Path(data.clone()),
        },
        Pair {
            syscall: Syscall::OpenWrite,
            protected: Target::file(&file, Syscall::OpenWrite),
            unprotected: Target::file(&other, Syscall::OpenWrite),
            op: Op::Write,
            object: Object::Path(data),
        },
        Pair {
            syscall: Syscall::Exec,
            protected: Target::exec(&exe),
            unprotected: Target::exec(&other_exe),
            op: Op::Exec,
            object: Object::Path(exe_rule),
        },
        Pair {
            syscall: Syscall::Connect,
            protected: protected_net,
            unprotected: Target::connect(other_addr),
            op: Op::Connect,
            object: Object::Net(net),
        },
    ]
}

/// The empty program on every hook ward uses for `syscall`.
fn load_floor(syscall: Syscall) -> Vec<aya::Ebpf> {
    let hooks: &[(&str, &str)] = match syscall {
        Syscall::OpenRead | Syscall::OpenWrite => &[(programs::PROBE_LSM, "file_open")],
        // exec opens the binary (file_open) and checks it (bprm_check_security).
        Syscall::Exec => &[
            (programs::PROBE_LSM, "file_open"),
            (programs::PROBE_LSM, "bprm_check_security"),
        ],
        Syscall::Connect => &[(programs::PROBE_LSM_CONNECT, "socket_connect")],
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

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn syscall_overhead() {
    let dir = TempDir::new("bench");
    let pairs = pairs(&dir);
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
            let bpf = bpf_ns_per_op(&p.unprotected, stats_ops(p.syscall));
            report(p.syscall, "managed_unprotected", Some(entries), ns, &bpf);
            let ns = measure(&p.protected, p.syscall, &mut drain);
            drain();
            let bpf = bpf_ns_per_op(&p.protected, stats_ops(p.syscall));
            drain();
            report(p.syscall, "managed_granted", Some(entries), ns, &bpf);
        }
        join(&root);
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
