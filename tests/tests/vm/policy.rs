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
        Agent::start_managing(tag, policy, directory, (1000, 1999))
    }

    fn start_managing(tag: &str, policy: &str, directory: &str, uids: (u32, u32)) -> Agent {
        let dir = TempDir::new(tag);
        std::fs::write(dir.path().join("policy.cedar"), policy).unwrap();
        std::fs::write(dir.path().join("directory.toml"), directory).unwrap();
        let config = crate::support::agent_config(
            dir.path(),
            &format!("/sys/fs/bpf/ward-{tag}"),
            &format!(
                r#"managed_uids = [[{}, {}]]

[policy]
files = ["policy.cedar"]
directory = "directory.toml"
reload_interval = "100ms"
"#,
                uids.0, uids.1
            ),
        );
        let wardd = Wardd::start(&config, &dir.path().join("agent.sock"), &[]);
        Agent { dir, wardd }
    }

    /// `ward explain --user USER --read FILE --json`.
    fn explain(&self, user: &str) -> serde_json::Value {
        self.explain_read(user, FILE)
    }

    fn explain_read(&self, user: &str, file: &str) -> serde_json::Value {
        self.ward_json(&["explain", "--user", user, "--read", file, "--json"])
    }

    /// `ward ARGS` (with `--json` among them), parsed.
    fn ward_json(&self, args: &[&str]) -> serde_json::Value {
        let (code, out, err) =
            ward_tests::wardd::ward_as(&self.dir.path().join("agent.sock"), None, args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("ward {args:?} ({code}): {e}: {out} {err}"))
    }

    fn applied_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"kind\":\"policy_applied\""))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
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

/// A generated organisation: 10,000 people in five departments at three
/// clearances (15 principal classes), and each department's internal and
/// secret trees.
const DEPTS: [&str; 5] = ["eng", "sales", "ops", "hr", "fin"];
const PEOPLE: u32 = 10_000;
const FIRST_UID: u32 = 20_000;

const ORG_POLICY: &str = r#"
@id("dept-read")
permit(principal is User, action == Action::"read", resource is Path)
when { principal has department && resource has department
       && principal.department == resource.department };
@id("secret-needs-clearance")
forbid(principal is User, action == Action::"read", resource is Path)
when { resource has classification && resource.classification == "secret" }
unless { principal has clearance && principal.clearance >= 3 };
"#;

fn person(i: u32) -> (String, &'static str, u32) {
    (format!("p{i:05}"), DEPTS[(i % 5) as usize], 1 + (i / 5) % 3)
}

fn org_directory(moved: Option<(u32, &str)>) -> String {
    let mut d = String::with_capacity(64 * PEOPLE as usize);
    for i in 0..PEOPLE {
        let (name, mut dept, clearance) = person(i);
        if let Some((who, to)) = moved
            && who == i
        {
            dept = to;
        }
        d.push_str(&format!(
            "[users.{name}]\ndepartment = \"{dept}\"\nclearance = {clearance}\n"
        ));
    }
    for dept in DEPTS {
        d.push_str(&format!(
            "[paths.\"/srv/org/{dept}/\"]\ndepartment = \"{dept}\"\n\
             [paths.\"/srv/org/{dept}-secret/\"]\ndepartment = \"{dept}\"\n\
             classification = \"secret\"\n"
        ));
    }
    d
}

/// The policy, written plainly: what the kernel must decide.
fn may_read(dept: &str, clearance: u32, file_dept: &str, secret: bool) -> bool {
    dept == file_dept && (!secret || clearance >= 3)
}

/// Adds the generated people to /etc/passwd; the original is put back on
/// drop (the VM is this suite's alone).
struct Passwd(String);

impl Passwd {
    fn extend() -> Passwd {
        let original = std::fs::read_to_string("/etc/passwd").unwrap();
        let mut text = original.clone();
        for i in 0..PEOPLE {
            let uid = FIRST_UID + i;
            text.push_str(&format!(
                "{}:x:{uid}:{uid}::/nonexistent:/bin/false\n",
                person(i).0
            ));
        }
        replace(Path::new("/etc/passwd"), &text);
        Passwd(original)
    }
}

