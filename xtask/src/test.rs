//! `cargo xtask test`: every check, one tally, one closing line.

use std::{
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    Workspace, bootstrap, ebpf, fuzz, guest, kernels,
    process::{step, succeeds, tee},
    tally::Tally,
    vm,
};

/// The guest runs every test binary; each must end with a libtest summary.
/// The kernel suite's modules that shard 0 runs; shard 1 runs the rest
/// (`--skip` each), so a new module is never left out. Chosen so that the
/// two take about as long (per-test times are in the log).
const SHARD_0: &[&str] = &[
    "in_use::",
    "uring::",
    "doctor::",
    "bypass::",
    "lifecycle::",
    "file_open::",
    "events::",
];
/// Shards per kernel: the four VMs run two at a time, the slowest kernel's
/// first, so neither core idles while the other kernel's suite finishes.
const SHARDS: usize = 2;

/// Runs in the guest. Shard 0: every test binary, the kernel suite
/// filtered to [`SHARD_0`]; shard 1: the kernel suite without them.
fn suite_script() -> String {
    let only = SHARD_0.join(" ");
    let skip: Vec<String> = SHARD_0.iter().map(|m| format!("--skip {m}")).collect();
    format!(
        r#"rc=0
case "$WARD_SHARD" in
  0) only="{only}" ;;
  1) only="{skip}" ;;
  *) only="" ;;
