//! Who is calling, and what they may do.
//!
//! Local callers are identified by the kernel (`SO_PEERCRED` and
//! `SO_PEERGROUPS` on the unix socket, captured at connect): root and
//! members of the admin group administer, unless their audit login uid is
//! a managed one (a managed human after sudo); any other local user may see
//! their own grants and ask about themselves. Remote
//! callers are identified by their client certificate (mutual TLS) and must
//! be listed in the config.

use tonic::{Request, Status};

use super::{peer::Peer, users};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Local {
        uid: u32,
        pid: Option<i32>,
        admin: bool,
    },
    Remote {
        identity: String,
    },
}

impl Caller {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self {
            Caller::Local { uid, .. } => format!("uid:{uid}"),
            Caller::Remote { identity } => format!("tls:{identity}"),
        }
    }

    /// May push and revoke any grant, list all, explain anyone.
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Local { admin, .. } => *admin,
            // Only allowed identities get this far (see `remote`).
            Caller::Remote { .. } => true,
        }
    }

    pub fn uid(&self) -> Option<u32> {
        match self {
            Caller::Local { uid, .. } => Some(*uid),
            Caller::Remote { .. } => None,
        }
    }
}

/// The local caller of a request on the unix socket, from the credentials
/// its connection was made with (see `peer`).
pub fn local<T>(
    req: &Request<T>,
    admin_group: &str,
    managed_uids: &[[u32; 2]],
) -> Result<Caller, Status> {
    let peer = req
        .extensions()
        .get::<Option<Peer>>()
        .and_then(Option::as_ref)
        .ok_or_else(|| Status::unauthenticated("the kernel gave no peer credentials"))?;
    // A managed human stays managed through sudo: as root they must not
    // grant themselves what policy and reviewers did not. Their login uid
    // is read when they connect; unreadable counts as managed.
    let managed_login = match peer.login_uid {
        Err(()) => true,
        Ok(None) => false,
        Ok(Some(login)) => managed_uids
            .iter()
            .any(|[first, last]| (*first..=*last).contains(&login)),
    };
    let admin = !managed_login
        && (peer.uid == 0 || users::group_gid(admin_group).is_some_and(|gid| peer.in_group(gid)));
    Ok(Caller::Local {
        uid: peer.uid,
        pid: peer.pid,
        admin,
    })
}

/// The remote caller of a request over mutual TLS, if its certificate
/// names exactly one identity and that identity is allowed.
pub fn remote<T>(req: &Request<T>, allowed: &[String]) -> Result<Caller, Status> {
    let identity = ward_proto::identity::peer_identity(req)
        .map_err(|e| Status::permission_denied(e.to_string()))?;
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(&identity)) {
        Ok(Caller::Remote { identity })
    } else {
        Err(Status::permission_denied(format!(
            "client certificate identity `{identity}` is not in tls.allowed_clients"
        )))
    }
}
