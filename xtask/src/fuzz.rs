//! `cargo xtask fuzz`: every `fuzz/` target (cargo-fuzz, nightly) for a
//! bounded time, with libFuzzer's figures for each.
//!
//! Each run starts from the committed corpus (`fuzz/corpus/TARGET`, read
//! only) and writes what it finds to a scratch corpus under
//! `target/fuzz/`, so a run never changes the repository, except that a
//! crash's input is copied into `fuzz/corpus/TARGET/`: from then on every
//! run replays it, and fails until the bug is fixed (commit it with the
//! fix, and a unit test in the crate that owns the code).

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    Workspace,
    bootstrap::{self, NIGHTLY},
    process::{output, run, step},
};

/// How the targets are built, for `cargo fuzz build` and `run` alike (so
/// `run` finds them built). Both are cargo-fuzz's release build (one
/// codegen unit, debug assertions and overflow checks on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `opt-level = 1`, no sanitizer: what `cargo xtask test` runs. Cold,
    /// it builds in 363 s on two cores (AddressSanitizer at opt-level 3:
    /// 833 s), and replays the Cedar corpus at 451 exec/s (105). The
    /// targets' own code is safe Rust, whose bounds and overflow checks
    /// stay on.
    Quick,
    /// AddressSanitizer at opt-level 3, which also watches the C code the
    /// targets run (SQLite, ring): for long runs (`cargo xtask fuzz
    /// --asan`). Switching between the two rebuilds the targets.
    Asan,
}

impl Build {
    fn apply(self, c: &mut Command) {
        match self {
            Build::Quick => {
                c.args(["--sanitizer", "none"])
                    .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1");
            }
            Build::Asan => {
                c.args(["--sanitizer", "address"]);
            }
        }
    }
}

/// Seconds per target in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 20;

/// Targets run side by side: one libFuzzer process keeps one core busy.
const PARALLEL: usize = 2;

/// What one target's run did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub target: String,
    pub executions: u64,
    pub exec_per_sec: u64,
    pub crashes: usize,
    /// Crashing inputs, as copied into the corpus.
    pub artifacts: Vec<PathBuf>,
    /// libFuzzer exited 0 and reported no crash.
    pub ok: bool,
    pub log: PathBuf,
}

fn fuzz_dir(ws: &Workspace) -> PathBuf {
    ws.root.join("fuzz")
}

fn cargo_fuzz(ws: &Workspace) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{NIGHTLY}"))
        .arg("fuzz")
        .current_dir(&ws.root)
        .env("PATH", ws.path_env())
        // The nightly toolchain must not pick up the stable RUSTC a parent
        // `cargo xtask` exported.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

/// Every target `fuzz/Cargo.toml` declares.
pub fn targets(ws: &Workspace) -> Result<Vec<String>> {
    let list = output(cargo_fuzz(ws).arg("list"))?;
    Ok(list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Builds every target once (release, debug assertions on).
pub fn build(ws: &Workspace, how: Build) -> Result<()> {
    bootstrap::cargo_fuzz(ws)?;
    step(format!(
        "building the fuzz targets (cargo fuzz build, nightly, {how:?})"
    ));
    let mut c = cargo_fuzz(ws);
    c.arg("build");
    how.apply(&mut c);
    run(&mut c)
}

/// Runs one built target for `seconds`.
pub fn run_target(ws: &Workspace, target: &str, seconds: u64, how: Build) -> Result<Outcome> {
    let corpus = fuzz_dir(ws).join("corpus").join(target);
    let scratch = ws.target().join("fuzz/corpus").join(target);
    // Where cargo-fuzz has libFuzzer write crashing inputs (git ignores it).
    let artifacts = fuzz_dir(ws).join("artifacts").join(target);
    let log = ws.target().join("fuzz").join(format!("{target}.log"));
    for d in [&corpus, &scratch, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let before = crash_files(&artifacts);
    let mut c = cargo_fuzz(ws);
    c.arg("run");
    how.apply(&mut c);
    let out = c
        .arg(target)
        .arg(&scratch)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // One input that runs this long is a hang, and fails the run.
        .arg("-timeout=10")
        .output()
        .with_context(|| format!("starting `cargo fuzz run {target}`"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&log, &text).with_context(|| format!("writing {}", log.display()))?;
    let mut outcome = parse_stats(&text);
    outcome.target = target.to_owned();
    outcome.log = log;
    for crash in crash_files(&artifacts) {
        if before.contains(&crash) {
            continue;
        }
        let name = crash.file_name().unwrap_or_default();
        let kept = corpus.join(name);
        std::fs::copy(&crash, &kept).with_context(|| format!("copying {}", crash.display()))?;
        outcome.artifacts.push(kept);
    }
    outcome.crashes = outcome.crashes.max(outcome.artifacts.len());
    outcome.ok = out.status.success() && outcome.crashes == 0;
    if !out.status.success() && outcome.crashes == 0 {
        // libFuzzer died some other way (a build error, an OOM, a timeout).
        outcome.crashes = 1;
    }
    Ok(outcome)
}

fn crash_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        // slow-unit-* only reports a slow input; these are failures.
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                ["crash-", "oom-", "timeout-", "leak-"]
                    .iter()
                    .any(|k| n.starts_with(k))
            })
        })
        .collect();
    files.sort();
    files
}

