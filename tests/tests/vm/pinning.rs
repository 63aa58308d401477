//! Enforcement outlives the agent: SIGKILL it, and the kernel goes on
//! denying and expiring; a new agent adopts the pins.

use std::{path::PathBuf, time::Duration};

use ward_abi::Op;
use ward_agent::enforcer::{Enforcer, EnforcerConfig, Expiry, Object, PathPattern, boot_ns};
use ward_tests::{
    OpenOutcome, TempDir,
    lifecycle::{grant_for, protection},
    open_as_child, spawn_helper,
};

use crate::support::cgroups;

const PIN_DIR: &str = "/sys/fs/bpf/ward-test-pins";

fn pinned() -> EnforcerConfig {
    EnforcerConfig {
        pin_dir: Some(PathBuf::from(PIN_DIR)),
        ..Default::default()
    }
}

/// The agent stand-in: run as a separate process by the test below.
#[test]
#[ignore = "helper process for survives_sigkill_and_is_adopted"]
fn pin_helper() {
    let file = std::env::var("WARD_HELPER_FILE")
        .expect("run by survives_sigkill_and_is_adopted, which sets WARD_HELPER_FILE");
    let cgroup: u64 = std::env::var("WARD_HELPER_CGROUP")
        .unwrap()
        .parse()
        .unwrap();
    let object = Object::Path(PathPattern::parse(&file).unwrap());
    let mut enforcer = Enforcer::load(pinned()).expect("load pinned");
    enforcer.manage_cgroup(cgroup).unwrap();
    enforcer.apply(&[protection(Op::Read, &object)]).unwrap();
    let deadline = boot_ns() + Duration::from_secs(3).as_nanos() as u64;
    let grant = ward_agent::enforcer::Entry {
        subject: ward_agent::enforcer::Subject::Cgroup(cgroup),
        op: Op::Read,
        object,
        effect: ward_abi::Effect::Allow,
        expires: Expiry::AtBootNs(deadline),
        rule_id: 200,
        from_grant: true,
    };
    enforcer.grant(200, vec![grant]).unwrap();
    println!("READY {deadline}");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn survives_sigkill_and_is_adopted() {
    let _ = std::fs::remove_dir_all(PIN_DIR);
    let dir = TempDir::new("pins");
    let secret = dir.file("secret.txt");
    let (managed, _) = cgroups("pins");
    let (mut helper, ready) = spawn_helper(
        "pinning::pin_helper",
        &[
            ("WARD_HELPER_FILE", secret.display().to_string()),
            ("WARD_HELPER_CGROUP", managed.id().to_string()),
        ],
    );
    let deadline: u64 = ready.parse().unwrap();
    helper.kill().unwrap(); // SIGKILL
    helper.wait().unwrap();

    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Opened,
        "the dead agent's grant still holds"
    );
    while boot_ns() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Refused(libc::EACCES),
        "the grant expired in the kernel with no agent running"
    );

    let mut adopted = Enforcer::load(pinned()).expect("adopt");
    assert!(adopted.adopted(), "a new agent adopts the pins");
    let object = Object::Path(PathPattern::parse(secret.to_str().unwrap()).unwrap());
    let grant = grant_for(
        &managed,
        Op::Read,
        &object,
        201,
        Expiry::after(Duration::from_secs(60)),
    );
    adopted.grant(201, vec![grant]).unwrap();
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Opened,
        "the adopted maps are the live ones"
    );
    drop(adopted);
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Opened,
        "the grant holds after the agent that made it is gone"
    );
    // Detached programs would open as well: the grant still needs its
    // revoke, by a third agent that never saw it, for the protection to
    // show that it is still attached.
    let mut third = Enforcer::load(pinned()).expect("adopt again");
    assert!(
        third.revoke(201).unwrap(),
        "revoking a grant made by an earlier agent"
    );
    assert_eq!(
        open_as_child(Some(&managed), &secret, libc::O_RDONLY),
        OpenOutcome::Refused(libc::EACCES),
        "dropping an adopting agent detached nothing: the protection still denies"
    );
    drop(third);
    // Unpinning is how an operator removes ward for good.
    std::fs::remove_dir_all(PIN_DIR).unwrap();
}
