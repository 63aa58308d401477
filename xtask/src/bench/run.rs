//! Running the benchmarks: the native and coordinator bench tests, the
//! Cedar compile example, and the VM loops under icount. Each leaves its
//! figures as JSON in target/bench; nothing here judges them.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result};

use crate::{
    Workspace, guest,
    process::{run, step},
    vm,
};

/// Push to enforced, expiry and teardown precision, memory, native
/// connect overhead and an LDAP sync of 10,000 people
/// (tests/tests/native/bench.rs).
pub fn native(ws: &Workspace, out: &Path) -> Result<()> {
    step(
        "native: push to enforced (1000 pushes), expiry precision (200 deadlines), memory (100k grants), connect overhead, LDAP sync (10k users)",
    );
    run(native_benches(ws, out, "bench::").env("WARD_BENCH_OUT", out.join("push_to_enforced.json")))
}

/// `cargo test` of the ignored native tests matching `filter`, in release,
/// one at a time, saving their figures into `out`.
fn native_benches(ws: &Workspace, out: &Path, filter: &str) -> Command {
    let mut cargo = Command::new("cargo");
    cargo
        .args([
            "test",
            "--release",
            "-p",
            "ward-tests",
            "--test",
            "native",
            filter,
        ])
        .args(["--", "--ignored", "--nocapture", "--test-threads=1"])
        .env("WARD_BENCH_DIR", out)
        .current_dir(&ws.root);
    cargo
}

/// Runs one benchmark test in the 6.12 VM under icount and keeps the JSON
/// rows it printed after `prefix` in `target/bench/{json}.json`.
pub fn icount_bench(
    ws: &Workspace,
    out: &Path,
    test: &str,
    prefix: &str,
    json: &str,
) -> Result<()> {
    step(format!(
        "{test}: 6.12 VM, one vCPU, -icount shift=0 (time = instructions)"
    ));
    let prepared = vm::prepare(ws, "6.12")?;
    let script = format!(
        "{}/ward/tests/kernel --exact {test} --ignored --nocapture --test-threads=1",
        guest::GUEST_ENV
    );
    let image = guest::pack(ws, &prepared.binaries, &script)?;
    let kernel = prepared.kernels.first().context("no kernel")?;
    let outcome = vm::boot_on(
        ws,
        kernel,
        &image,
        std::time::Duration::from_secs(3600),
        vm::Machine::Icount,
    )?;
    anyhow::ensure!(
        outcome.succeeded(),
        "the benchmark VM failed: {:?}",
        outcome.failure
    );
    let rows = rows_after(&outcome.results, prefix);
    fs::write(
        out.join(format!("{json}.json")),
        serde_json::to_string_pretty(&rows)?,
    )?;
    Ok(())
}

/// The JSON rows the guest printed after `prefix` on its console, in
/// order; a line whose JSON does not parse is left out.
fn rows_after(console: &str, prefix: &str) -> Vec<serde_json::Value> {
    console
        .lines()
        .filter_map(|l| l.split(prefix).nth(1))
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect()
}

/// The Cedar compiler: 10,000 users × 1,000 resources × 4 actions, full and
/// after one attribute change.
pub fn policy_compile(ws: &Workspace, out: &Path) -> Result<()> {
    step("policy compile: 10,000 users x 1,000 resources x 4 actions (5 runs each)");
    let printed = Command::new("cargo")
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "ward-policy",
            "--example",
            "compile_bench",
        ])
        .current_dir(&ws.root)
        .output()
        .context("running the compile benchmark")?;
    anyhow::ensure!(
        printed.status.success(),
        "compile benchmark failed: {}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&printed.stdout)?;
    fs::write(
        out.join("policy_compile.json"),
        serde_json::to_string_pretty(&r)?,
    )?;
    Ok(())
}

/// The coordinator: an auto-approved request until the grantee's connect
/// succeeds; fan-out to 100, 1,000 and 10,000 simulated agent streams,
/// on one coordinator and across two replicas; resync after a restart.
pub fn coordinator(ws: &Workspace, out: &Path) -> Result<()> {
    step(
        "coordinator: auto-approved request to enforced (1000), fan-out to 100, 1,000 and 10,000 agents (one coordinator; two replicas), resync of 10,000, approvals/s",
    );
    let pg = crate::postgres::start()?;
    run(native_benches(ws, out, "coordinator::bench").env("WARD_TEST_POSTGRES", &pg.url))?;
    drop(pg);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rows_after;

    #[test]
    fn rows_are_the_json_after_the_prefix_and_nothing_else() {
        let console = "boot noise\n\
            BENCH {\"syscall\":\"open_read\",\"ns\":1.5}\n\
            [  3.1] kernel: BENCH {\"syscall\":\"exec\",\"ns\":2}\n\
            BENCH not json\n\
            BENCH_WALK {\"depth\":1}\n";
        let rows = rows_after(console, "BENCH ");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["syscall"], "open_read");
        assert_eq!(rows[1]["syscall"], "exec");
        assert_eq!(rows_after(console, "BENCH_WALK ")[0]["depth"], 1);
    }
}