/// libFuzzer's closing figures: `stat::number_of_executed_units`, else
/// the `#N DONE ... exec/s: R` line; crashes from its `==ERROR`/`panicked`
/// reports and the units it wrote.
pub fn parse_stats(text: &str) -> Outcome {
    let mut o = Outcome::default();
    let mut seconds = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            o.executions = v.trim().parse().unwrap_or(o.executions);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            o.exec_per_sec = v.trim().parse().unwrap_or(o.exec_per_sec);
        } else if let Some(rest) = line.strip_prefix('#') {
            // `#123456 DONE   cov: 10 ft: 20 corp: 3/40b lim: 4 exec/s: 6172 rss: 40Mb`
            let mut words = rest.split_whitespace();
            let n = words.next().and_then(|n| n.parse::<u64>().ok());
            if let (Some(n), Some(kind)) = (n, words.next()) {
                if o.executions == 0 || kind == "DONE" {
                    o.executions = o.executions.max(n);
                }
                if kind == "DONE" {
                    let mut it = rest.split_whitespace();
                    while let Some(w) = it.next() {
                        if w == "exec/s:" {
                            o.exec_per_sec = it.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                        }
                    }
                }
            }
        } else if line.starts_with("Done ") && line.contains(" runs in ") {
            // `Done 12345 runs in 21 second(s)`
            let mut w = line.split_whitespace().skip(1);
            let runs = w.next().and_then(|n| n.parse::<u64>().ok());
            let secs = w.nth(2).and_then(|n| n.parse::<u64>().ok());
            if let Some(runs) = runs {
                o.executions = o.executions.max(runs);
            }
            seconds = secs;
        }
        if line.starts_with("==") && line.contains("ERROR: libFuzzer")
            || line.starts_with("SUMMARY: libFuzzer")
        {
            o.crashes = o.crashes.max(1);
        }
    }
    if o.exec_per_sec == 0
        && let Some(s) = seconds.filter(|s| *s > 0)
    {
        o.exec_per_sec = o.executions / s;
    }
    o
}

/// The table `cargo xtask fuzz` and the test pipeline print.
pub fn table(outcomes: &[Outcome]) -> String {
    let width = outcomes
        .iter()
        .map(|o| o.target.len())
        .max()
        .unwrap_or(0)
        .max("target".len());
    let mut s = format!(
        "{:<width$}  {:>12}  {:>8}  {:>7}\n",
        "target", "executions", "exec/s", "crashes"
    );
    for o in outcomes {
        s.push_str(&format!(
            "{:<width$}  {:>12}  {:>8}  {:>7}\n",
            o.target, o.executions, o.exec_per_sec, o.crashes
        ));
        for a in &o.artifacts {
            s.push_str(&format!("    crashing input: {}\n", a.display()));
        }
        if !o.ok {
            s.push_str(&format!("    libFuzzer's output: {}\n", o.log.display()));
        }
    }
    s
}

/// Builds, then runs `wanted` (every target if empty) for `seconds` each,
/// [`PARALLEL`] at a time.
pub fn run_all(
    ws: &Workspace,
    wanted: &[String],
    seconds: u64,
    how: Build,
) -> Result<Vec<Outcome>> {
    build(ws, how)?;
    let all = targets(ws)?;
    let chosen: Vec<String> = if wanted.is_empty() {
        all
    } else {
        for t in wanted {
            if !all.contains(t) {
                bail!("no fuzz target `{t}`; there are: {}", all.join(", "));
            }
        }
        wanted.to_vec()
    };
    step(format!(
        "fuzzing {} target(s) for {seconds}s each, {PARALLEL} at a time",
        chosen.len()
    ));
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for pair in chosen.chunks(PARALLEL) {
        let results: Vec<Result<Outcome>> = std::thread::scope(|s| {
            let running: Vec<_> = pair
                .iter()
                .map(|t| s.spawn(move || run_target(ws, t, seconds, how)))
                .collect();
            running
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the fuzz runner panicked")))
                })
                .collect()
        });
        for r in results {
            let o = r?;
            println!(
                "    {}: {} executions, {} exec/s, {}",
                o.target,
                o.executions,
                o.exec_per_sec,
                if o.ok { "ok" } else { "FAILED" }
            );
            outcomes.push(o);
        }
    }
    println!(
        "\n{}(fuzzing took {:.0}s)",
        table(&outcomes),
        started.elapsed().as_secs_f32()
    );
    Ok(outcomes)
}

/// `cargo xtask fuzz`.
pub fn command(ws: &Workspace, wanted: &[String], seconds: u64, how: Build) -> Result<ExitCode> {
    let outcomes = run_all(ws, wanted, seconds, how)?;
    Ok(if outcomes.iter().all(|o| o.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_closing_figures() {
        let out = "\
INFO: Seed: 1234
#2      INITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb
#65536  pulse  cov: 30 ft: 40 corp: 5/50b lim: 4 exec/s: 32768 rss: 40Mb
#412345 DONE   cov: 31 ft: 42 corp: 6/60b lim: 4 exec/s: 19635 rss: 41Mb
Done 412345 runs in 21 second(s)
stat::number_of_executed_units: 412345
stat::average_exec_per_sec:     19635
stat::new_units_added:          5
";
        let o = parse_stats(out);
        assert_eq!(
            (o.executions, o.exec_per_sec, o.crashes),
            (412345, 19635, 0)
        );
        let crashed = "\
#1234 NEW    cov: 3 ft: 3 corp: 2/3b exec/s: 0 rss: 30Mb
thread '<unnamed>' panicked at src/lib.rs:1:1:
==4242== ERROR: libFuzzer: deadly signal
artifact_prefix='x/'; Test unit written to x/crash-abc
SUMMARY: libFuzzer: deadly signal
stat::number_of_executed_units: 1300
";
        let o = parse_stats(crashed);
        assert_eq!((o.executions, o.crashes), (1300, 1));
        let done_only = "#9000 DONE cov: 1 ft: 1 corp: 1/1b exec/s: 450 rss: 30Mb\n";
        assert_eq!(
            (
                parse_stats(done_only).executions,
                parse_stats(done_only).exec_per_sec
            ),
            (9000, 450)
        );
    }
}
