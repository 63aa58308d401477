//! A `ward.v1.SignedGrant` as raw protobuf bytes, as it arrives on the
//! coordinator's stream and in signed TLS pushes: `signing::verify`
//! against the configured keys, and then, signed with a test key so the
//! fuzzer reaches past the signature, the decoded grant through
//! `daemon::grant::validate`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ring::signature::{Ed25519KeyPair, KeyPair};
use ward_proto::{
    signing::{self, VerifyError},
    v1::{Grant, SignedGrant},
};

fn key() -> &'static Ed25519KeyPair {
    static K: OnceLock<Ed25519KeyPair> = OnceLock::new();
    K.get_or_init(|| Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("a seed"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = SignedGrant::decode(data) else {
        return;
    };
    let public = key().public_key().as_ref().to_vec();
    let other = vec![0x42; 32];
    // As it came: almost always refused, never a panic.
    if let Ok(g) = signing::verify(&signed, &[other.clone(), public.clone()]) {
        ward_fuzz::check_grant(&g);
    }
    // Signed by a key the agent trusts: verifies exactly when the bytes are
    // a grant, and only against that key.
    let resigned = SignedGrant {
        signature: key().sign(&signed.grant).as_ref().to_vec(),
        ..signed.clone()
    };
    let decoded = Grant::decode(signed.grant.as_slice());
    match signing::verify(&resigned, std::slice::from_ref(&public)) {
        Ok(g) => {
            assert_eq!(Some(&g), decoded.as_ref().ok());
            ward_fuzz::check_grant(&g);
        }
        Err(VerifyError::Decode(_)) => assert!(decoded.is_err()),
        Err(e) => panic!("a good signature is refused: {e}"),
    }
    assert_eq!(
        signing::verify(&resigned, &[other]),
        Err(VerifyError::BadSignature)
    );
    let mut tampered = resigned;
    tampered.signature[0] ^= 1;
    assert_eq!(
        signing::verify(&tampered, &[public]),
        Err(VerifyError::BadSignature)
    );
});
