//! `cargo xtask bench`: measurements, reported as figures against targets
//! (the bench is not a pass/fail test).
//!
//! Push-to-enforced latency, expiry precision and memory, natively with the
//! cgroup connect enforcer; connect overhead natively in wall-clock time;
//! the coordinator; the Cedar compiler at 10,000 users × 1,000 resources;
//! and open/exec/connect overhead in the VM under icount. Results go to
//! `target/bench/`.
//!
//! - [`run`] runs the benchmarks, each saving its figures as JSON;
//! - [`results`] reads them back;
//! - [`targets`] is the one table of thresholds the figures are judged by;
//! - [`report`] writes report.md and report.json;
//! - [`plot`] draws the overhead SVGs.

mod plot;
mod report;
mod results;
mod run;
mod targets;

use std::fs;

use anyhow::Result;

use crate::{Workspace, bootstrap, ebpf};

/// The parts of the benchmark run; `--only` picks some, and the report is
/// then built from these and the figures earlier runs left in target/bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Push to enforced, expiry precision, memory, connect overhead (native).
    Native,
    /// Request to enforced, fan-out, approvals per second.
    Coordinator,
    /// The Cedar compiler at 10k users x 1k resources.
    Compile,
    /// open/write/exec/connect overhead in the 6.12 VM under icount.
    Syscalls,
    /// The file walk by depth, against Landlock, in the 6.12 VM under icount.
    Walk,
    /// The use hooks (read through an open file, send and receive on a
    /// connection), in the 6.12 VM under icount.
    Uses,
}

pub fn run_all(ws: &Workspace, only: &[Section]) -> Result<()> {
    let wanted = |s: Section| only.is_empty() || only.contains(&s);
    bootstrap::ebpf_toolchain(ws)?;
    ebpf::build(ws)?;
    let out = ws.target().join("bench");
    fs::create_dir_all(&out)?;
    crate::dist::release_binaries(ws)?;
    if wanted(Section::Native) {
        run::native(ws, &out)?;
    }
    if wanted(Section::Coordinator) {
        run::coordinator(ws, &out)?;
    }
    if wanted(Section::Compile) {
        run::policy_compile(ws, &out)?;
    }
    if wanted(Section::Syscalls) {
        run::icount_bench(
            ws,
            &out,
            "bench::syscall_overhead",
            "BENCH ",
            "syscall_overhead",
        )?;
    }
    if wanted(Section::Uses) {
        run::icount_bench(ws, &out, "bench::use_overhead", "BENCH ", "use_overhead")?;
    }
    if wanted(Section::Walk) {
        run::icount_bench(
            ws,
            &out,
            "bench::file_walk_against_landlock",
            "BENCH_WALK ",
            "file_walk",
        )?;
    }
    report(ws)
}

/// Writes report.md, report.json and the plots from target/bench.
pub fn report(ws: &Workspace) -> Result<()> {
    let out = ws.target().join("bench");
    let md = report::write(&out)?;
    println!("\n{md}\nwritten to {}", out.join("report.md").display());
    Ok(())
}
