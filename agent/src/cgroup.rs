//! cgroup v2: where it is mounted, cgroup ids, and cgroups ward creates.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (see /proc/self/mountinfo)")]
    NotMounted,
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(io::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io { op, path, source }
}

/// The mount point of the cgroup v2 hierarchy.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    cgroup2_mount_in(&info).ok_or(CgroupError::NotMounted)
}

fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3
                && let Ok(v) = u8::from_str_radix(&digits, 8)
            {
                out.push(char::from(v));
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The id the kernel reports for a cgroup (`bpf_get_current_cgroup_id`):
/// on cgroup v2 it is the inode number of the cgroup's directory.
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    Ok(fs::metadata(path).map_err(io_err("stat", path))?.ino())
}

/// Why `rel` cannot name a cgroup ward follows: it must be a normalized
/// path relative to the hierarchy's root, and short enough for the kernel
/// to compare whole.
pub fn check_path(rel: &str) -> Result<(), &'static str> {
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be a normalized cgroup path relative to the cgroup root");
    }
    if rel.bytes().any(|b| b == 0 || b == b'\n') {
        return Err("must not contain NUL or newline");
    }
    // "/" + rel + NUL must fit the kernel's key with a byte to spare: a
    // longer name the kernel truncates to the key's size would match.
    if rel.len() + 2 >= ward_abi::CGROUP_PATH_LEN {
        return Err("longer than ward can follow (253 bytes)");
    }
    Ok(())
}

/// The kernel's name for `rel` (`/system.slice/backup.service`), as the
/// `cgroup_mkdir` tracepoint prints it; `rel` must pass [`check_path`].
pub fn kernel_path(rel: &str) -> ward_abi::CgroupPath {
    let mut path = [0u8; ward_abi::CGROUP_PATH_LEN];
    path[0] = b'/';
    let n = rel.len().min(ward_abi::CGROUP_PATH_LEN - 2);
    path[1..1 + n].copy_from_slice(&rel.as_bytes()[..n]);
    ward_abi::CgroupPath { path }
}

/// The workload key of a cgroup path: what the rules of the workload at
/// `rel` name, whatever cgroup id it has at the moment. A stable hash
/// (FNV-1a), so that an agent adopting pinned maps computes the same key,
/// with [`ward_abi::subject::PATH_KEY_BIT`] set so it is never a cgroup id.
pub fn path_key(rel: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rel.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let bit = ward_abi::subject::PATH_KEY_BIT;
    (h & (bit - 1)) | bit
}

/// A cgroup that ward created. It is removed on drop, after its processes
/// have been moved back to the parent.
#[derive(Debug)]
pub struct OwnedCgroup {
    path: PathBuf,
    id: u64,
}

impl OwnedCgroup {
    /// Creates `parent/name`.
    pub fn create(parent: &Path, name: &str) -> Result<Self, CgroupError> {
        let path = parent.join(name);
        fs::create_dir(&path).map_err(io_err("mkdir", &path))?;
        let id = cgroup_id(&path)?;
        Ok(OwnedCgroup { path, id })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Moves a process into this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(io_err("write", &procs))
    }

    /// Opens the cgroup directory, for attaching cgroup programs.
    pub fn open(&self) -> Result<fs::File, CgroupError> {
        fs::File::open(&self.path).map_err(io_err("open", &self.path))
    }
}

impl Drop for OwnedCgroup {
    fn drop(&mut self) {
        // A cgroup with processes cannot be removed; hand them to the parent.
        if let (Some(parent), Ok(procs)) = (
            self.path.parent(),
            fs::read_to_string(self.path.join("cgroup.procs")),
        ) {
            for pid in procs.lines() {
                let _ = fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        if let Err(e) = fs::remove_dir(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
43 35 0:38 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
44 35 0:39 / /sys/fs/cgroup/cpu rw,nosuid shared:11 - cgroup cgroup rw,cpu
";

    #[test]
    fn followed_paths_are_checked_and_keyed_apart_from_ids() {
        assert!(check_path("system.slice/backup.service").is_ok());
        for bad in ["", "/abs", "a//b", "a/./b", "a/../b", "trailing/", "nul\0"] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_path(&"x".repeat(253)).is_ok());
        assert!(
            check_path(&"x".repeat(254)).is_err(),
            "would fill the key: truncated names match"
        );
        let k = kernel_path("a/b");
        assert_eq!(&k.path[..5], b"/a/b\0");
        let (a, b) = (path_key("a/b"), path_key("a/c"));
        assert_ne!(a, b);
        assert_eq!(a, path_key("a/b"), "stable");
        let bit = ward_abi::subject::PATH_KEY_BIT;
        assert!(
            a & bit != 0 && a < bit << 1,
            "never a cgroup id, within the id field"
        );
    }

    #[test]
    fn finds_the_cgroup2_mount_among_v1_mounts() {
        assert_eq!(
            cgroup2_mount_in(MOUNTINFO),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn no_cgroup2_is_none() {
        assert_eq!(
            cgroup2_mount_in("25 30 0:22 / /sys rw - sysfs sysfs rw\n"),
            None
        );
        assert_eq!(cgroup2_mount_in("garbage\n\n"), None);
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let line = "43 35 0:38 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_in(line),
            Some(PathBuf::from("/mnt/with space"))
        );
    }
}
