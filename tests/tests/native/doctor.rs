//! `ward doctor` and `wardd --check` on the host kernel.
//!
//! Doctor must say what the kernel does, without crashing and without
//! claiming protection it cannot give; the tests ask the kernel themselves.
//! (The host kernel here lists `bpf` as an LSM but refuses LSM programs
//! with EPERM; cgroup programs work.)

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

/// What the kernel answers this test when it loads and attaches an LSM
/// program itself (the object's empty `file_open` probe, through aya, not
/// through doctor's code): `Err(errno)` if it refuses.
fn kernel_accepts_lsm() -> Result<(), i32> {
    let mut ebpf = ward_agent::ebpf::load(&ward_agent::btf::KernelOffsets::UNUSED).unwrap();
    let btf = aya::Btf::from_sys_fs().unwrap();
    let program: &mut aya::programs::Lsm = ebpf
        .program_mut(ward_abi::programs::PROBE_LSM)
        .unwrap()
        .try_into()
        .unwrap();
    let errno = |e: aya::programs::ProgramError| match e {
        aya::programs::ProgramError::LoadError { io_error, .. }
        | aya::programs::ProgramError::SyscallError(aya::sys::SyscallError { io_error, .. }) => {
            io_error.raw_os_error().unwrap_or(0)
        }
        other => panic!("not a kernel refusal: {other}"),
    };
    program.load("file_open", &btf).map_err(errno)?;
    program.attach().map_err(errno)?;
    Ok(())
}

#[test]
fn doctor_reports_what_the_host_kernel_enforces() {
    let (code, report) = doctor_json();
    let lsm = check(&report, "lsm_program");
    match kernel_accepts_lsm() {
        Ok(()) => {
            assert_eq!(lsm["status"], "ok", "{lsm}");
            assert_eq!(report["capabilities"]["file_and_exec"], true);
            assert_eq!(report["capabilities"]["use_in_progress"], "lsm");
            assert_eq!(code, 0);
        }
        Err(errno) => {
            // What this machine's kernel does: it answers EPERM.
            assert_eq!(lsm["status"], "unavailable", "{lsm}");
            let name = match errno {
                libc::EPERM => "EPERM",
                libc::EINVAL => "EINVAL",
                libc::EACCES => "EACCES",
                libc::EOPNOTSUPP => "EOPNOTSUPP",
                524 => "ENOTSUPP",
                other => panic!("an errno this test cannot name: {other}"),
            };
            let detail = lsm["detail"].as_str().unwrap();
            assert!(detail.contains(name), "names {name}: {detail}");
            assert_eq!(report["capabilities"]["file_and_exec"], false);
            assert_eq!(code, 2, "degraded kernels exit 2");
        }
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
    if kernel_accepts_lsm().is_ok() {
        assert!(
            text.contains("file and exec enforcement: available (BPF LSM)"),
            "{text}"
        );
        assert!(
            text.contains("network enforcement:        available (BPF LSM)"),
            "{text}"
        );
        assert!(
            text.contains("use in progress:            ends at the deadline"),
            "{text}"
        );
        return;
    }
    assert!(text.contains("EPERM"), "{text}");
    assert!(
        text.contains("file and exec enforcement: UNAVAILABLE"),
        "{text}"
    );
    assert!(
        text.contains("cgroup connect4/connect6/sendmsg4/sendmsg6 hooks only"),
        "{text}"
    );
    // Without BPF LSM only connections end (their packets dropped by the
    // cgroup skb hooks), and only where sock_diag can destroy sockets does
    // wardd reset them: said, not hidden.
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

#[test]
fn doctor_leaves_no_probe_cgroup_behind() {
    let _ = doctor_json();
    let root = ward_agent::cgroup::cgroup2_mount().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(ward_agent::doctor::PROBE_CGROUP_PREFIX)?
                .to_owned();
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
