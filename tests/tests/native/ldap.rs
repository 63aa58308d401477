//! People and groups from a real OpenLDAP server (slapd), over StartTLS
//! verified against its CA, decide real connects in the kernel: an
//! attribute or a membership edited in LDAP flips the decision without a
//! restart; a stopped server leaves the last good directory enforcing,
//! across a wardd restart too; a bad entry is named by DN and attribute
//! while the rest applies.
//!
//! The person is `nobody` (uid 65534, in every user database), managed by
//! uid and connecting from the test's own cgroup: only the test's loopback
//! port is protected, so nothing else of the host is touched.

use std::{path::Path, time::Duration};

use serde_json::Value;
use ward_tests::{
    Identity, OpenOutcome, connect_in,
    coordinator::wait_until,
    slapd::{READER, READER_PASSWORD, Slapd},
    wardd::Wardd,
};

use crate::daemon::{Host, host_protecting};

const NOBODY: Identity = Identity {
    login_uid: None,
    uid: 65534,
    gid: 65534,
};
const DENIED: OpenOutcome = OpenOutcome::Refused(libc::EPERM);
/// Well past one poll (500 ms) and one recompile on a loaded machine.
const FLIP: Duration = Duration::from_secs(15);

const POLICY: &str = r#"
@id("same-department")
permit(principal is User, action == Action::"connect", resource is Network)
when { principal has department && resource has department
       && principal.department == resource.department };

@id("db-users")
permit(principal in Group::"dbusers", action == Action::"connect", resource is Network)
when { resource has classification && resource.classification == "db" };
"#;

/// A host whose directory file lists the protected port (of `department`
/// and `classification`), and whose people come from `ldap`, read as the
/// reader over StartTLS with `ca` (the server's own CA unless given).
fn ldap_host(tag: &str, ldap: &Slapd, resource: &str, ca: Option<&Path>) -> Host {
    let h = host_protecting(tag, false, "");
    let d = h.dir.path();
    std::fs::write(d.join("policy.cedar"), POLICY).unwrap();
    std::fs::write(
        d.join("directory.toml"),
        format!(
            "[networks.\"127.0.0.1/32:{}\"]\n{resource}\n",
            h.addr.port()
        ),
    )
    .unwrap();
    std::fs::write(d.join("ldap.secret"), format!("{READER_PASSWORD}\n")).unwrap();
    let ca = ca.map_or_else(|| ldap.ca(), Path::to_owned);
    let text = std::fs::read_to_string(&h.config).unwrap();
    let text = text.replacen(
        "[enforce]\n",
        "[enforce]\nmanaged_uids = [[65534, 65534]]\n",
        1,
    );
    std::fs::write(
        &h.config,
        format!(
            "{text}\n[policy]\nfiles = [\"policy.cedar\"]\ndirectory = \"directory.toml\"\n\
             reload_interval = \"100ms\"\n\n\
             [policy.ldap]\nurl = \"{url}\"\nstarttls = true\nca_file = \"{ca}\"\n\
             bind_dn = \"{READER}\"\nbind_password_file = \"ldap.secret\"\n\
             poll_interval = \"500ms\"\ntimeout = \"5s\"\n\n\
             [policy.ldap.users]\nbase = \"ou=people,dc=ward,dc=test\"\n\
             attributes = {{ department = \"departmentNumber\", clearance = \"employeeType\" }}\n\n\
             [policy.ldap.groups]\nbase = \"ou=groups,dc=ward,dc=test\"\n",
            url = ldap.url(),
            ca = ca.display(),
        ),
    )
    .unwrap();
    h
}

fn connect(h: &Host) -> OpenOutcome {
    connect_in(&h.sb.unmanaged, NOBODY, h.addr)
}

