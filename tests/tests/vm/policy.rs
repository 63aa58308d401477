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
    // Leave half a minute before the boundary to set up (an agent start
    // under emulation took 16 s once), and keep both windows inside one day.
    loop {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if secs % 60 <= 30 && minute_now().0 < 1438 {
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

    // Just before the boundary alice still reads; at it she is refused,
    // by the kernel's own deadline.
    // The attempt forks a child; under software emulation on a loaded host
    // that alone has taken more than 30 ms, so "just before" is 300 ms.
    while SystemTime::now() + Duration::from_millis(300) < boundary {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = open_as(ALICE, Path::new(FILE));
    assert!(
        SystemTime::now() < boundary,
        "the attempt before the boundary finished after it: the guest is too slow to tell"
    );
    while SystemTime::now() < boundary {
        std::hint::spin_loop();
    }
    let first_after = open_as(ALICE, Path::new(FILE));
    let late = SystemTime::now().duration_since(boundary).unwrap();
    assert_eq!(before, OpenOutcome::Opened, "no early cut-off");
    assert_eq!(
        first_after, DENIED,
        "the window closed at {boundary:?} (+{late:?})"
    );

    // bob's window opens at the same boundary, when the agent recompiles.
    let opened = Instant::now();
    wait_for("bob's window to open", Duration::from_secs(5), || {
        open_as(BOB, Path::new(FILE)) == OpenOutcome::Opened
    });
    println!(
        "window closed for alice at the boundary; opened for bob {:?} after it",
        late + opened.elapsed()
    );
    let log = agent.wardd.log();
    assert!(agent.wardd.stop().success(), "{log}");
    assert!(log.contains("time boundary"), "{log}");
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward-cedar-window");
}