esac
for t in /ward/tests/*; do
  name=$(basename "$t")
  if [ "$WARD_SHARD" = 1 ] && [ "$name" != kernel ]; then continue; fi
  echo "WARD-SUITE $name"
  if [ "$name" = kernel ]; then
    RUSTC_BOOTSTRAP=1 "$t" --test-threads=1 -Z unstable-options --report-time $only || rc=1
  else
    "$t" --test-threads=1 || rc=1
  fi
done
exit $rc
"#,
        skip = skip.join(" ")
    )
}

pub fn run(ws: &Workspace, vm_timeout: u64) -> Result<ExitCode> {
    let started = Instant::now();
    let mut tally = Tally::default();
    let finished = pipeline(ws, vm_timeout, &mut tally);
    if let Err(e) = &finished {
        tally.fail(format!("test run stopped early: {e:#}"));
    }
    let free = crate::process::free_gib(".")
        .map(|g| format!(", {g:.1} GiB free"))
        .unwrap_or_default();
    println!(
        "\n(test run took {:.0}s{free})",
        started.elapsed().as_secs_f32()
    );
    println!("{}", tally.report());
    Ok(if tally.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cargo(ws: &Workspace, args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.args(args).current_dir(&ws.root);
    c
}

/// Every fuzz target for [`fuzz::TEST_SECONDS`], one result each: a crash
/// (or a target that did not run) fails the run.
fn fuzz_targets(ws: &Workspace, tally: &mut Tally) {
    match fuzz::run_all(ws, &[], fuzz::TEST_SECONDS, fuzz::Build::Quick) {
        Ok(outcomes) => {
            if outcomes.is_empty() {
                tally.fail("fuzz: no targets ran");
            }
            for o in outcomes {
                let what = if o.crashes > 0 {
                    format!(
                        "fuzz {}: {} crash(es); input kept in fuzz/corpus/{}, libFuzzer's output in {}",
                        o.target,
                        o.crashes,
                        o.target,
                        o.log.display()
                    )
                } else {
                    format!("fuzz {}: see {}", o.target, o.log.display())
                };
                tally.record(o.ok, &what);
            }
        }
        Err(e) => tally.fail(format!("fuzz: {e:#}")),
    }
}

fn pipeline(ws: &Workspace, vm_timeout: u64, tally: &mut Tally) -> Result<()> {
    bootstrap::all(ws)?;
    // The SSO and web page tests' provider, browser driver and browser.
    bootstrap::node_parts(ws)?;
    let kernels = kernels::fetch_all(ws)?;

    step("cargo fmt --check");
    let fmt = succeeds(&mut cargo(ws, &["fmt", "--all", "--", "--check"]))?;
    tally.record(fmt, "cargo fmt --check: run `cargo fmt --all`");

    ebpf::build(ws)?;

    step("cargo clippy (user space) -D warnings");
    let clippy = succeeds(&mut cargo(
        ws,
        &["clippy", "--all-targets", "--", "-D", "warnings"],
    ))? && succeeds(&mut cargo(
        ws,
        &[
            "clippy",
            "-p",
            "ward-tests",
            "--test",
            "vm",
            "--",
            "-D",
            "warnings",
        ],
    ))?;
    tally.record(clippy, "cargo clippy -D warnings");

    step("unit and native integration tests");
    // Binaries first: the native tests run `ward` as a real process.
    let built = succeeds(&mut cargo(ws, &["build", "--bins"]))?;
    tally.record(built, "cargo build --bins");
    // This build's packages, twice (revisions 1 and 2: an upgrade), for the
    // native packaging tests.
    let debs = ws.target().join("dist/test");
    for revision in [1, 2] {
        if let Err(e) = crate::dist::build(ws, crate::dist::Profile::Debug, revision, &debs) {
            tally.fail(format!("cargo xtask dist (revision {revision}): {e:#}"));
        }
    }
    let failed_before = tally.failed();
    // The coordinator's PostgreSQL tests need a server; without one they
    // fail (they never skip).
    let postgres = match crate::postgres::start() {
        Ok(pg) => Some(pg),
        Err(e) => {
            tally.fail(format!("PostgreSQL test server: {e:#}"));
            None
        }
    };
    let mut test = cargo(ws, &["test", "--no-fail-fast"]);
    test.env("WARD_TEST_DEBS", &debs);
    if let Some(pg) = &postgres {
        test.env("WARD_TEST_POSTGRES", &pg.url)
            .env("WARD_TEST_POSTGRES_CA", &pg.ca)
            .env("WARD_TEST_PSQL", pg.psql());
    }
    let (ok, out) = tee(&mut test)?;
    drop(postgres);
    let summaries = tally.add_libtest("host", &out);
    // Counted per binary, as the VM side does: one that aborts mid-run
    // drops its unrun tests from both counts.
    for binary in Tally::unfinished_binaries(&out) {
        tally.fail(format!("host: {binary} did not run to the end"));
    }
    if !ok && tally.failed() == failed_before {
        tally.fail("cargo test failed before running its tests (see above)");
    } else if summaries == 0 {
        tally.fail("cargo test ran no test binary");
    }

    step("fuzz targets");
    fuzz_targets(ws, tally);

    step("kernel suites in test VMs");
    let binaries = guest::build(ws)?;
    let image = guest::pack(
        ws,
        &binaries,
        &format!("{}{}", guest::GUEST_ENV, suite_script()),
    )?;
    // Two VMs at a time: each runs one test at a time, mostly in the
    // verifier, so one VM keeps about one core busy. The last kernel
    // (6.1, the slowest) goes first.
    let jobs: Vec<(&kernels::Kernel, usize)> = kernels
        .iter()
        .rev()
        .flat_map(|k| (0..SHARDS).map(move |shard| (k, shard)))
        .collect();
    let timeout = Duration::from_secs(vm_timeout);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes: Vec<Vec<(usize, Result<vm::Outcome>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(&(kernel, shard)) = jobs.get(i) else {
                            return done;
                        };
                        done.push((i, vm::boot_shard(ws, kernel, &image, timeout, shard)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            // A runner that panicked loses its outcomes: counted below.
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut outcomes: Vec<_> = outcomes.into_iter().flatten().collect();
    outcomes.sort_by_key(|(i, _)| *i);
    if outcomes.len() < jobs.len() {
        tally.fail("a VM runner panicked: some kernel suites did not run");
    }
    for (i, outcome) in outcomes {
        let (kernel, shard) = jobs[i];
        let outcome = outcome?;
        let suite = format!("vm {}/{shard}", kernel.line);
        // Shard 0 runs every test binary, the others the kernel suite.
        let expected = if shard == 0 { binaries.tests.len() } else { 1 };
        let summaries = tally.add_libtest(&suite, &outcome.results);
        if let Some(why) = &outcome.failure {
            tally.fail(format!("{suite}: suite did not complete: {why}"));
        } else if summaries < expected {
            tally.fail(format!(
                "{suite}: only {summaries} of {expected} test binaries ran to the end"
            ));
        } else if outcome.exit != Some(0) {
            tally.record(
                false,
                &format!("{suite}: guest exit status {:?}", outcome.exit),
            );
        }
    }
    Ok(())
}
