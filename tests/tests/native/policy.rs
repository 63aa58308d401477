//! Cedar policy in a real `wardd`, natively: compiled decisions enforced by
//! the cgroup connect hooks on test cgroups, hot reload of the directory,
//! refused reloads that leave the old table enforcing, JIT eligibility, and
//! `ward policy check|apply|show` as real processes.

use std::time::{Duration, Instant};

use serde_json::Value;
use ward_tests::{OpenOutcome, wardd::ward_as};

use crate::daemon::{Host, host_protecting};

const DENIED: OpenOutcome = OpenOutcome::Refused(libc::EPERM);

const POLICY: &str = r#"// ward test policy
@id("payments-db")
permit(principal is Workload, action == Action::"connect", resource is Network)
when { principal has team && principal.team == "payments" };

@id("no-contractors")
forbid(principal is Workload, action, resource)
when { principal has team && principal.team == "contractors" };

@id("jit-marketing")
@max_duration("10m")
permit(principal is Workload, action == Action::"request", resource is Network)
when { principal has team && principal.team == "marketing" };
"#;

fn directory(h: &Host, team: &str) -> String {
    format!(
        "[workloads.app]\ncgroup = \"{}\"\nteam = \"{team}\"\n\n[networks.\"127.0.0.1/32:{}\"]\nclassification = \"internal\"\n",
        h.managed_workload(),
        h.addr.port()
    )
}

/// A host whose config names a Cedar policy and a directory.
fn cedar_host(tag: &str, team: &str) -> Host {
    let h = host_protecting(
        tag,
        false,
        "[policy]\nfiles = [\"policy.cedar\"]\ndirectory = \"directory.toml\"\nreload_interval = \"100ms\"\n",
    );
    std::fs::write(h.dir.path().join("policy.cedar"), POLICY).unwrap();
    set_team(&h, team);
    h
}

