//! The syscall loops the overhead benchmarks time: open for read, open for
//! write, execve of a tiny static binary, TCP connect to a loopback
//! listener, and the uses of what is already open (a read through an open
//! file, a send and receive on a connection). Each op goes straight to
//! libc, so the loop itself adds as little as possible to what the hooks
//! cost.

use std::{
    collections::BTreeMap,
    ffi::CString,
    net::{SocketAddr, TcpListener},
    os::{fd::AsRawFd, unix::ffi::OsStrExt, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
    time::Instant,
};

use std::cell::Cell;

/// Which benchmark loop: what one of its iterations does. A kind of loop,
/// not an operation ward decides (that is `ward_abi::Op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    /// `open(O_RDONLY)` + `close`.
    OpenRead,
    /// `open(O_WRONLY)` + `close`.
    OpenWrite,
    /// `posix_spawn` (vfork + execve) of a static binary that exits, + `waitpid`.
    Exec,
    /// TCP `connect` to a loopback listener, `accept`, and an RST close (no
    /// TIME_WAIT, so long loops never run out of ports).
    Connect,
    /// `pread` of one byte through a file opened once, by the caller of
    /// the first op (so under a grant it is a held use).
    Read,
    /// One byte sent and received each way on a loopback connection made
    /// once, by the caller of the first op.
    SendRecv,
}

impl Loop {
    pub const ALL: [Loop; 6] = [
        Loop::OpenRead,
        Loop::OpenWrite,
        Loop::Exec,
        Loop::Connect,
        Loop::Read,
        Loop::SendRecv,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Loop::OpenRead => "open_read",
            Loop::OpenWrite => "open_write",
            Loop::Exec => "exec",
            Loop::Connect => "connect",
            Loop::Read => "read",
            Loop::SendRecv => "send_recv",
        }
    }
}

/// The object one loop works on.
pub enum Target {
    File {
        path: CString,
        flags: i32,
    },
    Exec {
        path: CString,
    },
    Connect {
        listener: TcpListener,
        addr: SocketAddr,
    },
    /// The open file (-1 until the first op opens it).
    Read {
        path: CString,
        fd: Cell<i32>,
    },
    /// The connection's two ends (-1 until the first op connects).
    SendRecv {
        listener: TcpListener,
        addr: SocketAddr,
        ends: Cell<(i32, i32)>,
    },
}

impl Target {
    pub fn file(path: &Path, syscall: Loop) -> Target {
        let flags = match syscall {
            Loop::OpenWrite => libc::O_WRONLY,
            _ => libc::O_RDONLY,
        };
        Target::File {
            path: c_path(path),
            flags,
        }
    }

    pub fn exec(path: &Path) -> Target {
        Target::Exec { path: c_path(path) }
    }

    /// A listener on `addr` (port 0 picks one).
    pub fn connect(addr: SocketAddr) -> Target {
        let listener = TcpListener::bind(addr).expect("bind the benchmark listener");
        let addr = listener.local_addr().expect("listener address");
        Target::Connect { listener, addr }
    }

    /// Reads through `path`, opened at the first op.
    pub fn read(path: &Path) -> Target {
        Target::Read {
            path: c_path(path),
            fd: Cell::new(-1),
        }
    }

    /// Sends and receives on a connection to a listener on `addr`, made at
    /// the first op.
    pub fn send_recv(addr: SocketAddr) -> Target {
        let listener = TcpListener::bind(addr).expect("bind the benchmark listener");
        let addr = listener.local_addr().expect("listener address");
        Target::SendRecv {
            listener,
            addr,
            ends: Cell::new((-1, -1)),
        }
    }

    /// Closes what the first op opened, so that the next op opens it again
    /// as its caller (managed or not, granted or not).
    pub fn reopen(&self) {
        // SAFETY: closing descriptors this target owns.
        unsafe {
            match self {
                Target::Read { fd, .. } if fd.get() >= 0 => {
                    libc::close(fd.replace(-1));
                }
                Target::SendRecv { ends, .. } if ends.get().0 >= 0 => {
                    let (a, b) = ends.replace((-1, -1));
                    libc::close(a);
                    libc::close(b);
                }
                _ => {}
            }
        }
    }

