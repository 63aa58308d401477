//! The individual kernel probes behind `ward doctor`.

use std::io;

use aya::{
    Btf,
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError},
};
use ward_abi::programs;

use super::{Check, Status};
use crate::{
    btf::{BtfError, KernelOffsets},
    cgroup,
    enforcer::EnforcerError,
    kernel,
};

fn check(id: &'static str, title: &'static str, status: Status, detail: String) -> Check {
    Check {
        id,
        title,
        status,
        detail,
    }
}

/// Whether connections whose permission ends can be reset: asks sock_diag
/// to destroy a listening socket made for the purpose.
pub fn connection_teardown() -> Check {
    let (id, title) = ("sock_destroy", "Connection reset (sock_diag SOCK_DESTROY)");
    match crate::enforcer::teardown_probe() {
        Ok(()) => check(
            id,
            title,
            Status::Ok,
            "a held connection is reset when its permission ends".to_owned(),
        ),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            check(id, title, Status::Error, format!("{e} (run as root)"))
        }
        Err(e) => check(
            id,
            title,
            Status::Unavailable,
            format!(
                "{e}: needs CONFIG_INET_DIAG_DESTROY and the inet_diag and tcp_diag modules; \
                 without it a connection whose permission ends fails at its next send or \
                 receive, but its peer is not reset"
            ),
        ),
    }
}

pub fn kernel_version() -> Check {
    check("kernel", "Kernel version", Status::Ok, kernel::release())
}

pub fn btf(offsets: &Result<KernelOffsets, BtfError>) -> Check {
    let title = "Kernel BTF (struct layouts)";
    match offsets {
        Ok(o) => check(
            "btf",
            title,
            Status::Ok,
            format!(
                "{}: struct file.f_path at byte {}",
                crate::btf::VMLINUX_BTF,
                o.file_f_path
            ),
        ),
        Err(e) => check("btf", title, Status::Unavailable, e.to_string()),
    }
}

pub fn bpf_lsm_active() -> Check {
    let title = "BPF LSM in the active LSM list";
    match kernel::active_lsms() {
        Ok(lsms) => {
            let list = lsms.names.join(",");
            let mounted = if lsms.mounted_securityfs {
                " (mounted securityfs to read it)"
            } else {
                ""
            };
            if lsms.has_bpf() {
                check("bpf_lsm", title, Status::Ok, format!("{list}{mounted}"))
            } else {
                check(
                    "bpf_lsm",
                    title,
                    Status::Unavailable,
                    format!(
                        "`bpf` is not active: {list}{mounted}; boot with lsm={list},bpf \
                         (needs CONFIG_BPF_LSM=y)"
                    ),
                )
            }
        }
        Err(e) => check(
            "bpf_lsm",
            title,
            Status::Error,
            format!("cannot read {}: {e}", kernel::LSM_LIST),
        ),
    }
}

/// Loads (and attaches, then detaches) an LSM program that allows everything.
pub fn lsm_program(offsets: &KernelOffsets) -> Check {
    let title = "BPF LSM program load and attach";
    match try_lsm_program(offsets) {
        Ok(()) => check(
            "lsm_program",
            title,
            Status::Ok,
            "an LSM file_open program loaded and attached".into(),
        ),
        Err(e) => refusal("lsm_program", title, &e),
    }
}

fn try_lsm_program(offsets: &KernelOffsets) -> Result<(), EnforcerError> {
    let mut ebpf = crate::ebpf::load(offsets)?;
    let btf = Btf::from_sys_fs()?;
    // Attaching is part of the probe; `ebpf` is dropped right after, which
    // detaches it. The probe passes on every earlier decision unchanged.
    crate::enforcer::attach_lsm(&mut ebpf, programs::PROBE_LSM, "file_open", &btf)
}

/// Loads a cgroup connect4 program and attaches it to a throwaway cgroup.
pub fn cgroup_sock_addr(offsets: &KernelOffsets) -> Check {
    let title = "cgroup connect hooks (sock_addr)";
    match try_cgroup_sock_addr(offsets) {
        Ok(at) => check(
            "cgroup_sock_addr",
            title,
            Status::Ok,
            format!("a connect4 program loaded and attached to {at}"),
        ),
        Err(e) => refusal("cgroup_sock_addr", title, &e),
    }
}

