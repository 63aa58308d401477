//! `/etc/ward/agent.toml`: `Config::parse`, what `wardd` and
//! `wardd --check-config` read the file with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_agent::daemon::config::{Config, InvalidConfig};

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
            assert_eq!(Config::parse(text).ok().as_ref(), Some(&c));
            let _ = c.tls_push_keys();
            let _ = c.agent.lifecycle_log();
        }
        Err(e) => {
            ward_fuzz::assert_message("agent config", &e.to_string());
            // The file is well-formed, so a value was refused: the error
            // names its key (`protect.paths[0]`) as data.
            if toml::from_str::<Config>(text).is_ok() {
                let InvalidConfig::Field { field, .. } = &e else {
                    panic!("well-formed, yet refused as not: {e}");
                };
                let head = field.split(['.', '[']).next().unwrap_or_default();
                assert!(SECTIONS.contains(&head), "refusal names no key: {e}");
            }
        }
    }
});
