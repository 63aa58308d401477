//! Path patterns become inode identities here.
//!
//! The kernel decides on what an object *is* (see `ward-ebpf`'s
//! `dentry.rs`): each pattern the table names is resolved, in the agent's
//! (initial) mount namespace, to the inode it names now, and that inode is
//! listed under the pattern's object id. The agent holds every listed
//! inode open (`O_PATH`) so its number cannot be reused while ward relies
//! on it. A tree also lists the root of every filesystem mounted inside
//! it, because the kernel's walk stops at a filesystem's root.
//!
//! A pattern that names nothing yet is kept and re-resolved on
//! [`Objects::refresh`]; until then it protects nothing, and says so.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
};

use ward_abi::{InodeKey, ObjectIds};

use super::PathPattern;

/// One pattern's object id and the inodes it stands for now.
#[derive(Debug)]
struct Listed {
    id: u32,
    /// The inode the pattern names, then the roots of mounts inside a tree.
    inodes: Vec<(InodeKey, OwnedFd)>,
}

/// A change to the kernel's object map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectChange {
    Put(InodeKey, ObjectIds),
    Remove(InodeKey),
}

/// Object id -> the path it was listed under, shared with the event
/// stream so events name files in the agent's namespace.
pub type ObjectNames = std::sync::Arc<std::sync::RwLock<BTreeMap<u32, PathPattern>>>;

/// The registry: patterns, their ids, and the kernel map it mirrors.
#[derive(Debug, Default)]
pub struct Objects {
    shared: ObjectNames,
    by_pattern: BTreeMap<PathPattern, Listed>,
    /// What the kernel's object map holds.
    kernel: BTreeMap<InodeKey, ObjectIds>,
}

/// The kernel's encoding of a device number (`MKDEV`: major << 20 | minor),
/// which is what `super_block.s_dev` holds.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xfffff)
}

fn open_path(path: &str) -> io::Result<(InodeKey, OwnedFd)> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)?;
    let m = f.metadata()?;
    let key = InodeKey {
        dev: kernel_dev(m.dev()),
        _pad: 0,
        ino: m.ino(),
    };
    Ok((key, f.into()))
}

/// Whether a held inode was deleted (no name reaches it any more).
fn has_no_names(fd: &OwnedFd) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on a valid fd into a buffer of the right type.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    // SAFETY: fstat succeeded, so it filled the buffer.
    rc == 0 && unsafe { st.assume_init() }.st_nlink == 0
}

/// Most entries one scan of a tree for hard-linked files visits.
const MAX_SCAN: usize = 200_000;

