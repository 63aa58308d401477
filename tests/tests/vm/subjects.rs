//! Who counts as managed: uid ranges, and the audit login uid that
//! survives `sudo`.

use ward_abi::{Effect, Op};
use ward_agent::enforcer::{Enforcer, EnforcerConfig, Entry, Expiry, Object, PathPattern, Subject};
use ward_tests::{Identity, OpenOutcome, TempDir, lifecycle::protection};

fn path(p: &str) -> Object {
    Object::Path(PathPattern::parse(p).unwrap())
}

fn uid_enforcer() -> Enforcer {
    Enforcer::load(EnforcerConfig {
        uid_ranges: vec![(1000, 1999)],
        ..Default::default()
    })
    .unwrap()
}

fn grant_to_uid(uid: u32, object: &Object, id: u64) -> Entry {
    Entry {
        subject: Subject::Uid(uid),
        op: Op::Read,
        object: object.clone(),
        effect: Effect::Allow,
        expires: Expiry::Never,
        rule_id: id,
        from_grant: true,
    }
}

fn open_as(login_uid: Option<u32>, uid: u32, path: &std::path::Path) -> OpenOutcome {
    ward_tests::open_as(
        Identity {
            login_uid,
            uid,
            gid: uid,
        },
        path,
    )
}

#[test]
fn managed_uid_ranges_are_subjects_too() {
    let dir = TempDir::new("uid");
    let secret = dir.file("secret.txt");
    let mut enforcer = uid_enforcer();
    let object = path(secret.to_str().unwrap());
    enforcer.apply(&[protection(Op::Read, &object)]).unwrap();
    assert_eq!(
        open_as(None, 1500, &secret),
        OpenOutcome::Refused(libc::EACCES)
    );
    assert_eq!(
        open_as(None, 2000, &secret),
        OpenOutcome::Opened,
        "outside the range"
    );
    assert_eq!(
        open_as(None, 0, &secret),
        OpenOutcome::Opened,
        "root is not in the range"
    );
    enforcer
        .grant(300, vec![grant_to_uid(1500, &object, 300)])
        .unwrap();
    assert_eq!(
        open_as(None, 1500, &secret),
        OpenOutcome::Opened,
        "granted to uid 1500"
    );
    assert_eq!(
        open_as(None, 1501, &secret),
        OpenOutcome::Refused(libc::EACCES),
        "and to nobody else"
    );
}

#[test]
fn the_login_uid_survives_sudo() {
    let dir = TempDir::new("loginuid");
    let secret = dir.file("secret.txt");
    let mut enforcer = uid_enforcer();
    let object = path(secret.to_str().unwrap());
    enforcer.apply(&[protection(Op::Read, &object)]).unwrap();
    // Logged in as 1500, now root (as after `sudo`): still managed as 1500.
    assert_eq!(
        open_as(Some(1500), 0, &secret),
        OpenOutcome::Refused(libc::EACCES),
        "root with a managed login uid is managed"
    );
    assert_eq!(
        open_as(None, 0, &secret),
        OpenOutcome::Opened,
        "root without one is not"
    );
    enforcer
        .grant(301, vec![grant_to_uid(1500, &object, 301)])
        .unwrap();
    assert_eq!(
        open_as(Some(1500), 0, &secret),
        OpenOutcome::Opened,
        "the human's grant follows them through sudo"
    );
    assert_eq!(
        open_as(Some(1600), 0, &secret),
        OpenOutcome::Refused(libc::EACCES),
        "another human's login is not"
    );
}
