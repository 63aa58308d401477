//! Use in progress ends when its permission does: a file opened under a
//! grant, and a connection made under one, stop working at the deadline
//! (with nothing in user space acting), at revoke, and when a forbid
//! appears. And the routes to a destination that are not a connect.

use std::{
    io::Read,
    net::{SocketAddr, TcpListener, UdpSocket},
    time::Duration,
};

use ward_abi::{Effect, Op};
use ward_agent::{
    cgroup::OwnedCgroup,
    enforcer::{Enforcer, Entry, Expiry, NetPattern, Object, PathPattern, Subject, boot_ns},
};
use ward_tests::{
    OpenOutcome, TempDir,
    holder::{Holder, Target, Use},
    lifecycle::{grant_for, protection},
};

use crate::support::{cgroups, enforcer};

const OPENED: OpenOutcome = OpenOutcome::Opened;
const FILE_ENDED: OpenOutcome = OpenOutcome::Refused(libc::EACCES);
const SOCK_ENDED: OpenOutcome = OpenOutcome::Refused(libc::ECONNRESET);
const REFUSED: OpenOutcome = OpenOutcome::Refused(libc::EPERM);

/// Waits out `deadline` on the boot clock; nothing else happens meanwhile.
fn pass(deadline: u64) {
    while boot_ns() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn deadline_in(d: Duration) -> u64 {
    boot_ns() + d.as_nanos() as u64
}

struct Files {
    dir: TempDir,
    object: Object,
    managed: OwnedCgroup,
    _other: OwnedCgroup,
    enforcer: Enforcer,
}

fn files(tag: &str) -> Files {
    let dir = TempDir::new(tag);
    dir.file("data/secret.txt");
    let object =
        Object::Path(PathPattern::parse(&format!("{}/data/", dir.path().display())).unwrap());
    let (managed, other) = cgroups(tag);
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).expect("manage");
    enforcer
        .apply(&[
            protection(Op::Read, &object),
            protection(Op::Write, &object),
        ])
        .expect("apply protection");
    Files {
        dir,
        object,
        managed,
        _other: other,
        enforcer,
    }
}

impl Files {
    fn secret(&self) -> std::path::PathBuf {
        self.dir.path().join("data/secret.txt")
    }

    fn grant(&mut self, id: u64, ops: &[Op], expires: Expiry) {
        let entries = ops
            .iter()
            .map(|op| grant_for(&self.managed, *op, &self.object, id, expires))
            .collect();
        self.enforcer.grant(id, entries).expect("grant");
    }

    fn hold(&self, flags: i32) -> Holder {
        let h = Holder::start(
            &self.managed,
            Target::File {
                path: &self.secret(),
                flags,
            },
        );
        assert_eq!(h.opened, OPENED, "opened under the grant");
        h
    }
}

#[test]
fn a_file_opened_under_a_grant_cannot_be_read_after_its_deadline() {
    let mut f = files("held-deadline");
    let deadline = deadline_in(Duration::from_millis(2000));
    f.grant(200, &[Op::Read], Expiry::AtBootNs(deadline));
    let mut h = f.hold(libc::O_RDONLY);
    assert_eq!(h.try_use(Use::Read), OPENED, "read under the grant");
    assert_eq!(h.try_use(Use::Map), OPENED, "map under the grant");
    assert!(boot_ns() < deadline, "the holder overran the grant window");
    // Nothing in user space acts at the deadline: the kernel's clock ends it.
    pass(deadline);
    assert_eq!(h.try_use(Use::Read), FILE_ENDED, "read after the deadline");
    assert_eq!(h.try_use(Use::Map), FILE_ENDED, "map after the deadline");
    assert_eq!(
        h.try_use(Use::Read),
        FILE_ENDED,
        "and it stays ended (the decision is remembered)"
    );
}

#[test]
fn a_file_opened_under_a_grant_stops_reading_and_writing_at_revoke() {
    let mut f = files("held-revoke");
    f.grant(201, &[Op::Read, Op::Write], Expiry::Never);
    let mut h = f.hold(libc::O_RDWR);
    assert_eq!(h.try_use(Use::Read), OPENED);
    assert_eq!(h.try_use(Use::Write), OPENED);
    assert!(f.enforcer.revoke(201).expect("revoke"));
    assert_eq!(h.try_use(Use::Read), FILE_ENDED, "read after revoke");
    assert_eq!(h.try_use(Use::Write), FILE_ENDED, "write after revoke");
    // A new grant for the same subject lets the open file work again.
    f.grant(202, &[Op::Read], Expiry::Never);
    assert_eq!(h.try_use(Use::Read), OPENED, "read under a new grant");
}

