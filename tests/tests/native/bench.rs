//! Push to enforced: how long from a gRPC PushGrant until the kernel lets
//! the grantee connect. Run by `cargo xtask bench` (release build); it is
//! a measurement, not a pass/fail test, so it is ignored by `cargo test`.
//!
//! These benchmarks only measure: the targets each figure is judged by
//! live in one table, xtask/src/bench/targets.rs, and nowhere here.

use std::{
    net::TcpStream,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ward_proto::v1 as pb;

use ward_tests::bench::connect_grant;

use crate::daemon::host;

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn push_to_enforced_latency() {
    let iterations: usize = std::env::var("WARD_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let h = host("bench", "");
    let _wardd = h.start();
    // This thread is the grantee: it joins the managed cgroup (wardd, started
    // before, stays outside).
    ward_tests::bench::enter_cgroup(h.sb.managed.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(ward_agent::client::connect(&h.socket)).unwrap();
    let workload = h.managed_workload();
    assert!(
        TcpStream::connect(h.addr).is_err(),
        "protected before the first grant"
    );

    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let grant = connect_grant(
            format!("bench-{i}"),
            &workload,
            format!("127.0.0.1/32:{}", h.addr.port()),
            now + 600_000,
        );
        let started = Instant::now();
        rt.block_on(client.push_grant(pb::PushGrantRequest {
            grant: Some(grant),
            ..Default::default()
        }))
        .unwrap();
        let stream = TcpStream::connect(h.addr).expect("allowed right after the push returns");
        samples.push(started.elapsed());
        drop(stream);
        // Keep the backlog empty: accept what the grant let through.
        drop(h.listener.accept().expect("accept"));
        rt.block_on(client.revoke_grant(pb::RevokeGrantRequest {
            id: format!("bench-{i}"),
            reason: "bench".into(),
        }))
        .unwrap();
        assert!(
            TcpStream::connect(h.addr).is_err(),
            "denied again after revoke"
        );
    }
    ward_tests::bench::leave_cgroup();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let (median, p99, max) = (pct(0.5), pct(0.99), *samples.last().unwrap());
    println!(
        "push-to-enforced over {iterations} pushes: median {:?}, p99 {:?}, max {:?}, min {:?}",
        median, p99, max, samples[0]
    );
    let report = serde_json::json!({
        "figure": "push_to_enforced",
        "iterations": iterations,
        "median_us": median.as_micros(), "p99_us": p99.as_micros(),
        "max_us": max.as_micros(), "min_us": samples[0].as_micros(),
    });
    if let Ok(path) = std::env::var("WARD_BENCH_OUT") {
        std::fs::write(path, report.to_string()).unwrap();
    }
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// How long after `expires_at` the first denied connect lands, over 200
/// grants with staggered deadlines; the agent does nothing at the deadline.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn expiry_precision() {
    let h = host("bench-expiry", "");
    let _wardd = h.start();
    ward_tests::bench::enter_cgroup(h.sb.managed.path());
    // Drain accepted connections so the backlog never fills.
    let listener = h.listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(ward_agent::client::connect(&h.socket)).unwrap();
    let (mut late, mut allowed_after) = (Vec::new(), 0);
    let mut last_allowed_after = Duration::ZERO;
    let n: u64 = std::env::var("WARD_BENCH_EXPIRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for i in 0..n {
        // Deadlines 200-399 ms ahead, at scattered milliseconds.
        let expires = unix_now() + Duration::from_millis(200 + (i * 37) % 200);
        let grant = connect_grant(
            format!("expiry-{i}"),
            &h.managed_workload(),
            format!("127.0.0.1/32:{}", h.addr.port()),
            expires.as_millis() as i64,
        );
        rt.block_on(client.push_grant(pb::PushGrantRequest {
            grant: Some(grant),
            ..Default::default()
        }))
        .unwrap();
        let deadline = Duration::from_millis(expires.as_millis() as u64);
        assert!(
            TcpStream::connect(h.addr).is_ok(),
            "allowed before its deadline"
        );
        // Probe from 2 ms before the deadline, every 50 µs: only EPERM is
        // a denial (a probe that fails otherwise is retried).
        if let Some(wait) = deadline.checked_sub(unix_now() + Duration::from_millis(2)) {
            std::thread::sleep(wait);
        }
        loop {
            // Timed from when the attempt starts: one that began before the
            // deadline and returned after it was decided in time.
            let at = unix_now();
            let result = TcpStream::connect(h.addr);
            match result {
                Ok(_) if at > deadline => {
                    allowed_after += 1;
                    last_allowed_after = last_allowed_after.max(at - deadline);
                }
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    late.push(at.saturating_sub(deadline));
                    break;
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    ward_tests::bench::leave_cgroup();
    let mut s = ward_tests::bench::summary(late);
    // Probes that still got through after the deadline: the wall-to-boot
    // clock conversion at push time is not exact to the microsecond.
    s["allowed_after_deadline"] = allowed_after.into();
    s["latest_allowed_after_deadline_us"] = (last_allowed_after.as_micros() as u64).into();
    ward_tests::bench::record("expiry_precision", &s);
}

/// How long after `expires_at` the peer of a connection made under a grant
/// sees it reset, over 200 grants with staggered deadlines: wardd's
/// deadline timer, the kernel's iterator and sock_diag, end to end.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn teardown_precision() {
    let h = host("bench-teardown", "");
    let wardd = h.start();
    // The peer as a server on a CPU of its own, then as an ordinary task
    // sharing this host's CPUs with wardd and the test.
    let mut s = ward_tests::bench::teardown_precision(
        &h.socket,
        h.sb.managed.path(),
        &h.managed_workload(),
        &h.listener,
        200,
        true,
    );
    s["ordinary_peer"] = ward_tests::bench::teardown_precision(
        &h.socket,
        h.sb.managed.path(),
        &h.managed_workload(),
        &h.listener,
        200,
        false,
    );
    if std::env::var_os("WARD_BENCH_LOG").is_some() {
        println!("{}", wardd.log());
    }
    ward_tests::bench::record("teardown_precision", &s);
}

/// Sums what the kernel charges for wardd's maps (fdinfo `memlock`).
fn map_memory(pid: u32) -> u64 {
    let mut total = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        if info.contains("map_type:") {
            total += info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Where a process's resident memory is, in KiB, from /proc/PID/smaps:
/// the brk heap, other anonymous memory (malloc arenas of other threads,
/// stacks), and file-backed pages (the binary and libraries).
fn rss_breakdown(pid: u32) -> serde_json::Value {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut heap, mut anon, mut file, mut region) = (0u64, 0u64, 0u64, String::new());
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            region = line.split_whitespace().nth(5).unwrap_or("").to_owned();
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match region.as_str() {
                "[heap]" => heap += kib,
                r if r.is_empty() || r.starts_with('[') || r.starts_with("anon_inode") => {
                    anon += kib
                }
                _ => file += kib,
            }
        }
    }
    serde_json::json!({"heap_kib": heap, "other_anon_kib": anon, "file_kib": file})
}

/// wardd's resident memory idle and holding 100,000 grants, and the
/// kernel memory each table entry costs.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn memory() {
    let grants: u32 = std::env::var("WARD_BENCH_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let h = host(
        "bench-mem",
        "[limits]\nmax_net_rules = 262144\nmax_path_rules = 1024\n",
    );
    let wardd = h.start();
    let pid = wardd.pid().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (rss_idle, maps_idle) = (rss_kib(pid), map_memory(pid));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(ward_agent::client::connect(&h.socket)).unwrap();
    let expires = (unix_now() + Duration::from_secs(3600)).as_millis() as i64;
    let started = std::time::Instant::now();
    for i in 0..grants {
        let grant = connect_grant(
            format!("mem-{i}"),
            &h.managed_workload(),
            format!("10.{}.{}.{}/32:5432", i >> 16, (i >> 8) & 255, i & 255),
            expires,
        );
        rt.block_on(client.push_grant(pb::PushGrantRequest {
            grant: Some(grant),
            ..Default::default()
        }))
        .unwrap();
    }
    let push_s = started.elapsed().as_secs_f64();
    // Settled: wardd trims freed memory within a second of churn.
    std::thread::sleep(Duration::from_secs(2));
    let (rss_full, maps_full) = (rss_kib(pid), map_memory(pid));
    let breakdown = rss_breakdown(pid);
    let r = serde_json::json!({
        "grants": grants,
        "rss_idle_kib": rss_idle,
        "rss_with_grants_kib": rss_full,
        "map_memory_idle_bytes": maps_idle,
        "map_memory_with_grants_bytes": maps_full,
        "kernel_bytes_per_entry": (maps_full.saturating_sub(maps_idle)) as f64 / grants as f64,
        "pushes_per_second": grants as f64 / push_s,
        "rss_with_grants_breakdown": breakdown,
    });
    ward_tests::bench::record("memory", &r);
}

/// Connect overhead of the cgroup connect4 hook on the host kernel, in
/// wall-clock time: no ward, the floor (an empty connect4 program), and
/// ward with the caller unmanaged, managed to an unprotected address, and
/// managed to a protected address it holds a grant for; at 0, 1,000 and
/// 100,000 table entries. Conditions are interleaved round by round, so
/// drift on a shared machine hits them all alike.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn connect_overhead_native() {
    use std::collections::BTreeMap;
    use ward_abi::{Effect, Op};
    use ward_agent::{
        cgroup::{OwnedCgroup, cgroup2_mount},
        enforcer::{Enforcer, EnforcerConfig, Entry, Expiry, Hooks, NetPattern, Object, Subject},
    };
    use ward_tests::{
        bench::{enter_cgroup, leave_cgroup},
        lifecycle::protection,
        syscall_loop::{Target, bpf_ns_per_op},
    };
    const ROUNDS: usize = 11;
    const OPS: u32 = 5_000;

    let top = cgroup2_mount().unwrap();
    let base =
        OwnedCgroup::create(&top, &format!("ward-bench-connect-{}", std::process::id())).unwrap();
    let plain = OwnedCgroup::create(base.path(), "plain").unwrap();
    let floor_cg = OwnedCgroup::create(base.path(), "floor").unwrap();
    let ward_cg = OwnedCgroup::create(base.path(), "ward").unwrap();
    let unmanaged = OwnedCgroup::create(ward_cg.path(), "unmanaged").unwrap();
    let managed = OwnedCgroup::create(ward_cg.path(), "managed").unwrap();

    // The floor: the empty program, on a cgroup of its own.
    let mut probe = ward_agent::ebpf::load(&ward_agent::btf::KernelOffsets::UNUSED).unwrap();
    let program: &mut aya::programs::CgroupSockAddr = probe
        .program_mut(ward_abi::programs::PROBE_CONNECT4)
        .unwrap()
        .try_into()
        .unwrap();
    program.load().unwrap();
    program
        .attach(
            std::fs::File::open(floor_cg.path()).unwrap(),
            aya::programs::CgroupAttachMode::Single,
        )
        .unwrap();

    let granted = Target::connect("127.0.0.1:0".parse().unwrap());
    let Target::Connect { addr, .. } = &granted else {
        unreachable!()
    };
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", addr.port())).unwrap());
    let other = Target::connect("127.0.0.2:0".parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _rt = rt.enter();

    let mut rows = Vec::new();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        serde_json::json!({"ns": v[v.len() / 2], "min": v[0], "max": v[v.len() - 1]})
    };
    for entries in [0usize, 1_000, 100_000] {
        let mut enforcer = Enforcer::load(EnforcerConfig {
            max_net_rules: 131_072,
            hooks: Hooks {
                lsm: false,
                cgroup_connect: Some(ward_cg.path().to_owned()),
            },
            ..Default::default()
        })
        .unwrap();
        enforcer.manage_cgroup(managed.id()).unwrap();
        let mut table: Vec<Entry> = (0..entries)
            .map(|i| {
                protection(
                    Op::Connect,
                    &Object::Net(ward_tests::bench::filler_network(i)),
                )
            })
            .collect();
        table.push(protection(Op::Connect, &object));
        enforcer.apply(&table).unwrap();
        let grant = Entry {
            subject: Subject::Cgroup(managed.id()),
            op: Op::Connect,
            object: object.clone(),
            effect: Effect::Allow,
            expires: Expiry::Never,
            rule_id: 9,
            from_grant: true,
        };
        enforcer.grant(9, vec![grant]).unwrap();
        let mut events = enforcer.events().unwrap();
        let mut drain = || {
            events.discard_pending();
        };

        let conditions: [(&str, &OwnedCgroup, &Target); 5] = [
            ("baseline", &plain, &granted),
            ("floor", &floor_cg, &granted),
            ("unmanaged", &unmanaged, &granted),
            ("managed_unprotected", &managed, &other),
            ("managed_granted", &managed, &granted),
        ];
        let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for _ in 0..ROUNDS {
            for (name, cg, target) in conditions {
                enter_cgroup(cg.path());
                let ns = target.ns_per_op_between(OPS, 1_000, &mut drain);
                samples.entry(name).or_default().push(ns);
            }
        }
        for (name, cg, target) in conditions {
            enter_cgroup(cg.path());
            let bpf = bpf_ns_per_op(target, OPS / 5);
            drain();
            let mut row = median(samples.remove(name).unwrap_or_default());
            row["condition"] = name.into();
            row["entries"] = entries.into();
            row["bpf_ns"] = serde_json::to_value(bpf).unwrap();
            println!("BENCH connect_native {row}");
            rows.push(row);
        }
        leave_cgroup();
        drop(events);
        drop(enforcer);
    }
    leave_cgroup();
    drop(probe);
    ward_tests::bench::record(
        "connect_native",
        &serde_json::json!({"rounds": ROUNDS, "ops": OPS, "rows": rows}),
    );
}

/// A sync of 10,000 people from a real OpenLDAP server: connect, StartTLS,
/// bind, paged searches of users and groups, the mapping onto ward's
/// schema and the check of every entity, as wardd's poller does it. Five
/// reads after one to warm the server's cache.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn ldap_sync() {
    use ward_tests::slapd::{READER, READER_PASSWORD, Slapd};
    const USERS: usize = 10_000;
    const GROUPS: usize = 100;
    let ldap = Slapd::start("bench");
    let mut ldif = String::new();
    for i in 0..USERS {
        ldif.push_str(&Slapd::person(
            &format!("user{i:05}"),
            &[
                ("departmentNumber", &format!("dept{}", i % 88)),
                ("employeeType", &format!("{}", i % 5)),
            ],
        ));
    }
    for g in 0..GROUPS {
        let members: Vec<String> = (0..USERS)
            .filter(|i| i % GROUPS == g)
            .map(|i| Slapd::dn(&format!("user{i:05}")))
            .collect();
        ldif.push_str(&Slapd::group(&format!("group{g:03}"), &members));
    }
    let loaded = Instant::now();
    ldap.add(&ldif);
    println!(
        "loaded {USERS} users, {GROUPS} groups in {:?}",
        loaded.elapsed()
    );
    let secret = ldap.dir().join("reader.secret");
    std::fs::write(&secret, READER_PASSWORD).unwrap();
    let source: ward_ldap::LdapSource = toml::from_str(&format!(
        "url = \"{}\"\nstarttls = true\nca_file = \"{}\"\nbind_dn = \"{READER}\"\n\
         bind_password_file = \"{}\"\ntimeout = \"60s\"\n\
         [users]\nbase = \"ou=people,dc=ward,dc=test\"\n\
         attributes = {{ department = \"departmentNumber\", clearance = \"employeeType\" }}\n\
         [groups]\nbase = \"ou=groups,dc=ward,dc=test\"\n",
        ldap.url(),
        ldap.ca().display(),
        secret.display()
    ))
    .unwrap();
    source.check().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = rt.block_on(ward_ldap::fetch(&source, &[])).unwrap();
    assert_eq!(first.users, USERS);
    assert!(
        first.mapped.bad.is_empty(),
        "{:?}",
        &first.mapped.bad[..3.min(first.mapped.bad.len())]
    );
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let f = rt
                .block_on(ward_ldap::fetch(&source, &first.mapped.defs))
                .unwrap();
            assert_eq!(f.mapped.defs.len(), USERS + GROUPS);
            f.took.as_secs_f64() * 1000.0
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    let r = serde_json::json!({
        "users": USERS,
        "groups": GROUPS,
        "sync_ms": { "median": runs[2], "min": runs[0], "max": runs[4], "runs": runs },
    });
    println!("{r}");
    ward_tests::bench::record("ldap_sync", &r);
}

