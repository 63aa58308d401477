//! `ward doctor` inside a VM whose kernel has a working BPF LSM.

use ward_tests::ward;

#[test]
fn doctor_reports_working_bpf_lsm() {
    let (code, stdout, stderr) = ward(&["doctor", "--json"]);
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    for id in [
        "bpf_lsm",
        "lsm_program",
        "btf",
        "cgroup_v2",
        "cgroup_sock_addr",
        "sock_destroy",
    ] {
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id}"));
        assert_eq!(check["status"], "ok", "{id}: {check}");
    }
    assert_eq!(report["capabilities"]["file_and_exec"], true);
    assert_eq!(report["capabilities"]["use_in_progress"], "lsm");
    assert_eq!(
        report["capabilities"]["connection_teardown"],
        "sock_destroy"
    );
    assert_eq!(code, 0, "all checks pass, so exit 0");

    let (code, text, _) = ward(&["doctor"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("file and exec enforcement: available (BPF LSM)"),
        "{text}"
    );
    assert!(
        text.contains("use in progress:            ends at the deadline"),
        "{text}"
    );
    assert!(
        text.contains("connection teardown:        a held connection is reset"),
        "{text}"
    );
}

#[test]
fn verifier_cost_of_every_program_is_reported() {
    // Loading is the verifier's work; under emulation it is the slowest
    // part of a test run. Print what each program cost, for the log.
    let started = std::time::Instant::now();
    let mut enforcer = crate::support::enforcer();
    let took = started.elapsed();
    let stats = enforcer.stats().unwrap();
    for p in &stats.programs {
        println!("verifier: {} {:?} insns", p.name, p.verified_insns);
    }
    println!("verifier: enforcer loaded in {took:?}");
    for (name, _) in ward_abi::programs::USE_HOOKS {
        // The kernel keeps 15 bytes of a program's name.
        let kept = &name[..name.len().min(15)];
        assert!(
            stats.programs.iter().any(|p| p.name == kept),
            "{name} is loaded"
        );
    }
    assert!(stats.programs.iter().any(|p| p.name == "ward_file_open"));
}
