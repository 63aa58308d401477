//! The demo, as a test: `wardd` enforcing a sample config in the VM, and a
//! JIT grant for alice from deny to allow to expiry. `cargo xtask demo`
//! runs this test with its narration shown.

use std::{
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use ward_tests::{Identity, OpenOutcome, wardd::Wardd};

const ALICE: u32 = 1000;

fn say(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

/// Runs `ward ARGS` as root and shows its output, as an operator would see it.
fn ward(socket: &Path, args: &[&str]) -> (i32, String) {
    println!("$ ward {}", args.join(" "));
    let (code, out, err) = ward_tests::wardd::ward_as(socket, None, args);
    print!("{out}{err}");
    (code, out)
}

const ALICE_ID: Identity = Identity {
    login_uid: None,
    uid: ALICE,
    gid: ALICE,
};

/// alice opens a file; the outcome as `cat` would report it.
fn alice_reads(path: &str) -> OpenOutcome {
    let outcome = ward_tests::open_as(ALICE_ID, Path::new(path));
    match outcome {
        OpenOutcome::Opened => println!("alice$ cat {path}\nprod secrets"),
        OpenOutcome::Refused(e) => println!(
            "alice$ cat {path}\ncat: {path}: {}",
            std::io::Error::from_raw_os_error(e)
        ),
    }
    outcome
}

fn alice_connects(addr: std::net::SocketAddr) -> OpenOutcome {
    let outcome = ward_tests::connect_as(ALICE_ID, addr);
    match outcome {
        OpenOutcome::Opened => println!("alice$ connect {addr}: connected"),
        OpenOutcome::Refused(e) => println!(
            "alice$ connect {addr}: {}",
            std::io::Error::from_raw_os_error(e)
        ),
    }
    outcome
}

#[test]
fn jit_access_from_deny_to_allow_to_expiry() {
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward");
    std::fs::create_dir_all("/srv/prod").unwrap();
    std::fs::write("/srv/prod/app.log", "prod secrets\n").unwrap();
    std::fs::create_dir_all("/etc/ward").unwrap();
    let db = TcpListener::bind("127.0.0.1:5432").unwrap();
    let db_addr = db.local_addr().unwrap();
    let config = Path::new("/etc/ward/agent.toml");
    std::fs::write(
        config,
        r#"[agent]
socket = "/run/ward/agent.sock"
state_dir = "/var/lib/ward"
audit_log = "/var/log/ward/audit.jsonl"
pin_dir = "/sys/fs/bpf/ward"
max_grant_duration = "1h"

[enforce]
managed_uids = [[1000, 1999]]

[protect]
paths = ["/srv/prod/"]
networks = ["127.0.0.1/32:5432"]
"#,
    )
    .unwrap();
    say(
        "wardd starts with a sample config: /srv/prod/ and 127.0.0.1:5432 are protected; uids 1000-1999 are managed",
    );
    println!("{}", std::fs::read_to_string(config).unwrap());
    let socket = Path::new("/run/ward/agent.sock");
    let mut wardd = Wardd::start(config, socket, &[]);
    ward(socket, &["status"]);

    say("1. alice (uid 1000) has no standing access: denied");
    assert_eq!(
        alice_reads("/srv/prod/app.log"),
        OpenOutcome::Refused(libc::EACCES)
    );
    assert_eq!(alice_connects(db_addr), OpenOutcome::Refused(libc::EPERM));
    let (code, _) = ward(
        socket,
        &["explain", "--user", "alice", "--read", "/srv/prod/app.log"],
    );
    assert_eq!(code, 10);

    say("2. an operator grants alice read access to /srv/prod/ and the database for 20 s");
    let (code, _) = ward(
        socket,
        &[
            "grant",
            "--user",
            "alice",
            "--read",
            "/srv/prod/",
            "--connect",
            "127.0.0.1:5432",
            "--for",
            "20s",
            "--reason",
            "INC-42: investigate checkout errors",
            "--id",
            "inc-42-alice",
        ],
    );
    assert_eq!(code, 0);
    let granted_at = Instant::now();

    say("3. alice reads, and connects");
    assert_eq!(alice_reads("/srv/prod/app.log"), OpenOutcome::Opened);
    assert_eq!(alice_connects(db_addr), OpenOutcome::Opened);
    let (code, _) = ward(
        socket,
        &["explain", "--user", "alice", "--read", "/srv/prod/app.log"],
    );
    assert_eq!(code, 0);

    say("4. ward events shows each use of the grant, and the denies before it");
    std::thread::sleep(Duration::from_millis(500));
    let (_, events) = ward(socket, &["events", "--recent", "20"]);
    assert!(
        events.contains("allow_by_grant") && events.contains("inc-42-alice"),
        "{events}"
    );
    assert!(events.contains("deny"), "{events}");

    say("5. the grant expires in the kernel at its deadline");
    let deadline = granted_at + Duration::from_secs(20);
    while Instant::now() < deadline + Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(200));
    }

    say("6. alice is denied again");
    assert_eq!(
        alice_reads("/srv/prod/app.log"),
        OpenOutcome::Refused(libc::EACCES)
    );
    assert_eq!(alice_connects(db_addr), OpenOutcome::Refused(libc::EPERM));

    say("7. ward grants and the audit log show the lifecycle");
    std::thread::sleep(Duration::from_millis(500));
    let (_, grants) = ward(socket, &["grants", "--all"]);
    assert!(
        grants.contains("inc-42-alice") && grants.contains("expired"),
        "{grants}"
    );
    println!("$ cat /var/log/ward/audit.jsonl");
    let audit = std::fs::read_to_string("/var/log/ward/audit.jsonl").unwrap();
    print!("{audit}");
    for kind in ["grant_pushed", "grant_used", "grant_expired", "deny"] {
        assert!(
            audit.contains(&format!("\"kind\":\"{kind}\"")),
            "audit lacks {kind}"
        );
    }
    say("done: deny -> grant -> allow -> expiry -> deny, all enforced in the kernel");
    assert!(wardd.stop().success());
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward");
}
