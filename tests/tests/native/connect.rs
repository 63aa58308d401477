//! Network enforcement through the cgroup connect4/connect6 hooks, on the
//! host kernel (which refuses BPF LSM). Programs attach only to a cgroup
//! the test creates, so nothing else on the host is affected.

use std::{net::TcpListener, time::Instant};

use ward_abi::Op;
use ward_agent::{
    cgroup::{OwnedCgroup, cgroup2_mount},
    enforcer::{Enforcer, EnforcerConfig, Expiry, Hooks, NetPattern, Object},
};
use ward_tests::{
    OpenOutcome, connect_as_child,
    lifecycle::{self, GRANT_ID, Scenario, grant_for, protection},
};

pub struct Sandbox {
    // Field order: children are removed before their parent.
    pub managed: OwnedCgroup,
    pub unmanaged: OwnedCgroup,
    pub root: OwnedCgroup,
}

pub fn sandbox(tag: &str) -> Sandbox {
    let top = cgroup2_mount().expect("cgroup2 mounted");
    let root = OwnedCgroup::create(&top, &format!("ward-native-{tag}-{}", std::process::id()))
        .expect("create test cgroup");
    let managed = OwnedCgroup::create(root.path(), "managed").unwrap();
    let unmanaged = OwnedCgroup::create(root.path(), "unmanaged").unwrap();
    Sandbox {
        managed,
        unmanaged,
        root,
    }
}

pub fn cgroup_enforcer(sb: &Sandbox, max_net_rules: u32) -> Enforcer {
    Enforcer::load(EnforcerConfig {
        max_net_rules,
        hooks: Hooks {
            lsm: false,
            cgroup_connect: Some(sb.root.path().to_owned()),
        },
        ..Default::default()
    })
    .expect("load enforcer with cgroup connect hooks")
}

#[test]
fn connect_lifecycle_through_cgroup_hooks() {
    let sb = sandbox("life");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", addr.port())).unwrap());
    let mut enforcer = cgroup_enforcer(&sb, 1024);
    let attempt = |cg: Option<&_>| connect_as_child(cg, addr);
    lifecycle::run(
        &mut enforcer,
        &Scenario {
            op: Op::Connect,
            object,
            managed: &sb.managed,
            unmanaged: &sb.unmanaged,
            attempt: &attempt,
            denied_errno: libc::EPERM,
        },
    );
}

/// The hooks remember "unmanaged" per cgroup (an LRU) and per CPU (one
/// word). Managing a cgroup its processes have been calling from must take
/// effect on the next call, from every CPU, and unmanaging likewise.
#[test]
fn managing_a_cgroup_that_was_in_use_takes_effect_at_once() {
    let sb = sandbox("l1");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut enforcer = cgroup_enforcer(&sb, 1024);
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", addr.port())).unwrap());
    enforcer.apply(&[protection(Op::Connect, &object)]).unwrap();
    let denied = OpenOutcome::Refused(libc::EPERM);
    for round in 0..3 {
        // Warm both caches on every CPU the children land on.
        for _ in 0..40 {
            assert_eq!(
                connect_as_child(Some(&sb.managed), addr),
                OpenOutcome::Opened,
                "round {round}: not managed yet"
            );
            drop(listener.accept());
        }
        enforcer.manage_cgroup(sb.managed.id()).unwrap();
        for _ in 0..40 {
            assert_eq!(
                connect_as_child(Some(&sb.managed), addr),
                denied,
                "round {round}: managed now, and protected"
            );
        }
        enforcer.unmanage_cgroup(sb.managed.id()).unwrap();
    }
}

#[test]
fn ipv6_and_mapped_destinations_meet_the_same_rules() {
    let sb = sandbox("v6");
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = v4.local_addr().unwrap().port();
    let mut enforcer = cgroup_enforcer(&sb, 1024);
    enforcer.manage_cgroup(sb.managed.id()).unwrap();
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.0/8:{port}")).unwrap());
    enforcer.apply(&[protection(Op::Connect, &object)]).unwrap();
    let denied = OpenOutcome::Refused(libc::EPERM);
    let mapped = format!("[::ffff:127.0.0.1]:{port}").parse().unwrap();
    assert_eq!(
        connect_as_child(Some(&sb.managed), mapped),
        denied,
        "v4-mapped via connect6"
    );
    assert_eq!(
        connect_as_child(Some(&sb.unmanaged), mapped),
        OpenOutcome::Opened
    );

    let other_port = TcpListener::bind("127.0.0.1:0").unwrap();
    let free = other_port.local_addr().unwrap();
    assert_eq!(
        connect_as_child(Some(&sb.managed), free),
        OpenOutcome::Opened,
        "ports outside the protected range are not decided"
    );
}

