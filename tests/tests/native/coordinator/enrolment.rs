//! Enrolment end to end: `ward-coordinator ca init` makes the fleet CA and
//! the coordinator's certificate, `token create` a one-time token, and a
//! fresh agent with no certificate joins with it (`wardd --join`), then
//! receives and enforces a grant, renews its short-lived certificate by
//! itself, and is cut off when its host is revoked. Forged, reused,
//! expired and other-fleet tokens are refused.

use super::*;

/// `ward audit --json` with this client certificate.
fn audit_kinds(c: &Coordinator, cert: &Path, key: &Path) -> Vec<Value> {
    let (code, out, err) = c.ward_with(cert, key, &["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_fresh_agent_joins_with_a_token_renews_and_is_cut_off_when_revoked() {
    let join_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Coordinator::builder("coord-join")
        .tables(&format!(
            "[enrolment]\nlisten = \"127.0.0.1:{join_port}\"\nca_key = \"ca.key\"\n\
             agent_cert_ttl = \"12s\"\n"
        ))
        .prepare();
    let d = c.dir().to_owned();
    let cfg = c.config_path();
    let cfg = cfg.to_str().unwrap();
    // No hand-made certificates: the harness's are replaced by the CA's.
    for f in ["ca.pem", "localhost.pem", "localhost.key"] {
        std::fs::remove_file(d.join(f)).unwrap();
    }
    let (code, out, err) = coordinator_cli(&["ca", "init", "--config", cfg, "--name", "localhost"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = coordinator_cli(&["ca", "init", "--config", cfg, "--name", "localhost"]);
    assert_ne!(code, 0, "ca init never overwrites");
    assert!(err.contains("exists"), "{err}");
    let people = TempDir::new("coord-join-people");
    for who in ["dave", "root-admin"] {
        let (code, out, err) = coordinator_cli(&[
            "ca",
            "issue",
            "--config",
            cfg,
            who,
            "--out",
            people.path().to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let person = |who: &str| {
        (
            people.path().join(format!("{who}.pem")),
            people.path().join(format!("{who}.key")),
        )
    };
    c.start();

    let token = |ttl: &str| -> String {
        let (code, out, err) = coordinator_cli(&[
            "token", "create", "--config", cfg, "--host", "h1", "--ttl", ttl, "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v["token"].as_str().unwrap().to_owned()
    };

    // A fresh host: a [coordinator] section, and no certificate at all.
    let tls = TempDir::new("co-join-tls");
    let t = tls.path().display();
    let h = test_host(
        &c,
        "co-join",
        &format!(
            "[coordinator]\nurl = \"https://127.0.0.1:{port}\"\ndomain = \"localhost\"\n\
             join_url = \"https://localhost:{join_port}\"\nca = \"{t}/ca.pem\"\n\
             cert = \"{t}/agent.pem\"\nkey = \"{t}/agent.key\"\n\
             public_keys_file = \"{t}/signing-keys\"\nhost = \"h1\"\n",
            port = c.port()
        ),
    );
    // Running before it has joined, as after installing the package: it
    // enforces, and dials the coordinator once it has a certificate.
    let _w = h.start();
    // The token goes in on stdin: on the command line any local user
    // could read it (ps) and join first.
    let join = |token: &str| {
        use std::io::Write;
        let mut child = Command::new(ward_tests::wardd_bin())
            .args(["--config", h.config.to_str().unwrap(), "--join"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let good = token("15m");
    // A forged token (one changed character of the secret) is unknown.
    let mut forged = good.clone().into_bytes();
    let i = "wardjoin1.".len();
    forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
    let (code, _, err) = join(std::str::from_utf8(&forged).unwrap());
    assert_ne!(code, 0);
    assert!(err.contains("the join token is not valid"), "{err}");
    // A token pinning another CA is refused by the agent itself: the
    // server's chain does not hold that CA.
    let other_fleet = format!("{}{}", &good[..good.len() - 64], "ab".repeat(32));
    let (code, _, err) = join(&other_fleet);
    assert_ne!(code, 0);
    assert!(
        err.contains("does not include the CA the join token names"),
        "{err}"
    );
    assert!(!tls.path().join("agent.pem").exists(), "nothing written");

    let (code, out, err) = join(&good);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("joined as h1.agent"), "{out}");
    let key_mode = std::fs::metadata(tls.path().join("agent.key"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );
    let keys = std::fs::read_to_string(tls.path().join("signing-keys")).unwrap();
    assert!(keys.contains(c.public_key()), "{keys}");
    // Single use.
    let (code, _, err) = join(&good);
    assert_ne!(code, 0);
    assert!(err.contains("was used already"), "{err}");
    // Expired.
    let brief = token("1s");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, _, err) = join(&brief);
    assert_ne!(code, 0);
    assert!(err.contains("has expired"), "{err}");

    // The joined agent subscribes with its certificate, and enforces the
    // grants it receives.
    c.wait_subscribed(1);
    assert_eq!(h.connect(), DENIED);
    let (dave_cert, dave_key) = person("dave");
    let (code, r, err) = c.ask_with(&dave_cert, &dave_key, &ask(&h, "h1").reason(Some("INC-7")));
    assert_eq!(code, 0, "{r}{err}");
    wait_until(
        "the grant to reach the joined agent",
        Duration::from_secs(10),
        || h.connect() == OpenOutcome::Opened,
    );

    // It renews its 12-second certificate by itself, with a new key.
    let first = std::fs::read_to_string(tls.path().join("agent.pem")).unwrap();
    let first_key = std::fs::read_to_string(tls.path().join("agent.key")).unwrap();
    wait_until("a renewal", Duration::from_secs(20), || {
        std::fs::read_to_string(tls.path().join("agent.pem")).unwrap() != first
    });
    assert_ne!(
        std::fs::read_to_string(tls.path().join("agent.key")).unwrap(),
        first_key,
        "a new key each renewal"
    );
    c.wait_subscribed(2);

    // Revoked: its stream closes, and renewals are refused.
    let (code, out, err) = coordinator_cli(&["host", "revoke", "--config", cfg, "h1"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(
        "the revoked host's stream to close",
        Duration::from_secs(10),
        || c.log().contains("revoked host disconnected"),
    );
    let (admin_cert, admin_key) = person("root-admin");
    wait_until("a renewal refused", Duration::from_secs(30), || {
        audit_kinds(&c, &admin_cert, &admin_key)
            .iter()
            .any(|e| e["kind"] == "renewal_refused")
    });
    // And a new token for it is refused too.
    let (code, _, err) = coordinator_cli(&[
        "token", "create", "--config", cfg, "--host", "h1", "--ttl", "15m",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("revoked"), "{err}");

    // Every step is audited; no token ever appears in the audit or the log.
    let audit = audit_kinds(&c, &admin_cert, &admin_key);
    let count = |kind: &str| audit.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(count("token_created"), 2, "{audit:#?}");
    assert_eq!(count("host_joined"), 1, "{audit:#?}");
    assert_eq!(
        count("join_refused"),
        3,
        "forged, reused, expired: {audit:#?}"
    );
    assert!(count("agent_renewed") >= 1, "{audit:#?}");
    assert_eq!(count("host_revoked"), 1, "{audit:#?}");
    let secret = &good["wardjoin1.".len().."wardjoin1.".len() + 48];
    assert!(!format!("{audit:?}").contains(secret));
    assert!(!c.log().contains(secret));
}
