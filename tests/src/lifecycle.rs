//! One scenario, run for every operation: deny without an allow, allow with
//! a grant, deny at once after revoke, deny at the deadline, and leave
//! unmanaged processes alone.

use std::time::Duration;

use ward_abi::{Effect, Op};
use ward_agent::{
    cgroup::OwnedCgroup,
    enforcer::{Enforcer, Entry, Expiry, Object, Subject, boot_ns},
};

use crate::OpenOutcome;

/// Rule id of the protection entry the scenario applies.
pub const PROTECTION_ID: u64 = 1;
/// Grant ids the scenario uses.
pub const GRANT_ID: u64 = 100;
pub const EXPIRING_GRANT_ID: u64 = 101;

pub struct Scenario<'a> {
    pub op: Op,
    pub object: Object,
    pub managed: &'a OwnedCgroup,
    pub unmanaged: &'a OwnedCgroup,
    /// Tries the operation from a child in the given cgroup.
    pub attempt: &'a dyn Fn(Option<&OwnedCgroup>) -> OpenOutcome,
    /// The errno a denied attempt gets.
    pub denied_errno: i32,
}

pub fn protection(op: Op, object: &Object) -> Entry {
    Entry {
        subject: Subject::Protected,
        op,
        object: object.clone(),
        effect: Effect::Deny,
        expires: Expiry::Never,
        rule_id: PROTECTION_ID,
        from_grant: false,
    }
}

pub fn grant_for(cg: &OwnedCgroup, op: Op, object: &Object, id: u64, expires: Expiry) -> Entry {
    Entry {
        subject: Subject::Cgroup(cg.id()),
        op,
        object: object.clone(),
        effect: Effect::Allow,
        expires,
        rule_id: id,
        from_grant: true,
    }
}

/// Runs the whole scenario: protected, granted, denied once the deadline
/// has passed on the kernel's clock, and never anything for the unmanaged.
pub fn run(enforcer: &mut Enforcer, s: &Scenario<'_>) {
    let op = s.op;
    let denied = OpenOutcome::Refused(s.denied_errno);
    enforcer.manage_cgroup(s.managed.id()).expect("manage");
    enforcer
        .apply(&[protection(op, &s.object)])
        .expect("apply protection");

    assert_eq!(
        (s.attempt)(Some(s.managed)),
        denied,
        "{op:?}: denied without an allow"
    );
    assert_eq!(
        (s.attempt)(Some(s.unmanaged)),
        OpenOutcome::Opened,
        "{op:?}: an unmanaged process is unaffected"
    );
    assert_eq!(
        (s.attempt)(None),
        OpenOutcome::Opened,
        "{op:?}: the test runner is unaffected"
    );

    let long = Expiry::after(Duration::from_secs(600));
    enforcer
        .grant(
            GRANT_ID,
            vec![grant_for(s.managed, op, &s.object, GRANT_ID, long)],
        )
        .expect("grant");
    assert_eq!(
        (s.attempt)(Some(s.managed)),
        OpenOutcome::Opened,
        "{op:?}: allowed with a grant"
    );

    assert!(enforcer.revoke(GRANT_ID).expect("revoke"));
    assert_eq!(
        (s.attempt)(Some(s.managed)),
        denied,
        "{op:?}: denied at once after revoke"
    );

    // Software emulation makes a fork take milliseconds: leave room.
    let window = Duration::from_millis(1500);
    let deadline = boot_ns() + window.as_nanos() as u64;
    let expiring = grant_for(
        s.managed,
        op,
        &s.object,
        EXPIRING_GRANT_ID,
        Expiry::AtBootNs(deadline),
    );
    enforcer
        .grant(EXPIRING_GRANT_ID, vec![expiring])
        .expect("grant with deadline");
    assert_eq!(
        (s.attempt)(Some(s.managed)),
        OpenOutcome::Opened,
        "{op:?}: allowed before the deadline"
    );
    assert!(
        boot_ns() < deadline,
        "{op:?}: the attempt itself overran the grant window"
    );
    // Nothing in user space acts at the deadline: only the kernel's own
    // comparison with its boot clock can turn this into a deny.
    while boot_ns() < deadline {
        std::hint::spin_loop();
    }
    // How soon after the deadline the attempt runs is the scheduler's
    // business, so nothing is timed here: `cargo xtask bench` measures
    // expiry precision.
    assert_eq!(
        (s.attempt)(Some(s.managed)),
        denied,
        "{op:?}: denied after the deadline"
    );
    assert_eq!(
        (s.attempt)(Some(s.unmanaged)),
        OpenOutcome::Opened,
        "{op:?}: still no effect on unmanaged processes"
    );
}
