//! Pins need a bpf filesystem. systemd mounts one at /sys/fs/bpf on every
//! boot; minimal hosts and VMs may not, so ward mounts it the same way.

use std::path::{Path, PathBuf};

use super::error::EnforcerError;

const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

fn on_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as u64 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` can hold pins: it must be on a bpf filesystem,
/// which is mounted at /sys/fs/bpf when it is missing there.
pub fn ensure(pin_dir: &Path) -> Result<(), EnforcerError> {
    let existing = pin_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if on_bpffs(existing) {
        return Ok(());
    }
    let bpffs = Path::new(DEFAULT_BPFFS);
    if pin_dir.starts_with(bpffs) && bpffs.is_dir() && !on_bpffs(bpffs) {
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .map_err(|e| EnforcerError::Pin {
            path: PathBuf::from(DEFAULT_BPFFS),
            source: std::io::Error::other(format!("mounting bpffs: {e}")),
        })?;
        tracing::info!(path = DEFAULT_BPFFS, "mounted bpffs for pins");
        return Ok(());
    }
    Err(EnforcerError::Pin {
        path: pin_dir.to_owned(),
        source: std::io::Error::other("not on a bpf filesystem (mount -t bpf bpf DIR)"),
    })
}
