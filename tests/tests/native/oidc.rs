//! WIP (issue 17): the test OIDC provider itself. A person signs in
//! through its own pages for a device code, and the token endpoint then
//! hands the device an ID token with their claims.

use serde_json::{Value, json};
use ward_tests::oidc::Provider;

#[test]
fn the_test_provider_signs_a_person_in_for_a_device_code() {
    let p = Provider::start(
        "device",
        json!({ "alice": { "groups": ["eng"], "department": "eng" } }),
        json!([{
            "client_id": "ward-cli",
            "token_endpoint_auth_method": "none",
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": [],
            "redirect_uris": [],
        }]),
        60,
    );
    // The tests crate's reqwest brings no TLS provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&p.ca_file).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let auth: Value = client
        .post(format!("{}/device/auth", p.issuer))
        .form(&[("client_id", "ward-cli"), ("scope", "openid profile")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    p.device_login(auth["user_code"].as_str().unwrap(), "alice");
    let token: Value = client
        .post(format!("{}/token", p.issuer))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", auth["device_code"].as_str().unwrap()),
            ("client_id", "ward-cli"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = token["id_token"].as_str().expect("an ID token");
    let claims = id.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["department"], "eng");
    assert_eq!(claims["groups"], json!(["eng"]));
    assert_eq!(claims["iss"], p.issuer);
    assert_eq!(claims["aud"], "ward-cli");
}