#[test]
fn a_file_opened_under_a_policy_stops_when_a_forbid_covers_it() {
    let mut f = files("held-forbid");
    let allow = Entry {
        subject: Subject::Cgroup(f.managed.id()),
        op: Op::Read,
        object: f.object.clone(),
        effect: Effect::Allow,
        expires: Expiry::Never,
        rule_id: 300,
        from_grant: false,
    };
    let base = [
        protection(Op::Read, &f.object),
        protection(Op::Write, &f.object),
    ];
    let mut policy = base.to_vec();
    policy.push(allow.clone());
    f.enforcer.apply(&policy).expect("apply allow");
    let mut h = f.hold(libc::O_RDONLY);
    assert_eq!(h.try_use(Use::Read), OPENED, "read by standing policy");
    let mut forbid = allow;
    forbid.effect = Effect::Deny;
    forbid.rule_id = 301;
    let mut policy = base.to_vec();
    policy.push(forbid);
    f.enforcer.apply(&policy).expect("apply forbid");
    assert_eq!(
        h.try_use(Use::Read),
        FILE_ENDED,
        "read once a forbid covers it"
    );
}

/// Issue 16: a file opened under a *class's* allow (Cedar policy keyed by
/// principal class, the workload a member) ends when its holder moves to
/// a class without that allow: one membership update, and the next read
/// of the open file is refused. Moving back lets it read again.
#[test]
fn a_file_held_under_a_class_allow_ends_when_its_holder_moves_class() {
    use ward_agent::enforcer::BaseEdit;
    let mut f = files("held-class");
    let allow = Entry {
        subject: Subject::Class(1),
        op: Op::Read,
        object: f.object.clone(),
        effect: Effect::Allow,
        expires: Expiry::Never,
        rule_id: 400,
        from_grant: false,
    };
    // Class 2 is a class too, with only a write allow elsewhere in it: a
    // row the kernel holds, but no read of this object.
    let other = Entry {
        subject: Subject::Class(2),
        op: Op::Write,
        object: f.object.clone(),
        effect: Effect::Allow,
        expires: Expiry::Never,
        rule_id: 401,
        from_grant: false,
    };
    let base = vec![
        protection(Op::Read, &f.object),
        protection(Op::Write, &f.object),
        allow,
        other,
    ];
    let member = Subject::Cgroup(f.managed.id());
    f.enforcer
        .apply_with(&base, [(member, 1)].into())
        .expect("apply classes");
    let mut h = f.hold(libc::O_RDONLY);
    assert_eq!(h.try_use(Use::Read), OPENED, "read under the class allow");
    assert_eq!(h.try_use(Use::Map), OPENED, "map under the class allow");

    let moving = |to: u32| BaseEdit {
        remove: Vec::new(),
        add: Vec::new(),
        classes: vec![(member, Some(to))],
    };
    f.enforcer.update_base(&moving(2)).expect("move to class 2");
    assert_eq!(h.try_use(Use::Read), FILE_ENDED, "read after the move");
    assert_eq!(h.try_use(Use::Map), FILE_ENDED, "map after the move");
    f.enforcer.update_base(&moving(1)).expect("move back");
    assert_eq!(h.try_use(Use::Read), OPENED, "read back in class 1");
    // Out of every class: nothing but the protection.
    f.enforcer
        .update_base(&BaseEdit {
            remove: Vec::new(),
            add: Vec::new(),
            classes: vec![(member, None)],
        })
        .expect("leave");
    assert_eq!(h.try_use(Use::Read), FILE_ENDED, "read outside any class");
}

#[test]
fn a_held_file_outlives_nothing_once_closed() {
    // Files the kernel forgets when they are freed: the count goes back.
    let mut f = files("held-free");
    f.grant(203, &[Op::Read], Expiry::Never);
    let before = f.enforcer.stats().expect("stats").held_files;
    {
        let mut h = f.hold(libc::O_RDONLY);
        assert_eq!(h.try_use(Use::Read), OPENED);
        assert_eq!(f.enforcer.stats().expect("stats").held_files, before + 1);
    }
    assert_eq!(f.enforcer.stats().expect("stats").held_files, before);
}

