//! Helpers for ward's integration tests: real processes in real cgroups.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::Command,
};

pub mod bench;
pub mod coordinator;
pub mod flood;
pub mod holder;
pub mod lifecycle;
#[cfg(feature = "native")]
pub mod oidc;
pub mod pki;
pub mod slapd;
pub mod syscall_loop;
pub mod wardd;

use ward_agent::cgroup::OwnedCgroup;

/// The `ward` CLI binary: `$WARD_BIN` (set in the test VM), else the one
/// cargo built next to this test executable.
pub fn ward_bin() -> PathBuf {
    binary("WARD_BIN", "ward")
}

/// The `wardd` binary, found like [`ward_bin`].
pub fn wardd_bin() -> PathBuf {
    binary("WARDD_BIN", "wardd")
}

pub fn coordinator_bin() -> PathBuf {
    binary("WARD_COORDINATOR_BIN", "ward-coordinator")
}

fn binary(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("test executable has no target directory");
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --bins`) or set {var}",
        path.display()
    );
    path
}

/// Runs `ward ARGS...` and returns (exit code, stdout, stderr).
pub fn ward(args: &[&str]) -> (i32, String, String) {
    run(&ward_bin(), args)
}

pub fn run(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts the `#[ignore]`d test `name` of this test binary as a separate
/// process (a stand-in agent), and waits for its `READY <payload>` line.
pub fn spawn_helper(name: &str, envs: &[(&str, String)]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdout(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn helper");
    let stdout = child.stdout.take().expect("helper stdout");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("helper output");
        // libtest may print its "test ... " prefix on the same line.
        if let Some(payload) = line.split("READY ").nth(1) {
            return (child, payload.trim().to_owned());
        }
    }
    let status = child.wait();
    panic!("helper {name} exited before it was ready: {status:?}");
}

/// How an attempt by a child process ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum OpenOutcome {
    Opened,
    /// The errno the kernel returned.
    Refused(i32),
}

/// Forks a child that (optionally) moves itself into `cgroup` and runs
/// `attempt`, which returns 0 or an errno. `attempt` must only make raw
/// syscalls: the parent is multi-threaded.
///
/// # Safety
/// `attempt` runs in a forked child of a threaded process: no allocation,
/// no locks.
pub unsafe fn in_child(cgroup: Option<&OwnedCgroup>, attempt: impl FnOnce() -> i32) -> OpenOutcome {
    let procs = cgroup.map(|cg| {
        CString::new(cg.path().join("cgroup.procs").as_os_str().as_bytes()).expect("NUL")
    });
    // SAFETY: the child only calls async-signal-safe functions, then _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if let Some(procs) = &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                // "0" moves the writing process itself.
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(200);
                }
                libc::close(fd);
            }
            libc::_exit(attempt().clamp(0, 199));
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status), "child did not exit normally");
        match libc::WEXITSTATUS(status) {
            0 => OpenOutcome::Opened,
            200 => panic!("child could not join cgroup {:?}", cgroup.map(|c| c.path())),
            errno => OpenOutcome::Refused(errno),
        }
    }
}

/// This thread's errno (at least 1): what an attempt returns on failure.
pub fn errno() -> i32 {
    // SAFETY: reading this thread's errno.
    unsafe { (*libc::__errno_location()).max(1) }
}

/// Executes `path` with argv[0] = `argv0` in a child; 0 if the exec
/// happened and the program exited 0.
pub fn exec_as_child(cgroup: Option<&OwnedCgroup>, path: &Path, argv0: &str) -> OpenOutcome {
    let target = CString::new(path.as_os_str().as_bytes()).expect("NUL");
    let arg0 = CString::new(argv0).expect("NUL");
    let argv = [arg0.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: execve and _exit only.
    unsafe {
        in_child(cgroup, || {
            libc::execve(target.as_ptr(), argv.as_ptr(), envp.as_ptr());
            errno()
        })
    }
}

/// Connects a TCP socket to `addr` in a child.
pub fn connect_as_child(cgroup: Option<&OwnedCgroup>, addr: std::net::SocketAddr) -> OpenOutcome {
    let (family, storage, len) = sockaddr(addr);
    // SAFETY: socket, connect, close only.
    unsafe { in_child(cgroup, || try_connect(family, &storage, len)) }
}

/// A TCP connect: 0 or the errno.
///
/// # Safety
/// Raw syscalls only, for use in a forked child.
unsafe fn try_connect(family: i32, storage: &libc::sockaddr_storage, len: libc::socklen_t) -> i32 {
    // SAFETY: socket, connect, close with a valid address of `len` bytes.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return errno();
        }
        let e = if libc::connect(fd, (storage as *const libc::sockaddr_storage).cast(), len) == 0 {
            0
        } else {
            errno()
        };
        libc::close(fd);
        e
    }
}

