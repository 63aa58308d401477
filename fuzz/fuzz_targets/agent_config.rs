//! `/etc/ward/agent.toml`: `Config::parse`, what `wardd` and
//! `wardd --check-config` read the file with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_agent::daemon::config::Config;

/// The sections a refusal by the checks after deserializing must name.
const SECTIONS: &[&str] = &[
    "agent",
    "enforce",
    "protect",
    "limits",
    "policy",
    "coordinator",
    "tls",
];

fuzz_target!(|data: &[u8]| {
    let Some(text) = ward_fuzz::text(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(c) => {
            // Parsing is a function of the text alone.
            assert_eq!(Config::parse(text).as_ref(), Ok(&c));
            let _ = c.tls_push_keys();
            let _ = c.agent.lifecycle_log();
        }
        Err(e) => {
            ward_fuzz::assert_message("agent config", &e);
            // The file is well-formed, so a value was refused: the message
            // names its key (`protect.paths[0]: ...`).
            if toml::from_str::<Config>(text).is_ok() {
                let head = e.split(['.', ':']).next().unwrap_or_default();
                assert!(SECTIONS.contains(&head), "refusal names no key: {e}");
            }
        }
    }
});
