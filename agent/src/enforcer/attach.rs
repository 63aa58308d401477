//! Attaching ward's programs, and pinning their links so that enforcement
//! outlives the agent process.

use std::path::{Path, PathBuf};

use std::os::fd::{AsFd, OwnedFd};

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FExit, Iter, Lsm, Program, ProgramError, links::FdLink},
};
use ward_abi::programs;

use super::{EnforcerConfig, cgroup_link, error::EnforcerError};
use crate::btf::KernelOffsets;

pub(super) fn program_err(
    name: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> EnforcerError {
    move |source| EnforcerError::Program { name, source }
}

/// Attaches every configured hook that is not already attached by a pin.
/// Returns the links nobody pinned: they live as long as the caller keeps
/// them.
pub fn all(
    ebpf: &mut Ebpf,
    config: &EnforcerConfig,
    offsets: &KernelOffsets,
) -> Result<Vec<OwnedFd>, EnforcerError> {
    let links: Option<PathBuf> = config.pin_dir.as_ref().map(|d| d.join("links"));
    if let Some(dir) = &links {
        std::fs::create_dir_all(dir).map_err(|source| EnforcerError::Pin {
            path: dir.clone(),
            source,
        })?;
    }
    let mut unpinned = Vec::new();
    // Parsing the kernel's BTF is the slow part of loading: once.
    let btf = if config.hooks.lsm || config.hooks.cgroup_connect.is_some() {
        Some(crate::btf::aya_btf()?)
    } else {
        None
    };
    if let (true, Some(btf)) = (config.hooks.lsm, &btf) {
        let optional = if offsets.acl_hooks {
            &programs::WRITE_HOOKS_IF_PRESENT[..]
        } else {
            &[]
        };
        let setattr = if offsets.setattr_dentry_arg == 0 {
            programs::SETATTR_NO_IDMAP
        } else {
            programs::SETATTR
        };
        // What keeps the walk cache honest goes first: no program may read
        // the cache before every change that makes it stale is seen. The
        // end of a rename before its start: a rename counted up must be
        // counted down (one never counted down would keep the cache off).
        let (name, function) = programs::RENAME_DONE;
        traced(ebpf, name, function, Traced::FExit, btf, links.as_deref())?;
        for (name, hook) in &programs::WALK_CACHE_HOOKS {
            lsm(ebpf, name, hook, btf, links.as_deref())?;
        }
        let hooks = [
            setattr,
            (programs::FILE_OPEN, "file_open"),
            (programs::EXEC, "bprm_check_security"),
            (programs::MMAP_FILE, "mmap_file"),
            (programs::FILE_MPROTECT, "file_mprotect"),
            (programs::SOCKET_CONNECT, "socket_connect"),
        ];
        for (name, hook) in hooks
            .iter()
            .chain(&programs::WRITE_HOOKS)
            .chain(&programs::USE_HOOKS)
            .chain(&programs::GUARD_HOOKS)
            .chain(optional)
        {
            lsm(ebpf, name, hook, btf, links.as_deref())?;
        }
        // Loaded, not attached: `ward explain` attaches it while it asks.
        let program: &mut Lsm = ebpf
            .program_mut(programs::EXPLAIN_GETATTR)
            .ok_or(EnforcerError::MissingProgram(programs::EXPLAIN_GETATTR))?
            .try_into()
            .map_err(program_err(programs::EXPLAIN_GETATTR))?;
        program
            .load("inode_getattr", btf)
            .map_err(program_err(programs::EXPLAIN_GETATTR))?;
    }
    if let Some(btf) = &btf {
        // Loaded, never attached or pinned: each teardown pass runs one.
        // The map iterator visits held connections only; some kernels (and
        // sandboxes) refuse it, and then the TCP iterator walks every socket.
        let by_map = iter(ebpf, programs::HELD_ENDED, "bpf_map_elem", btf);
        if let Err(e) = &by_map {
            tracing::warn!(error = %e, "the held-connection iterator is refused; teardown walks every TCP socket instead");
            if let Err(e) = iter(ebpf, programs::TCP_ENDED, "tcp", btf) {
                tracing::error!(
                    error = %e,
                    "connection teardown unavailable: a connection whose permission ends is not reset (under BPF LSM it still fails at its next send or receive)"
                );
            }
        }
    }
    if let Some(btf) = &btf {
        for (name, tracepoint) in programs::CGROUP_TRACEPOINTS
            .iter()
            .chain([&programs::DAEMON_EXIT])
        {
            traced(
                ebpf,
                name,
                tracepoint,
                Traced::TracePoint,
                btf,
                links.as_deref(),
            )?;
        }
    }
    if let Some(cgroup) = &config.hooks.cgroup_connect {
        let hooks = CgroupHooks {
            cg: std::fs::File::open(cgroup).map_err(|source| EnforcerError::Pin {
                path: cgroup.clone(),
                source,
            })?,
            path: cgroup,
            links: links.as_deref(),
        };
        for (name, attach_type) in [
            (
                programs::SOCK_RELEASE,
                cgroup_link::BPF_CGROUP_INET_SOCK_RELEASE,
            ),
            (programs::CONNECT4, cgroup_link::BPF_CGROUP_INET4_CONNECT),
            (programs::CONNECT6, cgroup_link::BPF_CGROUP_INET6_CONNECT),
            (programs::SENDMSG4, cgroup_link::BPF_CGROUP_UDP4_SENDMSG),
            (programs::SENDMSG6, cgroup_link::BPF_CGROUP_UDP6_SENDMSG),
            (programs::SKB_EGRESS, cgroup_link::BPF_CGROUP_INET_EGRESS),
            (programs::SKB_INGRESS, cgroup_link::BPF_CGROUP_INET_INGRESS),
        ] {
            if adopted(hooks.links, name) {
                continue;
            }
            let program = ebpf
                .program_mut(name)
                .ok_or(EnforcerError::MissingProgram(name))?;
            let started = std::time::Instant::now();
            load_cgroup_program(program).map_err(program_err(name))?;
            tracing::debug!(
                program = name,
                load_ms = started.elapsed().as_millis() as u64,
                "verified and loaded"
            );
            let fd = program.fd().map_err(program_err(name))?;
            hooks.link(name, fd.as_fd(), attach_type, &mut unpinned)?;
        }
    }
    Ok(unpinned)
}

/// Loads one of the cgroup programs, whichever of their kinds it is.
fn load_cgroup_program(program: &mut Program) -> Result<(), ProgramError> {
    match program {
        Program::CgroupSock(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        _ => Err(ProgramError::UnexpectedProgramType),
    }
}

/// Whether `name`'s link is pinned under `links` already (by an earlier
/// agent): then it is adopted, not attached again.
fn adopted(links: Option<&Path>, name: &str) -> bool {
    let pinned = links.is_some_and(|d| d.join(name).exists());
    if pinned {
        tracing::debug!(program = name, "adopting pinned link");
    }
    pinned
}

/// The cgroup the cgroup hooks attach to, and where their links are pinned.
struct CgroupHooks<'a> {
    cg: std::fs::File,
    path: &'a Path,
    links: Option<&'a Path>,
}

impl CgroupHooks<'_> {
    /// Links a loaded program to the cgroup and pins the link under
    /// `links` (without a pin directory, `unpinned` keeps it).
    fn link(
        &self,
        name: &'static str,
        program: std::os::fd::BorrowedFd<'_>,
        attach_type: u32,
        unpinned: &mut Vec<OwnedFd>,
    ) -> Result<(), EnforcerError> {
        let link = cgroup_link::attach(program, self.cg.as_fd(), attach_type).map_err(|e| {
            EnforcerError::Attach {
                name,
                target: self.path.to_owned(),
                source: e,
            }
        })?;
        match self.links.map(|d| d.join(name)) {
            Some(pin) => cgroup_link::pin(link.as_fd(), &pin)
                .map_err(|source| EnforcerError::Pin { path: pin, source }),
            None => {
                unpinned.push(link);
                Ok(())
            }
        }
    }
}

