//! Network namespaces, for connection resets. sock_diag's `SOCK_DESTROY`
//! finds sockets in the namespace its own socket was made in, so a held
//! connection in a container's namespace is reset through a sock_diag
//! socket made there: a short-lived thread enters the namespace (through
//! the namespace file of a process in it), makes the socket and leaves;
//! the socket stays bound to that namespace.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::MetadataExt,
    sync::OnceLock,
};

/// The inode number of wardd's own network namespace (0 if unreadable).
pub fn own() -> u64 {
    static OWN: OnceLock<u64> = OnceLock::new();
    *OWN.get_or_init(|| fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino()))
}

/// A namespace file for the network namespace with inode number `inum`,
/// from a process in it. Opening another user's needs `CAP_SYS_PTRACE`.
pub fn open(inum: u64) -> io::Result<File> {
    let mut refused = None;
    for entry in fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let path = entry.path().join("ns/net");
        match fs::metadata(&path) {
            Ok(m) if m.ino() == inum => match File::open(&path) {
                Ok(f) => return Ok(f),
                Err(e) => refused = Some(e),
            },
            Ok(_) => {}
            // Gone meanwhile, or not ours to see.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => refused = Some(e),
            Err(_) => {}
        }
    }
    Err(refused.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no process is in network namespace {inum}"),
        )
    }))
}

/// Runs `make` on a thread that has entered the namespace `ns`; what it
/// makes (a socket) keeps that namespace. The thread ends with it, so no
/// other thread of wardd ever runs in another namespace.
pub fn make_in<T: Send>(ns: &File, make: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            make()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}
