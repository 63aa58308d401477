//! Cedar policy files as `ward policy check FILE... --directory DIR` reads
//! them: `Policies::parse` (what `Policies::load` runs on the files' text),
//! then `check_resources` and `Compiler::new` over the shipped directory.
//! A NUL byte in the input starts another file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_policy::{Compiler, Policies};

fuzz_target!(|data: &[u8]| {
    let Some(text) = ward_fuzz::text(data) else {
        return;
    };
    let sources: Vec<(String, String)> = text
        .split('\0')
        .enumerate()
        .map(|(i, t)| (format!("p{i}.cedar"), t.to_owned()))
        .collect();
    match Policies::parse(&sources) {
        Ok(policies) => {
            for info in policies.info.values() {
                assert!(sources.iter().any(|(f, _)| *f == info.file));
            }
            let dir = ward_fuzz::sample_directory();
            ward_agent::daemon::policy::check_resources(dir).expect("the sample directory");
            let c = Compiler::new(policies, dir.clone(), ward_fuzz::env(), &ward_fuzz::clock());
            let _ = c.stats();
            let _ = c.decisions().count();
            let _ = c.next_boundary();
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused with no error");
            for e in &errors {
                ward_fuzz::assert_message("policy", &e.message);
                let Some((_, text)) = sources.iter().find(|(f, _)| *f == e.file) else {
                    // Validation errors of a policy whose id was refused
                    // carry no file; they still carry the policy.
                    assert!(e.policy.is_some(), "an error names no file: {e}");
                    continue;
                };
                if let Some(p) = e.position {
                    assert!(
                        p.line >= 1 && p.line <= text.lines().count().max(1) + 1,
                        "{e}"
                    );
                }
            }
        }
    }
});
