//! `wardd` and `ward` as real processes on the host: the cgroup connect
//! enforcer, the unix socket with peer credentials, mutual TLS, validation,
//! and crash consistency. Enforcement is confined to test cgroups.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use ward_tests::{
    OpenOutcome, TempDir, connect_as_child,
    wardd::{Wardd, ward_as},
};

use crate::connect::{Sandbox, sandbox};

const NOBODY: (u32, u32) = (65534, 65534);
/// nobody, outside the admin group ("nogroup").
const NOBODY_NOGROUP: (u32, u32) = (65534, 65533);

pub struct Host {
    pub dir: TempDir,
    pub sb: Sandbox,
    /// The protected destination.
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub socket: PathBuf,
    pins: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

pub fn rel(cg: &Path) -> String {
    let root = ward_agent::cgroup::cgroup2_mount().unwrap();
    cg.strip_prefix(&root).unwrap().display().to_string()
}

/// A host config protecting one loopback port for one managed cgroup.
pub fn host(tag: &str, extra: &str) -> Host {
    host_protecting(tag, true, extra)
}

/// A host config; with `protect`, `[protect]` names the loopback port.
pub fn host_protecting(tag: &str, protect: bool, extra: &str) -> Host {
    let dir = TempDir::new(&format!("wardd-{tag}"));
    let sb = sandbox(&format!("d-{tag}"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = dir.path().join("agent.sock");
    let pins = format!("/sys/fs/bpf/ward-test-{tag}-{}", std::process::id());
    let d = dir.path().display();
    let text = format!(
        r#"[agent]
socket = "{d}/agent.sock"
state_dir = "{d}/state"
audit_log = "{d}/audit.jsonl"
pin_dir = "{pins}"
max_grant_duration = "1h"
admin_group = "nogroup"

[enforce]
hooks = "cgroup"
connect_cgroup = "{root}"
managed_cgroups = ["{managed}"]

{protect}
{extra}
"#,
        protect = if protect {
            format!("[protect]\nnetworks = [\"127.0.0.1/32:{}\"]", addr.port())
        } else {
            String::new()
        },
        root = rel(sb.root.path()),
        managed = rel(sb.managed.path()),
    );
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, text).unwrap();
    // Unprivileged callers must reach the socket.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    Host {
        dir,
        sb,
        listener,
        addr,
        config,
        socket,
        pins,
    }
}

impl Host {
    pub fn start(&self) -> Wardd {
        Wardd::start(&self.config, &self.socket, &[])
    }

    pub fn ward(&self, args: &[&str]) -> (i32, String, String) {
        ward_as(&self.socket, None, args)
    }

    pub fn managed_workload(&self) -> String {
        rel(self.sb.managed.path())
    }

    pub fn connect(&self) -> OpenOutcome {
        connect_as_child(Some(&self.sb.managed), self.addr)
    }

    pub fn grant(&self, id: &str, duration: &str) -> (i32, String, String) {
        let target = format!("127.0.0.1:{}", self.addr.port());
        self.ward(&[
            "grant",
            "--workload",
            &self.managed_workload(),
            "--connect",
            &target,
            "--for",
            duration,
            "--reason",
            "INC-42",
            "--id",
            id,
        ])
    }

