//! What the benchmark tests share: summaries and where results go.

use std::time::Duration;

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