/// A raw-syscall attempt in a child of the managed cgroup: 0 or errno.
fn attempt(cg: &OwnedCgroup, f: impl FnOnce() -> i32) -> OpenOutcome {
    // SAFETY: the closures below make raw syscalls only.
    unsafe { in_child(Some(cg), f) }
}

/// `sendto` on a fresh socket of `kind`, with `flags`.
pub fn send_to(cg: &OwnedCgroup, to: std::net::SocketAddr, kind: i32, flags: i32) -> OpenOutcome {
    let (family, storage, len) = sockaddr(to);
    attempt(cg, || {
        // SAFETY: socket, sendto, close with a valid address.
        unsafe {
            let s = libc::socket(family, kind, 0);
            if s < 0 {
                return errno();
            }
            let r = libc::sendto(
                s,
                b"x".as_ptr().cast(),
                1,
                flags | libc::MSG_NOSIGNAL,
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
            );
            let e = if r < 0 { errno() } else { 0 };
            libc::close(s);
            e
        }
    })
}

/// `sendmmsg` of two datagrams to `to` on a fresh UDP socket: 0 when both
/// went, else the errno of the first refused.
pub fn send_mmsg(cg: &OwnedCgroup, to: std::net::SocketAddr) -> OpenOutcome {
    let (family, storage, len) = sockaddr(to);
    attempt(cg, || {
        // SAFETY: socket, sendmmsg, close; every pointer in the headers
        // points at locals that outlive the call.
        unsafe {
            let s = libc::socket(family, libc::SOCK_DGRAM, 0);
            if s < 0 {
                return errno();
            }
            let mut byte = *b"x";
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            let mut addr = storage;
            let mut msgs: [libc::mmsghdr; 2] = std::mem::zeroed();
            for m in &mut msgs {
                m.msg_hdr.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = len;
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            let r = libc::sendmmsg(s, msgs.as_mut_ptr(), 2, libc::MSG_NOSIGNAL);
            let e = if r < 0 {
                errno()
            } else if r < 2 {
                libc::EAGAIN
            } else {
                0
            };
            libc::close(s);
            e
        }
    })
}

/// `connect` from a socket first bound to `from`.
pub fn connect_from(
    cg: &OwnedCgroup,
    from: std::net::SocketAddr,
    to: std::net::SocketAddr,
) -> OpenOutcome {
    let (family, bind, blen) = sockaddr(from);
    let (_, storage, len) = sockaddr(to);
    attempt(cg, || {
        // SAFETY: socket, bind, connect, close with valid addresses.
        unsafe {
            let s = libc::socket(family, libc::SOCK_STREAM, 0);
            if s < 0 || libc::bind(s, (&bind as *const libc::sockaddr_storage).cast(), blen) != 0 {
                return errno();
            }
            let r = libc::connect(s, (&storage as *const libc::sockaddr_storage).cast(), len);
            let e = if r < 0 { errno() } else { 0 };
            libc::close(s);
            e
        }
    })
}

/// A socket address as the kernel takes it: (family, storage, length).
pub fn sockaddr(addr: std::net::SocketAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            (
                libc::AF_INET,
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            )
        }
    }
}

/// Who a child becomes before it acts: an audit login uid to set first
/// (as a login would), then gid and uid.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub login_uid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

