//! Benchmarks of the coordinator (`cargo xtask bench` runs them, with
//! `coordinator::bench` as the filter).

use super::*;

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
    let rt = tokio::runtime::Builder::new_current_thread()
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

/// One grant, then its revocation, to 100 and 1,000 simulated agents,
/// each on its own mutual-TLS stream from this process; and the
/// coordinator's memory per stream.
#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn bench_fan_out_to_simulated_agents() {
    use ward_proto::v1 as pb;
    // Both ends hold a descriptor per stream: the soft limit goes to the
    // hard one, which the coordinator inherits.
    ward_tests::flood::raise_descriptor_limit();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only `lim`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert!(
        lim.rlim_max >= 12_000,
        "10,000 streams need more descriptors than the hard limit of {}",
        lim.rlim_max
    );
    let c = Coordinator::builder("coord-fanout")
        .setting("max_connections = 30000")
        .setting("max_connections_per_peer = 30000")
        .start();
    let pid = c.pid().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results = serde_json::Map::new();
    let mut dave = rt.block_on(c.grpc("dave"));
    let mut admin = rt.block_on(c.grpc("root-admin"));
    // 10,000 is issue 16's fleet; at that size the coordinator closes
    // streams here ("broken pipe" while 10,000 handshakes queue on two
    // cores), so the round waits until that is fixed and the report says
    // the 10,000 figures were not measured.
    for (round, agents) in [100usize, 1000].into_iter().enumerate() {
        let label = format!("fleet=bench{round}");
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(agents);
        let (got_tx, mut got_rx) = tokio::sync::mpsc::channel::<Instant>(agents);
        let (ended_tx, mut ended_rx) = tokio::sync::mpsc::channel::<Instant>(agents);
        let rss_before = rss_kib(pid);
        let connecting = Instant::now();
        let mut tasks = Vec::new();
        // A few hundred handshakes in flight at a time, as a fleet's
        // jittered reconnects would be.
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
        for i in 0..agents {
            let name = format!("s{round}-{i}");
            let target = c.tls_target(&format!("{name}.agent"));
            let (ready, got, ended, label, gate) = (
                ready_tx.clone(),
                got_tx.clone(),
                ended_tx.clone(),
                label.clone(),
                gate.clone(),
            );
            tasks.push(rt.spawn(async move {
                let mut s = {
                    let _turn = gate.acquire().await.unwrap();
                    let ch = ward_agent::client::connect_tls(&target).await.unwrap();
                    let mut client = pb::coordinator_client::CoordinatorClient::new(ch);
                    let mut s = client
                        .subscribe(pb::SubscribeRequest {
                            host: name,
                            labels: vec!["env=test".into(), label],
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    let _snapshot = s.message().await.unwrap();
                    s
                };
                ready.send(()).await.unwrap();
                while let Some(m) = s.message().await.unwrap() {
                    match m.kind {
                        Some(pb::fleet_message::Kind::Grant(_)) => {
                            got.send(Instant::now()).await.unwrap();
                        }
                        Some(pb::fleet_message::Kind::Revocation(_)) => {
                            ended.send(Instant::now()).await.unwrap();
                            break;
                        }
                        _ => {}
                    }
                }
            }));
        }
        rt.block_on(async {
            for _ in 0..agents {
                ready_rx.recv().await.unwrap();
            }
        });
        let connected = connecting.elapsed();
        // Settled: what the streams hold, not the handshakes' garbage.
        std::thread::sleep(Duration::from_secs(1));
        let rss_streams = rss_kib(pid);
        let started = Instant::now();
        let r = rt
            .block_on(dave.create_request(pb::CreateRequestRequest {
                operations: vec![pb::Operation::Connect as i32],
                objects: vec![pb::Object {
                    kind: Some(pb::object::Kind::Network("10.0.0.0/8:5432".into())),
                }],
                host_labels: vec![label.clone()],
                duration_ms: 300_000,
                reason: "bench".into(),
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        let decided = started.elapsed();
        let arrivals: Vec<Duration> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..agents {
                v.push(got_rx.recv().await.unwrap() - started);
            }
            v
        });
        let revoking = Instant::now();
        rt.block_on(admin.revoke(pb::EndRequest {
            id: r.id,
            reason: "bench".into(),
        }))
        .unwrap();
        let revocations: Vec<Duration> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..agents {
                v.push(ended_rx.recv().await.unwrap() - revoking);
            }
            v
        });
        let last = *arrivals.iter().max().unwrap();
        let last_end = *revocations.iter().max().unwrap();
        let mut s = ward_tests::bench::summary(arrivals);
        s["all_delivered_us"] = (last.as_micros() as u64).into();
        s["decided_us"] = (decided.as_micros() as u64).into();
        s["all_revoked_us"] = (last_end.as_micros() as u64).into();
        s["revocation"] = ward_tests::bench::summary(revocations);
        s["connect_all_ms"] = (connected.as_millis() as u64).into();
        s["coordinator_kib_per_stream"] =
            (rss_streams.saturating_sub(rss_before) as f64 / agents as f64).into();
        println!("fan-out to {agents}: {s}");
        results.insert(format!("agents_{agents}"), s);
        for t in tasks {
            t.abort();
        }
    }
    ward_tests::bench::record("coordinator_fan_out", &Value::Object(results));
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
