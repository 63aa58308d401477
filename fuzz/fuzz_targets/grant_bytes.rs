//! A pushed `ward.v1.Grant` as raw protobuf bytes: prost's decoding, then
//! `daemon::grant::validate`, what `Engine::push` checks every grant with
//! (the local socket, TLS pushes, the coordinator's stream).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ward_proto::v1::Grant;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Grant::decode(data) {
        ward_fuzz::check_grant(&g);
    }
});