    /// ns per op over `ops` ops, by this machine's clock, after a warm-up.
    pub fn ns_per_op(&self, ops: u32) -> f64 {
        self.ns_per_op_between(ops, ops, &mut || {})
    }

    /// As [`Target::ns_per_op`], timed in chunks of `chunk` ops with
    /// `between` run, untimed, after each (e.g. draining the event ring).
    pub fn ns_per_op_between(&self, ops: u32, chunk: u32, between: &mut dyn FnMut()) -> f64 {
        for _ in 0..(ops / 20).max(10) {
            self.once();
        }
        between();
        let mut timed = std::time::Duration::ZERO;
        let mut done = 0;
        while done < ops {
            let n = chunk.min(ops - done);
            let started = Instant::now();
            for _ in 0..n {
                self.once();
            }
            timed += started.elapsed();
            between();
            done += n;
        }
        timed.as_nanos() as f64 / f64::from(ops)
    }

    /// One op; panics if the kernel refuses it, since a refused op would
    /// time a different path than the one being measured.
    pub fn once(&self) {
        match self {
            Target::File { path, flags } => {
                // SAFETY: open/close of a valid C string.
                let fd = unsafe { libc::open(path.as_ptr(), *flags) };
                assert!(fd >= 0, "open {path:?} failed during the benchmark");
                // SAFETY: closing the fd just opened.
                unsafe { libc::close(fd) };
            }
            Target::Exec { path } => spawn_and_wait(path),
            Target::Connect { listener, addr } => connect_once(listener, *addr),
            Target::Read { path, fd } => {
                if fd.get() < 0 {
                    // SAFETY: open of a valid C string.
                    fd.set(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) });
                    assert!(fd.get() >= 0, "open {path:?} failed during the benchmark");
                }
                let mut b = 0u8;
                // SAFETY: a one-byte read into a live byte.
                let n = unsafe { libc::pread(fd.get(), (&mut b as *mut u8).cast(), 1, 0) };
                assert!(n >= 0, "pread failed during the benchmark");
            }
            Target::SendRecv {
                listener,
                addr,
                ends,
            } => {
                if ends.get().0 < 0 {
                    ends.set(connected_pair(listener, *addr));
                }
                let (a, b) = ends.get();
                let mut byte = 0u8;
                let p = (&mut byte as *mut u8).cast();
                // SAFETY: one-byte sends and blocking receives on the pair.
                unsafe {
                    let ok = libc::send(a, p, 1, 0) == 1
                        && libc::recv(b, p, 1, 0) == 1
                        && libc::send(b, p, 1, 0) == 1
                        && libc::recv(a, p, 1, 0) == 1;
                    assert!(ok, "send/recv failed during the benchmark");
                }
            }
        }
    }
}

/// A connection to `addr` and its accepted end, without Nagle's delay.
fn connected_pair(listener: &TcpListener, addr: SocketAddr) -> (i32, i32) {
    let a = std::net::TcpStream::connect(addr).expect("connect during the benchmark");
    let (b, _) = listener.accept().expect("accept during the benchmark");
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    use std::os::fd::IntoRawFd;
    (a.into_raw_fd(), b.into_raw_fd())
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

fn spawn_and_wait(path: &CString) {
    let argv = [path.as_ptr() as *mut libc::c_char, std::ptr::null_mut()];
    let envp = [std::ptr::null_mut::<libc::c_char>()];
    let mut pid = 0;
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings
    // that outlive the call; no file actions or attributes.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    assert_eq!(rc, 0, "posix_spawn {path:?}: errno {rc}");
    let mut status = 0;
    // SAFETY: waiting for the child just spawned.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{path:?} did not exit 0 (status {status:#x})"
    );
}

fn connect_once(listener: &TcpListener, addr: SocketAddr) {
    let (family, sa, len) = crate::sockaddr(addr);
    // SAFETY: plain socket calls on fds this function owns; `sa` is a valid
    // sockaddr of `len` bytes.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket() failed during the benchmark");
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
        let rc = libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len);
        assert_eq!(
            rc,
            0,
            "connect {addr} failed during the benchmark: {}",
            std::io::Error::last_os_error()
        );
        let peer = libc::accept(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        if peer >= 0 {
            libc::close(peer);
        }
        libc::close(fd);
    }
}