fn try_cgroup_sock_addr(offsets: &KernelOffsets) -> Result<String, ProbeError> {
    let root = cgroup::cgroup2_mount()?;
    let mut ebpf = crate::ebpf::load(offsets).map_err(EnforcerError::from)?;
    let name = programs::PROBE_CONNECT4;
    let program: &mut CgroupSockAddr = ebpf
        .program_mut(name)
        .ok_or(EnforcerError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EnforcerError::Program { name, source })?;
    program
        .load()
        .map_err(|source| EnforcerError::Program { name, source })?;
    let scratch = cgroup::OwnedCgroup::create(
        &root,
        &format!("{}{}", super::PROBE_CGROUP_PREFIX, std::process::id()),
    )?;
    let fd = scratch.open()?;
    // Links (kernel >= 5.7) take no flags and always coexist with other
    // programs; `Single` is how aya asks for flags = 0.
    program
        .attach(&fd, CgroupAttachMode::Single)
        .map_err(|source| EnforcerError::Program { name, source })?;
    // Dropping `ebpf` detaches before `scratch` is removed (reverse order).
    drop(ebpf);
    Ok(scratch.path().display().to_string())
}

pub fn cgroup_v2() -> Check {
    let title = "cgroup v2";
    match cgroup::cgroup2_mount() {
        Ok(at) => check(
            "cgroup_v2",
            title,
            Status::Ok,
            format!("mounted at {}", at.display()),
        ),
        Err(e) => check("cgroup_v2", title, Status::Unavailable, e.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Enforcer(#[from] EnforcerError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}

/// A failed probe: unavailable when the kernel said no, an error otherwise.
fn refusal(id: &'static str, title: &'static str, e: &(dyn std::error::Error + 'static)) -> Check {
    let status = if refused_by_kernel(e) {
        Status::Unavailable
    } else {
        Status::Error
    };
    check(id, title, status, describe_refusal(e))
}

/// Kernel-internal "not supported" that BPF syscalls can leak to user space.
const ENOTSUPP: i32 = 524;

/// The syscall and OS error behind a failed probe, if the kernel answered.
fn os_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<(&'a str, &'a io::Error)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        match err.downcast_ref::<ProgramError>() {
            Some(ProgramError::LoadError { io_error, .. }) => {
                return Some(("BPF_PROG_LOAD", io_error));
            }
            Some(ProgramError::SyscallError(s)) => return Some((s.call, &s.io_error)),
            _ => {}
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(("", io));
        }
        cur = err.source();
    }
    None
}

/// EPERM, EINVAL, EOPNOTSUPP... from BPF_PROG_LOAD or attach: the kernel
/// says no. Anything else means the probe itself went wrong.
fn refused_by_kernel(e: &(dyn std::error::Error + 'static)) -> bool {
    os_error(e)
        .and_then(|(_, io)| io.raw_os_error())
        .is_some_and(|errno| {
            [
                libc::EPERM,
                libc::EINVAL,
                libc::EOPNOTSUPP,
                ENOTSUPP,
                libc::EACCES,
            ]
            .contains(&errno)
        })
}

fn describe_refusal(e: &(dyn std::error::Error + 'static)) -> String {
    let Some((call, io)) = os_error(e) else {
        return e.to_string();
    };
    let errno = io.raw_os_error();
    let name = match errno {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(ENOTSUPP) => "ENOTSUPP",
        _ => return e.to_string(),
    };
    let call = if call.is_empty() { "the kernel" } else { call };
    let hint = match (errno, nix::unistd::geteuid().is_root()) {
        (Some(libc::EPERM), true) => {
            ": the kernel refuses this program type even for root \
             (lockdown, a BPF LSM restriction, or the hypervisor's sandbox)"
        }
        (Some(libc::EPERM), false) => ": run as root (needs CAP_BPF and CAP_SYS_ADMIN)",
        _ => "",
    };
    format!("{call} refused with {name}{hint}")
}
