//! The system's user database.
//!
//! NSS (`getpwnam`) first, so LDAP and sssd users resolve; then the files
//! themselves, because a statically linked agent (the VM image) cannot load
//! NSS modules.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
}

pub fn by_name(name: &str) -> Option<User> {
    if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
        return Some(User {
            name: u.name,
            uid: u.uid.as_raw(),
        });
    }
    passwd_entries(Path::new("/etc/passwd")).find(|u| u.name == name)
}

pub fn by_uid(uid: u32) -> Option<User> {
    if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        return Some(User {
            name: u.name,
            uid: u.uid.as_raw(),
        });
    }
    passwd_entries(Path::new("/etc/passwd")).find(|u| u.uid == uid)
}

/// The gid of a group, by name.
pub fn group_gid(name: &str) -> Option<u32> {
    if let Ok(Some(g)) = nix::unistd::Group::from_name(name) {
        return Some(g.gid.as_raw());
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// The passwd file read once, for resolving many names (a directory of
/// thousands of people): one pass over the file, not one per name. Names
/// it does not list go to NSS (LDAP, sssd), as `files` comes first in
/// `nsswitch.conf`.
#[derive(Debug, Default)]
pub struct Snapshot {
    files: std::collections::HashMap<String, u32>,
}

impl Snapshot {
    pub fn read() -> Snapshot {
        let mut files = std::collections::HashMap::new();
        for u in passwd_entries(Path::new("/etc/passwd")) {
            // The first line for a name wins, as getpwnam's does.
            files.entry(u.name).or_insert(u.uid);
        }
        Snapshot { files }
    }

    pub fn uid(&self, name: &str) -> Option<u32> {
        match self.files.get(name) {
            Some(uid) => Some(*uid),
            None => by_name(name).map(|u| u.uid),
        }
    }
}

fn passwd_entries(path: &Path) -> impl Iterator<Item = User> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.to_owned();
            let uid = f.nth(1)?.parse().ok()?;
            Some(User { name, uid })
        })
        .collect::<Vec<_>>()
        .into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_both_ways() {
        assert_eq!(by_name("root").map(|u| u.uid), Some(0));
        assert_eq!(by_uid(0).map(|u| u.name), Some("root".to_owned()));
        assert_eq!(by_name("no-such-user-ward"), None);
        let snapshot = Snapshot::read();
        assert_eq!(snapshot.uid("root"), Some(0));
        assert_eq!(snapshot.uid("no-such-user-ward"), None);
    }
}