struct Net {
    listener: TcpListener,
    object: Object,
    managed: OwnedCgroup,
    _other: OwnedCgroup,
    enforcer: Enforcer,
}

fn net(tag: &str, bind: &str, pattern: impl Fn(u16) -> String) -> Net {
    let listener = TcpListener::bind(bind).expect("listen");
    let port = listener.local_addr().unwrap().port();
    let object = Object::Net(NetPattern::parse(&pattern(port)).unwrap());
    let (managed, other) = cgroups(tag);
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).expect("manage");
    enforcer
        .apply(&[protection(Op::Connect, &object)])
        .expect("apply protection");
    Net {
        listener,
        object,
        managed,
        _other: other,
        enforcer,
    }
}

impl Net {
    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    fn grant(&mut self, id: u64, expires: Expiry) {
        let g = grant_for(&self.managed, Op::Connect, &self.object, id, expires);
        self.enforcer.grant(id, vec![g]).expect("grant");
    }
}

fn held_session_ends(tag: &str, bind: &str, pattern: impl Fn(u16) -> String) {
    let mut n = net(tag, bind, pattern);
    let to = n.listener.local_addr().unwrap();
    let deadline = deadline_in(Duration::from_millis(2000));
    n.grant(210, Expiry::AtBootNs(deadline));
    let mut h = Holder::start(&n.managed, Target::Tcp(to));
    assert_eq!(h.opened, OPENED, "connected under the grant");
    let (mut peer, _) = n.listener.accept().expect("accept");
    assert_eq!(h.try_use(Use::Send), OPENED, "send under the grant");
    let mut b = [0u8; 1];
    peer.read_exact(&mut b).expect("the peer got the byte");
    assert_eq!(h.try_use(Use::Recv), OPENED, "receive under the grant");
    assert!(boot_ns() < deadline, "the holder overran the grant window");
    pass(deadline);
    assert_eq!(h.try_use(Use::Send), SOCK_ENDED, "send after the deadline");
    assert_eq!(
        h.try_use(Use::Recv),
        SOCK_ENDED,
        "receive after the deadline"
    );
    // And a new connect is refused, as before.
    let again = Holder::start(&n.managed, Target::Tcp(to));
    assert_eq!(again.opened, REFUSED, "a new connect after the deadline");
}

#[test]
fn a_tcp_session_ends_at_its_grants_deadline_ipv4() {
    held_session_ends("held-tcp4", "127.0.0.1:0", |p| format!("127.0.0.1/32:{p}"));
}

#[test]
fn a_tcp_session_ends_at_its_grants_deadline_ipv6() {
    held_session_ends("held-tcp6", "[::1]:0", |p| format!("::1/128:{p}"));
}

#[test]
fn a_tcp_session_ends_at_revoke() {
    let mut n = net("held-tcp-revoke", "127.0.0.1:0", |p| {
        format!("127.0.0.1/32:{p}")
    });
    n.grant(211, Expiry::Never);
    let to = SocketAddr::from(([127, 0, 0, 1], n.port()));
    let mut h = Holder::start(&n.managed, Target::Tcp(to));
    assert_eq!(h.opened, OPENED);
    let _peer = n.listener.accept().expect("accept");
    assert_eq!(h.try_use(Use::Send), OPENED);
    assert!(n.enforcer.revoke(211).expect("revoke"));
    assert_eq!(h.try_use(Use::Send), SOCK_ENDED, "send after revoke");
    assert_eq!(h.try_use(Use::Recv), SOCK_ENDED, "receive after revoke");
}

/// What the peer of a connection sees next: data, the end, or a reset.
fn peer_sees(peer: &mut std::net::TcpStream) -> std::io::Result<usize> {
    peer.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut b = [0u8; 16];
    peer.read(&mut b)
}

