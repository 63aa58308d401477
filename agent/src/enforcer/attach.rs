//! Attaching ward's programs, and pinning their links so that enforcement
//! outlives the agent process.

use std::path::{Path, PathBuf};

use aya::{
    Btf, Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, Lsm, links::FdLink},
};
use ward_abi::programs;

use super::{EnforcerConfig, error::EnforcerError};

fn program_err(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> EnforcerError {
    move |source| EnforcerError::Program { name, source }
}

/// Attaches every configured hook that is not already attached by a pin.
pub fn all(ebpf: &mut Ebpf, config: &EnforcerConfig) -> Result<(), EnforcerError> {
    let links: Option<PathBuf> = config.pin_dir.as_ref().map(|d| d.join("links"));
    if let Some(dir) = &links {
        std::fs::create_dir_all(dir).map_err(|source| EnforcerError::Pin {
            path: dir.clone(),
            source,
        })?;
    }
    if config.hooks.lsm {
        let btf = Btf::from_sys_fs()?;
        for (name, hook) in [
            (programs::FILE_OPEN, "file_open"),
            (programs::EXEC, "bprm_check_security"),
            (programs::SOCKET_CONNECT, "socket_connect"),
        ] {
            lsm(ebpf, name, hook, &btf, links.as_deref())?;
        }
    }
    if let Some(cgroup) = &config.hooks.cgroup_connect {
        let fd = std::fs::File::open(cgroup).map_err(|source| EnforcerError::Pin {
            path: cgroup.clone(),
            source,
        })?;
        for name in [programs::CONNECT4, programs::CONNECT6] {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(EnforcerError::MissingProgram(name))?
                .try_into()
                .map_err(program_err(name))?;
            program.load().map_err(program_err(name))?;
            // Links take no flags and always coexist with other programs.
            program
                .attach(&fd, CgroupAttachMode::Single)
                .map_err(program_err(name))?;
        }
    }
    Ok(())
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
    let pin = links.map(|d| d.join(name));
    if pin.as_ref().is_some_and(|p| p.exists()) {
        tracing::debug!(program = name, "adopting pinned link");
        return Ok(false);
    }
    let program: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or(EnforcerError::MissingProgram(name))?
        .try_into()
        .map_err(program_err(name))?;
    program.load(hook, btf).map_err(program_err(name))?;
    let link_id = program.attach().map_err(program_err(name))?;
    if let Some(pin) = pin {
        let link: FdLink = program
            .take_link(link_id)
            .map_err(program_err(name))?
            .into();
        link.pin(&pin).map_err(|e| EnforcerError::Pin {
            path: pin.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(true)
}
