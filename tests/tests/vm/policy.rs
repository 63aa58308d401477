//! Cedar policy enforced by BPF LSM in the VM: a compiled policy allows
//! alice and denies bob a real file read; a directory edit flips it with
//! no restart; a time-window boundary is crossed in both directions.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ward_tests::{Identity, OpenOutcome, TempDir, open_as, wardd::Wardd};

const ALICE: Identity = Identity {
    login_uid: None,
    uid: 1000,
    gid: 1000,
};
const BOB: Identity = Identity {
    login_uid: None,
    uid: 1001,
    gid: 1001,
};
const DENIED: OpenOutcome = OpenOutcome::Refused(libc::EACCES);
const FILE: &str = "/srv/eng/design.md";

const DEPARTMENTS: &str = r#"
@id("dept-read")
permit(principal is User, action == Action::"read", resource is Path)
when { principal has department && resource has department
       && principal.department == resource.department };
"#;

fn directory(alice: &str, bob: &str) -> String {
    format!(
        "[users.alice]\ndepartment = \"{alice}\"\n[users.bob]\ndepartment = \"{bob}\"\n\
         [paths.\"/srv/eng/\"]\ndepartment = \"eng\"\n"
    )
}

/// Replaces a file the way editors and config management do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Agent {
    dir: TempDir,
    wardd: Wardd,
}

impl Agent {
    fn start(tag: &str, policy: &str, directory: &str) -> Agent {
        let dir = TempDir::new(tag);
        std::fs::write(dir.path().join("policy.cedar"), policy).unwrap();
        std::fs::write(dir.path().join("directory.toml"), directory).unwrap();
        let config = crate::support::agent_config(
            dir.path(),
            &format!("/sys/fs/bpf/ward-{tag}"),
            r#"managed_uids = [[1000, 1999]]

[policy]
files = ["policy.cedar"]
directory = "directory.toml"
reload_interval = "100ms"
"#,
        );
        let wardd = Wardd::start(&config, &dir.path().join("agent.sock"), &[]);
        Agent { dir, wardd }
    }

    /// `ward explain --user USER --read FILE --json`.
    fn explain(&self, user: &str) -> serde_json::Value {
        let (code, out, err) = ward_tests::wardd::ward_as(
            &self.dir.path().join("agent.sock"),
            None,
            &["explain", "--user", user, "--read", FILE, "--json"],
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain ({code}): {e}: {out} {err}"))
    }

    fn applied(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"kind\":\"policy_applied\""))
            .count()
    }
}

fn setup_file() {
    std::fs::create_dir_all("/srv/eng").unwrap();
    std::fs::write(FILE, "design\n").unwrap();
}

#[test]
fn a_compiled_policy_decides_and_an_attribute_edit_flips_it_without_restart() {
    setup_file();
    let mut agent = Agent::start("cedar-flip", DEPARTMENTS, &directory("eng", "sales"));
    assert_eq!(open_as(ALICE, Path::new(FILE)), OpenOutcome::Opened);
    assert_eq!(open_as(BOB, Path::new(FILE)), DENIED);

    // bob moves to eng, alice to sales: the running agent recompiles.
    let applied = agent.applied();
    replace(
        &agent.dir.path().join("directory.toml"),
        &directory("sales", "eng"),
    );
    wait_for("the directory edit", Duration::from_secs(20), || {
        agent.applied() > applied
    });
    assert_eq!(open_as(ALICE, Path::new(FILE)), DENIED);
    assert_eq!(open_as(BOB, Path::new(FILE)), OpenOutcome::Opened);
    // No restart: the same process, still serving.
    assert!(agent.wardd.stop().success(), "{}", agent.wardd.log());
    let audit = std::fs::read_to_string(agent.dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"mode\":\"incremental\""), "{audit}");
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward-cedar-flip");
}

/// The current UTC minute of the day, and the instant the next one starts.
fn minute_now() -> (u64, SystemTime) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let next = UNIX_EPOCH + Duration::from_secs((secs / 60 + 1) * 60);
    ((secs % 86_400) / 60, next)
}

#[test]
fn a_time_window_closes_in_the_kernel_and_the_next_opens_at_its_boundary() {
    setup_file();
    // Leave 45 s before the boundary to set up (an agent start under
    // emulation took 16 s once), and keep both windows inside one day.
    loop {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if secs % 60 <= 15 && minute_now().0 < 1438 {
            break;
        }
        std::thread::sleep(
            minute_now()
                .1
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        );
    }
    let (m, boundary) = minute_now();
    // alice's window is this minute; bob's is the next one. Both are in eng.
    let policy = format!(
        r#"@id("alice-window")
permit(principal == User::"alice", action == Action::"read", resource in Path::"/srv/eng/")
when {{ context.minute_of_day >= {m} && context.minute_of_day < {end} }};
@id("bob-window")
permit(principal == User::"bob", action == Action::"read", resource in Path::"/srv/eng/")
when {{ context.minute_of_day >= {end} && context.minute_of_day < {after} }};
"#,
        end = m + 1,
        after = m + 2,
    );
    let mut agent = Agent::start("cedar-window", &policy, &directory("eng", "eng"));
    assert_eq!(
        open_as(ALICE, Path::new(FILE)),
        OpenOutcome::Opened,
        "alice's window is open"
    );
    assert_eq!(
        open_as(BOB, Path::new(FILE)),
        DENIED,
        "bob's window has not opened"
    );
    // The kernel's allow for alice ends at the boundary, not before: its
    // own deadline, as `ward explain` reads it from the kernel. (Timing an
    // open just before the boundary cannot tell under emulation.)
    let explained = agent.explain("alice");
    assert_eq!(explained["allowed"], true, "{explained}");
    let until = explained["expires_at_unix_ms"].as_i64().unwrap();
    let boundary_ms = boundary.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(
        (until - boundary_ms).abs() < 1000,
        "alice's allow ends at {until}, the window at {boundary_ms}: {explained}"
    );

    // Past the boundary alice is refused, by that deadline.
    while SystemTime::now() < boundary {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        open_as(ALICE, Path::new(FILE)),
        DENIED,
        "the window closed at {boundary:?}"
    );

    // bob's window opens at the same boundary, when the agent recompiles.
    wait_for("bob's window to open", Duration::from_secs(30), || {
        open_as(BOB, Path::new(FILE)) == OpenOutcome::Opened
    });
    assert_eq!(agent.explain("alice")["allowed"], false);
    let log = agent.wardd.log();
    assert!(agent.wardd.stop().success(), "{log}");
    assert!(log.contains("time boundary"), "{log}");
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward-cedar-window");
}
