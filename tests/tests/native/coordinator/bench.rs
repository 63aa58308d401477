//! Benchmarks of the coordinator (`cargo xtask bench` runs them, with
//! `coordinator::bench` as the filter).

use super::*;
use ward_tests::coordinator::fleet::{SimFleet, grant_to_label};

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn bench_auto_approved_request_to_enforced() {
    use ward_proto::v1 as pb;
    let iterations: usize = std::env::var("WARD_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let c = Coordinator::new("coord-bench");
    let (h1, _w1) = agent(&c, "co-bench", "h1", c.public_key());
    c.wait_subscribed(1);
    // This thread is the grantee's workload; the daemons stay outside.
    ward_tests::bench::enter_cgroup(h1.sb.managed.path());
    // A worker drives the connections between calls (their keepalive
    // pings), as a daemon's runtime would; this thread waits on sockets.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut dave = rt.block_on(c.grpc("dave"));
    let mut admin = rt.block_on(c.grpc("root-admin"));
    let network = format!("127.0.0.1/32:{}", h1.addr.port());
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let r = rt
            .block_on(dave.create_request(pb::CreateRequestRequest {
                operations: vec![pb::Operation::Connect as i32],
                objects: vec![pb::Object {
                    kind: Some(pb::object::Kind::Network(network.clone())),
                }],
                hosts: vec!["h1".into()],
                duration_ms: 300_000,
                reason: "bench".into(),
                workload: h1.managed_workload(),
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        while std::net::TcpStream::connect(h1.addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never enforced"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        samples.push(started.elapsed());
        drop(h1.listener.accept().unwrap());
        rt.block_on(admin.revoke(pb::EndRequest {
            id: r.id,
            reason: "bench".into(),
        }))
        .unwrap();
        while std::net::TcpStream::connect(h1.addr).is_ok() {
            drop(h1.listener.accept().unwrap());
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    ward_tests::bench::leave_cgroup();
    ward_tests::bench::record(
        "coordinator_request_to_enforced",
        &ward_tests::bench::summary(samples),
    );
}

/// The coordinator's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Simulated agents (`ward_tests::coordinator::fleet`), each with its own
/// certificate and mutual-TLS stream from this process, spread over
/// `coordinators`; all labelled `fleet=LABEL`. Certificates are written
/// before the clock starts.
fn simulated_fleet(
    rt: &tokio::runtime::Runtime,
    coordinators: &[&Coordinator],
    agents: usize,
    label: &str,
) -> (SimFleet, Duration) {
    let members = (0..agents)
        .map(|i| {
            let name = format!("{label}-{i}");
            let target = coordinators[i % coordinators.len()].tls_target(&format!("{name}.agent"));
            (
                name,
                vec!["env=test".into(), format!("fleet={label}")],
                target,
            )
        })
        .collect();
    let connecting = Instant::now();
    // As many handshakes in flight as a fleet's jittered reconnects
    // would bring at once.
    let mut fleet = SimFleet::start(rt, members, 128);
    fleet.wait_all(rt, "subscribed", Duration::from_secs(300), |h| {
        h.snapshots > 0
    });
    (fleet, connecting.elapsed())
}

/// A grant for every host labelled `fleet=LABEL`: the request's id.
fn grant_to_fleet(rt: &tokio::runtime::Runtime, c: &Coordinator, label: &str) -> String {
    grant_to_label(rt, c, &format!("fleet={label}"), "bench")
}

fn revoke(rt: &tokio::runtime::Runtime, c: &Coordinator, id: &str) {
    let mut admin = rt.block_on(c.grpc("root-admin"));
    rt.block_on(admin.revoke(ward_proto::v1::EndRequest {
        id: id.into(),
        reason: "bench".into(),
    }))
    .unwrap();
}

/// One grant, then its revocation, to every agent of `fleet`: per-agent
/// delivery times from the call, and how long the decision took.
fn grant_and_revoke(
    rt: &tokio::runtime::Runtime,
    fleet: &mut SimFleet,
    decide: &Coordinator,
    revoke_on: &Coordinator,
    label: &str,
) -> Value {
    let started = Instant::now();
    let id = grant_to_fleet(rt, decide, label);
    let decided = started.elapsed();
    let arrivals: Vec<Duration> = fleet
        .wait_all(rt, "the grant", Duration::from_secs(120), |h| {
            h.grants.contains(&id)
        })
        .into_iter()
        .map(|t| t - started)
        .collect();
    let revoking = Instant::now();
    revoke(rt, revoke_on, &id);
    let revocations: Vec<Duration> = fleet
        .wait_all(rt, "the revocation", Duration::from_secs(120), |h| {
            !h.grants.contains(&id)
        })
        .into_iter()
        .map(|t| t - revoking)
        .collect();
    let last = *arrivals.iter().max().unwrap();
    let last_end = *revocations.iter().max().unwrap();
    let mut s = ward_tests::bench::summary(arrivals);
    s["all_delivered_us"] = (last.as_micros() as u64).into();
    s["decided_us"] = (decided.as_micros() as u64).into();
    s["all_revoked_us"] = (last_end.as_micros() as u64).into();
    s["revocation"] = ward_tests::bench::summary(revocations);
    s
}

/// Both ends hold a descriptor per stream: the soft limit goes to the
/// hard one, which the coordinators inherit.
fn descriptors_for(agents: usize) {
    ward_tests::flood::raise_descriptor_limit();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only `lim`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert!(
        lim.rlim_max as usize >= agents + 2000,
        "{agents} streams need more descriptors than the hard limit of {}",
        lim.rlim_max
    );
}

fn fleet_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Issue 16: one grant, then its revocation, to 100, 1,000 and 10,000
/// simulated agents on one coordinator, and its memory per stream; then,
/// with 10,000 agents holding two grants, the coordinator is killed and
/// restarted and one grant revoked at once: the time until every agent has
/// resubscribed and holds exactly the other grant.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn bench_fan_out_to_simulated_agents() {
    descriptors_for(10_000);
    let mut c = Coordinator::builder("coord-fanout")
        .setting("max_connections = 30000")
        .setting("max_connections_per_peer = 30000")
        .start();
    let rt = fleet_runtime();
    let mut results = serde_json::Map::new();
    let mut last = None;
    for (round, agents) in [100usize, 1000, 10_000].into_iter().enumerate() {
        let label = format!("bench{round}");
        let pid = c.pid().unwrap();
        let rss_before = rss_kib(pid);
        let (mut fleet, connected) = simulated_fleet(&rt, &[&c], agents, &label);
        // Settled: what the streams hold, not the handshakes' garbage.
        std::thread::sleep(Duration::from_secs(1));
        let rss_streams = rss_kib(pid);
        let mut s = grant_and_revoke(&rt, &mut fleet, &c, &c, &label);
        s["connect_all_ms"] = (connected.as_millis() as u64).into();
        s["coordinator_kib_per_stream"] =
            (rss_streams.saturating_sub(rss_before) as f64 / agents as f64).into();
        println!("fan-out to {agents}: {s}");
        results.insert(format!("agents_{agents}"), s);
        last = Some((fleet, label));
    }
    let (mut fleet, label) = last.unwrap();
    let (kept, gone) = (
        grant_to_fleet(&rt, &c, &label),
        grant_to_fleet(&rt, &c, &label),
    );
    fleet.wait_all(&rt, "both grants", Duration::from_secs(120), |h| {
        h.grants.contains(&kept) && h.grants.contains(&gone)
    });
    let before: Vec<usize> = fleet.held().iter().map(|h| h.snapshots).collect();
    c.kill();
    let restarted = Instant::now();
    c.start();
    let listening = restarted.elapsed();
    revoke(&rt, &c, &gone);
    let want: std::collections::BTreeSet<String> = [kept.clone()].into();
    // Each agent's snapshot count is compared with its own before the
    // restart: every one must have resubscribed.
    let done = fleet.wait_all(&rt, "the resync", Duration::from_secs(300), |h| {
        h.grants == want
    });
    // And it stays so: no later snapshot brings the revoked grant back.
    let resynced = fleet
        .settle(&rt, Duration::from_secs(3))
        .iter()
        .zip(&before)
        .filter(|(h, b)| h.snapshots > **b)
        .count();
    let all = done.iter().max().unwrap().duration_since(restarted);
    let resync = serde_json::json!({
        "agents": fleet.len(),
        "resubscribed": resynced,
        "all_resynced_ms": all.as_millis() as u64,
        "listening_ms": listening.as_millis() as u64,
        "holding_exactly_the_kept_grant": fleet.held().iter().filter(|h| h.grants == want).count(),
    });
    println!("resync after a restart: {resync}");
    assert_eq!(resync["resubscribed"], 10_000, "{resync}");
    assert_eq!(resync["holding_exactly_the_kept_grant"], 10_000, "{resync}");
    results.insert("resync_10000".into(), resync);
    ward_tests::bench::record("coordinator_fan_out", &Value::Object(results));
}

/// Issue 16: 10,000 simulated agents across two coordinator replicas
/// sharing PostgreSQL, 5,000 on each: one grant decided on the first and
/// revoked on the second reaches, and leaves, every agent through the
/// shared outbox; and each replica's memory per stream.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn bench_fan_out_across_two_replicas() {
    descriptors_for(10_000);
    let a = Coordinator::builder("coord-fanout-pg")
        .database(postgres_database("fanout"))
        .setting("max_connections = 30000")
        .setting("max_connections_per_peer = 30000")
        .start();
    let b = a.replica("replica-b");
    let rt = fleet_runtime();
    let pids = [a.pid().unwrap(), b.pid().unwrap()];
    let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let (mut fleet, connected) = simulated_fleet(&rt, &[&a, &b], 10_000, "replicas");
    std::thread::sleep(Duration::from_secs(1));
    let per_stream: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| rss_kib(*p).saturating_sub(*b) as f64 / 5000.0)
        .collect();
    let mut s = grant_and_revoke(&rt, &mut fleet, &a, &b, "replicas");
    s["connect_all_ms"] = (connected.as_millis() as u64).into();
    s["replica_kib_per_stream"] = per_stream.into();
    println!("fan-out across two replicas: {s}");
    ward_tests::bench::record(
        "coordinator_fan_out_replicas",
        &serde_json::json!({ "agents_10000": s }),
    );
}

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn bench_approvals_per_second() {
    use ward_proto::v1 as pb;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = 200;
    let mut out = serde_json::Map::new();
    for (store, db) in [
        ("sqlite", None),
        ("postgres", Some(postgres_database("bench"))),
    ] {
        let mut c = Coordinator::builder(&format!("coord-rate-{store}"));
        if let Some(db) = db {
            c = c.database(db);
        }
        let c = c.start();
        // One simulated agent so the host is known.
        let target = c.tls_target("h1.agent");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let agent = rt.spawn(async move {
            let ch = ward_agent::client::connect_tls(&target).await.unwrap();
            let mut s = pb::coordinator_client::CoordinatorClient::new(ch)
                .subscribe(pb::SubscribeRequest {
                    host: "h1".into(),
                    labels: vec!["env=test".into()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            ready_tx.send(()).unwrap();
            while let Ok(Some(_)) = s.message().await {}
        });
        ready_rx.recv().unwrap();
        let mut alice = rt.block_on(c.grpc("alice"));
        let mut bob = rt.block_on(c.grpc("bob"));
        let mut carol = rt.block_on(c.grpc("carol"));
        let ids: Vec<String> = (0..n)
            .map(|_| {
                rt.block_on(alice.create_request(pb::CreateRequestRequest {
                    operations: vec![pb::Operation::Connect as i32],
                    objects: vec![pb::Object {
                        kind: Some(pb::object::Kind::Network("10.0.0.0/8:5432".into())),
                    }],
                    hosts: vec!["h1".into()],
                    duration_ms: 600_000,
                    reason: "bench".into(),
                    ..Default::default()
                }))
                .unwrap()
                .into_inner()
                .id
            })
            .collect();
        let started = Instant::now();
        for id in &ids {
            for reviewer in [&mut bob, &mut carol] {
                rt.block_on(reviewer.approve(pb::ReviewRequest {
                    id: id.clone(),
                    reason: String::new(),
                }))
                .unwrap();
            }
        }
        let secs = started.elapsed().as_secs_f64();
        out.insert(
            store.into(),
            serde_json::json!({
                "approvals": 2 * n,
                "requests_approved": n,
                "approvals_per_second": (2 * n) as f64 / secs,
            }),
        );
        agent.abort();
    }
    ward_tests::bench::record("coordinator_approvals", &Value::Object(out));
}