#[test]
fn a_hundred_thousand_entries_load_and_lookups_still_work() {
    let sb = sandbox("100k");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut enforcer = cgroup_enforcer(&sb, 131_072);
    enforcer.manage_cgroup(sb.managed.id()).unwrap();
    let target = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", addr.port())).unwrap());
    let mut table: Vec<_> = (0..100_000u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | i);
            let o = Object::Net(NetPattern::parse(&format!("{ip}/32:443")).unwrap());
            protection(Op::Connect, &o)
        })
        .collect();
    table.push(protection(Op::Connect, &target));
    let started = Instant::now();
    enforcer.apply(&table).expect("apply 100k entries");
    println!("applied {} entries in {:?}", table.len(), started.elapsed());
    assert_eq!(enforcer.stats().unwrap().net_rules, 100_001);

    assert_eq!(
        connect_as_child(Some(&sb.managed), addr),
        OpenOutcome::Refused(libc::EPERM)
    );
    let grant = grant_for(&sb.managed, Op::Connect, &target, GRANT_ID, Expiry::Never);
    enforcer.grant(GRANT_ID, vec![grant]).unwrap();
    assert_eq!(
        connect_as_child(Some(&sb.managed), addr),
        OpenOutcome::Opened
    );
}

/// The routes to a destination that the cgroup hooks see besides connect:
/// UDP datagrams with an address (sendmsg4/sendmsg6), TCP Fast Open, and
/// 0.0.0.0 / `::` decided as where Linux sends them.
#[test]
fn udp_sends_and_the_any_address_meet_the_same_rules() {
    let sb = sandbox("routes");
    let mut enforcer = cgroup_enforcer(&sb, 1024);
    enforcer.manage_cgroup(sb.managed.id()).unwrap();
    let denied = OpenOutcome::Refused(libc::EPERM);
    for (bind, pattern) in [("127.0.0.1:0", "127.0.0.1/32"), ("[::1]:0", "::1/128")] {
        let udp = std::net::UdpSocket::bind(bind).unwrap();
        let to = udp.local_addr().unwrap();
        let object = Object::Net(NetPattern::parse(&format!("{pattern}:{}", to.port())).unwrap());
        enforcer.apply(&[protection(Op::Connect, &object)]).unwrap();
        assert_eq!(
            ward_tests::send_to(&sb.managed, to, libc::SOCK_DGRAM, 0),
            denied,
            "{to}: UDP sendto without a grant"
        );
        assert_eq!(
            ward_tests::send_to(&sb.unmanaged, to, libc::SOCK_DGRAM, 0),
            OpenOutcome::Opened,
            "{to}: unmanaged"
        );
        assert_eq!(
            ward_tests::send_mmsg(&sb.managed, to),
            denied,
            "{to}: UDP sendmmsg without a grant"
        );
        let g = grant_for(&sb.managed, Op::Connect, &object, GRANT_ID, Expiry::Never);
        enforcer.grant(GRANT_ID, vec![g]).unwrap();
        assert_eq!(
            ward_tests::send_to(&sb.managed, to, libc::SOCK_DGRAM, 0),
            OpenOutcome::Opened,
            "{to}: UDP sendto with a grant"
        );
        assert_eq!(
            ward_tests::send_mmsg(&sb.managed, to),
            OpenOutcome::Opened,
            "{to}: UDP sendmmsg with a grant"
        );
        enforcer.revoke(GRANT_ID).unwrap();
    }

    // TCP Fast Open connects from sendto: the cgroup connect hooks run
    // for it too (the kernel's pre_connect).
    let tfo = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = tfo.local_addr().unwrap();
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", to.port())).unwrap());
    enforcer.apply(&[protection(Op::Connect, &object)]).unwrap();
    assert_eq!(
        ward_tests::send_to(&sb.managed, to, libc::SOCK_STREAM, libc::MSG_FASTOPEN),
        denied,
        "MSG_FASTOPEN without a grant"
    );
    let g = grant_for(&sb.managed, Op::Connect, &object, GRANT_ID, Expiry::Never);
    enforcer.grant(GRANT_ID, vec![g]).unwrap();
    assert_eq!(
        ward_tests::send_to(&sb.managed, to, libc::SOCK_STREAM, libc::MSG_FASTOPEN),
        OpenOutcome::Opened,
        "MSG_FASTOPEN with a grant"
    );
    enforcer.revoke(GRANT_ID).unwrap();

    let tcp = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{port}")).unwrap());
    enforcer.apply(&[protection(Op::Connect, &object)]).unwrap();
    assert_eq!(
        connect_as_child(Some(&sb.managed), ([0, 0, 0, 0], port).into()),
        denied,
        "0.0.0.0 is 127.0.0.1"
    );
    let bound = Object::Net(NetPattern::parse(&format!("127.0.0.2/32:{port}")).unwrap());
    enforcer.apply(&[protection(Op::Connect, &bound)]).unwrap();
    assert_eq!(
        ward_tests::connect_from(
            &sb.managed,
            "127.0.0.2:0".parse().unwrap(),
            ([0, 0, 0, 0], port).into()
        ),
        denied,
        "0.0.0.0 from a socket bound to 127.0.0.2 is 127.0.0.2"
    );
}

