//! A child process that opens a file or a connection once and then uses
//! it on command: how a use in progress is seen from outside, for the
//! tests that end it.

use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use ward_agent::cgroup::OwnedCgroup;

use crate::{OpenOutcome, errno, sockaddr};

/// What the holder does with its descriptor, one command at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Use {
    /// pread one byte at offset 0.
    Read = b'r',
    /// pwrite one byte at offset 0.
    Write = b'w',
    /// mmap one page read-only (then munmap).
    Map = b'm',
    /// send one byte.
    Send = b's',
    /// recv without waiting: EAGAIN when nothing is there, which counts
    /// as allowed.
    Recv = b'v',
    /// recv without waiting, where only a byte received counts: EAGAIN
    /// when nothing has arrived.
    Received = b'g',
    /// [`Target::TcpInOwnNetns`]: what the peer's next receive sees,
    /// waiting up to 5 s (0 for a byte, ENODATA for the end, else the
    /// error, ECONNRESET for a reset).
    PeerSees = b'p',
}

/// What the holder opens first.
pub enum Target<'a> {
    File {
        path: &'a Path,
        flags: i32,
    },
    Tcp(std::net::SocketAddr),
    /// A connected UDP socket.
    Udp(std::net::SocketAddr),
    /// A TCP connection inside a network namespace of the holder's own,
    /// as in a container: the holder listens on the address there,
    /// connects to it and keeps the peer's end too.
    TcpInOwnNetns(std::net::SocketAddr),
}

/// Where the holder runs: in a cgroup, or as a user.
enum Who {
    /// The cgroup's `cgroup.procs`.
    Cgroup(CString),
    User(u32, u32),
}

/// The child and the two pipe ends that talk to it.
pub struct Holder {
    pid: libc::pid_t,
    commands: libc::c_int,
    answers: libc::c_int,
    /// How opening went.
    pub opened: OpenOutcome,
}

impl Holder {
    /// Forks a child that joins `cgroup`, opens `target`, reports how that
    /// went, and then serves [`Use`] commands until dropped.
    pub fn start(cgroup: &OwnedCgroup, target: Target<'_>) -> Holder {
        let procs = CString::new(cgroup.path().join("cgroup.procs").as_os_str().as_bytes())
            .expect("path has NUL");
        Holder::spawn(Who::Cgroup(procs), target)
    }

    /// [`Holder::start`] as the user `uid`:`gid` (no supplementary
    /// groups), in the caller's cgroup: a person's session.
    pub fn start_as(uid: u32, gid: u32, target: Target<'_>) -> Holder {
        Holder::spawn(Who::User(uid, gid), target)
    }

