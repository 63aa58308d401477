//! The demo, as a test: the whole JIT flow in the VM. `wardd` enforces the
//! shipped sample config; `ward-coordinator` runs beside it with the
//! shipped sample request policy. alice asks with a reason, bob approves,
//! the signed grant reaches the agent, alice reads and connects, and at the
//! deadline the kernel ends the grant and the use she had open. The
//! coordinator's audit and the agent's show every step. `cargo xtask demo`
//! runs this test with its narration shown.

use std::{
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use ward_tests::{
    Identity, OpenOutcome, TempDir,
    holder::{Holder, Target, Use},
    pki::{Ca, ca, write_leaf},
    wardd::Wardd,
};

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
const SAMPLE_REQUEST_POLICY: &str = include_str!("../../../dist/coordinator.cedar");

/// The coordinator, as a process beside the agent, and how people reach it.
struct Coordinator {
    dir: TempDir,
    ca: Ca,
    child: std::process::Child,
    public_key: String,
}

const COORDINATOR: &str = "127.0.0.1:7444";

impl Coordinator {
    /// Starts `ward-coordinator serve` with the sample request policy and
    /// directory, its TLS from a fresh CA.
    fn start() -> Coordinator {
        let dir = TempDir::new("demo-coordinator");
        let ca = ca("ward demo CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        write_leaf(&ca, dir.path(), "localhost", false);
        let key = dir.path().join("signing.pk8");
        let out = std::process::Command::new(ward_tests::coordinator_bin())
            .args(["keygen", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        std::fs::write(dir.path().join("coordinator.cedar"), SAMPLE_REQUEST_POLICY).unwrap();
        std::fs::write(dir.path().join("directory.toml"), SAMPLE_DIRECTORY).unwrap();
        std::fs::write(
            dir.path().join("coordinator.toml"),
            format!(
                "listen = \"{COORDINATOR}\"\ncert = \"localhost.pem\"\nkey = \"localhost.key\"\n\
                 client_ca = \"ca.pem\"\nstate_dir = \"state\"\nsigning_key = \"signing.pk8\"\n\
                 admins = [\"security-oncall\"]\n\
                 [policy]\nfiles = [\"coordinator.cedar\"]\ndirectory = \"directory.toml\"\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("coordinator.log")).unwrap();
        let child = std::process::Command::new(ward_tests::coordinator_bin())
            .args(["serve", "--config"])
            .arg(dir.path().join("coordinator.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        eventually("the coordinator to listen", || {
            std::net::TcpStream::connect(COORDINATOR).ok()
        });
        Coordinator {
            dir,
            ca,
            child,
            public_key,
        }
    }

    /// The agent's `[coordinator]` section for host `host`.
    fn agent_section(&self, host: &str) -> String {
        let (cert, key) = write_leaf(&self.ca, self.dir.path(), &format!("{host}.agent"), true);
        format!(
            "\n[coordinator]\nurl = \"https://{COORDINATOR}\"\ndomain = \"localhost\"\n\
             ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nhost = \"{host}\"\n\
             public_keys = [\"{}\"]\n",
            self.dir.path().join("ca.pem").display(),
            cert.display(),
            key.display(),
            self.public_key
        )
    }

    /// `ward ARGS` as `who` (their client certificate), shown as they
    /// would see it.
    fn ward(&self, who: &str, args: &[&str]) -> (i32, String) {
        println!("{who}$ ward {}", args.join(" "));
        let (cert, key) = write_leaf(&self.ca, self.dir.path(), who, true);
        let out = std::process::Command::new(ward_tests::ward_bin())
            .args(args)
            .env("WARD_COORDINATOR", format!("https://{COORDINATOR}"))
            .env("WARD_TLS_DOMAIN", "localhost")
            .env("WARD_TLS_CA", self.dir.path().join("ca.pem"))
            .env("WARD_TLS_CERT", cert)
            .env("WARD_TLS_KEY", key)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        print!("{stdout}{stderr}");
        (out.status.code().unwrap_or(-1), stdout)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn jit_access_from_request_to_review_to_expiry() {
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward");
    std::fs::create_dir_all("/srv/prod/keys").unwrap();
    std::fs::write("/srv/prod/app.log", "prod secrets\n").unwrap();
    std::fs::write("/srv/prod/keys/signing.key", "-----BEGIN KEY-----\n").unwrap();
    std::fs::create_dir_all("/srv/finance").unwrap();
    std::fs::write("/srv/finance/q3.csv", "revenue\n").unwrap();
    std::fs::create_dir_all("/etc/ward").unwrap();
    // The sample's backup workload, so every principal resolves.
    let cg = ward_agent::cgroup::cgroup2_mount().unwrap();
    std::fs::create_dir_all(cg.join("system.slice/backup.service")).unwrap();
    let db = TcpListener::bind("127.0.0.1:5432").unwrap();
    let db_addr = db.local_addr().unwrap();

    say("the coordinator starts with the sample request policy (dist/coordinator.cedar)");
    print!("{SAMPLE_REQUEST_POLICY}");
    let coordinator = Coordinator::start();
    let config = Path::new("/etc/ward/agent.toml");
    // The shipped samples, as `cargo xtask install` places them, with the
    // coordinator this host (prod1, env=prod) takes signed grants from.
    std::fs::write(
        config,
        SAMPLE_CONFIG.replace("max_grant_duration = \"8h\"", "max_grant_duration = \"1h\"")
            + &coordinator.agent_section("prod1"),
    )
    .unwrap();
    std::fs::write("/etc/ward/policy.cedar", SAMPLE_POLICY).unwrap();
    std::fs::write("/etc/ward/directory.toml", SAMPLE_DIRECTORY).unwrap();
    say("the agent's sample policy (dist/policy.cedar): standing access is the exception");
    print!("{SAMPLE_POLICY}");
    let socket = Path::new("/run/ward/agent.sock");
    let mut wardd = Wardd::start(config, socket, &[]);
    say("wardd compiles the policy into the kernel and subscribes to the coordinator");
    ward(socket, &["status"]);
    eventually("the agent to subscribe", || {
        std::fs::read_to_string(coordinator.dir.path().join("coordinator.log"))
            .ok()
            .filter(|l| l.contains("agent subscribed"))
    });

    say("1. bob (finance) reads finance data: standing access, by policy");
    assert_eq!(
        ward_tests::open_as(BOB_ID, Path::new("/srv/finance/q3.csv")),
        OpenOutcome::Opened
    );
    println!("bob$ cat /srv/finance/q3.csv\nrevenue");

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

    say(
        "3. alice asks the coordinator, with a reason: production reads are approved by policy at once",
    );
    let ask = |what: &[&str]| -> serde_json::Value {
        let mut args = vec!["request"];
        args.extend_from_slice(what);
        args.extend_from_slice(&[
            "--on",
            "host=prod1",
            "--for",
            "20s",
            "--reason",
            "INC-42: checkout errors",
            "--json",
        ]);
        let (code, out) = coordinator.ward("alice", &args);
        assert_eq!(code, 0);
        serde_json::from_str(&out).unwrap()
    };
    let reads = ask(&["--read", "/srv/prod/"]);
    let read_at = Instant::now();
    assert_eq!(reads["state"], "approved", "{reads}");
    say("   the database needs one lead's approval; nobody approves their own request");
    let db_request = ask(&["--connect", "127.0.0.1:5432"]);
    let id = db_request["id"].as_str().unwrap().to_owned();
    assert_eq!(db_request["state"], "pending", "{db_request}");
    assert_eq!(db_request["approvals_required"], 1, "{db_request}");
    let (code, _) = coordinator.ward("alice", &["approve", &id]);
    assert_eq!(code, 4);

    say(
        "4. bob (a lead) reviews and approves: the coordinator signs the grant and sends it to prod1",
    );
    let (code, out) = coordinator.ward("bob", &["requests", "--pending"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id), "{out}");
    let (code, _) = coordinator.ward("bob", &["approve", &id, "--reason", "INC-42 is real; go"]);
    assert_eq!(code, 0);
    let approved_at = Instant::now();

    say("5. the grant is in the kernel: alice reads and connects, and keeps both open");
    let read_id = reads["id"].as_str().unwrap().to_owned();
    let grants = eventually("both signed grants on the agent", || {
        let (_, grants, _) = ward_tests::wardd::ward_as(socket, None, &["grants"]);
        (grants.contains(&id) && grants.contains(&read_id)).then_some(grants)
    });
    println!("$ ward grants\n{grants}");
    assert_eq!(alice_reads("/srv/prod/app.log"), OpenOutcome::Opened);
    assert_eq!(alice_connects(db_addr), OpenOutcome::Opened);
    let mut file = Holder::start_as(
        ALICE,
        ALICE,
        Target::File {
            path: Path::new("/srv/prod/app.log"),
            flags: libc::O_RDONLY,
        },
    );
    assert_eq!(file.opened, OpenOutcome::Opened);
    let mut session = Holder::start_as(ALICE, ALICE, Target::Tcp(db_addr));
    assert_eq!(session.opened, OpenOutcome::Opened);
    let (_peer, _) = db.accept().unwrap();
    assert_eq!(file.try_use(Use::Read), OpenOutcome::Opened);
    assert_eq!(session.try_use(Use::Send), OpenOutcome::Opened);
    println!(
        "alice$ tail -f /srv/prod/app.log   (held open)\nalice$ psql   (connected, session open)"
    );

    say("6. the secrets stay closed: a forbid is a guardrail no grant overrides");
    assert_eq!(
        alice_reads("/srv/prod/keys/signing.key"),
        OpenOutcome::Refused(libc::EACCES)
    );

    say("7. at the deadline the kernel ends the grant, and the file and session alice had open");
    let deadline = read_at.max(approved_at) + Duration::from_secs(20);
    while Instant::now() < deadline + Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let read = file.try_use(Use::Read);
    println!("alice$ (the held log) read: {read:?}");
    assert!(matches!(read, OpenOutcome::Refused(_)), "{read:?}");
    let send = session.try_use(Use::Send);
    println!("alice$ (the open session) send: {send:?}");
    assert!(matches!(send, OpenOutcome::Refused(_)), "{send:?}");
    assert_eq!(
        alice_reads("/srv/prod/app.log"),
        OpenOutcome::Refused(libc::EACCES)
    );
    assert_eq!(alice_connects(db_addr), OpenOutcome::Refused(libc::EPERM));

    say("8. the coordinator's audit shows every step");
    let audit = eventually("the expiry in the coordinator's audit", || {
        let (_, audit) = coordinator.ward("bob", &["audit", "--json"]);
        audit.contains("\"expired\"").then_some(audit)
    });
    coordinator.ward("bob", &["audit"]);
    for kind in ["created", "refused", "approval", "approved", "expired"] {
        assert!(
            audit.contains(&format!("\"kind\":\"{kind}\"")),
            "audit lacks {kind}: {audit}"
        );
    }
    say("   and so does the agent's");
    println!("$ cat /var/log/ward/audit.jsonl");
    let audit = std::fs::read_to_string("/var/log/ward/audit.jsonl").unwrap();
    print!("{audit}");
    for kind in ["grant_pushed", "grant_used", "grant_expired", "deny"] {
        assert!(
            audit.contains(&format!("\"kind\":\"{kind}\"")),
            "audit lacks {kind}"
        );
    }
    say(
        "done: deny -> request -> review -> signed grant -> allow -> expiry in the kernel, sessions ended",
    );
    drop((file, session));
    assert!(wardd.stop().success());
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward");
}
