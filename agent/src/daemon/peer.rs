//! A local connection's credentials, captured once when it is accepted.
//!
//! The kernel records the connecting task's credentials at `connect()`
//! (`SO_PEERCRED`, `SO_PEERGROUPS`). Reading them there, rather than
//! `/proc/PID` on each call, means a connection's rights can never change
//! after it is made: not by the caller changing its groups, and not by its
//! pid being reused by another process.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
};

use tokio::net::UnixStream;
use ward_proto::transport::{Held, Slots};

/// Who made a connection, as the kernel saw them when they made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups at connect time.
    pub groups: Vec<u32>,
    /// The audit login uid at accept (`None`: unset), read from
    /// `/proc/PID/loginuid` right after accept; `Err` if it could not be.
    /// Its holder cannot change it once managed (the kernel refuses), so
    /// only pid reuse within the moment after accept could mislead it.
    pub login_uid: Result<Option<u32>, ()>,
}

impl Peer {
    /// Reads the credentials the kernel captured at `connect()`.
    pub fn of(stream: &UnixStream) -> io::Result<Peer> {
        let cred = stream.peer_cred()?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: peer_groups(stream.as_raw_fd())?,
            login_uid: cred.pid().map_or(Err(()), login_uid_of),
        })
    }

    /// Whether the peer had `gid` as its primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// An accepted local connection and the credentials it was made with
/// (tonic's connect info: `Option<Peer>`).
pub type PeerStream = Held<UnixStream, u32, Option<Peer>>;

/// The connection, unless its non-root user is over the limits (dropping
/// the stream closes it). Root is always admitted.
pub fn admit(stream: UnixStream, slots: &Arc<Slots<u32>>) -> Option<PeerStream> {
    let peer = match Peer::of(&stream) {
        Ok(peer) => Some(peer),
        Err(err) => {
            // Calls on this connection are refused as unauthenticated.
            tracing::warn!(error = %err, "no peer credentials for a local connection");
            None
        }
    };
    let slot = match &peer {
        Some(p) if p.uid == 0 => None,
        // Without credentials, all such connections share one count.
        other => Some(slots.admit(other.as_ref().map_or(u32::MAX, |p| p.uid))?),
    };
    Some(Held::new(stream, peer, slot))
}

/// A process's audit login uid (`None` when unset).
fn login_uid_of(pid: i32) -> Result<Option<u32>, ()> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/loginuid")) {
        Ok(t) => t,
        // A kernel without audit has no login uids at all.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::path::Path::new(&format!("/proc/{pid}")).exists() =>
        {
            return Ok(None);
        }
        Err(_) => return Err(()),
    };
    let v: u32 = text.trim().parse().map_err(|_| ())?;
    Ok((v != u32::MAX).then_some(v))
}

/// `SO_PEERGROUPS`: the supplementary groups of the connecting task.
fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    // NGROUPS_MAX is 65536; start small and grow to what the kernel asks.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of `len` bytes; the kernel
        // writes at most `len` bytes and sets `len` to what it wrote or,
        // on ERANGE, to what it needs.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && count > groups.len() {
            groups.resize(count, 0);
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_carries_its_makers_groups() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.pid, Some(std::process::id() as i32));
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = peer.groups.clone();
        let mut want = mine;
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        assert!(peer.in_group(nix::unistd::getegid().as_raw()));
    }
}
