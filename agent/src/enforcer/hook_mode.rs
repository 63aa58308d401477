//! Which hooks enforce: BPF LSM where the kernel allows it, else the cgroup
//! connect hooks, and the fallback said loudly.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Enforcer, EnforcerConfig, EnforcerError, Hooks};

/// Which hooks enforce (`enforce.hooks` in wardd's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HookMode {
    /// BPF LSM where the kernel allows it, else the cgroup connect hooks
    /// (and file/exec protection is reported as unavailable).
    #[default]
    Auto,
    Lsm,
    Cgroup,
}

/// An enforcer, and what its hooks can enforce.
pub struct Chosen {
    pub enforcer: Enforcer,
    /// Files and executables are protected (BPF LSM).
    pub file_and_exec: bool,
    /// `bpf-lsm` or `cgroup-connect`.
    pub network_hook: &'static str,
}

impl Enforcer {
    /// Loads with the hooks `mode` asks for. `config.hooks` is ignored:
    /// `connect_cgroup` is where the cgroup hooks attach if they are used.
    pub fn load_with(
        mode: HookMode,
        config: EnforcerConfig,
        connect_cgroup: Option<PathBuf>,
    ) -> Result<Chosen, EnforcerError> {
        let lsm = || -> Result<Chosen, EnforcerError> {
            let enforcer = Enforcer::load(EnforcerConfig {
                hooks: Hooks {
                    lsm: true,
                    cgroup_connect: None,
                },
                ..config.clone()
            })?;
            Ok(Chosen {
                enforcer,
                file_and_exec: true,
                network_hook: "bpf-lsm",
            })
        };
        let cgroup = || -> Result<Chosen, EnforcerError> {
            let enforcer = Enforcer::load(EnforcerConfig {
                hooks: Hooks {
                    lsm: false,
                    cgroup_connect: connect_cgroup.clone(),
                },
                ..config.clone()
            })?;
            Ok(Chosen {
                enforcer,
                file_and_exec: false,
                network_hook: "cgroup-connect",
            })
        };
        match mode {
            HookMode::Lsm => lsm(),
            HookMode::Cgroup => cgroup(),
            HookMode::Auto => lsm().or_else(|e| {
                tracing::error!(
                    error = %e,
                    "BPF LSM is unavailable: files and executables are NOT protected on this host; \
                     network enforcement falls back to the cgroup connect hooks"
                );
                cgroup()
            }),
        }
    }
}
