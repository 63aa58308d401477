//! Counts results across every kind of check into one `N passed, M failed`.

#[derive(Default)]
pub struct Tally {
    passed: usize,
    failures: Vec<String>,
}

impl Tally {
    pub fn pass(&mut self) {
        self.passed += 1;
    }

    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    pub fn record(&mut self, ok: bool, what: &str) {
        if ok { self.pass() } else { self.fail(what) }
    }

    /// Adds each `test NAME ... ok|FAILED` line of libtest output; returns
    /// how many `test result:` summaries it saw (one per test binary that
    /// ran to the end).
    pub fn add_libtest(&mut self, suite: &str, output: &str) -> usize {
        let mut summaries = 0;
        for line in output.lines() {
            let line = line.trim_end();
            if line.starts_with("test result:") {
                summaries += 1;
                continue;
            }
            let Some(rest) = line.strip_prefix("test ") else {
                continue;
            };
            // `--report-time` adds ` <1.234s>`.
            let rest = match rest.rfind(" <") {
                Some(at) if rest.ends_with("s>") => &rest[..at],
                _ => rest,
            };
            if let Some(name) = rest.strip_suffix(" ... ok") {
                let _ = name;
                self.passed += 1;
            } else if let Some(name) = rest.strip_suffix(" ... FAILED") {
                self.failures.push(format!("{suite}: {name}"));
            }
        }
        summaries
    }

    /// The test binaries cargo started (its `Running` and `Doc-tests`
    /// lines, in `cargo test`'s merged output) that never printed their
    /// summary: they aborted or were killed, and their unrun tests are in
    /// neither count.
    pub fn unfinished_binaries(output: &str) -> Vec<String> {
        let mut unfinished = Vec::new();
        let mut running: Option<String> = None;
        for line in output.lines() {
            let line = line.trim_end();
            let started = line
                .strip_prefix("     Running ")
                .filter(|l| l.ends_with(')'))
                .or_else(|| line.strip_prefix("   Doc-tests "));
            if let Some(name) = started {
                unfinished.extend(running.replace(name.to_owned()));
            } else if line.starts_with("test result:") {
                running = None;
            }
        }
        unfinished.extend(running);
        unfinished
    }

    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// The failures, then the one closing line.
    pub fn report(&self) -> String {
        let mut out = String::new();
        if !self.failures.is_empty() {
            out.push_str("\nfailures:\n");
            for f in &self.failures {
                out.push_str(&format!("    {f}\n"));
            }
        }
        out.push_str(&format!("{} passed, {} failed", self.passed, self.failed()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_lines_and_summaries() {
        let out = "\
running 3 tests
test a::one ... ok
test a::two ... FAILED
test b ... ok
test c ... ignored
test d ... ok <12.345s>
test e ... FAILED <1.000s>

test result: FAILED. 3 passed; 2 failed; 1 ignored
";
        let mut t = Tally::default();
        assert_eq!(t.add_libtest("unit", out), 1);
        t.fail("vm 6.1: timed out");
        assert_eq!(t.failed(), 3);
        assert!(t.report().ends_with("3 passed, 3 failed"));
        assert!(t.report().contains("unit: a::two"));
        assert!(t.report().contains("unit: e\n"));
    }

    #[test]
    fn a_binary_that_aborts_mid_run_is_named() {
        let out = "\
     Running unittests src/lib.rs (target/debug/deps/ward_abi-1)
running 1 test
test a ... ok

test result: ok. 1 passed; 0 failed
     Running tests/native/main.rs (target/debug/deps/native-2)
running 3 tests
test b ... ok
error: test failed, to rerun pass `-p ward-tests --test native`
   Doc-tests ward_abi
running 0 tests

test result: ok. 0 passed; 0 failed
   Doc-tests ward_policy
";
        assert_eq!(
            Tally::unfinished_binaries(out),
            [
                "tests/native/main.rs (target/debug/deps/native-2)",
                "ward_policy"
            ]
        );
    }
}
