//! WIP (issue 17): ID tokens from a real OIDC provider (panva/oidc-provider,
//! its own login form, the device grant), verified by the coordinator's
//! `oidc::Issuer`: a good one names the person and their claims; one from
//! another issuer, for another audience, expired, or with a bad signature
//! is refused.

use std::time::Duration;

use serde_json::json;
use ward_coordinator::oidc::{Issuer, http_client};
use ward_tests::oidc::{Provider, device_client, signing_keys};

fn people() -> serde_json::Value {
    json!({
        "alice": { "groups": ["eng"], "department": "eng" },
        "bob": { "groups": ["reviewers"], "department": "sec" },
    })
}

fn issuer(rt: &tokio::runtime::Runtime, p: &Provider, client_id: &str) -> Issuer {
    let http = http_client(Some(&p.ca_file)).unwrap();
    rt.block_on(Issuer::discover(&p.issuer, client_id, &http))
        .unwrap()
}

#[test]
fn id_tokens_are_verified_against_the_issuer_and_bad_ones_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = signing_keys();
    let p = Provider::start_keyed(
        "verify",
        people(),
        json!([device_client("ward"), device_client("other")]),
        3,
        Some(keys.clone()),
    );
    let trusted = issuer(&rt, &p, "ward");

    let token = p.device_token("ward", "alice");
    let alice = trusted.verify(&token, None).expect("alice's token");
    assert_eq!(alice.subject, "alice");
    assert_eq!(alice.issuer, p.issuer);
    assert_eq!(alice.claims["department"], "eng");
    assert_eq!(alice.claims["groups"], json!(["eng"]));

    // Another audience: a token the provider gave another client.
    let theirs = p.device_token("other", "alice");
    let err = trusted.verify(&theirs, None).unwrap_err().to_string();
    assert!(err.contains("audience") || err.contains("aud"), "{err}");

    // A bad signature: one byte of it changed.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let sig = parts[2].as_bytes().to_vec();
    let mut sig = sig;
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    parts[2] = String::from_utf8(sig).unwrap();
    let err = trusted
        .verify(&parts.join("."), None)
        .unwrap_err()
        .to_string()
        .to_lowercase();
    assert!(err.contains("signature"), "{err}");

    // Another issuer, even signing with the same keys for the same
    // client id: its tokens name another `iss`.
    let elsewhere = Provider::start_keyed(
        "verify-other",
        people(),
        json!([device_client("ward")]),
        3,
        Some(keys),
    );
    let foreign = elsewhere.device_token("ward", "alice");
    let err = trusted.verify(&foreign, None).unwrap_err().to_string();
    assert!(err.contains("issuer") || err.contains("iss"), "{err}");
    // And a provider with keys of its own fails on the signature.
    let other_keys = Provider::start("verify-keys", people(), json!([device_client("ward")]), 3);
    let forged = other_keys.device_token("ward", "alice");
    assert!(trusted.verify(&forged, None).is_err());

    // Expired: the provider's ID tokens last 3 s here.
    std::thread::sleep(Duration::from_secs(4));
    let err = trusted.verify(&token, None).unwrap_err().to_string();
    assert!(err.contains("expired"), "{err}");
}
