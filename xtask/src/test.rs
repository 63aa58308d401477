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
const SUITE_SCRIPT: &str = r#"rc=0
for t in /ward/tests/*; do
  echo "WARD-SUITE $(basename "$t")"
  "$t" --test-threads=1 || rc=1
done
exit $rc
"#;

pub fn run(ws: &Workspace, vm_timeout: u64) -> Result<ExitCode> {
    let started = Instant::now();
    let mut tally = Tally::default();
    let finished = pipeline(ws, vm_timeout, &mut tally);
    if let Err(e) = &finished {
        tally.fail(format!("test run stopped early: {e:#}"));
    }
    println!("\n(test run took {:.0}s)", started.elapsed().as_secs_f32());
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
    match fuzz::run_all(ws, &[], fuzz::TEST_SECONDS) {
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
    if let Some(pg) = &postgres {
        test.env("WARD_TEST_POSTGRES", &pg.url)
            .env("WARD_TEST_POSTGRES_CA", &pg.ca)
            .env("WARD_TEST_PSQL", pg.psql());
    }
    let (ok, out) = tee(&mut test)?;
    drop(postgres);
    let summaries = tally.add_libtest("host", &out);
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
        &format!("{}{SUITE_SCRIPT}", guest::GUEST_ENV),
    )?;
    let expected = binaries.tests.len();
    // The kernels boot side by side: each suite runs one test at a time,
    // mostly in the verifier, so one VM keeps about one core busy.
    let timeout = Duration::from_secs(vm_timeout);
    let outcomes: Vec<Result<vm::Outcome>> = std::thread::scope(|s| {
        let running: Vec<_> = kernels
            .iter()
            .map(|kernel| s.spawn(|| vm::boot(ws, kernel, &image, timeout)))
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the VM runner panicked")))
            })
            .collect()
    });
    for (kernel, outcome) in kernels.iter().zip(outcomes) {
        let outcome = outcome?;
        let suite = format!("vm {}", kernel.line);
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
