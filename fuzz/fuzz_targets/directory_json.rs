//! The attribute directory in Cedar's entities JSON:
//! `Directory::parse_json` (what `Directory::load` runs on a `.json`
//! file), then what the agent and `ward policy check --directory` do with
//! a directory that loads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_policy::Directory;

fuzz_target!(|data: &[u8]| {
    let Some(text) = ward_fuzz::text(data) else {
        return;
    };
    ward_fuzz::check_directory(Directory::parse_json(text), || Directory::parse_json(text));
});