/// Two services on one address (PostgreSQL and Redis on one host) are
/// protected and granted each on its own port, and a forbid on one port
/// beats the same subject's allow on every port of the network.
#[test]
fn services_on_one_address_are_protected_and_granted_apart() {
    let sb = sandbox("ports");
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let [pa, pb, free] = [0, 1, 2].map(|i| listeners[i].local_addr().unwrap());
    let on = |port: u16| Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{port}")).unwrap());
    let (a, b) = (on(pa.port()), on(pb.port()));
    let mut e = cgroup_enforcer(&sb, 1024);
    e.manage_cgroup(sb.managed.id()).unwrap();
    let protections = [protection(Op::Connect, &a), protection(Op::Connect, &b)];
    e.apply(&protections)
        .expect("two ports of one address protected");
    let denied = OpenOutcome::Refused(libc::EPERM);
    let try_to = |to| connect_as_child(Some(&sb.managed), to);
    assert_eq!(try_to(pa), denied, "{pa} protected");
    assert_eq!(try_to(pb), denied, "{pb} protected");
    assert_eq!(try_to(free), OpenOutcome::Opened, "{free} is not");

    e.grant(
        GRANT_ID,
        vec![grant_for(
            &sb.managed,
            Op::Connect,
            &a,
            GRANT_ID,
            Expiry::Never,
        )],
    )
    .unwrap();
    assert_eq!(try_to(pa), OpenOutcome::Opened, "granted {pa}");
    assert_eq!(try_to(pb), denied, "a grant for {pa} does not open {pb}");
    let second = GRANT_ID + 1;
    e.grant(
        second,
        vec![grant_for(
            &sb.managed,
            Op::Connect,
            &b,
            second,
            Expiry::Never,
        )],
    )
    .unwrap();
    assert_eq!(try_to(pb), OpenOutcome::Opened, "granted {pb} too");
    e.revoke(GRANT_ID).unwrap();
    assert_eq!(try_to(pa), denied, "{pa} revoked");
    assert_eq!(try_to(pb), OpenOutcome::Opened, "{pb} still granted");

    // Every port of the address for the workload, and a forbid on one.
    let every = Object::Net(NetPattern::parse("127.0.0.1/32:*").unwrap());
    let third = GRANT_ID + 2;
    e.grant(
        third,
        vec![grant_for(
            &sb.managed,
            Op::Connect,
            &every,
            third,
            Expiry::Never,
        )],
    )
    .unwrap();
    let mut forbid = grant_for(&sb.managed, Op::Connect, &a, 77, Expiry::Never);
    forbid.effect = ward_abi::Effect::Deny;
    forbid.from_grant = false;
    let mut with_forbid = protections.to_vec();
    with_forbid.push(forbid);
    e.apply(&with_forbid).unwrap();
    assert_eq!(
        try_to(pa),
        denied,
        "the forbid on {pa} beats the grant on every port"
    );
    assert_eq!(try_to(pb), OpenOutcome::Opened, "{pb} by either grant");
    // Explain gives the kernel's answer, naming the deciding rule (of two
    // allows that never end, the first range: every port).
    let caller = ward_agent::enforcer::Caller {
        // SAFETY: getuid cannot fail.
        uid: Some(unsafe { libc::getuid() }),
        login_uid: None,
        cgroup: Some(sb.managed.path().to_owned()),
    };
    for (to, allowed, rule) in [(pa, false, 77), (pb, true, third)] {
        let x = e
            .explain(&caller, Op::Connect, &ward_agent::enforcer::Probe::Addr(to))
            .expect("explain");
        let v = x.verdict.expect("decided");
        assert_eq!((v.allow, v.rule_id), (allowed, rule), "explain {to}");
    }
    let x = e
        .explain(
            &caller,
            Op::Connect,
            &ward_agent::enforcer::Probe::Addr(free),
        )
        .expect("explain");
    assert_eq!(x.verdict, None, "{free} is not protected");

    // The kernel holds four ranges per network: a fifth is refused by
    // name, and the table in force stays.
    let five: Vec<_> = (1..=5)
        .map(|i| protection(Op::Connect, &on(free.port().wrapping_add(i))))
        .collect();
    let err = e
        .apply(&five)
        .expect_err("five port ranges on one network")
        .to_string();
    assert!(
        err.contains("127.0.0.1/32:") && err.contains("at most 4"),
        "{err}"
    );
    assert_eq!(try_to(pa), denied, "the previous table still in force");
    assert_eq!(try_to(pb), OpenOutcome::Opened);
}