    fn spawn(who: Who, target: Target<'_>) -> Holder {
        let own_netns = matches!(target, Target::TcpInOwnNetns(_));
        let (path, flags, addr, kind) = match target {
            Target::File { path, flags } => (
                Some(CString::new(path.as_os_str().as_bytes()).expect("path has NUL")),
                flags,
                None,
                0,
            ),
            Target::Tcp(a) => (None, 0, Some(sockaddr(a)), libc::SOCK_STREAM),
            Target::Udp(a) => (None, 0, Some(sockaddr(a)), libc::SOCK_DGRAM),
            Target::TcpInOwnNetns(a) => (None, 0, Some(sockaddr(a)), libc::SOCK_STREAM),
        };
        let mut to_child = [0; 2];
        let mut from_child = [0; 2];
        // SAFETY: pipe2 into arrays of two; the child makes raw syscalls
        // only, then _exit (the parent is multi-threaded).
        unsafe {
            assert_eq!(libc::pipe2(to_child.as_mut_ptr(), libc::O_CLOEXEC), 0);
            assert_eq!(libc::pipe2(from_child.as_mut_ptr(), libc::O_CLOEXEC), 0);
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                libc::close(to_child[1]);
                libc::close(from_child[0]);
                serve(
                    &who,
                    path.as_deref(),
                    flags,
                    addr.as_ref().map(|a| (a, kind)),
                    own_netns,
                    to_child[0],
                    from_child[1],
                );
            }
            libc::close(to_child[0]);
            libc::close(from_child[1]);
            let mut h = Holder {
                pid,
                commands: to_child[1],
                answers: from_child[0],
                opened: OpenOutcome::Opened,
            };
            h.opened = h.answer();
            h
        }
    }

    /// Has the child make one use; its outcome.
    pub fn try_use(&mut self, u: Use) -> OpenOutcome {
        let c = u as u8;
        // SAFETY: a one-byte write from a live buffer.
        let n = unsafe { libc::write(self.commands, (&c as *const u8).cast(), 1) };
        assert_eq!(n, 1, "holder is gone");
        self.answer()
    }

    fn answer(&mut self) -> OpenOutcome {
        let mut code = 0i32;
        // SAFETY: reading four bytes into an i32.
        let n = unsafe { libc::read(self.answers, (&mut code as *mut i32).cast(), 4) };
        assert_eq!(n, 4, "holder died");
        match code {
            0 => OpenOutcome::Opened,
            e => OpenOutcome::Refused(e),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: closing our pipe ends makes the child exit; then reap it.
        unsafe {
            libc::close(self.commands);
            libc::close(self.answers);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// The child's whole life.
///
/// # Safety
/// Raw syscalls only: this runs in a forked child of a threaded process.
unsafe fn serve(
    who: &Who,
    path: Option<&std::ffi::CStr>,
    flags: i32,
    addr: Option<(&(i32, libc::sockaddr_storage, libc::socklen_t), i32)>,
    own_netns: bool,
    commands: libc::c_int,
    answers: libc::c_int,
) -> ! {
    // SAFETY: as the function says.
    unsafe {
        let reply = |code: i32| {
            libc::write(answers, (&code as *const i32).cast(), 4);
        };
        // Another holder's pipe ends, inherited through fork, would keep
        // that holder from ever seeing its end of commands.
        let (lo, hi) = (commands.min(answers) as u32, commands.max(answers) as u32);
        for (first, last) in [
            (3, lo.wrapping_sub(1)),
            (lo + 1, hi - 1),
            (hi + 1, u32::MAX),
        ] {
            if first <= last && last >= 3 {
                libc::syscall(libc::SYS_close_range, first, last, 0);
            }
        }
        match who {
            Who::Cgroup(procs) => {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    reply(200);
                    libc::_exit(1);
                }
                libc::close(fd);
            }
            Who::User(uid, gid) => {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    reply(201);
                    libc::_exit(1);
                }
            }
        }
        let mut listener = -1;
        if let (true, Some(((family, storage, len), _))) = (own_netns, addr) {
            listener = listen_in_own_netns(*family, storage, *len);
            if listener < 0 {
                reply(errno());
                libc::_exit(1);
            }
        }
        let held = match (path, addr) {
            (Some(p), _) => libc::open(p.as_ptr(), flags | libc::O_CLOEXEC),
            (None, Some(((family, storage, len), kind))) => {
                let s = libc::socket(*family, kind, 0);
                if s >= 0
                    && libc::connect(s, (storage as *const libc::sockaddr_storage).cast(), *len)
                        != 0
                {
                    let e = errno();
                    libc::close(s);
                    reply(e);
                    libc::_exit(1);
                }
                s
            }
            (None, None) => -1,
        };
        if held < 0 {
            reply(errno());
            libc::_exit(1);
        }
        let peer = if listener >= 0 {
            libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut())
        } else {
            -1
        };
        reply(0);
        let mut c = 0u8;
        while libc::read(commands, (&mut c as *mut u8).cast(), 1) == 1 {
            let mut byte = 0u8;
            let buf = (&mut byte as *mut u8).cast();
            let ok = match c {
                b'r' => libc::pread(held, buf, 1, 0) >= 0,
                b'w' => libc::pwrite(held, buf, 1, 0) >= 0,
                b'm' => {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE,
                        held,
                        0,
                    );
                    if p == libc::MAP_FAILED {
                        false
                    } else {
                        libc::munmap(p, 4096);
                        true
                    }
                }
                b's' => libc::send(held, buf, 1, libc::MSG_NOSIGNAL) >= 0,
                b'v' => {
                    libc::recv(held, buf, 1, libc::MSG_DONTWAIT) >= 0
                        || *libc::__errno_location() == libc::EAGAIN
                }
                b'g' => {
                    let n = libc::recv(held, buf, 1, libc::MSG_DONTWAIT);
                    if n == 0 {
                        *libc::__errno_location() = libc::ENODATA; // the peer closed
                    }
                    n == 1
                }
                b'p' => {
                    let wait = libc::timeval {
                        tv_sec: 5,
                        tv_usec: 0,
                    };
                    libc::setsockopt(
                        peer,
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&wait as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as u32,
                    );
                    let n = libc::recv(peer, buf, 1, 0);
                    if n == 0 {
                        *libc::__errno_location() = libc::ENODATA;
                    }
                    n == 1
                }
                _ => false,
            };
            reply(if ok { 0 } else { errno() });
        }
        libc::_exit(0);
    }
}

/// Enters a new network namespace, brings its loopback up and listens on
/// `addr` there; the listening socket, or -1 with errno set.
///
/// # Safety
/// Raw syscalls only, as [`serve`].
unsafe fn listen_in_own_netns(
    family: i32,
    addr: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> libc::c_int {
    // SAFETY: as the function says; `ifr` and `addr` are live.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return -1;
        }
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *c as libc::c_char;
        }
        if s < 0 || libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return -1;
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) != 0 {
            return -1;
        }
        libc::close(s);
        let l = libc::socket(family, libc::SOCK_STREAM, 0);
        if l < 0
            || libc::bind(l, (addr as *const libc::sockaddr_storage).cast(), len) != 0
            || libc::listen(l, 4) != 0
        {
            return -1;
        }
        l
    }
}
