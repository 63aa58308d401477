//! Under systemd, wardd's log lines reach the journal with their parts as
//! fields. A real systemd-journald runs in a mount namespace of the test's
//! own (tmpfs over /run and /var/log there, so the host's journal and /run
//! are untouched); wardd is started inside it with stderr as its journal
//! stream, the way systemd starts a unit, and `journalctl -o json` reads
//! the fields back.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use ward_tests::{OpenOutcome, wardd::Wardd, wardd_bin};

use crate::daemon::host;

/// Mounts a private /run and /var/log, starts journald, then execs wardd
/// with `JOURNAL_STREAM` naming its stderr (what systemd does for a unit
/// with `StandardError=journal`).
const UNDER_JOURNALD: &str = r#"set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mkdir -p /run/systemd/journal /run/log/journal
/lib/systemd/systemd-journald </dev/null >/dev/null 2>&1 &
echo $! > "$JOURNALD_PID"
i=0
while [ ! -S /run/systemd/journal/socket ]; do
  i=$((i + 1)); [ $i -lt 200 ] || { echo "journald did not start" >&2; exit 1; }
  sleep 0.05
done
JOURNAL_STREAM="$(stat -L -c '%d:%i' /proc/self/fd/2)"
export JOURNAL_STREAM
exec "$WARDD" "$@"
"#;

/// The journal's entries from wardd, read inside its mount namespace.
fn journal(pid: u32) -> Vec<Value> {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--"])
        .args([
            "journalctl",
            "-o",
            "json",
            "--no-pager",
            "SYSLOG_IDENTIFIER=wardd",
        ])
        .output()
        .expect("nsenter journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn find<'a>(entries: &'a [Value], event: &str) -> Option<&'a Value> {
    entries.iter().find(|e| e["WARD_EVENT"] == event)
}

#[test]
fn grants_and_denials_reach_the_journal_with_their_fields() {
    let h = host("journal", "");
    let pid_file = h.dir.path().join("journald.pid");
    // Stopped however the test ends, even if wardd never starts.
    let _journald = Journald(pid_file.clone());
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        UNDER_JOURNALD,
        "sh",
    ]);
    let wardd = Wardd::spawn(
        cmd,
        &h.config,
        &h.socket,
        &[
            ("WARDD", wardd_bin().to_str().unwrap()),
            ("JOURNALD_PID", pid_file.to_str().unwrap()),
        ],
    );
    let pid = wardd.pid().unwrap();

    assert_eq!(h.connect(), OpenOutcome::Refused(libc::EPERM));
    let (code, _, err) = h.grant("g-journal", "10m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.connect(), OpenOutcome::Opened);

    let object = format!("127.0.0.1:{}", h.addr.port());
    let subject = format!("workload {}", h.managed_workload());
    let start = Instant::now();
    let entries = loop {
        let entries = journal(pid);
        if find(&entries, "grant_pushed").is_some() && find(&entries, "deny").is_some() {
            break entries;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no grant_pushed and deny lines in the journal: {entries:#?}\n{}",
            wardd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let pushed = find(&entries, "grant_pushed").unwrap();
    assert_eq!(pushed["WARD_GRANT_ID"], "g-journal", "{pushed:#}");
    assert_eq!(pushed["WARD_SUBJECT"], subject.as_str(), "{pushed:#}");
    assert_eq!(pushed["WARD_OBJECT"], object.as_str(), "{pushed:#}");
    assert_eq!(pushed["WARD_OPERATIONS"], "connect", "{pushed:#}");
    assert_eq!(
        pushed["WARD_RULE"], "grant g-journal: connect",
        "{pushed:#}"
    );
    // tracing-journald writes INFO as notice (5), WARN as warning (4).
    assert_eq!(pushed["PRIORITY"], "5", "{pushed:#}");
    assert!(
        pushed["MESSAGE"].as_str().unwrap().contains("g-journal"),
        "{pushed:#}"
    );

    // The denial names what was refused, to whom, and the deciding rule:
    // the same rule the audit log names.
    let deny = find(&entries, "deny").unwrap();
    assert_eq!(deny["WARD_SUBJECT"], "uid 0", "{deny:#}");
    assert_eq!(
        deny["WARD_CGROUP"],
        h.sb.managed.id().to_string().as_str(),
        "the managed cgroup's id: {deny:#}"
    );
    assert_eq!(deny["WARD_OPERATION"], "connect", "{deny:#}");
    assert!(
        deny["WARD_OBJECT"]
            .as_str()
            .unwrap()
            .contains(&h.addr.port().to_string()),
        "{deny:#}"
    );
    let audited = h.audit();
    let denied = audited
        .iter()
        .find(|r| r["kind"] == "deny")
        .expect("the audit log keeps its records");
    assert_eq!(deny["WARD_RULE"], denied["detail"]["rule"], "{deny:#}");
    assert!(
        audited
            .iter()
            .any(|r| r["kind"] == "grant_pushed" && r["grant_id"] == "g-journal"),
        "{audited:#?}"
    );
}

/// The journald whose pid the wrapper wrote to this file.
struct Journald(std::path::PathBuf);

impl Drop for Journald {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: a plain kill(2) of the journald this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}
