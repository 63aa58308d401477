//! People signing in through a real OIDC provider (panva/oidc-provider,
//! its own login form): ID tokens verified by the coordinator's
//! `oidc::Issuer` (a good one names the person and their claims; one from
//! another issuer, for another audience, expired, or with a bad signature
//! is refused), and `ward login` end to end, with the claims deciding.

use std::{os::unix::fs::PermissionsExt, time::Duration};

use serde_json::{Value, json};
use ward_coordinator::oidc::{Issuer, OidcSection};
use ward_proto::v1 as pb;
use ward_tests::coordinator::{Ask, Coordinator};
use ward_tests::oidc::{
    CLIENT_SECRET, Provider, coordinator_client, device_client, oidc_section, signing_keys,
    ward_login,
};

fn people() -> serde_json::Value {
    json!({
        "alice": { "groups": ["eng"], "department": "eng" },
        "bob": { "groups": ["reviewers"], "department": "sec" },
    })
}

fn issuer(rt: &tokio::runtime::Runtime, p: &Provider, client_id: &str) -> Issuer {
    let section: OidcSection = toml::from_str(&format!(
        "issuer = \"{}\"\nclient_id = \"{client_id}\"\nca_file = \"{}\"\n",
        p.issuer,
        p.ca_file.display()
    ))
    .unwrap();
    rt.block_on(Issuer::discover(&section)).unwrap()
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

/// The people of the SSO tests' provider: none of them is in the
/// coordinator's directory, so everything policy knows of them comes from
/// their ID tokens.
fn sso_people() -> serde_json::Value {
    json!({
        "ana": { "groups": ["staff"], "department": "eng" },
        "lee": { "groups": ["leads"], "department": "sec" },
        "mallory": { "groups": [], "department": "eng" },
        "sneaky": { "preferred_username": "h1.agent", "groups": ["leads"] },
    })
}

/// Registers host h1 (env=test) the way its agent would, so requests may
/// name it.
fn host_h1(
    rt: &tokio::runtime::Runtime,
    c: &Coordinator,
) -> ward_tests::coordinator::fleet::SimFleet {
    let mut fleet = ward_tests::coordinator::fleet::SimFleet::start(
        rt,
        vec![(
            "h1".into(),
            vec!["env=test".into()],
            c.tls_target("h1.agent"),
        )],
        1,
    );
    fleet.wait_all(rt, "h1's snapshot", Duration::from_secs(10), |h| {
        h.snapshots > 0
    });
    fleet
}

#[test]
fn ward_login_signs_people_in_and_their_identity_providers_claims_decide() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let p = Provider::start(
        "sso",
        sso_people(),
        json!([coordinator_client(
            "ward",
            CLIENT_SECRET,
            &["https://localhost/callback"]
        )]),
        600,
    );
    let other = Provider::start(
        "sso-other",
        sso_people(),
        json!([coordinator_client(
            "ward",
            CLIENT_SECRET,
            &["https://localhost/callback"]
        )]),
        600,
    );
    let secrets = ward_tests::TempDir::new("sso-secrets");
    let sections = format!(
        "{}{}",
        oidc_section(&p, "ward", secrets.path()),
        oidc_section(&other, "ward", secrets.path())
    );
    let mut c = Coordinator::builder("sso").tables(&sections).start();
    let _h1 = host_h1(&rt, &c);
    let homes = c.dir().to_owned();
    let home = |who: &str| {
        let d = homes.join(format!("home-{who}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };

    // ana signs in: the coordinator shows the provider's page and code,
    // she signs in there, and the session is saved for her alone.
    let (code, me, err) = ward_login(&c, &p, "ana", &home("ana"), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(me["name"], "ana", "{me}");
    assert_eq!(me["via"], "session");
    assert_eq!(me["issuer"], p.issuer);
    assert_eq!(me["groups"], json!(["staff"]));
    assert_eq!(me["attributes"]["department"], "eng");
    let file = home("ana").join("ward/session.json");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    assert!(
        !err.contains("ward-session.v1."),
        "the token is never printed: {err}"
    );
    assert!(!c.log().contains("ward-session.v1."), "nor logged");
    let (code, out, err) = c.ward_session(&home("ana"), &["whoami", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["name"],
        "ana"
    );

    // Her groups come from the provider: staff may ask (two approvals).
    let ask = Ask::loopback(8080, "h1");
    let (code, out, err) = c.ward_session(
        &home("ana"),
        &ask.args().iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(code, 0, "{err}");
    let request: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = request["id"].as_str().unwrap().to_owned();
    assert_eq!(request["requester"], "ana");
    assert_eq!(request["approvals_required"], 2, "{request}");

    // mallory is in no group: the same request is not eligible.
    let (code, _, err) = ward_login(&c, &p, "mallory", &home("mallory"), &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c.ward_session(
        &home("mallory"),
        &ask.args().iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not eligible"), "{err}");

    // Nobody approves their own request, by session or by a certificate
    // naming the same person.
    let (code, _, err) = c.ward_session(&home("ana"), &["approve", &id, "--json"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("self-approval"), "{err}");
    let (code, _, err) = c.ward("ana", &["approve", &id, "--json"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("self-approval"), "{err}");

    // lee reviews because the provider says he leads.
    let (code, _, err) = ward_login(&c, &p, "lee", &home("lee"), &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = c.ward_session(&home("lee"), &["approve", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let approved: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        approved["reviews"].as_array().unwrap().len(),
        1,
        "{approved}"
    );
    // mallory may not review.
    let (code, _, err) = c.ward_session(&home("mallory"), &["approve", &id, "--json"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not a reviewer"), "{err}");

    // A person's name is theirs: the other provider's "ana" is refused,
    // and a provider's user may not take an agent's name.
    let (code, _, err) = ward_login(
        &c,
        &other,
        "ana",
        &home("ana2"),
        &["--issuer", &other.issuer],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("bound to"), "{err}");
    let (code, _, err) = ward_login(&c, &p, "sneaky", &home("sneaky"), &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("agent's name"), "{err}");

    // A session altered in one character, or copied where others can read
    // it, is refused; so is a certificate and a session on one call.
    let text = std::fs::read_to_string(&file).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
    let token = saved["token"].as_str().unwrap().to_owned();
    let mut forged = saved.clone();
    let flip = token.len() - 5;
    let mut t = token.clone().into_bytes();
    t[flip] = if t[flip] == b'A' { b'B' } else { b'A' };
    forged["token"] = json!(String::from_utf8(t).unwrap());
    let forged_home = home("forged");
    std::fs::create_dir_all(forged_home.join("ward")).unwrap();
    let forged_file = forged_home.join("ward/session.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    std::fs::set_permissions(&forged_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = c.ward_session(&forged_home, &["whoami"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("signature") || err.contains("session"),
        "{err}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = c.ward_session(&home("ana"), &["whoami"]);
    assert_ne!(code, 0);
    assert!(err.contains("others may read it"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let both = rt.block_on(async {
        let mut client = c.grpc("lee").await;
        let mut req = tonic::Request::new(pb::WhoAmIRequest {});
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        client.who_am_i(req).await
    });
    let status = both.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // Sessions outlive a coordinator restart (they are signed, and the
    // name's binding is stored), and the audit names each sign-in.
    c.kill();
    c.start();
    let (code, _, err) = c.ward_session(&home("lee"), &["whoami"]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<serde_json::Value> = c
        .audit("root-admin")
        .into_iter()
        .filter(|e| e["kind"] == "signed-in")
        .collect();
    let signed_in: Vec<&str> = entries
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(signed_in, ["ana", "mallory", "lee"], "{signed_in:?}");
    // Where each device sign-in was started: a phished code shows up as
    // someone else's address.
    for e in &entries {
        let detail = e["detail"].as_str().unwrap();
        assert!(
            detail.contains("device grant, started from 127.0.0.1"),
            "{detail}"
        );
    }

    // An administrator forgets mallory: her session ends at once, and the
    // audit says who did it.
    let forget = |name: &str| {
        ward_tests::coordinator::coordinator_cli(&[
            "person",
            "forget",
            "--config",
            c.config_path().to_str().unwrap(),
            name,
        ])
    };
    let (code, _, err) = forget("mallory");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c.ward_session(&home("mallory"), &["whoami"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no longer bound"), "{err}");
    assert!(
        c.audit("root-admin")
            .iter()
            .any(|e| e["kind"] == "person_forgotten"
                && e["detail"].as_str().unwrap().starts_with("mallory")),
    );
    let (code, _, err) = forget("nobody");
    assert_eq!(code, 1);
    assert!(err.contains("nobody is bound"), "{err}");

    // Logging out ends the session at the coordinator, not only here: a
    // copy of the token taken before (a stolen one) is refused after.
    let stolen = home("lee-copy").join("ward");
    std::fs::create_dir_all(&stolen).unwrap();
    std::fs::copy(
        home("lee").join("ward/session.json"),
        stolen.join("session.json"),
    )
    .unwrap();
    let (code, _, err) = c.ward_session(&home("lee-copy"), &["whoami"]);
    assert_eq!(code, 0, "the copy works before lee signs out: {err}");
    let (code, out, err) = c.ward_session(&home("lee"), &["logout", "--json"]);
    assert_eq!(code, 0, "{err}");
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["session"], "ended", "{out}");
    assert_eq!(out["name"], "lee", "{out}");
    let (code, _, err) = c.ward_session(&home("lee"), &["whoami"]);
    assert_eq!(code, 4);
    assert!(err.contains("not signed in"), "{err}");
    let (code, _, err) = c.ward_session(&home("lee-copy"), &["whoami"]);
    assert_eq!(code, 4, "the copy is refused once lee signed out");
    assert!(err.contains("signed out"), "{err}");
    assert!(
        c.audit("root-admin")
            .iter()
            .any(|e| e["kind"] == "signed-out" && e["actor"] == "lee"),
    );
    // ana's session is her own: lee's sign-out did not end it.
    let (code, _, err) = c.ward_session(&home("ana"), &["whoami"]);
    assert_eq!(code, 0, "{err}");
    // The copy's own logout finds it already over, and forgets it, even
    // from a file others may read (where ending it matters most).
    std::fs::set_permissions(
        stolen.join("session.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, out, err) = c.ward_session(&home("lee-copy"), &["logout", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["session"],
        "already-over"
    );
    // Unreachable coordinator: the file is kept (the session still holds
    // there) and the command fails, unless --local.
    let mut unreachable = c.ward_session_command(&home("ana"), &["logout"]);
    unreachable.env("WARD_TLS_CA", c.dir().join("no-such-ca.pem"));
    let out = unreachable.output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stays valid there"), "{err}");
    assert!(home("ana").join("ward/session.json").exists());
    let (code, out, err) = c.ward_session(&home("ana"), &["logout", "--local", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["session"],
        "still-valid"
    );
    assert!(!home("ana").join("ward/session.json").exists());
    // A file that is not a session: kept, with the way out named.
    std::fs::create_dir_all(home("junk").join("ward")).unwrap();
    std::fs::write(home("junk").join("ward/session.json"), "not json").unwrap();
    let (code, _, err) = c.ward_session(&home("junk"), &["logout"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not a ward session") && err.contains("--local"),
        "{err}"
    );
    let (code, _, err) = c.ward_session(&home("junk"), &["logout", "--local"]);
    assert_eq!(code, 0, "{err}");
    assert!(!home("junk").join("ward/session.json").exists());
}
