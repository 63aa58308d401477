//! `ward doctor` and `wardd --check` on the host kernel.
//!
//! The host kernel here lists `bpf` as an LSM but refuses LSM programs with
//! EPERM; cgroup programs work. Doctor must say exactly that, without
//! crashing and without claiming protection it cannot give.

use serde_json::Value;
use ward_tests::{run, ward, wardd_bin};

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report}"))
}

fn doctor_json() -> (i32, Value) {
    let (code, stdout, stderr) = ward(&["doctor", "--json"]);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor --json is not JSON ({e}): {stdout}\n{stderr}"));
    (code, report)
}

#[test]
fn doctor_reports_what_the_host_kernel_enforces() {
    let (code, report) = doctor_json();
    let lsm = check(&report, "lsm_program");
    match lsm["status"].as_str() {
        Some("ok") => {
            assert_eq!(report["capabilities"]["file_and_exec"], true);
            assert_eq!(code, 0);
        }
        Some("unavailable") => {
            // What this machine's kernel does: it answers EPERM.
            let detail = lsm["detail"].as_str().unwrap();
            assert!(detail.contains("EPERM"), "names the errno: {detail}");
            assert_eq!(report["capabilities"]["file_and_exec"], false);
            assert_eq!(code, 2, "degraded kernels exit 2");
        }
        other => panic!("lsm_program status {other:?}: {lsm}"),
    }
    assert_eq!(check(&report, "cgroup_v2")["status"], "ok");
    assert_eq!(
        check(&report, "cgroup_sock_addr")["status"],
        "ok",
        "cgroup connect hooks load and attach on this host"
    );
    assert_eq!(report["capabilities"]["network"], true);
    assert_eq!(check(&report, "btf")["status"], "ok");
    assert!(!report["kernel"].as_str().unwrap().is_empty());
}

#[test]
fn doctor_text_says_what_is_unavailable() {
    let (code, report) = doctor_json();
    let (text_code, text, _) = ward(&["doctor"]);
    assert_eq!(code, text_code, "text and JSON agree on the exit status");
    if report["capabilities"]["file_and_exec"] == false {
        assert!(text.contains("EPERM"), "{text}");
        assert!(
            text.contains("file and exec enforcement: UNAVAILABLE"),
            "{text}"
        );
        assert!(
            text.contains("cgroup connect4/connect6/sendmsg4/sendmsg6 hooks only"),
            "{text}"
        );
        // Without BPF LSM only connections end (their packets dropped by
        // the cgroup skb hooks), and only where sock_diag can destroy
        // sockets does wardd reset them: said, not hidden.
        let teardown = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "sock_destroy" && c["status"] == "ok");
        assert_eq!(report["capabilities"]["use_in_progress"], "packets");
        assert!(
            text.contains(
                "use in progress:            connections made under a grant carry no more packets"
            ),
            "{text}"
        );
        assert!(text.contains("open files are NOT ended"), "{text}");
        let line = if teardown {
            "connection teardown:        a held connection is reset"
        } else {
            "connection teardown:        NOT AVAILABLE"
        };
        assert_eq!(
            report["capabilities"]["connection_teardown"],
            if teardown { "sock_destroy" } else { "none" }
        );
        assert!(text.contains(line), "{text}");
    }
}

#[test]
fn doctor_leaves_no_probe_cgroup_behind() {
    let _ = doctor_json();
    let root = ward_agent::cgroup::cgroup2_mount().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix("ward-doctor-")?.to_owned();
            // Other tests run doctor concurrently; only a finished one counts.
            (!std::path::Path::new("/proc").join(&pid).exists()).then_some(name)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn wardd_check_matches_ward_doctor() {
    let (code, report) = doctor_json();
    let (dcode, stdout, _) = run(&wardd_bin(), &["--check", "--json"]);
    let dreport: Value = serde_json::from_str(&stdout).expect("wardd --check --json");
    assert_eq!(code, dcode);
    assert_eq!(report["capabilities"], dreport["capabilities"]);
}

#[test]
fn unknown_subcommand_is_a_usage_error_not_a_panic() {
    let (code, _, stderr) = ward(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}
