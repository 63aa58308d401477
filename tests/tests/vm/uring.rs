//! io_uring reaches files and sockets without the syscalls ward's hooks
//! are named after, so each of its operations must be decided like the
//! syscall it stands for: open, connect, read through a held file, send
//! through a held connection. Both ways io_uring runs an operation are
//! tried: inline, in the submitting task, and forced onto an io-wq worker
//! thread (`IOSQE_ASYNC`), which acts for the submitter.

use std::{
    ffi::CString,
    net::{SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    time::Duration,
};

use io_uring::{IoUring, opcode, squeue, types};
use ward_abi::Op;
use ward_agent::{
    cgroup::OwnedCgroup,
    enforcer::{Enforcer, Expiry, NetPattern, Object, PathPattern, boot_ns},
};
use ward_tests::{
    TempDir,
    bench::{enter_cgroup, leave_cgroup},
    lifecycle::{grant_for, protection},
    sockaddr,
};

use crate::support::{cgroups, enforcer};

/// The two ways a ring runs an operation.
const MODES: [(&str, squeue::Flags); 2] = [
    ("inline", squeue::Flags::empty()),
    ("io-wq worker", squeue::Flags::ASYNC),
];

/// Submits one operation on a fresh ring made by this process and waits
/// for its completion: the result (`-errno` on failure).
fn run(entry: squeue::Entry) -> i32 {
    let mut ring = IoUring::new(4).expect("io_uring_setup");
    // SAFETY: every buffer and address the entry points at outlives the
    // wait below.
    unsafe { ring.submission().push(&entry).expect("queue") };
    ring.submit_and_wait(1).expect("submit");
    ring.completion().next().expect("a completion").result()
}

/// Runs `f` with this whole process in `cg` (io_uring's worker threads
/// are created in the submitter's cgroup), then moves it back: the
/// enforcer calls between steps must not run as a managed process.
fn as_member<T>(cg: &OwnedCgroup, f: impl FnOnce() -> T) -> T {
    enter_cgroup(cg.path());
    let r = f();
    leave_cgroup();
    r
}

fn connect_entry(fd: i32, addr: &(i32, libc::sockaddr_storage, libc::socklen_t)) -> squeue::Entry {
    opcode::Connect::new(
        types::Fd(fd),
        (&addr.1 as *const libc::sockaddr_storage).cast(),
        addr.2,
    )
    .build()
}

/// A connect through the ring: 0 or `-errno`.
fn ring_connect(to: SocketAddr, flags: squeue::Flags) -> i32 {
    let addr = sockaddr(to);
    // SAFETY: a plain socket, closed below.
    let fd = unsafe { libc::socket(addr.0, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let r = run(connect_entry(fd, &addr).flags(flags));
    // SAFETY: closing the socket made above.
    unsafe { libc::close(fd) };
    r
}

/// An openat through the ring: 0 when it opened (the file is closed), or
/// `-errno`.
fn ring_open(path: &std::path::Path, flags: squeue::Flags) -> i32 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let r = run(opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c.as_ptr())
        .flags(libc::O_RDONLY | libc::O_CLOEXEC)
        .build()
        .flags(flags));
    if r >= 0 {
        // SAFETY: the descriptor the ring opened.
        unsafe { libc::close(r) };
        0
    } else {
        r
    }
}

struct Setup {
    managed: OwnedCgroup,
    _other: OwnedCgroup,
    enforcer: Enforcer,
}

fn setup(tag: &str, protect: &[(Op, &Object)]) -> Setup {
    let (managed, other) = cgroups(tag);
    let mut enforcer = enforcer();
    enforcer.manage_cgroup(managed.id()).expect("manage");
    let entries: Vec<_> = protect.iter().map(|(op, o)| protection(*op, o)).collect();
    enforcer.apply(&entries).expect("apply protection");
    Setup {
        managed,
        _other: other,
        enforcer,
    }
}

#[test]
fn io_uring_connect_is_decided_like_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", to.port())).unwrap());
    let mut s = setup("uring-connect", &[(Op::Connect, &object)]);
    for (mode, flags) in MODES {
        let r = as_member(&s.managed, || ring_connect(to, flags));
        assert_eq!(r, -libc::EPERM, "{mode}: refused without a grant");
        assert_eq!(ring_connect(to, flags), 0, "{mode}: unmanaged: allowed");
    }
    let g = grant_for(&s.managed, Op::Connect, &object, 300, Expiry::Never);
    s.enforcer.grant(300, vec![g]).expect("grant");
    for (mode, flags) in MODES {
        let r = as_member(&s.managed, || ring_connect(to, flags));
        assert_eq!(r, 0, "{mode}: allowed by the grant");
    }
}

