//! Facts about the running kernel that decide what ward can enforce.

use std::{fs, io, path::Path};

/// securityfs file listing the active LSMs, in order.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";
const SECURITYFS: &str = "/sys/kernel/security";

/// The running kernel's release string, as `uname -r` prints it.
pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The active LSMs and whether ward had to mount securityfs to read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveLsms {
    pub names: Vec<String>,
    pub mounted_securityfs: bool,
}

impl ActiveLsms {
    pub fn has_bpf(&self) -> bool {
        self.names.iter().any(|n| n == "bpf")
    }
}

/// Reads the active LSM list. securityfs is mounted on every systemd host;
/// when it is not (minimal VMs, some containers) and we may, mount it, as
/// systemd would at boot.
pub fn active_lsms() -> io::Result<ActiveLsms> {
    let mut mounted_securityfs = false;
    if !Path::new(LSM_LIST).exists() && nix::unistd::geteuid().is_root() {
        nix::mount::mount(
            Some("securityfs"),
            SECURITYFS,
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(io::Error::from)?;
        mounted_securityfs = true;
    }
    let list = fs::read_to_string(LSM_LIST)?;
    Ok(ActiveLsms {
        names: parse_lsm_list(&list),
        mounted_securityfs,
    })
}

fn parse_lsm_list(list: &str) -> Vec<String> {
    list.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_list_is_split_on_commas() {
        let names = parse_lsm_list("lockdown,capability,landlock,bpf\n");
        assert_eq!(names, ["lockdown", "capability", "landlock", "bpf"]);
        let lsms = ActiveLsms {
            names,
            mounted_securityfs: false,
        };
        assert!(lsms.has_bpf());
    }

    #[test]
    fn bpf_must_be_a_whole_name() {
        let lsms = ActiveLsms {
            names: parse_lsm_list("capability,bpfx,selinux"),
            mounted_securityfs: false,
        };
        assert!(!lsms.has_bpf());
    }
}