fn is_reset(r: &std::io::Result<usize>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn a_tcp_session_is_reset_at_its_deadline_and_the_peer_sees_it() {
    let mut n = net("reset-deadline", "127.0.0.1:0", |p| {
        format!("127.0.0.1/32:{p}")
    });
    let to = n.listener.local_addr().unwrap();
    let deadline = deadline_in(Duration::from_millis(2000));
    n.grant(220, Expiry::AtBootNs(deadline));
    let mut h = Holder::start(&n.managed, Target::Tcp(to));
    assert_eq!(h.opened, OPENED, "connected under the grant");
    let (mut peer, _) = n.listener.accept().expect("accept");
    assert_eq!(h.try_use(Use::Send), OPENED, "send under the grant");
    assert_eq!(peer_sees(&mut peer).expect("the byte"), 1);
    // While the grant holds, a teardown pass leaves the connection alone.
    let early = n.enforcer.end_connections().expect("teardown pass");
    assert_eq!(early.reset, 0, "nothing ended yet: {early:?}");
    assert!(boot_ns() < deadline, "the test overran the grant window");
    pass(deadline);
    // What wardd's deadline timer runs.
    let t = n.enforcer.end_connections().expect("teardown pass");
    assert_eq!((t.reset, t.failed.len()), (1, 0), "{t:?}");
    assert!(
        is_reset(&peer_sees(&mut peer)),
        "the peer sees a reset, without the holder doing anything"
    );
    assert_ne!(h.try_use(Use::Send), OPENED, "the holder's next send fails");
    // Reset once: the socket is gone from the kernel's tables.
    let again = n.enforcer.end_connections().expect("teardown pass");
    assert_eq!(again.reset, 0, "{again:?}");
}

/// A workload in a container connects from the container's network
/// namespace; sock_diag asked in wardd's namespace does not see its
/// socket, so the reset is asked from a socket made in the holder's.
#[test]
fn a_tcp_session_in_a_containers_network_namespace_is_reset_at_its_deadline() {
    let mut n = net("reset-netns", "127.0.0.1:0", |p| {
        format!("127.0.0.1/32:{p}")
    });
    // The same address and port, inside the holder's own namespace.
    let to = n.listener.local_addr().unwrap();
    let deadline = deadline_in(Duration::from_millis(2000));
    n.grant(223, Expiry::AtBootNs(deadline));
    let mut h = Holder::start(&n.managed, Target::TcpInOwnNetns(to));
    assert_eq!(
        h.opened, OPENED,
        "connected under the grant, in its own namespace"
    );
    assert_eq!(h.try_use(Use::Send), OPENED, "send under the grant");
    assert_eq!(h.try_use(Use::PeerSees), OPENED, "the peer got the byte");
    assert!(boot_ns() < deadline, "the test overran the grant window");
    pass(deadline);
    let t = n.enforcer.end_connections().expect("teardown pass");
    assert_eq!((t.reset, t.failed.len()), (1, 0), "{t:?}");
    assert_eq!(
        h.try_use(Use::PeerSees),
        OpenOutcome::Refused(libc::ECONNRESET),
        "the peer, in the container's namespace, sees a reset"
    );
}

#[test]
fn a_tcp_session_is_reset_at_revoke_ipv6() {
    let mut n = net("reset-revoke6", "[::1]:0", |p| format!("::1/128:{p}"));
    let to = n.listener.local_addr().unwrap();
    n.grant(221, Expiry::Never);
    let mut h = Holder::start(&n.managed, Target::Tcp(to));
    assert_eq!(h.opened, OPENED);
    let (mut peer, _) = n.listener.accept().expect("accept");
    assert_eq!(h.try_use(Use::Send), OPENED);
    assert_eq!(peer_sees(&mut peer).expect("the byte"), 1);
    assert!(n.enforcer.revoke(221).expect("revoke"));
    // The revoke itself resets: no timer, no holder call.
    assert!(is_reset(&peer_sees(&mut peer)), "the peer sees a reset");
    assert_ne!(
        h.try_use(Use::Recv),
        OPENED,
        "the holder's next receive fails"
    );
}

#[test]
fn a_connection_nothing_ended_is_never_reset() {
    // Two destinations, one protected and granted, one not protected: a
    // forbid-free policy change resets neither.
    let mut n = net("reset-none", "127.0.0.1:0", |p| format!("127.0.0.1/32:{p}"));
    let open = TcpListener::bind("127.0.0.1:0").expect("listen");
    let to = n.listener.local_addr().unwrap();
    n.grant(222, Expiry::Never);
    let mut granted = Holder::start(&n.managed, Target::Tcp(to));
    let mut free = Holder::start(&n.managed, Target::Tcp(open.local_addr().unwrap()));
    assert_eq!((granted.opened, free.opened), (OPENED, OPENED));
    let (mut p1, _) = n.listener.accept().expect("accept");
    let (mut p2, _) = open.accept().expect("accept");
    // Another grant comes and goes: the rules change twice.
    n.grant(223, Expiry::Never);
    assert!(n.enforcer.revoke(223).expect("revoke"));
    let t = n.enforcer.end_connections().expect("teardown pass");
    assert_eq!(t.reset, 0, "{t:?}");
    assert_eq!(granted.try_use(Use::Send), OPENED);
    assert_eq!(free.try_use(Use::Send), OPENED);
    assert_eq!(peer_sees(&mut p1).expect("byte"), 1);
    assert_eq!(peer_sees(&mut p2).expect("byte"), 1);
}

#[test]
fn unconnected_udp_sendto_and_sendmmsg_are_decided_like_connect() {
    for (bind, pattern) in [("127.0.0.1:0", "127.0.0.1/32"), ("[::1]:0", "::1/128")] {
        let udp = UdpSocket::bind(bind).expect("udp");
        let to = udp.local_addr().unwrap();
        let object = Object::Net(NetPattern::parse(&format!("{pattern}:{}", to.port())).unwrap());
        let (managed, _other) = cgroups("route-udp");
        let mut e = enforcer();
        e.manage_cgroup(managed.id()).expect("manage");
        e.apply(&[protection(Op::Connect, &object)]).expect("apply");
        assert_eq!(
            ward_tests::send_to(&managed, to, libc::SOCK_DGRAM, 0),
            REFUSED,
            "{to}: sendto without a grant"
        );
        assert_eq!(
            ward_tests::send_mmsg(&managed, to),
            REFUSED,
            "{to}: sendmmsg without a grant"
        );
        let g = grant_for(&managed, Op::Connect, &object, 220, Expiry::Never);
        e.grant(220, vec![g]).expect("grant");
        assert_eq!(
            ward_tests::send_to(&managed, to, libc::SOCK_DGRAM, 0),
            OPENED,
            "{to}: sendto with a grant"
        );
        assert_eq!(
            ward_tests::send_mmsg(&managed, to),
            OPENED,
            "{to}: sendmmsg with a grant"
        );
    }
}

#[test]
fn tcp_fast_open_is_decided_like_connect() {
    // Client and server fast open, as a user cannot change but a host may
    // have: the route must be closed whatever the sysctl says.
    std::fs::write("/proc/sys/net/ipv4/tcp_fastopen", "3").expect("enable fast open");
    let mut n = net("route-tfo", "127.0.0.1:0", |p| format!("127.0.0.1/32:{p}"));
    let to = SocketAddr::from(([127, 0, 0, 1], n.port()));
    assert_eq!(
        ward_tests::send_to(&n.managed, to, libc::SOCK_STREAM, libc::MSG_FASTOPEN),
        REFUSED,
        "MSG_FASTOPEN without a grant"
    );
    n.grant(221, Expiry::Never);
    assert_eq!(
        ward_tests::send_to(&n.managed, to, libc::SOCK_STREAM, libc::MSG_FASTOPEN),
        OPENED,
        "MSG_FASTOPEN with a grant"
    );
}

#[test]
fn the_any_address_is_decided_as_where_it_goes() {
    // 0.0.0.0 reaches loopback, or the socket's bound address; :: reaches ::1.
    let mut n = net("route-any4", "0.0.0.0:0", |p| format!("127.0.0.1/32:{p}"));
    let port = n.port();
    let any4 = SocketAddr::from(([0, 0, 0, 0], port));
    assert_eq!(
        ward_tests::connect_as_child(Some(&n.managed), any4),
        REFUSED,
        "0.0.0.0 is 127.0.0.1"
    );
    let bound = NetPattern::parse(&format!("127.0.0.2/32:{port}")).unwrap();
    n.enforcer
        .apply(&[
            protection(Op::Connect, &n.object),
            protection(Op::Connect, &Object::Net(bound)),
        ])
        .expect("apply");
    assert_eq!(
        ward_tests::connect_from(&n.managed, "127.0.0.2:0".parse().unwrap(), any4),
        REFUSED,
        "0.0.0.0 from a socket bound to 127.0.0.2 is 127.0.0.2"
    );
    n.grant(222, Expiry::Never);
    assert_eq!(
        ward_tests::connect_as_child(Some(&n.managed), any4),
        OPENED,
        "0.0.0.0 with a grant for 127.0.0.1"
    );

    let n6 = net("route-any6", "[::]:0", |p| format!("::1/128:{p}"));
    let any6 = SocketAddr::from(([0u16; 8], n6.port()));
    assert_eq!(
        ward_tests::connect_as_child(Some(&n6.managed), any6),
        REFUSED,
        ":: is ::1"
    );
}

#[test]
fn a_narrower_protection_does_not_hide_a_broader_one() {
    // 127.20.0.0/16 on every port, and 127.20.0.5 on one port inside it:
    // a connect to another port of 127.20.0.5 is still protected.
    let one = TcpListener::bind("127.20.0.5:0").expect("listen");
    let other = TcpListener::bind("127.20.0.5:0").expect("listen");
    let (p1, p2) = (
        one.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let broad = Object::Net(NetPattern::parse("127.20.0.0/16:*").unwrap());
    let narrow = Object::Net(NetPattern::parse(&format!("127.20.0.5/32:{p1}")).unwrap());
    let (managed, _other) = cgroups("nested-net");
    let mut e = enforcer();
    e.manage_cgroup(managed.id()).expect("manage");
    e.apply(&[
        protection(Op::Connect, &broad),
        protection(Op::Connect, &narrow),
    ])
    .expect("apply");
    let to = |p| SocketAddr::from(([127, 20, 0, 5], p));
    assert_eq!(
        ward_tests::connect_as_child(Some(&managed), to(p2)),
        REFUSED,
        "the /16 protects port {p2} of the /32"
    );
    assert_eq!(
        ward_tests::connect_as_child(Some(&managed), to(p1)),
        REFUSED,
        "the /32 protects its own port"
    );
    // A grant for the /32's one port does not open the others, and a rule
    // for the /16 reaches through the /32 to port p2.
    let g = grant_for(&managed, Op::Connect, &narrow, 230, Expiry::Never);
    e.grant(230, vec![g]).expect("grant");
    assert_eq!(ward_tests::connect_as_child(Some(&managed), to(p1)), OPENED);
    assert_eq!(
        ward_tests::connect_as_child(Some(&managed), to(p2)),
        REFUSED,
        "a grant for port {p1} only"
    );
    let g = grant_for(&managed, Op::Connect, &broad, 231, Expiry::Never);
    e.grant(231, vec![g]).expect("grant");
    assert_eq!(
        ward_tests::connect_as_child(Some(&managed), to(p2)),
        OPENED,
        "the /16 grant, past the /32 grant that does not cover port {p2}"
    );
}

/// Connects (or, for datagrams, sends) to the unix socket bound at `path`.
fn unix_to(cg: &OwnedCgroup, path: &std::path::Path, kind: i32) -> OpenOutcome {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as u16;
    for (d, s) in sun.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: socket, connect/sendto, close with a valid address.
    unsafe {
        ward_tests::in_child(Some(cg), || {
            let s = libc::socket(libc::AF_UNIX, kind, 0);
            if s < 0 {
                return ward_tests::errno();
            }
            let addr = (&sun as *const libc::sockaddr_un).cast();
            let r = if kind == libc::SOCK_DGRAM {
                libc::sendto(s, b"x".as_ptr().cast(), 1, 0, addr, len) as i32
            } else {
                libc::connect(s, addr, len)
            };
            let e = if r < 0 { ward_tests::errno() } else { 0 };
            libc::close(s);
            e
        })
    }
}

#[test]
fn a_unix_socket_in_a_protected_tree_needs_write() {
    // PostgreSQL's .s.PGSQL.5432 is the same server as its TCP port.
    let mut f = files("route-unix");
    let stream = f.dir.path().join("data/stream.sock");
    let dgram = f.dir.path().join("data/dgram.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&stream).expect("bind stream");
    let _receiver = std::os::unix::net::UnixDatagram::bind(&dgram).expect("bind dgram");
    assert_eq!(
        unix_to(&f.managed, &stream, libc::SOCK_STREAM),
        FILE_ENDED,
        "connect without a grant"
    );
    assert_eq!(
        unix_to(&f.managed, &dgram, libc::SOCK_DGRAM),
        FILE_ENDED,
        "sendto without a grant"
    );
    f.grant(240, &[Op::Write], Expiry::Never);
    assert_eq!(unix_to(&f.managed, &stream, libc::SOCK_STREAM), OPENED);
    assert_eq!(unix_to(&f.managed, &dgram, libc::SOCK_DGRAM), OPENED);
}
