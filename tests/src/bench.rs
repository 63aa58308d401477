//! What the benchmark tests share: summaries and where results go.

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ward_proto::v1::{self as pb, object, subject};

/// A grant letting `workload` connect to `network` until `expires_ms`.
pub fn connect_grant(id: String, workload: &str, network: String, expires_ms: i64) -> pb::Grant {
    pb::Grant {
        id,
        subject: Some(pb::Subject {
            kind: Some(subject::Kind::Workload(workload.to_owned())),
        }),
        operations: vec![pb::Operation::Connect as i32],
        objects: vec![pb::Object {
            kind: Some(object::Kind::Network(network)),
        }],
        expires_at_unix_ms: expires_ms,
        reason: "bench".into(),
        ..Default::default()
    }
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// How long after `expires_at` the peer of a connection made under a grant
/// sees it reset, over `WARD_BENCH_EXPIRIES` (200) grants with deadlines
/// `ahead_ms` to twice that ahead, pushed to the wardd at `socket` for `workload` (whose
/// cgroup is `cgroup`) to connect to `listener`, which wardd protects.
/// This process joins the cgroup to be the grantee, and leaves it.
///
/// With `peer`, the reading thread runs at real-time priority, standing
/// for a server on a CPU of its own: the figure is then when the reset
/// reaches the peer, not also how long this host's scheduler keeps a
/// woken reader waiting beside wardd and the test itself.
pub fn teardown_precision(
    socket: &Path,
    cgroup: &Path,
    workload: &str,
    listener: &TcpListener,
    ahead_ms: u64,
    peer: bool,
) -> serde_json::Value {
    let to = listener.local_addr().unwrap();
    enter_cgroup(cgroup);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(ward_agent::client::connect(socket)).unwrap();
    let n: u64 = std::env::var("WARD_BENCH_EXPIRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let _peer = peer.then(PeerPriority::raise);
    let (mut late, mut early, mut not_reset) = (Vec::new(), 0u64, 0u64);
    for i in 0..n {
        let expires = unix_now() + Duration::from_millis(ahead_ms + (i * 37) % ahead_ms);
        let grant = connect_grant(
            format!("teardown-{}-{i}", if peer { "rt" } else { "ordinary" }),
            workload,
            format!("127.0.0.1/32:{}", to.port()),
            expires.as_millis() as i64,
        );
        rt.block_on(client.push_grant(pb::PushGrantRequest {
            grant: Some(grant),
            ..Default::default()
        }))
        .unwrap();
        let deadline = Duration::from_millis(expires.as_millis() as u64);
        // This process is the grantee: its connection is held.
        let _held = TcpStream::connect(to).expect("allowed before its deadline");
        let (mut peer, _) = listener.accept().unwrap();
        // Past the latest deadline, with room for a late reset.
        let wait = Duration::from_millis(2 * ahead_ms) + Duration::from_secs(2);
        peer.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 1];
        let r = peer.read(&mut b);
        let at = unix_now();
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                if at < deadline {
                    early += 1;
                }
                late.push(at.saturating_sub(deadline));
            }
            _ => not_reset += 1,
        }
    }
    leave_cgroup();
    assert_eq!(not_reset, 0, "every connection is reset");
    let mut s = summary(late);
    s["reset_before_deadline"] = early.into();
    s
}

/// The calling thread at real-time priority (`SCHED_FIFO`) until dropped.
struct PeerPriority(libc::c_int, libc::sched_param);

impl PeerPriority {
    fn raise() -> PeerPriority {
        let mut earlier = libc::sched_param { sched_priority: 0 };
        let fifo = libc::sched_param { sched_priority: 2 };
        // SAFETY: pid 0 is this thread; the params outlive the calls.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            assert_eq!(libc::sched_getparam(0, &mut earlier), 0);
            assert_eq!(
                libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo),
                0,
                "real-time priority for the bench's peer"
            );
            PeerPriority(policy, earlier)
        }
    }
}

impl Drop for PeerPriority {
    fn drop(&mut self) {
        // SAFETY: restores what `raise` read for this thread.
        unsafe { libc::sched_setscheduler(0, self.0, &self.1) };
    }
}

/// Median, p99, min and max of samples, in µs.
pub fn summary(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    serde_json::json!({
        "n": samples.len(),
        "median_us": pct(0.5).as_micros() as u64,
        "p99_us": pct(0.99).as_micros() as u64,
        "max_us": samples.last().map_or(0, |d| d.as_micros() as u64),
        "min_us": samples.first().map_or(0, |d| d.as_micros() as u64),
    })
}

/// Prints a figure and writes it to `$WARD_BENCH_DIR/NAME.json`.
pub fn record(name: &str, v: &serde_json::Value) {
    println!("BENCH {name} {v}");
    if let Ok(dir) = std::env::var("WARD_BENCH_DIR") {
        std::fs::write(format!("{dir}/{name}.json"), v.to_string()).expect("write bench result");
    }
}

/// Moves this whole test process into `cgroup`, to measure as the grantee
/// (daemons started before stay where they were).
pub fn enter_cgroup(cgroup: &std::path::Path) {
    std::fs::write(cgroup.join("cgroup.procs"), "0").expect("join the test cgroup");
}

/// Moves this process back to the root cgroup, so its test cgroups can go.
pub fn leave_cgroup() {
    let root = ward_agent::cgroup::cgroup2_mount().expect("cgroup2 mounted");
    std::fs::write(root.join("cgroup.procs"), "0").expect("leave the test cgroup");
}

/// The i-th /32 of 10.0.0.0/8, port 443: table filler that no benchmark
/// loop ever connects to.
pub fn filler_network(i: usize) -> ward_agent::enforcer::NetPattern {
    ward_agent::enforcer::NetPattern::parse(&format!(
        "10.{}.{}.{}/32:443",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255
    ))
    .expect("a valid network pattern")
}
