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
/// Asks until `ask` has its answer, for up to 30 s (a TCG guest under a
/// loaded host is slow, never this slow).
fn eventually<T>(what: &str, mut ask: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(answer) = ask() {
            return answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

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

const BOB_ID: Identity = Identity {
    login_uid: None,
    uid: 1001,
    gid: 1001,
};

const SAMPLE_CONFIG: &str = include_str!("../../../dist/agent.toml");
const SAMPLE_POLICY: &str = include_str!("../../../dist/policy.cedar");
const SAMPLE_DIRECTORY: &str = include_str!("../../../dist/directory.toml");

#[test]
fn jit_access_from_deny_to_allow_to_expiry() {
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward");
    std::fs::create_dir_all("/srv/prod/keys").unwrap();
    std::fs::write("/srv/prod/app.log", "prod secrets\n").unwrap();
    std::fs::create_dir_all("/srv/finance").unwrap();
    std::fs::write("/srv/finance/q3.csv", "revenue\n").unwrap();
    std::fs::create_dir_all("/etc/ward").unwrap();
    // The sample's backup workload, so every principal resolves.
    let cg = ward_agent::cgroup::cgroup2_mount().unwrap();
    std::fs::create_dir_all(cg.join("system.slice/backup.service")).unwrap();
    let db = TcpListener::bind("127.0.0.1:5432").unwrap();
    let db_addr = db.local_addr().unwrap();
    let config = Path::new("/etc/ward/agent.toml");
    // The shipped samples, as `cargo xtask install` places them; the
    // demo only shortens the longest grant.
    std::fs::write(
        config,
        SAMPLE_CONFIG.replace("max_grant_duration = \"8h\"", "max_grant_duration = \"1h\""),
    )
    .unwrap();
    std::fs::write("/etc/ward/policy.cedar", SAMPLE_POLICY).unwrap();
    std::fs::write("/etc/ward/directory.toml", SAMPLE_DIRECTORY).unwrap();
    say("the sample policy (dist/policy.cedar): standing access is the exception");
    print!("{SAMPLE_POLICY}");
    say("the sample directory (dist/directory.toml): every resource listed is protected");
    print!("{SAMPLE_DIRECTORY}");
    let socket = Path::new("/run/ward/agent.sock");
    let mut wardd = Wardd::start(config, socket, &[]);
    say("wardd compiles the policy into the kernel (host label env=prod; uids 1000-59999 managed)");
    ward(socket, &["status"]);
    let (code, _) = ward(socket, &["policy", "show"]);
    assert_eq!(code, 0);

    say("1. bob (finance) reads finance data: standing access, by policy");
    assert_eq!(
        ward_tests::open_as(BOB_ID, Path::new("/srv/finance/q3.csv")),
        OpenOutcome::Opened
    );
    println!("bob$ cat /srv/finance/q3.csv\nrevenue");
    let (code, out) = ward(
        socket,
        &["explain", "--user", "bob", "--read", "/srv/finance/q3.csv"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("dept-read"), "{out}");

    say("2. alice (platform, on call) has no standing access to production: denied");
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

    say("3. bob is not on call: policy makes him ineligible for a grant");
    let (code, _) = ward(
        socket,
        &[
            "grant",
            "--user",
            "bob",
            "--read",
            "/srv/prod/",
            "--for",
            "20s",
            "--reason",
            "curious",
        ],
    );
    assert_eq!(code, 4);

    say("4. an operator grants alice read access to /srv/prod/ and the database for 20 s");
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

    say("5. alice reads, and connects");
    assert_eq!(alice_reads("/srv/prod/app.log"), OpenOutcome::Opened);
    assert_eq!(alice_connects(db_addr), OpenOutcome::Opened);
    let (code, _) = ward(
        socket,
        &["explain", "--user", "alice", "--read", "/srv/prod/app.log"],
    );
    assert_eq!(code, 0);

    say("6. the secrets stay closed: a forbid is a guardrail no grant overrides");
    let (code, _) = ward(
        socket,
        &[
            "grant",
            "--user",
            "alice",
            "--read",
            "/srv/prod/keys/",
            "--for",
            "20s",
            "--reason",
            "INC-42",
        ],
    );
    assert_eq!(code, 4);

    say("7. ward events shows each use of the grant, and the denies before it");
    // Events reach the agent through the kernel's ring buffer: asked for
    // until they are there, not after a guessed pause.
    let events = eventually("the grant's use and the denies in ward events", || {
        let (_, events) = ward(socket, &["events", "--recent", "20"]);
        (events.contains("allow_by_grant")
            && events.contains("inc-42-alice")
            && events.contains("deny"))
        .then_some(events)
    });
    assert!(events.contains("deny"), "{events}");

    say("8. the grant expires in the kernel at its deadline");
    let deadline = granted_at + Duration::from_secs(20);
    while Instant::now() < deadline + Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(200));
    }

    say("9. alice is denied again");
    assert_eq!(
        alice_reads("/srv/prod/app.log"),
        OpenOutcome::Refused(libc::EACCES)
    );
    assert_eq!(alice_connects(db_addr), OpenOutcome::Refused(libc::EPERM));

    say("10. ward grants and the audit log show the lifecycle");
    let grants = eventually("the grant listed as expired", || {
        let (_, grants) = ward(socket, &["grants", "--all"]);
        (grants.contains("inc-42-alice") && grants.contains("expired")).then_some(grants)
    });
    assert!(grants.contains("inc-42-alice"), "{grants}");
    println!("$ cat /var/log/ward/audit.jsonl");
    let audit = std::fs::read_to_string("/var/log/ward/audit.jsonl").unwrap();
    print!("{audit}");
    for kind in [
        "grant_pushed",
        "grant_refused",
        "grant_used",
        "grant_expired",
        "deny",
    ] {
        assert!(
            audit.contains(&format!("\"kind\":\"{kind}\"")),
            "audit lacks {kind}"
        );
    }
    say(
        "done: policy -> deny -> eligible grant -> allow -> expiry -> deny, all enforced in the kernel",
    );
    assert!(wardd.stop().success());
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward");
}
