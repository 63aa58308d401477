//! Decisions reach user space as events, and the enforcer reports stats.

use std::time::Duration;

use ward_abi::Op;
use ward_agent::enforcer::{EventKind, Expiry, KernelEvent, Object, PathPattern};
use ward_tests::{
    OpenOutcome, TempDir,
    lifecycle::{GRANT_ID, PROTECTION_ID, grant_for, protection},
    open_as_child,
};

use crate::support::{cgroups, enforcer};

#[test]
fn denies_and_grant_uses_are_reported_with_their_rule() {
    let dir = TempDir::new("events");
    let secret = dir.file("secret.txt");
    let object = Object::Path(PathPattern::parse(secret.to_str().unwrap()).unwrap());
    let (managed, _) = cgroups("events");
    let mut enforcer = enforcer();
    assert!(
        enforcer.events().is_err(),
        "outside a runtime: an error, not a panic"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let mut stream = enforcer.events().expect("event stream");
    assert!(enforcer.events().is_err(), "only one stream per enforcer");
    enforcer.manage_cgroup(managed.id()).unwrap();
    enforcer.apply(&[protection(Op::Read, &object)]).unwrap();

    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Refused(libc::EACCES)
    );
    let grant = grant_for(
        &managed,
        Op::Read,
        &object,
        GRANT_ID,
        Expiry::after(Duration::from_secs(60)),
    );
    enforcer.grant(GRANT_ID, vec![grant]).unwrap();
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Opened
    );
    // Plain allows outside ward's scope are not events.
    assert_eq!(
        open_as_child(None, &secret, libc::O_RDONLY),
        OpenOutcome::Opened
    );

    let next = |stream: &mut ward_agent::enforcer::EventStream| -> KernelEvent {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), stream.next()).await })
            .expect("an event within 10 s")
            .expect("event")
    };
    let deny = next(&mut stream);
    assert_eq!(deny.kind, EventKind::Deny);
    assert_eq!(deny.op, "read");
    assert_eq!(deny.object, secret.to_str().unwrap());
    assert_eq!(deny.rule_id, PROTECTION_ID);
    assert_eq!(deny.cgroup, managed.id());
    assert_eq!(deny.uid, 0);
    assert!(deny.pid > 1);
    let used = next(&mut stream);
    assert_eq!(used.kind, EventKind::AllowByGrant);
    assert_eq!(used.rule_id, GRANT_ID);
    assert_eq!(used.object, secret.to_str().unwrap());

    let stats = enforcer.stats().unwrap();
    assert_eq!(stats.path_rules, 2, "{stats:?}");
    assert_eq!(stats.managed_cgroups, 1);
    assert_eq!(stats.events_lost, 0);
    // The kernel's own count of its decisions (for `/metrics`): the
    // refused open and the granted one; the unmanaged open is not ward's.
    let decided = |outcome: &str| {
        stats
            .decisions
            .iter()
            .find(|d| d.op == "read" && d.outcome == outcome)
            .map(|d| d.n)
    };
    assert_eq!(decided("deny"), Some(1), "{:?}", stats.decisions);
    assert_eq!(decided("allow_by_grant"), Some(1), "{:?}", stats.decisions);
    assert_eq!(decided("allow_by_policy"), Some(0), "{:?}", stats.decisions);
    assert!(
        stats.programs.iter().any(|p| p.name == "ward_file_open"),
        "{stats:?}"
    );
}

#[test]
fn a_full_table_is_a_clear_error_and_the_old_table_stays() {
    let dir = TempDir::new("full");
    let secret = dir.file("secret.txt");
    let (managed, _) = cgroups("full");
    let mut enforcer = ward_agent::enforcer::Enforcer::load(ward_agent::enforcer::EnforcerConfig {
        max_path_rules: 8,
        ..Default::default()
    })
    .unwrap();
    enforcer.manage_cgroup(managed.id()).unwrap();
    let secret_obj = Object::Path(PathPattern::parse(secret.to_str().unwrap()).unwrap());
    enforcer
        .apply(&[protection(Op::Read, &secret_obj)])
        .unwrap();

    let too_many: Vec<_> = (0..9)
        .map(|i| {
            let p = Object::Path(PathPattern::parse(&format!("/srv/f{i}")).unwrap());
            protection(Op::Read, &p)
        })
        .collect();
    let err = enforcer.apply(&too_many).unwrap_err().to_string();
    assert!(err.contains("is full (8 entries)"), "{err}");
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Refused(libc::EACCES),
        "the previous table still enforces"
    );
}

#[test]
fn stats_carry_the_kernels_per_program_counters() {
    let dir = TempDir::new("stats");
    let secret = dir.file("secret.txt");
    let object = Object::Path(PathPattern::parse(secret.to_str().unwrap()).unwrap());
    let (managed, _) = cgroups("stats");
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).unwrap();
    enforcer.apply(&[protection(Op::Read, &object)]).unwrap();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").unwrap();
    for _ in 0..5 {
        assert_eq!(
            open_as_child(Some(&managed), &secret, libc::O_RDONLY),
            OpenOutcome::Refused(libc::EACCES)
        );
    }
    let stats = enforcer.stats().unwrap();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0").unwrap();
    let file_open = stats
        .programs
        .iter()
        .filter(|p| p.name == "ward_file_open")
        .max_by_key(|p| p.run_count)
        .expect("ward_file_open in stats");
    assert!(file_open.run_count >= 5, "{file_open:?}");
    assert!(file_open.run_time_ns > 0, "{file_open:?}");
}
