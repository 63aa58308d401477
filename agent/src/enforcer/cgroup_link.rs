//! cgroup connect hooks as BPF links that can be pinned.
//!
//! aya 0.14 attaches cgroup programs with links but keeps them private, so
//! they cannot be pinned and die with the process. ward needs them to
//! outlive the agent (a restart must never open the network), so it makes
//! the two syscalls itself: BPF_LINK_CREATE and BPF_OBJ_PIN.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use super::bpf_sys::{Attr, BPF_LINK_CREATE, BPF_OBJ_PIN, bpf};

/// `enum bpf_attach_type` values (uapi, stable).
pub const BPF_CGROUP_INET_INGRESS: u32 = 0;
pub const BPF_CGROUP_INET_EGRESS: u32 = 1;
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
pub const BPF_CGROUP_INET6_CONNECT: u32 = 11;
pub const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
pub const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
pub const BPF_CGROUP_INET_SOCK_RELEASE: u32 = 34;

/// Attaches a loaded program to a cgroup; returns the link.
pub fn attach(
    program: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr: Attr = [0; 16];
    // link_create: prog_fd u32, target_fd u32, attach_type u32, flags u32.
    attr[0] = u64::from(program.as_raw_fd() as u32) | (u64::from(cgroup.as_raw_fd() as u32) << 32);
    attr[1] = u64::from(attach_type);
    let fd = bpf(BPF_LINK_CREATE, &attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins a link (or any BPF object) at `path` on a bpf filesystem.
pub fn pin(object: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut attr: Attr = [0; 16];
    // obj_pin: pathname u64, bpf_fd u32, file_flags u32.
    attr[0] = c.as_ptr() as u64;
    attr[1] = u64::from(object.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &attr).map(|_| ())
}