fn policy_show(h: &Host) -> Value {
    let (code, out, err) = h.ward(&["policy", "show", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn audited(h: &Host, kind: &str) -> Vec<Value> {
    h.audit()
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

fn set_department(ldap: &Slapd, dept: &str) {
    ldap.modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: departmentNumber\ndepartmentNumber: {dept}\n",
        Slapd::dn("nobody")
    ));
}

#[test]
fn a_department_edited_in_ldap_flips_the_kernel_decision_without_a_restart() {
    let ldap = Slapd::start("dept");
    ldap.add(&Slapd::person("nobody", &[("departmentNumber", "eng")]));
    let h = ldap_host("ldap-dept", &ldap, "department = \"eng\"", None);
    let wardd = h.start();
    wait_until("nobody's first read from LDAP", FLIP, || {
        connect(&h) == OpenOutcome::Opened
    });
    let show = policy_show(&h);
    assert_eq!(show["ldap"]["users"], 1, "{show}");
    assert_eq!(show["ldap"]["unreachable"], "", "{show}");

    set_department(&ldap, "sales");
    wait_until("the move to sales to deny", FLIP, || connect(&h) == DENIED);
    set_department(&ldap, "eng");
    wait_until("the move back to allow", FLIP, || {
        connect(&h) == OpenOutcome::Opened
    });
    // The same process throughout, told by the directory, incrementally.
    assert!(wardd.pid().is_some());
    let applied = audited(&h, "policy_applied");
    assert!(applied.iter().any(|r| r["actor"] == "ldap"), "{applied:?}");
}

#[test]
fn a_group_membership_edited_in_ldap_flips_the_kernel_decision() {
    let ldap = Slapd::start("group");
    ldap.add(&Slapd::person("nobody", &[]));
    ldap.add(&Slapd::group("dbusers", &[Slapd::dn("nobody")]));
    let h = ldap_host("ldap-group", &ldap, "classification = \"db\"", None);
    let _wardd = h.start();
    wait_until("membership of dbusers to allow", FLIP, || {
        connect(&h) == OpenOutcome::Opened
    });
    let show = policy_show(&h);
    assert_eq!(show["ldap"]["groups"], 1, "{show}");

    ldap.modify(&format!(
        "dn: cn=dbusers,ou=groups,dc=ward,dc=test\nchangetype: modify\ndelete: member\n\
         member: {}\n-\nadd: member\nmember: cn=reader,dc=ward,dc=test\n",
        Slapd::dn("nobody")
    ));
    wait_until("leaving dbusers to deny", FLIP, || connect(&h) == DENIED);

    // Nested: nobody is in `ops`, which is in dbusers.
    ldap.add(&Slapd::group("ops", &[Slapd::dn("nobody")]));
    ldap.modify(
        "dn: cn=dbusers,ou=groups,dc=ward,dc=test\nchangetype: modify\nadd: member\n\
         member: cn=ops,ou=groups,dc=ward,dc=test\n",
    );
    wait_until("a nested membership to allow", FLIP, || {
        connect(&h) == OpenOutcome::Opened
    });
}

#[test]
fn a_stopped_server_leaves_the_last_good_directory_enforcing_across_a_restart() {
    let mut ldap = Slapd::start("down");
    ldap.add(&Slapd::person("nobody", &[("departmentNumber", "eng")]));
    let h = ldap_host("ldap-down", &ldap, "department = \"eng\"", None);
    let mut wardd = h.start();
    wait_until("the first read", FLIP, || {
        connect(&h) == OpenOutcome::Opened
    });

    ldap.stop();
    wait_until("the outage to be reported", FLIP, || {
        policy_show(&h)["ldap"]["unreachable"] != ""
    });
    // Several polls later, the last good directory still decides.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(connect(&h), OpenOutcome::Opened);
    let down = audited(&h, "directory_unreachable");
    assert_eq!(down.len(), 1, "said once per outage: {down:?}");
    assert!(
        wardd.log().contains("LDAP directory unreachable"),
        "{}",
        wardd.log()
    );

    // A restart during the outage enforces the cached last good read.
    assert!(wardd.stop().success(), "{}", wardd.log());
    let wardd = Wardd::start(&h.config, &h.socket, &[]);
    assert_eq!(
        connect(&h),
        OpenOutcome::Opened,
        "the cached directory decides from the start: {}",
        wardd.log()
    );
    ldap.run();
    wait_until("the server to be read again", FLIP, || {
        policy_show(&h)["ldap"]["unreachable"] == ""
    });
    assert!(!audited(&h, "directory_reachable").is_empty());
    set_department(&ldap, "sales");
    wait_until("edits to apply again", FLIP, || connect(&h) == DENIED);
}

#[test]
fn a_bad_entry_is_named_by_dn_and_attribute_and_the_rest_applies() {
    let ldap = Slapd::start("bad");
    ldap.add(&Slapd::person("nobody", &[("departmentNumber", "eng")]));
    ldap.add(&Slapd::person(
        "daemon",
        &[("departmentNumber", "eng"), ("employeeType", "high")],
    ));
    let h = ldap_host("ldap-bad", &ldap, "department = \"eng\"", None);
    let _wardd = h.start();
    wait_until("nobody's read", FLIP, || connect(&h) == OpenOutcome::Opened);
    let show = policy_show(&h);
    let bad = show["ldap"]["bad_entries"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{show}");
    let bad = bad[0].as_str().unwrap();
    assert!(
        bad.starts_with("uid=daemon,ou=people,dc=ward,dc=test: employeeType: `high`"),
        "{bad}"
    );
    let refused = audited(&h, "directory_entry_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0]["detail"]["dn"],
        "uid=daemon,ou=people,dc=ward,dc=test"
    );
    assert_eq!(refused[0]["detail"]["attribute"], "employeeType");

    // The bad entry stays bad; nobody's edit still applies.
    set_department(&ldap, "sales");
    wait_until("the rest of the directory to apply", FLIP, || {
        connect(&h) == DENIED
    });
    assert_eq!(
        audited(&h, "directory_entry_refused").len(),
        1,
        "a bad entry is said once, not at every poll"
    );
}

#[test]
fn a_server_whose_certificate_does_not_verify_is_never_read() {
    let ldap = Slapd::start("tls");
    ldap.add(&Slapd::person("nobody", &[("departmentNumber", "eng")]));
    let other = ward_tests::TempDir::new("ldap-other-ca");
    let ca = other.path().join("ca.pem");
    std::fs::write(&ca, ward_tests::pki::ca("another CA").pem()).unwrap();
    let h = ldap_host("ldap-tls", &ldap, "department = \"eng\"", Some(&ca));
    let _wardd = h.start();
    wait_until("the refusal to be reported", FLIP, || {
        policy_show(&h)["ldap"]["unreachable"] != ""
    });
    let why = policy_show(&h)["ldap"]["unreachable"].to_string();
    assert!(
        why.contains("certificate") || why.contains("Certificate"),
        "{why}"
    );
    assert_eq!(connect(&h), DENIED, "nothing read, nothing permitted");
}

/// `wardd --check-config --read-ldap` reads a `[policy.ldap]` server once,
/// as the daemon would: it says how many people and groups it read and
/// names a refused entry by DN and attribute; a stopped server makes the
/// check fail (exit 1), naming the URL. Without --read-ldap the check
/// stays offline and says so.
#[test]
fn check_config_reads_the_ldap_server_and_refuses_one_it_cannot_reach() {
    let mut ldap = Slapd::start("check");
    ldap.add(&Slapd::person("nobody", &[("departmentNumber", "eng")]));
    ldap.add(&Slapd::person(
        "daemon",
        &[("departmentNumber", "eng"), ("employeeType", "high")],
    ));
    ldap.add(&Slapd::group("dbusers", &[Slapd::dn("nobody")]));
    let h = ldap_host("ldap-check", &ldap, "department = \"eng\"", None);
    let config = h.config.to_str().unwrap();
    let (code, out, err) = ward_tests::run(
        &ward_tests::wardd_bin(),
        &["--config", config, "--check-config", "--read-ldap"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ldap: 2 users and 1 groups read from ldap://"),
        "{out}"
    );
    assert!(
        out.contains("ldap: entry refused: uid=daemon,ou=people,dc=ward,dc=test (employeeType)"),
        "{out}"
    );

    ldap.stop();
    let (code, out, err) = ward_tests::run(
        &ward_tests::wardd_bin(),
        &["--config", config, "--check-config", "--read-ldap"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("policy.ldap") && err.contains(&ldap.url()),
        "{err}"
    );
    // Offline unless asked: the same config checks without the server.
    let (code, out, err) = ward_tests::run(
        &ward_tests::wardd_bin(),
        &["--config", config, "--check-config"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("not contacted (--read-ldap reads it)"),
        "{out}"
    );
}
