//! Connection floods, as an ordinary user or a stranger on the network
//! would send them: idle TCP connections that never speak, and local
//! connections held open by an unprivileged process.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

/// A TCP connection from `source` (any 127.0.0.0/8 address is local) to
/// 127.0.0.1:`port` that never sends a byte. Non-blocking, so a server
/// that stopped accepting cannot stall the flood.
pub fn idle_tcp_from(source: Ipv4Addr, port: u16) -> OwnedFd {
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = OwnedFd::from_raw_fd(fd);
        let from = sin(source, 0);
        assert_eq!(
            libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len),
            0,
            "bind {source}: {}",
            std::io::Error::last_os_error()
        );
        let to = sin(Ipv4Addr::LOCALHOST, port);
        let rc = libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len);
        let err = std::io::Error::last_os_error();
        assert!(
            rc == 0 || err.raw_os_error() == Some(libc::EINPROGRESS),
            "connect: {err}"
        );
        owned
    }
}

/// How many of `fds` the server still holds open after `within`: each is
/// closed once a read sees EOF or a reset. One still connecting (its SYN
/// dropped by a full backlog, retried) is not held by the server.
pub fn still_open(fds: &[OwnedFd], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut open: Vec<&OwnedFd> = fds.iter().collect();
    loop {
        open.retain(|fd| {
            let mut byte = 0u8;
            // SAFETY: a one-byte read into a local.
            let n = unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            let err = std::io::Error::last_os_error();
            let pending = matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::ENOTCONN));
            !(n == 0 || (n < 0 && !pending)) && established(fd)
        });
        if open.is_empty() || Instant::now() >= deadline {
            return open.len();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Raises this process's soft descriptor limit to its hard limit.
pub fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only `lim`.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// `sleep 300` as uid/gid 65534 (nobody), holding `count` connections to
/// the unix socket at `socket`, made before it execs. Kill it to let go.
pub fn hold_local_connections(socket: &Path, count: usize) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let addr = unix_addr(socket);
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("300");
    // SAFETY: the closure makes only raw, async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            // Room for what the parent left open until exec, too.
            let room = (count + 4096) as libc::rlim_t;
            let lim = libc::rlimit {
                rlim_cur: room,
                rlim_max: room,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for _ in 0..count {
                // Non-blocking: a full backlog must not stall the flood.
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::connect(
                    fd,
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                );
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn the connection holder")
}

/// Whether a TCP socket is connected (TCP_ESTABLISHED): the first byte of
/// `struct tcp_info` is the state.
fn established(fd: &OwnedFd) -> bool {
    let mut state = 0u8;
    let mut len = 1 as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` (1) bytes into `state`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut state as *mut u8).cast(),
            &mut len,
        )
    };
    rc == 0 && state == 1
}

/// The descriptor number a connecting child leaves its socket on.
const CONNECTED_FD: i32 = 100;

/// A connection to the unix socket at `socket` made by a process running
/// as `(uid, gid)` with no supplementary groups, for this (root) process
/// to use: the kernel records the maker's credentials at `connect()`.
/// With `join_after`, the maker then joins that group (through a saved
/// root uid), as a pid reused by a member of it would look. The maker
/// (`sleep`) is returned to be killed.
pub fn connection_as(
    socket: &Path,
    (uid, gid): (u32, u32),
    join_after: Option<u32>,
) -> (std::process::Child, std::os::unix::net::UnixStream) {
    use std::os::unix::process::CommandExt;
    let addr = unix_addr(socket);
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("300");
    // SAFETY: the closure makes only raw, async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            // A saved uid of 0 lets the maker change groups afterwards.
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, 0) != 0
            {
                return fail();
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0
                || libc::connect(
                    fd,
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                ) != 0
                || libc::dup2(fd, CONNECTED_FD) != CONNECTED_FD
            {
                return fail();
            }
            if let Some(group) = join_after
                && (libc::seteuid(0) != 0
                    || libc::setgroups(1, &group) != 0
                    || libc::seteuid(uid) != 0)
            {
                return fail();
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn the connecting child");
    let stream = steal_fd(child.id(), CONNECTED_FD);
    (child, stream)
}

/// A duplicate of another process's descriptor (`pidfd_getfd`, root only).
fn steal_fd(pid: u32, fd: i32) -> std::os::unix::net::UnixStream {
    // SAFETY: raw syscalls; the results are checked before use.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        let err = std::io::Error::last_os_error();
        libc::close(pidfd);
        assert!(got >= 0, "pidfd_getfd: {err}");
        std::os::unix::net::UnixStream::from_raw_fd(got)
    }
}

/// An in-process agent client over a connection made elsewhere (see
/// [`connection_as`]).
pub async fn agent_over(
    stream: std::os::unix::net::UnixStream,
) -> ward_proto::v1::agent_client::AgentClient<tonic::transport::Channel> {
    stream.set_nonblocking(true).unwrap();
    let mut stream = Some(tokio::net::UnixStream::from_std(stream).unwrap());
    let channel = tonic::transport::Endpoint::from_static("http://wardd.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let stream = stream.take();
            async move {
                stream
                    .map(hyper_util::rt::TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("one connection only"))
            }
        }))
        .await
        .unwrap();
    ward_proto::v1::agent_client::AgentClient::new(channel)
}

/// The address of the unix socket at `socket`, for raw `connect` calls
/// made after fork.
fn unix_addr(socket: &Path) -> libc::sockaddr_un {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_bytes();
    assert!(path.len() < addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    addr
}
