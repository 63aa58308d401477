//! The cgroup connect hooks outlive the agent on the host kernel too:
//! SIGKILL it, and connects stay decided and grants still expire; a new
//! agent adopts the pins.

use std::{path::PathBuf, time::Duration};

use ward_abi::{Effect, Op};
use ward_agent::enforcer::{
    Enforcer, EnforcerConfig, Entry, Expiry, Hooks, NetPattern, Object, Subject, boot_ns,
};
use ward_tests::{
    OpenOutcome, connect_as_child,
    lifecycle::{grant_for, protection},
    spawn_helper,
};

use crate::connect::sandbox;

fn config(pin_dir: &str, cgroup: &str) -> EnforcerConfig {
    EnforcerConfig {
        pin_dir: Some(PathBuf::from(pin_dir)),
        hooks: Hooks {
            lsm: false,
            cgroup_connect: Some(PathBuf::from(cgroup)),
        },
        ..Default::default()
    }
}

/// The agent stand-in, run as its own process by the test below.
#[test]
#[ignore = "helper process for cgroup_hooks_survive_sigkill_and_are_adopted"]
fn cgroup_pin_helper() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("run by cgroup_hooks_survive_sigkill_and_are_adopted, which sets {name}")
        })
    };
    let (pins, root, managed, target) = (
        var("WARD_HELPER_PINS"),
        var("WARD_HELPER_ROOT"),
        var("WARD_HELPER_MANAGED"),
        var("WARD_HELPER_TARGET"),
    );
    let managed: u64 = managed.parse().unwrap();
    let object = Object::Net(NetPattern::parse(&target).unwrap());
    let mut enforcer = Enforcer::load(config(&pins, &root)).expect("load pinned");
    enforcer.manage_cgroup(managed).unwrap();
    enforcer.apply(&[protection(Op::Connect, &object)]).unwrap();
    let deadline = boot_ns() + Duration::from_secs(2).as_nanos() as u64;
    let grant = Entry {
        subject: Subject::Cgroup(managed),
        op: Op::Connect,
        object,
        effect: Effect::Allow,
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
fn cgroup_hooks_survive_sigkill_and_are_adopted() {
    let pins = format!("/sys/fs/bpf/ward-native-pins-{}", std::process::id());
    let sb = sandbox("pins");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = format!("127.0.0.1/32:{}", addr.port());
    let root = sb.root.path().display().to_string();
    let (mut helper, ready) = spawn_helper(
        "pinning::cgroup_pin_helper",
        &[
            ("WARD_HELPER_PINS", pins.clone()),
            ("WARD_HELPER_ROOT", root.clone()),
            ("WARD_HELPER_MANAGED", sb.managed.id().to_string()),
            ("WARD_HELPER_TARGET", target.clone()),
        ],
    );
    let deadline: u64 = ready.parse().unwrap();
    helper.kill().unwrap(); // SIGKILL
    helper.wait().unwrap();

    let denied = OpenOutcome::Refused(libc::EPERM);
    assert_eq!(
        connect_as_child(Some(&sb.managed), addr),
        OpenOutcome::Opened,
        "the dead agent's grant still holds"
    );
    while boot_ns() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        connect_as_child(Some(&sb.managed), addr),
        denied,
        "the grant expired in the kernel with no agent running"
    );
    assert_eq!(
        connect_as_child(Some(&sb.unmanaged), addr),
        OpenOutcome::Opened
    );

    let mut adopted = Enforcer::load(config(&pins, &root)).expect("adopt");
    assert!(adopted.adopted(), "a new agent adopts the pins");
    let object = Object::Net(NetPattern::parse(&target).unwrap());
    let grant = grant_for(&sb.managed, Op::Connect, &object, 201, Expiry::Never);
    adopted.grant(201, vec![grant]).unwrap();
    assert_eq!(
        connect_as_child(Some(&sb.managed), addr),
        OpenOutcome::Opened
    );
    drop(adopted);
    assert!(adopted_revoke_is_still_needed(&pins, &root, &sb, addr));

    // Unpinning is how an operator removes ward for good.
    std::fs::remove_dir_all(&pins).unwrap();
}

/// Dropping an adopting agent detaches nothing: the grant it made holds
/// until revoked, and a third agent can revoke it without having seen it.
fn adopted_revoke_is_still_needed(
    pins: &str,
    root: &str,
    sb: &crate::connect::Sandbox,
    addr: std::net::SocketAddr,
) -> bool {
    assert_eq!(
        connect_as_child(Some(&sb.managed), addr),
        OpenOutcome::Opened
    );
    let mut third = Enforcer::load(config(pins, root)).expect("adopt again");
    assert!(
        third.revoke(201).unwrap(),
        "revoking a grant made by an earlier agent"
    );
    connect_as_child(Some(&sb.managed), addr) == OpenOutcome::Refused(libc::EPERM)
}