/// Loads and attaches one LSM program; with `links`, pins its link there,
/// or does nothing if an earlier agent's pin is already in place.
pub fn lsm(
    ebpf: &mut Ebpf,
    name: &'static str,
    hook: &str,
    btf: &Btf,
    links: Option<&Path>,
) -> Result<bool, EnforcerError> {
    if adopted(links, name) {
        return Ok(false);
    }
    let pin = links.map(|d| d.join(name));
    let program: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or(EnforcerError::MissingProgram(name))?
        .try_into()
        .map_err(program_err(name))?;
    let started = std::time::Instant::now();
    program.load(hook, btf).map_err(program_err(name))?;
    tracing::debug!(
        program = name,
        hook,
        load_ms = started.elapsed().as_millis() as u64,
        "verified and loaded"
    );
    let link_id = program.attach().map_err(program_err(name))?;
    if let Some(pin) = pin {
        let link: FdLink = program
            .take_link(link_id)
            .map_err(program_err(name))?
            .into();
        pin_link(link, &pin)?;
    }
    Ok(true)
}

/// The BTF-attached program kinds besides LSM.
#[derive(Clone, Copy)]
enum Traced {
    /// A BTF tracepoint (`tp_btf`).
    TracePoint,
    /// The exit of a kernel function (`fexit`).
    FExit,
}

/// Loads and attaches one BTF tracepoint or fexit program on `target`,
/// pinned like [`lsm`].
fn traced(
    ebpf: &mut Ebpf,
    name: &'static str,
    target: &str,
    kind: Traced,
    btf: &Btf,
    links: Option<&Path>,
) -> Result<(), EnforcerError> {
    if adopted(links, name) {
        return Ok(());
    }
    let program = ebpf
        .program_mut(name)
        .ok_or(EnforcerError::MissingProgram(name))?;
    // Without a pin directory the link stays with the program (and lives
    // as long as the caller keeps the object).
    let link: Option<FdLink> = match kind {
        Traced::TracePoint => {
            let p: &mut BtfTracePoint = program.try_into().map_err(program_err(name))?;
            p.load(target, btf).map_err(program_err(name))?;
            let id = p.attach().map_err(program_err(name))?;
            match links {
                Some(_) => Some(p.take_link(id).map_err(program_err(name))?.into()),
                None => None,
            }
        }
        Traced::FExit => {
            let p: &mut FExit = program.try_into().map_err(program_err(name))?;
            p.load(target, btf).map_err(program_err(name))?;
            let id = p.attach().map_err(program_err(name))?;
            match links {
                Some(_) => Some(p.take_link(id).map_err(program_err(name))?.into()),
                None => None,
            }
        }
    };
    if let (Some(link), Some(dir)) = (link, links) {
        pin_link(link, &dir.join(name))?;
    }
    Ok(())
}

/// Loads an iterator program (`iter/{target}`).
fn iter(ebpf: &mut Ebpf, name: &'static str, target: &str, btf: &Btf) -> Result<(), EnforcerError> {
    let program: &mut Iter = ebpf
        .program_mut(name)
        .ok_or(EnforcerError::MissingProgram(name))?
        .try_into()
        .map_err(program_err(name))?;
    program.load(target, btf).map_err(program_err(name))
}

/// Pins an attached program's link, so it outlives the agent.
fn pin_link(link: FdLink, pin: &Path) -> Result<(), EnforcerError> {
    link.pin(pin).map_err(|e| EnforcerError::Pin {
        path: pin.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(())
}