fn set_team(h: &Host, team: &str) {
    // Write-then-rename, as config management does.
    let tmp = h.dir.path().join("directory.toml.tmp");
    std::fs::write(&tmp, directory(h, team)).unwrap();
    std::fs::rename(&tmp, h.dir.path().join("directory.toml")).unwrap();
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn explain(h: &Host) -> Value {
    let target = format!("127.0.0.1:{}", h.addr.port());
    let (_, out, err) = h.ward(&[
        "explain",
        "--workload",
        &h.managed_workload(),
        "--connect",
        &target,
        "--json",
    ]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"))
}

#[test]
fn a_compiled_policy_enforces_and_an_attribute_edit_flips_it_without_restart() {
    let h = cedar_host("cedar-flip", "payments");
    let _wardd = h.start();
    // Permitted by policy: no grant involved.
    assert_eq!(h.connect(), OpenOutcome::Opened);
    let x = explain(&h);
    assert_eq!(x["allowed"], true, "{x}");
    assert_eq!(x["decided_by"], "policy", "{x}");
    assert_eq!(
        x["rule_id"], "permitted by Cedar policy `payments-db`",
        "{x}"
    );
    // The directory changes: the same workload now belongs to another team.
    set_team(&h, "marketing");
    wait_for("the attribute change to deny", || h.connect() == DENIED);
    let x = explain(&h);
    assert_eq!(x["allowed"], false, "{x}");
    assert_eq!(x["decided_by"], "protection", "{x}");
    assert!(
        x["rule_id"]
            .as_str()
            .unwrap()
            .contains("networks.\"127.0.0.1/32:"),
        "{x}"
    );
    // And back.
    set_team(&h, "payments");
    wait_for("the attribute change to allow", || {
        h.connect() == OpenOutcome::Opened
    });
    // Both edits were incremental, and audited. The audit record follows
    // the kernel's update: it is asked for until it is there.
    let applied = || -> Vec<Value> {
        h.audit()
            .into_iter()
            .filter(|r| r["kind"] == "policy_applied")
            .collect()
    };
    wait_for("both edits in the audit", || applied().len() >= 2);
    let applied = applied();
    assert!(
        applied.iter().all(|r| r["detail"]["mode"] == "incremental"),
        "{applied:?}"
    );

    let (code, out, err) = h.ward(&["policy", "show", "--json"]);
    assert_eq!(code, 0, "{err}");
    let show: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = show["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["jit-marketing", "no-contractors", "payments-db"]);
    let entries = |id: &str| {
        show["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()["entries"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(entries("payments-db"), 1);
    assert_eq!(show["principals"], 1);
    assert_eq!(show["resources"], 1);
    assert_eq!(show["last_error"], "");
}

#[test]
fn a_bad_policy_is_refused_whole_and_the_old_one_keeps_enforcing() {
    let h = cedar_host("cedar-bad", "payments");
    let _wardd = h.start();
    assert_eq!(h.connect(), OpenOutcome::Opened);
    // A condition on something the kernel never sees, and a typo.
    std::fs::write(
        h.dir.path().join("policy.cedar"),
        POLICY.replace(
            "principal.team == \"payments\" }",
            "principal.team == \"payments\" && context.source_ip == \"10.0.0.1\" }",
        ),
    )
    .unwrap();
    let (code, _, err) = h.ward(&["policy", "apply"]);
    assert_eq!(code, 5, "{err}");
    let file = h.dir.path().join("policy.cedar");
    assert!(
        err.contains(&format!(
            "{}:4:62: policy `payments-db`: for policy `payments-db`, attribute `source_ip` in context",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("the kernel never sees it"), "{err}");
    // Still enforcing the previous policy.
    assert_eq!(h.connect(), OpenOutcome::Opened);
    let (_, out, _) = h.ward(&["policy", "show", "--json"]);
    let show: Value = serde_json::from_str(&out).unwrap();
    assert!(
        show["last_error"].as_str().unwrap().contains("source_ip"),
        "{show}"
    );
    assert!(h.audit().iter().any(|r| r["kind"] == "policy_rejected"));
    // A fixed file applies.
    std::fs::write(&file, POLICY).unwrap();
    let (code, out, err) = h.ward(&["policy", "apply"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("applied: 3 policies, 1 decisions"), "{out}");
}

#[test]
fn grants_need_eligibility_by_the_request_action_and_no_forbid() {
    let h = cedar_host("cedar-jit", "marketing");
    let _wardd = h.start();
    assert_eq!(h.connect(), DENIED);
    // Over the policy's cap.
    let (code, _, err) = h.grant("too-long", "1h");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("1h for connect on 127.0.0.1/32:"), "{err}");
    assert!(
        err.contains("is over the maximum of 10m set by jit-marketing"),
        "{err}"
    );
    // Within it: granted, and the connect works.
    let (code, _, err) = h.grant("ok", "5m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.connect(), OpenOutcome::Opened);
    // Another team is not eligible at all.
    set_team(&h, "payments-ops");
    wait_for("the directory edit", || {
        h.audit().iter().any(|r| r["kind"] == "policy_applied")
    });
    let (code, _, err) = h.grant("not-eligible", "5m");
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!(
            "Workload::\"{}\" is not eligible for connect on 127.0.0.1/32:{}: no `request` policy permits it",
            h.managed_workload(),
            h.addr.port()
        )),
        "{err}"
    );
    // A forbid is a guardrail: it ends the live grant and refuses new ones.
    set_team(&h, "contractors");
    wait_for("the guardrail to end the grant", || {
        h.states()
            .iter()
            .any(|(id, s)| id == "ok" && s == "revoked")
    });
    assert_eq!(h.connect(), DENIED);
    let (code, _, err) = h.grant("forbidden", "5m");
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("forbidden by no-contractors; no grant overrides a forbid"),
        "{err}"
    );
}

#[test]
fn policy_check_reports_errors_with_file_line_and_column() {
    let dir = ward_tests::TempDir::new("policy-check");
    let good = dir.path().join("good.cedar");
    std::fs::write(&good, POLICY).unwrap();
    let (code, out, err) = ward_as(
        dir.path(),
        None,
        &["policy", "check", good.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ok: 3 policies valid against ward's schema"),
        "{out}"
    );

    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "@id(\"hours\")\npermit(principal, action, resource)\nwhen { context.minute_of_day * 2 > 100 };\n",
    )
    .unwrap();
    let (code, _, err) = ward_as(
        dir.path(),
        None,
        &["policy", "check", bad.to_str().unwrap()],
    );
    assert_eq!(code, 5, "{err}");
    let first = err.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "{}:3:16: policy `hours`: context.minute_of_day can only be compared with a number literal \
             (e.g. context.minute_of_day < 1080): the compiler must know where the window ends",
            bad.display()
        )
    );
    assert!(err.ends_with("1 error; nothing applied\n"), "{err}");

    // With a directory, the policies are compiled against it.
    let d = dir.path().join("dir.toml");
    std::fs::write(
        &d,
        "[workloads.app]\ncgroup = \"x\"\nteam = \"payments\"\n[networks.\"10.0.0.0/8:5432\"]\n",
    )
    .unwrap();
    let (code, out, err) = ward_as(
        dir.path(),
        None,
        &[
            "policy",
            "check",
            good.to_str().unwrap(),
            "--directory",
            d.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["compiled"]["decisions"], 1, "{v}");
    // A directory entry the kernel cannot match is named.
    std::fs::write(&d, "[networks.\"10.0.0.1/8:5432\"]\n").unwrap();
    let (code, _, err) = ward_as(
        dir.path(),
        None,
        &[
            "policy",
            "check",
            good.to_str().unwrap(),
            "--directory",
            d.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("networks.\"10.0.0.1/8:5432\""), "{err}");
}

#[test]
fn host_labels_come_from_the_config_and_are_picked_up_while_running() {
    let h = cedar_host("cedar-labels", "payments");
    std::fs::write(
        h.dir.path().join("policy.cedar"),
        POLICY.replace(
            "principal.team == \"payments\" }",
            "principal.team == \"payments\" && context.host.labels.contains(\"env=prod\") }",
        ),
    )
    .unwrap();
    let wardd = h.start();
    // No labels yet: the policy does not apply here.
    assert_eq!(h.connect(), DENIED);
    let config = std::fs::read_to_string(&h.config).unwrap();
    let labelled = config.replacen(
        "[agent]\n",
        "[agent]\nhost_labels = { env = \"prod\" }\n",
        1,
    );
    std::fs::write(&h.config, &labelled).unwrap();
    wait_for("the label to apply", || h.connect() == OpenOutcome::Opened);
    let (_, out, _) = h.ward(&["policy", "show", "--json"]);
    let show: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        show["host_labels"],
        serde_json::json!(["env=prod"]),
        "{show}"
    );
    // A broken config edit changes nothing: wardd says why, in its log
    // and its audit, and goes on with the labels it had. (The pins alone
    // would keep the connect open if it had died.)
    std::fs::write(
        &h.config,
        labelled.replace("[agent]\n", "[agent]\nbogus = 1\n"),
    )
    .unwrap();
    let rejected = || {
        h.audit()
            .into_iter()
            .find(|r| r["kind"] == "config_rejected")
    };
    wait_for("the refused edit to be audited", || rejected().is_some());
    let record = rejected().unwrap();
    assert!(
        record["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("bogus")),
        "the audit names the bad field: {record}"
    );
    assert!(
        wardd.log().contains("config edit refused"),
        "{}",
        wardd.log()
    );
    assert!(wardd.pid().is_some());
    let (code, out, err) = h.ward(&["policy", "show", "--json"]);
    assert_eq!(code, 0, "wardd still answers: {err}");
    let show: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        show["host_labels"],
        serde_json::json!(["env=prod"]),
        "{show}"
    );
    assert_eq!(h.connect(), OpenOutcome::Opened);
}