#[test]
fn io_uring_openat_is_decided_like_open() {
    let dir = TempDir::new("uring-open");
    let secret = dir.file("data/secret.txt");
    let object =
        Object::Path(PathPattern::parse(&format!("{}/data/", dir.path().display())).unwrap());
    let mut s = setup("uring-open", &[(Op::Read, &object)]);
    for (mode, flags) in MODES {
        let r = as_member(&s.managed, || ring_open(&secret, flags));
        assert_eq!(r, -libc::EACCES, "{mode}: refused without a grant");
    }
    let g = grant_for(&s.managed, Op::Read, &object, 301, Expiry::Never);
    s.enforcer.grant(301, vec![g]).expect("grant");
    for (mode, flags) in MODES {
        let r = as_member(&s.managed, || ring_open(&secret, flags));
        assert_eq!(r, 0, "{mode}: allowed by the grant");
    }
}

#[test]
fn io_uring_read_and_send_through_held_uses_end_with_their_grant() {
    let dir = TempDir::new("uring-held");
    let secret = dir.file("data/secret.txt");
    let file =
        Object::Path(PathPattern::parse(&format!("{}/data/", dir.path().display())).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = listener.local_addr().unwrap();
    let net = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", to.port())).unwrap());
    let mut s = setup("uring-held", &[(Op::Read, &file), (Op::Connect, &net)]);
    let deadline = boot_ns() + Duration::from_millis(1500).as_nanos() as u64;
    let grants = vec![
        grant_for(&s.managed, Op::Read, &file, 302, Expiry::AtBootNs(deadline)),
        grant_for(
            &s.managed,
            Op::Connect,
            &net,
            302,
            Expiry::AtBootNs(deadline),
        ),
    ];
    s.enforcer.grant(302, grants).expect("grant");
    // Opened and connected under the grant, by the managed process.
    let (held_file, held_sock) = as_member(&s.managed, || {
        (
            std::fs::File::open(&secret).expect("open under the grant"),
            TcpStream::connect(to).expect("connect under the grant"),
        )
    });
    let _peer = listener.accept().expect("accept");
    let read = |flags| {
        let mut buf = [0u8; 8];
        run(
            opcode::Read::new(types::Fd(held_file.as_raw_fd()), buf.as_mut_ptr(), 8)
                .offset(0)
                .build()
                .flags(flags),
        )
    };
    let byte = [b'x'];
    let send = |flags| {
        run(
            opcode::Send::new(types::Fd(held_sock.as_raw_fd()), byte.as_ptr(), 1)
                .build()
                .flags(flags),
        )
    };
    for (mode, flags) in MODES {
        let (r, w) = as_member(&s.managed, || (read(flags), send(flags)));
        assert!(r >= 0, "{mode}: read under the grant: {r}");
        assert_eq!(w, 1, "{mode}: send under the grant");
    }
    while boot_ns() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for (mode, flags) in MODES {
        let (r, w) = as_member(&s.managed, || (read(flags), send(flags)));
        assert_eq!(r, -libc::EACCES, "{mode}: read after the deadline");
        assert_eq!(w, -libc::ECONNRESET, "{mode}: send after the deadline");
    }
}