    pub fn grants(&self) -> Vec<Value> {
        let (code, out, err) = self.ward(&["grants", "--all", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// (grant id, state) of every grant, oldest first.
    pub fn states(&self) -> Vec<(String, String)> {
        self.grants()
            .iter()
            .map(|g| {
                (
                    g["id"].as_str().unwrap().into(),
                    g["state"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

const DENIED: OpenOutcome = OpenOutcome::Refused(libc::EPERM);

#[test]
fn cli_grant_opens_connect_and_revoke_and_expiry_close_it() {
    let h = host("life", "");
    let _wardd = h.start();
    assert_eq!(h.connect(), DENIED, "protected before any grant");

    let (code, out, err) = h.grant("g1", "1h");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("granted: g1"), "{out}");
    assert_eq!(h.connect(), OpenOutcome::Opened);
    assert_eq!(
        connect_as_child(Some(&h.sb.unmanaged), h.addr),
        OpenOutcome::Opened,
        "unmanaged processes are never affected"
    );
    let (code, _, err) = h.ward(&["revoke", "g1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.connect(), DENIED, "denied at once after revoke");

    let (code, _, err) = h.grant("g2", "2s");
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.connect(), OpenOutcome::Opened);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(h.connect(), DENIED, "denied after the deadline");
    std::thread::sleep(Duration::from_millis(500));

    let states = h.states();
    assert_eq!(
        states,
        [
            ("g1".into(), "revoked".into()),
            ("g2".into(), "expired".into())
        ]
    );
    let kinds: Vec<String> = h
        .audit()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().into())
        .collect();
    for k in [
        "grant_pushed",
        "grant_used",
        "grant_revoked",
        "deny",
        "grant_expired",
    ] {
        assert!(kinds.iter().any(|x| x == k), "audit lacks {k}: {kinds:?}");
    }
    let (code, text, _) = h.ward(&[
        "explain",
        "--workload",
        &h.managed_workload(),
        "--connect",
        &h.addr.to_string(),
    ]);
    assert_eq!(code, 10, "explain exits 10 on deny: {text}");
    assert!(
        text.contains("DENY") && text.contains("protect.networks[0]"),
        "{text}"
    );
    let (code, events, _) = h.ward(&["events", "--recent", "100", "--json"]);
    assert_eq!(code, 0);
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"allow_by_grant\"") && l.contains("g2")),
        "{events}"
    );
}

#[test]
fn peer_credentials_decide_what_a_local_caller_may_do() {
    let h = host("peer", "");
    let _wardd = h.start();
    let (code, _, err) = h.grant("root-grant", "10m");
    assert_eq!(code, 0, "{err}");

    // nobody (uid 65534, not in the admin group) may look, not change.
    let nobody_nogroup = Some((65534, 65533));
    let target = format!("127.0.0.1:{}", h.addr.port());
    let (code, _, err) = ward_as(
        &h.socket,
        nobody_nogroup,
        &[
            "grant",
            "--uid",
            "65534",
            "--connect",
            &target,
            "--for",
            "5m",
            "--reason",
            "x",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not allowed"), "{err}");
    let (code, _, _) = ward_as(&h.socket, nobody_nogroup, &["revoke", "root-grant"]);
    assert_eq!(code, 4);
    let (code, out, _) = ward_as(&h.socket, nobody_nogroup, &["grants", "--json"]);
    assert_eq!((code, out.trim()), (0, "[]"), "only their own grants");
    let (code, _, err) = ward_as(
        &h.socket,
        nobody_nogroup,
        &["explain", "--uid", "0", "--connect", &target],
    );
    assert_eq!(code, 4, "only about themselves: {err}");
    let (code, _, _) = ward_as(&h.socket, nobody_nogroup, &["status"]);
    assert_eq!(code, 0);

    // A member of the admin group ("nogroup" here) may push.
    let (code, out, err) = ward_as(
        &h.socket,
        Some(NOBODY),
        &[
            "grant",
            "--uid",
            "65534",
            "--connect",
            &target,
            "--for",
            "5m",
            "--reason",
            "x",
            "--id",
            "by-admin-group",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = ward_as(&h.socket, nobody_nogroup, &["grants", "--json"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("by-admin-group") && !out.contains("root-grant"),
        "{out}"
    );
    assert_eq!(h.grants().len(), 2, "root sees all");

    let refused: Vec<Value> = h
        .audit()
        .into_iter()
        .filter(|r| r["kind"] == "call_refused")
        .collect();
    assert!(
        refused.iter().any(|r| r["actor"] == "uid:65534"),
        "refusals are audited: {refused:?}"
    );
}

/// Issue 14.4: a connection's rights are the ones it was made with. A
/// process connects as uid 65534 outside the admin group, then (through a
/// saved root uid) joins the admin group, which is what `/proc/PID/status`
/// would then show; a pid reused by an admin-group member looks the same.
/// The connection must stay unprivileged, and the grant it tries to revoke
/// must stay enforced.
#[test]
fn a_connection_keeps_the_credentials_it_was_made_with() {
    let h = host("peergroups", "");
    let _wardd = h.start();
    let (code, _, err) = h.grant("root-grant", "10m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.connect(), OpenOutcome::Opened, "granted");

    // Connects as 65534 outside the admin group, then joins it ("nogroup").
    let (child, stolen) = ward_tests::flood::connection_as(&h.socket, (65534, 1), Some(65534));
    let status = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            ward_tests::flood::agent_over(stolen)
                .await
                .revoke_grant(ward_proto::v1::RevokeGrantRequest {
                    id: "root-grant".into(),
                    reason: "raced".into(),
                })
                .await
        });
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();

    let err = status.expect_err("the revoke must be refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert_eq!(
        h.states(),
        vec![("root-grant".to_owned(), "active".to_owned())]
    );
    assert_eq!(h.connect(), OpenOutcome::Opened, "the grant still holds");
}

/// Issue 14.12: a local user cannot erase the audit trail by flooding it.
/// With a 64 KiB log and one rotation kept, a grant's lifecycle is
/// recorded, then the managed workload is denied 20,000 times and an
/// unprivileged caller is refused 5,000 times. Repeats are counted, not
/// written; the lifecycle stays in both files; the chains verify, and an
/// edited record is found.
#[test]
fn a_flood_of_denies_and_refusals_cannot_erase_the_audit_trail() {
    let h = host("auditflood", "");
    let text = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        text.replacen(
            "[agent]\n",
            "[agent]\naudit_max_bytes = 65536\naudit_keep = 1\n",
            1,
        ),
    )
    .unwrap();
    let _wardd = h.start();
    let (code, _, err) = h.grant("evidence", "10m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.connect(), OpenOutcome::Opened);
    let (code, _, err) = h.ward(&["revoke", "evidence"]);
    assert_eq!(code, 0, "{err}");

    // 20,000 denied connects from the managed workload, in one process.
    let (family, addr, len) = ward_tests::sockaddr(h.addr);
    // SAFETY: the child makes only raw syscalls.
    let outcome = unsafe {
        ward_tests::in_child(Some(&h.sb.managed), move || {
            for _ in 0..20_000 {
                let fd = libc::socket(family, libc::SOCK_STREAM, 0);
                let rc = libc::connect(fd, (&addr as *const libc::sockaddr_storage).cast(), len);
                let e = *libc::__errno_location();
                libc::close(fd);
                if rc == 0 {
                    return -1;
                }
                if e != libc::EPERM {
                    return e;
                }
            }
            libc::EPERM
        })
    };
    assert_eq!(outcome, OpenOutcome::Refused(libc::EPERM));
    // 5,000 refused calls from nobody.
    let (mut maker, stream) = ward_tests::flood::connection_as(&h.socket, NOBODY_NOGROUP, None);
    let refused = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let mut agent = ward_tests::flood::agent_over(stream).await;
            let mut refused = 0;
            for _ in 0..5_000 {
                let r = agent
                    .revoke_grant(ward_proto::v1::RevokeGrantRequest {
                        id: "evidence".into(),
                        reason: "flood".into(),
                    })
                    .await;
                if r.is_err_and(|e| e.code() == tonic::Code::PermissionDenied) {
                    refused += 1;
                }
            }
            refused
        });
    let _ = maker.kill();
    let _ = maker.wait();
    assert_eq!(refused, 5_000);

    // Runs close when their 10 s window has passed (at the next tick).
    let audit = h.dir.path().join("audit.jsonl");
    let life = h.dir.path().join("lifecycle.jsonl");
    let records = || -> Vec<Value> {
        let mut text =
            std::fs::read_to_string(h.dir.path().join("audit.jsonl.1")).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(&audit).unwrap());
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // Each record stands for itself and the repeats it counts.
    let counted = |rs: &[Value], kind: &str| -> u64 {
        rs.iter()
            .filter(|r| r["kind"] == kind && r["actor"] != "uid:0")
            .map(|r| 1 + r["detail"]["repeated"].as_u64().unwrap_or(0))
            .sum()
    };
    let started = std::time::Instant::now();
    while counted(&records(), "call_refused") < 5_000 {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "refusals not all counted: {}",
            counted(&records(), "call_refused")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let rs = records();
    let written = |kind: &str| rs.iter().filter(|r| r["kind"] == kind).count();
    assert!(
        written("call_refused") <= 4,
        "refusals are counted, not written"
    );
    assert!(written("deny") <= 10, "denies are counted, not written");
    assert!(
        counted(&rs, "deny") >= 1_000,
        "the denies are in the counts"
    );
    for kind in ["grant_pushed", "grant_used", "grant_revoked"] {
        assert!(
            rs.iter()
                .any(|r| r["kind"] == kind && r["grant_id"] == "evidence"),
            "{kind} of the grant survived the flood"
        );
    }
    let lifecycle = std::fs::read_to_string(&life).unwrap();
    assert!(lifecycle.contains("\"grant_pushed\"") && !lifecycle.contains("\"deny\""));

    let (a, l) = (audit.display().to_string(), life.display().to_string());
    let (code, out, err) = h.ward(&["audit", "verify", &a, &l]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("chain intact").count(), 2, "{out}");
    // Any edit shows.
    std::fs::write(&life, lifecycle.replacen("evidence", "evidencf", 1)).unwrap();
    let (code, out, _) = h.ward(&["audit", "verify", &a, &l, "--json"]);
    assert_eq!(code, 11, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["intact"], true);
    assert_eq!(v[1]["intact"], false, "{v}");
}

/// Issue 15 (no silent stops): a background task that dies takes wardd
/// down loudly, non-zero, so its service manager restarts it; the pinned
/// programs enforce all along, and a restarted wardd serves again.
#[test]
fn a_background_task_that_dies_stops_wardd_loudly_and_enforcement_holds() {
    let h = host("taskdies", "");
    let mut w = Wardd::start(
        &h.config,
        &h.socket,
        &[("WARD_TEST_FAILPOINT", "panic-tick")],
    );
    let status = w
        .exits_within(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("wardd went on without its ticker:\n{}", w.log()));
    assert!(!status.success(), "{status}");
    let log = w.log();
    assert!(
        log.contains("background task `lifecycle ticker` panicked") && log.contains("restarts it"),
        "{log}"
    );
    assert_eq!(
        h.connect(),
        OpenOutcome::Refused(libc::EPERM),
        "still enforced"
    );
    let _w = h.start();
    let (code, _, err) = h.ward(&["status"]);
    assert_eq!(code, 0, "{err}");
}

/// Issue 15: a scheduled grant that cannot start is refused on its own:
/// it does not hold up the others, and it never blocks a restart.
#[test]
fn a_scheduled_grant_that_cannot_start_does_not_hold_up_the_others() {
    let h = host("schedfail", "");
    let w = Wardd::start(&h.config, &h.socket, &[("WARD_TEST_FAILPOINT", "activate")]);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    use ward_proto::v1 as pb;
    let later = pb::Grant {
        id: "later".into(),
        subject: Some(pb::Subject {
            kind: Some(pb::subject::Kind::Workload(h.managed_workload())),
        }),
        operations: vec![pb::Operation::Connect as i32],
        objects: vec![pb::Object {
            kind: Some(pb::object::Kind::Network(format!(
                "127.0.0.1/32:{}",
                h.addr.port()
            ))),
        }],
        not_before_unix_ms: now_ms + 1_000,
        expires_at_unix_ms: now_ms + 600_000,
        reason: "INC-5".into(),
        ..Default::default()
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        ward_agent::client::connect(&h.socket)
            .await
            .unwrap()
            .push_grant(pb::PushGrantRequest {
                grant: Some(later),
                ..Default::default()
            })
            .await
            .expect("a scheduled grant is accepted")
    });
    let (code, _, err) = h.grant("now", "10m");
    assert_eq!(code, 0, "{err}");
    let started = std::time::Instant::now();
    while !h
        .states()
        .contains(&("later".to_owned(), "revoked".to_owned()))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            h.states()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        h.states()
            .contains(&("now".to_owned(), "active".to_owned()))
    );
    assert!(
        h.audit()
            .iter()
            .any(|r| r["kind"] == "grant_refused" && r["grant_id"] == "later"),
        "the refusal is audited"
    );
    drop(w);
    let _w = h.start();
    assert_eq!(
        h.connect(),
        OpenOutcome::Opened,
        "restarts fine; `now` holds"
    );
}

#[test]
fn every_bad_grant_is_refused_whole_with_its_field_named() {
    let h = host("valid", "");
    let _wardd = h.start();
    let net = format!("127.0.0.1:{}", h.addr.port());
    let unmanaged = rel(h.sb.unmanaged.path());
    let own_tree = format!("{}/", h.dir.path().display());
    let own_state = format!("{}/state/grants.db", h.dir.path().display());
    let cases: [(&[&str], &str); 9] = [
        (
            // A tree above ward's own config, state and audit log.
            &[
                "grant", "--user", "root", "--write", &own_tree, "--for", "5m", "--reason", "x",
            ],
            "reaches ward's own",
        ),
        (
            // ward's grant store itself.
            &[
                "grant", "--user", "root", "--write", &own_state, "--for", "5m", "--reason", "x",
            ],
            "reaches ward's own",
        ),
        (
            // A cgroup outside every managed subtree: a grant there would
            // reach processes ward does not enforce on.
            &[
                "grant",
                "--workload",
                &unmanaged,
                "--connect",
                &net,
                "--for",
                "5m",
                "--reason",
                "x",
            ],
            "subject.workload",
        ),
        (
            &[
                "grant",
                "--user",
                "no-such-user-ward",
                "--connect",
                &net,
                "--for",
                "5m",
                "--reason",
                "x",
            ],
            "subject.user",
        ),
        (
            &[
                "grant",
                "--user",
                "root",
                "--read",
                "srv/prod/",
                "--for",
                "5m",
                "--reason",
                "x",
            ],
            "objects[0].path_prefix",
        ),
        (
            &[
                "grant",
                "--user",
                "root",
                "--read",
                "/srv/../etc/shadow",
                "--for",
                "5m",
                "--reason",
                "x",
            ],
            "objects[0].path",
        ),
        (
            &[
                "grant",
                "--user",
                "root",
                "--connect",
                "10.0.0.1/33:80",
                "--for",
                "5m",
                "--reason",
                "x",
            ],
            "objects[0].network",
        ),
        (
            &[
                "grant",
                "--user",
                "root",
                "--connect",
                &net,
                "--for",
                "2h",
                "--reason",
                "x",
            ],
            "expires_at_unix_ms",
        ),
        (
            &[
                "grant",
                "--user",
                "root",
                "--connect",
                &net,
                "--for",
                "5m",
                "--reason",
                " ",
            ],
            "reason",
        ),
    ];
    for (args, field) in cases {
        let (code, _, err) = h.ward(args);
        assert_eq!(code, 5, "{args:?}: {err}");
        assert!(err.contains(field), "{args:?} must name {field}: {err}");
    }
    // Cases the CLI cannot even express, sent as raw gRPC.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = ward_proto::v1::Grant {
        id: "raw".into(),
        subject: Some(ward_proto::v1::Subject {
            kind: Some(ward_proto::v1::subject::Kind::User("root".into())),
        }),
        operations: vec![ward_proto::v1::Operation::Connect as i32],
        objects: vec![ward_proto::v1::Object {
            kind: Some(ward_proto::v1::object::Kind::Network(format!(
                "127.0.0.1/32:{}",
                h.addr.port()
            ))),
        }],
        expires_at_unix_ms: now + 60_000,
        reason: "x".into(),
        ..Default::default()
    };
    let empty_objects = ward_proto::v1::Grant {
        objects: vec![],
        ..base.clone()
    };
    let in_the_past = ward_proto::v1::Grant {
        expires_at_unix_ms: now - 1_000,
        ..base.clone()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt.block_on(ward_agent::client::connect(&h.socket)).unwrap();
    for (grant, field) in [
        (empty_objects, "objects"),
        (in_the_past, "expires_at_unix_ms"),
    ] {
        let err = rt
            .block_on(client.push_grant(ward_proto::v1::PushGrantRequest {
                grant: Some(grant),
                ..Default::default()
            }))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{}",
            err.message()
        );
    }
    assert!(h.grants().is_empty(), "nothing was stored");
    assert_eq!(h.connect(), DENIED, "and nothing was enforced");
}

#[test]
fn a_grant_for_a_cgroup_inside_a_managed_one_reaches_that_cgroup_only() {
    // The kernel applies every listed cgroup on a task's route to the root:
    // a grant for `managed/app` opens `managed/app` (and below), not its
    // sibling `managed/other`, and explain says the same.
    let h = host("subcg", "");
    let app = ward_agent::cgroup::OwnedCgroup::create(h.sb.managed.path(), "app").unwrap();
    let other = ward_agent::cgroup::OwnedCgroup::create(h.sb.managed.path(), "other").unwrap();
    let _wardd = h.start();
    let target = format!("127.0.0.1:{}", h.addr.port());
    let (code, _, err) = h.ward(&[
        "grant",
        "--workload",
        &rel(app.path()),
        "--connect",
        &target,
        "--for",
        "5m",
        "--reason",
        "INC-7",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(connect_as_child(Some(&app), h.addr), OpenOutcome::Opened);
    assert_eq!(connect_as_child(Some(&other), h.addr), DENIED);
    assert_eq!(h.connect(), DENIED, "the managed parent itself");
    let explain = |cg: &Path| {
        let (code, out, _) = h.ward(&[
            "explain",
            "--workload",
            &rel(cg),
            "--connect",
            &target,
            "--json",
        ]);
        (code, out)
    };
    assert_eq!(explain(app.path()).0, 0, "explain agrees: app is allowed");
    assert_eq!(
        explain(other.path()).0,
        10,
        "explain agrees: other is denied"
    );
    drop(app);
    drop(other);
}

#[test]
fn a_crash_between_store_and_kernel_heals_on_restart() {
    let h = host("crash", "");
    // Push: killed after the grant is stored, before the kernel is updated.
    let mut wardd = Wardd::start(
        &h.config,
        &h.socket,
        &[("WARD_TEST_FAILPOINT", "after-store-insert")],
    );
    let (code, _, _) = h.grant("g-crash", "10m");
    assert_ne!(code, 0, "the call dies with the agent");
    let status = wardd.wait_dead();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert_eq!(
        h.connect(),
        DENIED,
        "the kernel never saw the grant; nothing opened"
    );
    let mut wardd = h.start();
    assert_eq!(h.grants()[0]["state"], "active", "the store kept it");
    assert_eq!(
        h.connect(),
        OpenOutcome::Opened,
        "restart re-armed it: kernel and store agree"
    );
    wardd.stop();

    // Revoke: killed after the store says revoked, before the kernel knows.
    let mut wardd = Wardd::start(
        &h.config,
        &h.socket,
        &[("WARD_TEST_FAILPOINT", "after-store-end")],
    );
    let (code, out, err) = h.ward(&["revoke", "g-crash"]);
    assert_ne!(code, 0, "{out}{err}\n{}", wardd.log());
    wardd.wait_dead();
    let _wardd = h.start();
    assert_eq!(h.grants()[0]["state"], "revoked");
    assert_eq!(
        h.connect(),
        DENIED,
        "restart closed it: kernel and store agree"
    );
}

#[test]
fn enforcement_stays_when_wardd_stops_and_expired_grants_are_not_rearmed() {
    let h = host("restart", "");
    let mut wardd = h.start();
    assert_eq!(h.grant("short", "2s").0, 0);
    assert_eq!(h.grant("long", "10m").0, 0);
    let status = wardd.stop();
    assert!(
        status.success(),
        "SIGTERM is a clean shutdown:\n{}",
        wardd.log()
    );
    assert_eq!(
        h.connect(),
        OpenOutcome::Opened,
        "grants hold with no agent running"
    );
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(
        h.ward(&["revoke", "long"]).0,
        3,
        "exit 3: wardd is not running"
    );
    let _wardd = h.start();
    let states = h.states();
    assert!(
        states.contains(&("short".into(), "expired".into())),
        "{states:?}"
    );
    assert_eq!(h.ward(&["revoke", "long"]).0, 0);
    assert_eq!(h.connect(), DENIED);
    let (code, _, _) = h.ward(&["revoke", "long"]);
    assert_eq!(code, 5, "revoking an ended grant is refused");
}

#[test]
fn a_bad_config_names_the_key_and_line_and_wardd_refuses_to_start() {
    let dir = TempDir::new("badconf");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[agent]\nsocket = \"/tmp/x.sock\"\n\n[protect]\npaths = [\"/srv/prod/\"]\nnetwork = [\"10.0.0.0/8:80\"]\n").unwrap();
    let (code, _, err) = ward_tests::run(
        &ward_tests::wardd_bin(),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("network") && err.contains("line 6"), "{err}");
    let (code, out, _) = ward_tests::run(
        &ward_tests::wardd_bin(),
        &["--config", "/nonexistent.toml", "--check-config"],
    );
    assert_eq!(code, 1, "{out}");
}