/// Regular files under `tree` (same filesystem, no symlinks followed) with
/// more than one name.
fn linked_files(tree: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(root) = std::fs::symlink_metadata(tree) else {
        return out;
    };
    let mut stack = vec![std::path::PathBuf::from(tree)];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_SCAN {
                tracing::warn!(
                    tree,
                    max = MAX_SCAN,
                    "tree too large to scan for hard links; links made before protection may be missed"
                );
                return out;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != root.dev() {
                continue; // another filesystem: its mount root is listed
            }
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && m.nlink() > 1 {
                out.push(e.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The agent's mount table (empty if unreadable), read once per pass.
fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// Mount points strictly inside `tree` (which ends in `/`), from the text
/// of `/proc/self/mountinfo`.
fn mounts_inside(tree: &str, mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.len() + 1 > tree.len() && m.starts_with(tree))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        if bytes[i] == b'\\'
            && let Some(v) = octal
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Objects {
    /// The object id of `pattern`, listing it if it is new. Returns the
    /// kernel map changes to make.
    pub fn ensure(&mut self, pattern: &PathPattern) -> (u32, Vec<ObjectChange>) {
        if let Some(l) = self.by_pattern.get(pattern) {
            return (l.id, Vec::new());
        }
        let id = self.stable_id(pattern);
        if let Ok(mut shared) = self.shared.write() {
            shared.insert(id, pattern.clone());
        }
        self.by_pattern.insert(
            pattern.clone(),
            Listed {
                id,
                inodes: Vec::new(),
            },
        );
        let changes = self.resolve(pattern, true, &mountinfo());
        (id, changes)
    }

    /// The same pattern gets the same id in every agent, so one that
    /// adopts an earlier agent's pinned maps rewrites an inode's entry
    /// with the value it already has: no instant in which the live rules
    /// and the object map disagree. FNV-1a, probing past collisions.
    fn stable_id(&self, pattern: &PathPattern) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let kind: &[u8] = match pattern {
            PathPattern::File(_) => b"f",
            PathPattern::Subtree(_) => b"t",
        };
        for b in kind.iter().chain(pattern.as_str().as_bytes()) {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let taken = |h| self.name(h).is_some();
        while h == 0 || taken(h) {
            h = h.wrapping_add(1);
        }
        h
    }

    /// The id -> path map events are named from.
    pub fn shared_names(&self) -> ObjectNames {
        self.shared.clone()
    }

    /// The pattern an id stands for (events name objects by id).
    pub fn name(&self, id: u32) -> Option<PathPattern> {
        self.shared.read().ok()?.get(&id).cloned()
    }

    /// Patterns whose path names nothing now: they protect nothing.
    pub fn unresolved(&self) -> impl Iterator<Item = &PathPattern> {
        self.by_pattern
            .iter()
            .filter(|(_, l)| l.inodes.is_empty())
            .map(|(p, _)| p)
    }

    /// Drops patterns no rule uses any more.
    pub fn retain(&mut self, mut used: impl FnMut(&PathPattern) -> bool) -> Vec<ObjectChange> {
        let doomed: Vec<PathPattern> = self
            .by_pattern
            .keys()
            .filter(|p| !used(p))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for p in doomed {
            if let Some(l) = self.by_pattern.remove(&p) {
                if let Ok(mut shared) = self.shared.write() {
                    shared.remove(&l.id);
                }
                for (key, _) in &l.inodes {
                    changes.extend(self.unlist(*key, l.id));
                }
            }
        }
        changes
    }

    /// Re-resolves every pattern: a path that appeared, was replaced or
    /// had a filesystem mounted inside it. Returns the kernel map changes.
    /// With `scan_links`, trees are also scanned again for files with more
    /// than one name (slower: it reads every directory in them).
    pub fn refresh(&mut self, scan_links: bool) -> Vec<ObjectChange> {
        let patterns: Vec<PathPattern> = self.by_pattern.keys().cloned().collect();
        let mounts = mountinfo();
        patterns
            .iter()
            .flat_map(|p| self.resolve(p, scan_links, &mounts))
            .collect()
    }

    /// Brings one pattern's inodes up to date.
    fn resolve(
        &mut self,
        pattern: &PathPattern,
        scan_links: bool,
        mountinfo: &str,
    ) -> Vec<ObjectChange> {
        let Some(id) = self.by_pattern.get(pattern).map(|l| l.id) else {
            return Vec::new();
        };
        let mut now: Vec<(InodeKey, OwnedFd)> = Vec::new();
        match open_path(pattern.as_str()) {
            Ok(found) => now.push(found),
            Err(e) => {
                tracing::debug!(path = %pattern, error = %e, "protected path names nothing yet");
            }
        }
        if let PathPattern::Subtree(tree) = pattern
            && !now.is_empty()
        {
            for m in mounts_inside(tree, mountinfo) {
                if let Ok(found) = open_path(&m) {
                    now.push(found);
                }
            }
            // A file inside with more than one name may have a name
            // outside the tree, where the kernel's walk would not pass
            // through the tree: list it as part of the tree itself. New
            // links from inside are writes (refused to managed callers).
            let linked = if scan_links {
                linked_files(tree)
            } else {
                Vec::new()
            };
            for f in linked {
                if let Ok(found) = open_path(&f)
                    && !now.iter().any(|(k, _)| *k == found.0)
                {
                    now.push(found);
                }
            }
        }
        // What was listed stays listed while it exists: the pattern named
        // it, and a rename of it (or of a directory above it) must not
        // take its protection away. Only an inode with no names left goes.
        let held = std::mem::take(
            &mut self
                .by_pattern
                .get_mut(pattern)
                .expect("checked above")
                .inodes,
        );
        let mut kept: Vec<(InodeKey, OwnedFd)> = Vec::new();
        let mut changes = Vec::new();
        for (key, fd) in held {
            if has_no_names(&fd) && !now.iter().any(|(k, _)| *k == key) {
                changes.extend(self.unlist(key, id));
            } else {
                kept.push((key, fd));
            }
        }
        let tree = matches!(pattern, PathPattern::Subtree(_));
        for (key, fd) in now {
            if kept.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let ids = self.kernel.entry(key).or_default();
            let slot = if tree { &mut ids.tree } else { &mut ids.exact };
            if *slot != 0 && *slot != id {
                tracing::warn!(
                    path = %pattern,
                    other = ?self.shared.read().ok().and_then(|n| n.get(slot).cloned()),
                    "two patterns name the same inode; the first keeps it"
                );
                continue;
            }
            *slot = id;
            changes.push(ObjectChange::Put(key, *ids));
            kept.push((key, fd));
        }
        if let Some(l) = self.by_pattern.get_mut(pattern) {
            l.inodes = kept;
        }
        changes
    }

    fn unlist(&mut self, key: InodeKey, id: u32) -> Option<ObjectChange> {
        let ids = self.kernel.get_mut(&key)?;
        if ids.exact == id {
            ids.exact = 0;
        }
        if ids.tree == id {
            ids.tree = 0;
        }
        if *ids == ObjectIds::default() {
            self.kernel.remove(&key);
            Some(ObjectChange::Remove(key))
        } else {
            Some(ObjectChange::Put(key, *ids))
        }
    }

    /// What the kernel's object map should hold for `key`.
    pub fn kernel_entry(&self, key: &InodeKey) -> Option<&ObjectIds> {
        self.kernel.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        // 8:1 (sda1) in glibc's encoding is 0x801; the kernel's is 8<<20|1.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 70000)), (259 << 20) | 70000);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_pattern_is_listed_once_and_follows_its_path() {
        let base = std::env::temp_dir().join(format!("ward-objects-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let dir = Dir(base);
        let tree = format!("{}/tree/", dir.path().display());
        let mut objects = Objects::default();
        let p = PathPattern::parse(&tree).unwrap();
        let (id, changes) = objects.ensure(&p);
        assert!(changes.is_empty(), "nothing to list before it exists");
        assert_eq!(objects.unresolved().count(), 1);
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        let changes = objects.refresh(true);
        assert!(
            matches!(changes[..], [ObjectChange::Put(_, ObjectIds { tree, exact: 0 })] if tree == id),
            "{changes:?}"
        );
        assert_eq!(objects.ensure(&p).0, id, "ids are stable");
        assert!(objects.refresh(true).is_empty(), "unchanged: nothing to do");
        // Renamed away and replaced: the renamed tree stays listed (its
        // protection must survive the rename) and the new one is listed too.
        std::fs::rename(dir.path().join("tree"), dir.path().join("old")).unwrap();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        let changes = objects.refresh(true);
        assert!(
            matches!(changes[..], [ObjectChange::Put(..)]),
            "{changes:?}"
        );
        // Deleted: no name reaches it, so it goes.
        std::fs::remove_dir(dir.path().join("old")).unwrap();
        let changes = objects.refresh(true);
        assert!(
            matches!(changes[..], [ObjectChange::Remove(_)]),
            "{changes:?}"
        );
        let removed = objects.retain(|_| false);
        assert!(
            matches!(removed[..], [ObjectChange::Remove(_)]),
            "{removed:?}"
        );
    }
}