/// In a forked child: set the identity; 0 or an errno-like failure code.
///
/// # Safety
/// Async-signal-safe calls only; `login` is preformatted by the caller.
unsafe fn become_identity(id: Identity, login: &[u8]) -> i32 {
    // SAFETY: raw syscalls in a forked child.
    unsafe {
        if id.login_uid.is_some() {
            let fd = libc::open(c"/proc/self/loginuid".as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, login.as_ptr().cast(), login.len()) < 0 {
                return 198;
            }
            libc::close(fd);
        }
        if libc::setgid(id.gid) != 0 || libc::setuid(id.uid) != 0 {
            return 199;
        }
    }
    0
}

/// Runs `attempt` in a child that first takes on `id`.
///
/// # Safety
/// As for [`in_child`].
pub unsafe fn as_identity(id: Identity, attempt: impl FnOnce() -> i32) -> OpenOutcome {
    let login = id.login_uid.map(|l| l.to_string()).unwrap_or_default();
    // SAFETY: become_identity makes raw syscalls only; the caller vouches
    // for `attempt`.
    unsafe {
        in_child(None, || {
            let r = become_identity(id, login.as_bytes());
            if r != 0 {
                return r;
            }
            attempt()
        })
    }
}

/// Opens `path` read-only in a child that first takes on `id`.
pub fn open_as(id: Identity, path: &Path) -> OpenOutcome {
    let target = CString::new(path.as_os_str().as_bytes()).expect("NUL");
    // SAFETY: open, close only.
    unsafe { as_identity(id, || try_open(&target, libc::O_RDONLY)) }
}

/// Connects to `addr` in a child that first takes on `id`.
pub fn connect_as(id: Identity, addr: std::net::SocketAddr) -> OpenOutcome {
    let (family, storage, len) = sockaddr(addr);
    // SAFETY: socket, connect, close only.
    unsafe { as_identity(id, || try_connect(family, &storage, len)) }
}

/// Opens `path` with `flags` in a child in `cgroup` (if any) that takes on
/// `id` (if any) first.
pub fn open_in(
    cgroup: Option<&OwnedCgroup>,
    id: Option<Identity>,
    path: &Path,
    flags: i32,
) -> OpenOutcome {
    let target = CString::new(path.as_os_str().as_bytes()).expect("path has NUL");
    let login = id
        .and_then(|i| i.login_uid)
        .map(|l| l.to_string())
        .unwrap_or_default();
    // SAFETY: become_identity, open and close only.
    unsafe {
        in_child(cgroup, || {
            if let Some(id) = id {
                let r = become_identity(id, login.as_bytes());
                if r != 0 {
                    return r;
                }
            }
            try_open(&target, flags)
        })
    }
}

/// Connects to `addr` from a child in `cgroup` that takes on `id` first.
pub fn connect_in(cgroup: &OwnedCgroup, id: Identity, addr: std::net::SocketAddr) -> OpenOutcome {
    let (family, storage, len) = sockaddr(addr);
    let login = id.login_uid.map(|l| l.to_string()).unwrap_or_default();
    // SAFETY: become_identity, socket, connect and close only.
    unsafe {
        in_child(Some(cgroup), || {
            let r = become_identity(id, login.as_bytes());
            if r != 0 {
                return r;
            }
            try_connect(family, &storage, len)
        })
    }
}

/// Opens `path` with `flags` in a child (see [`in_child`]).
pub fn open_as_child(cgroup: Option<&OwnedCgroup>, path: &Path, flags: i32) -> OpenOutcome {
    let target = CString::new(path.as_os_str().as_bytes()).expect("path has NUL");
    // SAFETY: open, close only.
    unsafe { in_child(cgroup, || try_open(&target, flags)) }
}

/// An open (then close): 0 or the errno.
///
/// # Safety
/// Raw syscalls only, for use in a forked child.
unsafe fn try_open(target: &std::ffi::CStr, flags: i32) -> i32 {
    // SAFETY: open and close of a NUL-terminated path.
    unsafe {
        let fd = libc::open(target.as_ptr(), flags | libc::O_CLOEXEC);
        if fd < 0 {
            return errno();
        }
        libc::close(fd);
    }
    0
}

/// A fresh directory under /tmp, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ward-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates a file (and its parents) with some content; returns its path.
    pub fn file(&self, rel: &str) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&p, b"ward test data\n").expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