/// Writes a 129-byte static x86-64 ELF that only calls `exit(0)`: the
/// cheapest possible execve, so the loop times the kernel's exec path and
/// not a program's start-up.
pub fn write_tiny_exit(path: &Path) -> PathBuf {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    // mov eax, 60 (exit); xor edi, edi; syscall
    const CODE: [u8; 9] = [0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];
    let size = HEADERS + CODE.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0, BASE, BASE, size, size, 0x1000] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&CODE);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    std::fs::write(path, &elf).expect("write the tiny binary");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_owned()
}

/// Cumulative (run count, run time ns) of every loaded `ward_*` program, by
/// name; times need `kernel.bpf_stats_enabled=1`.
pub fn program_stats() -> BTreeMap<String, (u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| {
            let name = p.name_as_str()?.to_owned();
            name.starts_with("ward_").then(|| {
                (
                    format!("{name}#{}", p.id()),
                    (p.run_count(), p.run_time().as_nanos() as u64),
                )
            })
        })
        .collect()
}

/// In-kernel time per op of each `ward_*` program that ran during `ops`
/// ops of `target`: the kernel's own bpf stats, switched on only for this
/// pass (they add two clock reads per run, so timed passes run without).
pub fn bpf_ns_per_op(target: &Target, ops: u32) -> BTreeMap<String, f64> {
    bpf_ns_per_op_as(target, ops, None)
}

/// As [`bpf_ns_per_op`], for a caller in a managed cgroup: `cgroups` is
/// (the caller's cgroup, an unmanaged one). ward's self-protection keeps a
/// managed process from reading its programs' stats, so the stats are
/// read from the unmanaged cgroup and the ops run in the caller's.
pub fn bpf_ns_per_op_as(
    target: &Target,
    ops: u32,
    cgroups: Option<(&Path, &Path)>,
) -> BTreeMap<String, f64> {
    const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let join = |cgroup: &Path| {
        std::fs::write(cgroup.join("cgroup.procs"), "0").expect("join cgroup");
    };
    let previous = std::fs::read_to_string(SYSCTL).unwrap_or_else(|_| "0".into());
    std::fs::write(SYSCTL, "1").expect("enable bpf stats");
    if let Some((_, reader)) = cgroups {
        join(reader);
    }
    let before = program_stats();
    if let Some((caller, _)) = cgroups {
        join(caller);
    }
    for _ in 0..ops {
        target.once();
    }
    if let Some((_, reader)) = cgroups {
        join(reader);
    }
    let after = program_stats();
    if let Some((caller, _)) = cgroups {
        join(caller);
    }
    std::fs::write(SYSCTL, previous.trim()).expect("restore bpf stats");
    assert!(
        !after.is_empty(),
        "no ward program's stats could be read (a managed reader?)"
    );
    after
        .into_iter()
        .filter_map(|(name, (count, time))| {
            let (c0, t0) = before.get(&name).copied().unwrap_or((0, 0));
            (count > c0).then(|| {
                let short = name.split('#').next().unwrap_or(&name).to_owned();
                (short, (time - t0) as f64 / f64::from(ops))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_binary_runs_and_exits_zero() {
        let dir = crate::TempDir::new("tiny");
        let bin = write_tiny_exit(&dir.path().join("exit0"));
        assert_eq!(std::fs::metadata(&bin).unwrap().len(), 129);
        let status = std::process::Command::new(&bin).status().unwrap();
        assert_eq!(status.code(), Some(0));
        // And the loop's own spawn path.
        Target::exec(&bin).once();
    }

    #[test]
    fn the_connect_loop_does_not_run_out_of_ports() {
        let target = Target::connect("127.0.0.1:0".parse().unwrap());
        // More than enough to exhaust ephemeral ports if closes left TIME_WAIT.
        let ns = target.ns_per_op(40_000);
        assert!(ns > 0.0);
    }
}
