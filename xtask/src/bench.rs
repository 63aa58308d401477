//! `cargo xtask bench`: measurements, reported as figures (not pass/fail).
//!
//! Today: push-to-enforced latency, natively with the cgroup connect
//! enforcer. Results go to `target/bench/`.

use std::{fs, process::Command};

use anyhow::{Context, Result};

use crate::{
    Workspace, bootstrap, ebpf,
    process::{run, step},
};

pub fn run_all(ws: &Workspace) -> Result<()> {
    bootstrap::ebpf_toolchain(ws)?;
    ebpf::build(ws)?;
    let out = ws.target().join("bench");
    fs::create_dir_all(&out)?;
    step("building release binaries");
    run(Command::new("cargo")
        .args(["build", "--release", "-p", "ward-agent", "--bins"])
        .current_dir(&ws.root))?;
    step("push to enforced: gRPC PushGrant until the grantee's connect succeeds (1000 pushes)");
    let json = out.join("push_to_enforced.json");
    run(Command::new("cargo")
        .args([
            "test",
            "--release",
            "-p",
            "ward-tests",
            "--test",
            "native",
            "bench::",
        ])
        .args(["--", "--ignored", "--nocapture", "--test-threads=1"])
        .env("WARD_BENCH_OUT", &json)
        .current_dir(&ws.root))?;
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json).context("reading the bench result")?)?;
    let md = format!(
        "# ward benchmarks\n\n| figure | median | p99 | max | target |\n| --- | --- | --- | --- | --- |\n\
         | push to enforced ({} pushes, native, cgroup connect) | {} µs | {} µs | {} µs | p99 < {} µs |\n",
        report["iterations"],
        report["median_us"],
        report["p99_us"],
        report["max_us"],
        report["target_p99_us"]
    );
    fs::write(out.join("report.md"), &md)?;
    println!("\n{md}\nwritten to {}", out.join("report.md").display());
    Ok(())
}