impl Drop for Passwd {
    fn drop(&mut self) {
        replace(Path::new("/etc/passwd"), &self.0);
    }
}

#[test]
fn ten_thousand_people_compile_into_classes_and_each_class_is_enforced() {
    for dept in DEPTS {
        for tree in [dept.to_owned(), format!("{dept}-secret")] {
            std::fs::create_dir_all(format!("/srv/org/{tree}")).unwrap();
            std::fs::write(format!("/srv/org/{tree}/plan.md"), "plan\n").unwrap();
        }
    }
    let passwd = Passwd::extend();
    let mut agent = Agent::start_managing(
        "cedar-org",
        ORG_POLICY,
        &org_directory(None),
        (FIRST_UID, FIRST_UID + PEOPLE - 1),
    );

    // The kernel holds classes x resources, not people x resources.
    let shown = agent.ward_json(&["policy", "show", "--json"]);
    assert_eq!(shown["principals"], PEOPLE, "{shown}");
    assert_eq!(shown["principal_classes"], 15, "{shown}");
    assert_eq!(shown["classed_principals"], PEOPLE, "{shown}");
    let per_person = shown["decisions"].as_u64().unwrap();
    let per_class = shown["class_decisions"].as_u64().unwrap();
    assert!(per_person >= u64::from(PEOPLE), "{shown}");
    assert!(per_class <= 15 * 10, "{shown}");
    let status = agent.ward_json(&["status", "--json"]);
    let path_rules = status["path_rules"].as_u64().unwrap();
    assert!(
        path_rules < 200,
        "{path_rules} file rules for {PEOPLE} people: the kernel must hold classes"
    );

    // A real read for a sampled person of each class, of every tree.
    for i in 0..15 {
        let (name, dept, clearance) = person(i);
        let uid = FIRST_UID + i;
        let who = Identity {
            login_uid: None,
            uid,
            gid: uid,
        };
        for file_dept in DEPTS {
            for secret in [false, true] {
                let file = format!(
                    "/srv/org/{file_dept}{}/plan.md",
                    if secret { "-secret" } else { "" }
                );
                let want = if may_read(dept, clearance, file_dept, secret) {
                    OpenOutcome::Opened
                } else {
                    DENIED
                };
                assert_eq!(
                    open_as(who, Path::new(&file)),
                    want,
                    "{name} ({dept}, clearance {clearance}) reading {file}"
                );
            }
        }
    }
    // explain names the deciding policy, from the kernel's class entries.
    let x = agent.explain_read("p00000", "/srv/org/eng/plan.md");
    assert_eq!(x["allowed"], true, "{x}");
    assert!(x["rule_id"].as_str().unwrap().contains("dept-read"), "{x}");
    let x = agent.explain_read("p00000", "/srv/org/eng-secret/plan.md");
    assert_eq!(x["allowed"], false, "{x}");
    assert!(
        x["rule_id"]
            .as_str()
            .unwrap()
            .contains("secret-needs-clearance"),
        "{x}"
    );

    // p00000 (eng, clearance 1) moves to sales: one membership update.
    let before = agent.applied_records().len();
    replace(
        &agent.dir.path().join("directory.toml"),
        &org_directory(Some((0, "sales"))),
    );
    wait_for("the directory edit", Duration::from_secs(60), || {
        agent.applied_records().len() > before
    });
    let record = agent.applied_records().pop().unwrap();
    assert_eq!(record["detail"]["mode"], "incremental", "{record}");
    assert_eq!(
        record["detail"]["entries"], 1,
        "moving into a class the kernel holds is one map update: {record}"
    );
    let p0 = Identity {
        login_uid: None,
        uid: FIRST_UID,
        gid: FIRST_UID,
    };
    assert_eq!(open_as(p0, Path::new("/srv/org/eng/plan.md")), DENIED);
    assert_eq!(
        open_as(p0, Path::new("/srv/org/sales/plan.md")),
        OpenOutcome::Opened
    );
    assert!(agent.wardd.stop().success(), "{}", agent.wardd.log());
    drop(passwd);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/ward-cedar-org");
}
