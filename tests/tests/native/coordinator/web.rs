//! Issue 17: the reviewer's web page in real Chromium (`tests/node/
//! review.mjs`, through playwright-core). bob signs in through the
//! provider's own login form, sees alice's pending request with its
//! details, approves it with a comment by keyboard; carol's approval (CLI)
//! appears live on his open page; the grant reaches a real agent and is
//! enforced; bob revokes it on the page and the agent stops it. A
//! cross-site POST is refused, and so are forged Origins and tokens.
//! Screenshots of each screen are left in target/screenshots.

use std::{
    io::{BufRead, Write},
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use ward_tests::{
    OpenOutcome, TempDir,
    coordinator::{Coordinator, wait_until},
    oidc::{CLIENT_SECRET, Provider, coordinator_client, installed, oidc_section},
};

use super::{DENIED, agent, ask};

fn request(c: &Coordinator, id: &str) -> Value {
    let (code, out, err) = c.ward("root-admin", &["requests", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no request {id}"))
}

#[test]
fn a_reviewer_approves_and_revokes_on_the_web_page_and_sees_others_decisions_live() {
    let web_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let page = format!("https://localhost:{web_port}");
    let p = Provider::start(
        "web",
        json!({
            "alice": { "groups": ["staff"] },
            "bob": { "groups": ["leads"] },
        }),
        json!([coordinator_client(
            "ward",
            CLIENT_SECRET,
            &[&format!("{page}/callback")]
        )]),
        600,
    );
    let secrets = TempDir::new("web-secrets");
    let c = Coordinator::builder("coord-web")
        .tables(&format!(
            "{}[web]\nlisten = \"127.0.0.1:{web_port}\"\npublic_url = \"{page}\"\n",
            oidc_section(&p, "ward", secrets.path())
        ))
        .start();
    let (h1, _w1) = agent(&c, "co-web", "h1", c.public_key());
    c.wait_subscribed(1);
    let (code, first, err) = c.ask("alice", &ask(&h1, "h1"));
    assert_eq!(code, 0, "{err}");
    let (code, other, err) = c.ask("alice", &ask(&h1, "h1").reason(Some("INC-43")));
    assert_eq!(code, 0, "{err}");
    let (id, other) = (first["id"].as_str().unwrap(), other["id"].as_str().unwrap());
    assert_eq!(h1.connect(), DENIED);

    let shots = installed().join("../screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let config = secrets.path().join("review.json");
    std::fs::write(
        &config,
        json!({
            "page": page, "request": id, "other": other,
            "reviewer": "bob", "requester": "alice",
            "screenshots": shots,
        })
        .to_string(),
    )
    .unwrap();
    let mut browser = Command::new("node")
        .arg(installed().join("review.mjs"))
        .arg(&config)
        .current_dir(installed())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs the browser script");
    let mut to = browser.stdin.take().unwrap();
    let from = std::io::BufReader::new(browser.stdout.take().unwrap());
    let mut steps = Vec::new();
    for line in from.lines() {
        let line = line.unwrap();
        eprintln!("browser: {line}");
        if line == "DONE" {
            break;
        }
        if let Some(why) = line.strip_prefix("FAIL ") {
            panic!("in the browser: {why}\n(coordinator log)\n{}", c.log());
        }
        let Some(step) = line.strip_prefix("STEP ") else {
            continue;
        };
        let name = step.split(' ').next().unwrap_or_default().to_owned();
        match name.as_str() {
            "approved-by-reviewer" => {
                let r = request(&c, id);
                assert_eq!(r["reviews"][0]["reviewer"], "bob", "{r}");
                assert_eq!(r["reviews"][0]["reason"], "checked with the on-call lead");
                assert_eq!(r["state"], "pending");
            }
            "second-reviewer" => {
                let (code, _, err) = c.ward("carol", &["approve", id, "--reason", "ok", "--json"]);
                assert_eq!(code, 0, "{err}");
            }
            "live-seen" => wait_until("the grant enforced", Duration::from_secs(15), || {
                h1.connect() == OpenOutcome::Opened
            }),
            "revoked" => wait_until("the revocation enforced", Duration::from_secs(15), || {
                h1.connect() == DENIED
            }),
            "cross-site-refused" => {
                let r = request(&c, other);
                assert_eq!(
                    r["reviews"],
                    json!([]),
                    "the forged approvals did nothing: {r}"
                );
                assert_eq!(r["state"], "pending");
            }
            "signed-out" => assert!(
                c.audit("root-admin")
                    .iter()
                    .any(|e| e["kind"] == "signed-out"
                        && e["actor"] == "bob"
                        && e["detail"].as_str().unwrap().contains("the web page from")),
                "the sign-out is audited"
            ),
            other => panic!("unknown step {other}"),
        }
        steps.push(name);
        writeln!(to, "ok").unwrap();
    }
    let status = browser.wait().unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    assert_eq!(
        steps,
        [
            "approved-by-reviewer",
            "second-reviewer",
            "live-seen",
            "revoked",
            "cross-site-refused",
            "signed-out"
        ]
    );
    for name in [
        "web-sign-in",
        "web-pending",
        "web-request",
        "web-active",
        "web-audit",
        "web-phone-request",
        "web-phone-history",
    ] {
        let f = shots.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&f).is_ok_and(|m| m.len() > 1000),
            "{} was not saved",
            f.display()
        );
    }
    assert!(
        !c.log().contains("ward-session.v1."),
        "no session in the log"
    );
}