/// The 10,000 × 1,000 × 4 directory (`ward_policy::fixture`), compiled
/// and loaded into the kernel by wardd as a real process, its 10,000
/// people in its user database (a passwd file bound over /etc/passwd in
/// wardd's own mount namespace): the kernel memory its maps take, a full
/// compile plus load, and one attribute change from the directory edit to
/// the kernel (into a class the kernel holds, and into a new one). Times
/// are wardd's own, from its `policy_applied` audit records
/// (`compile_ms`: reading and compiling the sources; `kernel_ms`: writing
/// the maps); the poll interval is not in them.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn directory_in_kernel() {
    use serde_json::Value;
    use ward_policy::fixture;
    use ward_tests::wardd::Wardd;
    const USERS: usize = 10_000;
    const RUNS: usize = 5;
    let h = host(
        "bench-dir",
        "[limits]\nmax_path_rules = 65536\nmax_net_rules = 16384\nmax_principals = 16384\n\n\
         [policy]\nfiles = [\"policy.cedar\"]\ndirectory = \"directory.toml\"\n\
         reload_interval = \"50ms\"\n",
    );
    let dir = h.dir.path().to_owned();
    std::fs::write(dir.join("policy.cedar"), fixture::POLICIES).unwrap();
    std::fs::write(
        dir.join("directory.toml"),
        fixture::directory(USERS, 1_000, None),
    )
    .unwrap();
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    for i in 0..USERS {
        let uid = 20_000 + i;
        passwd += &format!(
            "{}:x:{uid}:{uid}::/nonexistent:/bin/false\n",
            fixture::user(i)
        );
    }
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/passwd && exec "$@""#)
        .arg(dir.join("passwd"))
        .arg(ward_tests::wardd_bin());
    let mut wardd = Wardd::spawn(cmd, &h.config, &h.socket, &[]);
    let pid = wardd.pid().unwrap();
    let show = || -> Value {
        let (code, out, err) = h.ward(&["policy", "show", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let shown = show();
    assert_eq!(shown["classed_principals"], USERS, "{shown}");
    let records = |mode: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["kind"] == "policy_applied" && r["detail"]["mode"] == mode)
            .collect()
    };
    let next = |mode: &str, seen: usize| -> Value {
        let start = std::time::Instant::now();
        loop {
            let r = records(mode);
            if r.len() > seen {
                return r[r.len() - 1].clone();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no {mode} apply");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let total = |r: &Value| {
        r["detail"]["compile_ms"].as_f64().unwrap() + r["detail"]["kernel_ms"].as_f64().unwrap()
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let memory = map_memory(pid);
    let status: Value = serde_json::from_str(&h.ward(&["status", "--json"]).1).unwrap();

    // Full: a policy edit recompiles and swaps the whole table.
    let (mut full, mut full_kernel) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let seen = records("full").len();
        // A policy of its own each run (a comment would change no
        // policy's text, and so recompile nothing).
        std::fs::write(
            dir.join("policy.cedar"),
            format!(
                "{}@id(\"run-{run}\")\npermit(principal == User::\"nobody-{run}\", \
                 action == Action::\"request\", resource);\n",
                fixture::POLICIES
            ),
        )
        .unwrap();
        let r = next("full", seen);
        full.push(total(&r));
        full_kernel.push(r["detail"]["kernel_ms"].as_f64().unwrap());
    }
    // One attribute change: u7 moves from d7 to d8, into the class u8 is
    // in (one map update), and back; then to d99, a class of its own (its
    // row is written, then the membership).
    let kernel_part = std::cell::RefCell::new(Vec::new());
    let moves = |to: Option<(usize, &str)>, want_entries: Option<u64>| {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            for step in [to, None] {
                let seen = records("incremental").len();
                std::fs::write(
                    dir.join("directory.toml.tmp"),
                    fixture::directory(USERS, 1_000, step),
                )
                .unwrap();
                std::fs::rename(dir.join("directory.toml.tmp"), dir.join("directory.toml"))
                    .unwrap();
                let r = next("incremental", seen);
                if let Some(n) = want_entries {
                    assert_eq!(r["detail"]["entries"], n, "{r}");
                }
                times.push(total(&r));
                if want_entries.is_some() {
                    kernel_part
                        .borrow_mut()
                        .push(r["detail"]["kernel_ms"].as_f64().unwrap());
                }
            }
        }
        times
    };
    let existing = moves(Some((7, "d8")), Some(1));
    let new_class = moves(Some((7, "d99")), None);
    let r = serde_json::json!({
        "users": USERS,
        "resources": 1_000,
        "actions": 4,
        "runs": RUNS,
        "principal_classes": shown["principal_classes"],
        "decisions": shown["decisions"],
        "class_decisions": shown["class_decisions"],
        "path_rules": status["path_rules"],
        "net_rules": status["net_rules"],
        "kernel_memory_bytes": memory,
        "kernel_memory_mib": memory as f64 / 1048576.0,
        "full_compile_and_load_ms": median(full),
        "full_load_kernel_ms": median(full_kernel),
        "attribute_change_ms": median(existing),
        "attribute_change_new_class_ms": median(new_class),
        // Of the move into a held class, the kernel write alone: the rest
        // is reading and compiling the 10,000-person file again.
        "attribute_change_kernel_ms": median(kernel_part.into_inner()),
    });
    assert!(wardd.stop().success(), "{}", wardd.log());
    ward_tests::bench::record("directory_in_kernel", &r);
}
