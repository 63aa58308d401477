//! Push to enforced: how long from a gRPC PushGrant until the kernel lets
//! the grantee connect. Run by `cargo xtask bench` (release build); it is
//! a measurement, not a pass/fail test, so it is ignored by `cargo test`.

use std::{
    net::TcpStream,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ward_proto::v1::{self as pb, object, subject};

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
    std::fs::write(h.sb.managed.path().join("cgroup.procs"), "0").unwrap();
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
        let grant = pb::Grant {
            id: format!("bench-{i}"),
            subject: Some(pb::Subject {
                kind: Some(subject::Kind::Workload(workload.clone())),
            }),
            operations: vec![pb::Operation::Connect as i32],
            objects: vec![pb::Object {
                kind: Some(object::Kind::Network(format!(
                    "127.0.0.1/32:{}",
                    h.addr.port()
                ))),
            }],
            expires_at_unix_ms: now + 600_000,
            reason: "bench".into(),
            ..Default::default()
        };
        let started = Instant::now();
        rt.block_on(client.push_grant(pb::PushGrantRequest { grant: Some(grant) }))
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
    std::fs::write(
        ward_agent::cgroup::cgroup2_mount()
            .unwrap()
            .join("cgroup.procs"),
        "0",
    )
    .unwrap();
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
        "target_p99_us": Duration::from_millis(2).as_micros(),
    });
    if let Ok(path) = std::env::var("WARD_BENCH_OUT") {
        std::fs::write(path, report.to_string()).unwrap();
    }
}
