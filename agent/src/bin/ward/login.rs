//! Signing in to the coordinator through an identity provider: `ward
//! login` (the device grant, driven by the coordinator), the session file
//! it leaves, and how later calls present it.
//!
//! The session file is `$XDG_CONFIG_HOME/ward/session.json` (else
//! `~/.config/ward/session.json`): created 0600 in a 0700 directory, and
//! refused if anyone else may read it. The token in it is never printed.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};
use tonic::{metadata::MetadataValue, service::Interceptor};
use ward_proto::v1::{self as pb, coordinator_client::CoordinatorClient};

use crate::{
    args::CoordinatorArgs,
    commands::{CliError, now_ms, usage},
    exit, render,
};

/// What `ward login` keeps.
#[derive(Serialize, Deserialize)]
pub struct SavedSession {
    /// The coordinator it was issued by: it is presented to no other.
    pub coordinator: String,
    pub name: String,
    pub issuer: String,
    pub expires_unix_ms: i64,
    pub token: String,
}

/// Where the session lives for this user.
pub fn session_path() -> Result<PathBuf, CliError> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => {
                return Err(usage(
                    "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the session",
                ));
            }
        },
    };
    Ok(base.join("ward").join("session.json"))
}

fn io_error(path: &std::path::Path, e: impl std::fmt::Display) -> CliError {
    CliError {
        code: exit::ERROR,
        message: format!("{}: {e}", path.display()),
    }
}

/// Writes the session: 0600 from creation, replaced atomically.
fn save(s: &SavedSession) -> Result<PathBuf, CliError> {
    let path = session_path()?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(dir, e))?;
    // It may have existed, wider: only its owner lists it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error(dir, e))?;
    let tmp = dir.join(format!(".session.json.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(&path, e)
    })?;
    Ok(path)
}

fn not_signed_in() -> CliError {
    CliError {
        code: exit::NOT_ALLOWED,
        message: "not signed in: run `ward login` (or give --tls-cert and --tls-key)".into(),
    }
}

/// The saved session, whatever coordinator it is for; `None` without one.
/// Refused if others may read the file, unless `shared_ok` (signing out,
/// when a copy may have leaked and ending it matters most).
fn read_saved(path: &std::path::Path, shared_ok: bool) -> Result<Option<SavedSession>, CliError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    if meta.mode() & 0o077 != 0 && !shared_ok {
        return Err(io_error(
            path,
            format!(
                "others may read it (mode {:04o}): the session is refused; run `ward logout` \
                 to end it, then `ward login`",
                meta.mode() & 0o7777
            ),
        ));
    }
    let text = std::fs::read(path).map_err(|e| io_error(path, e))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| io_error(path, format!("not a ward session: {e}")))
}

/// The saved session for `coordinator`, if it holds.
fn load(coordinator: &str) -> Result<SavedSession, CliError> {
    let s = read_saved(&session_path()?, false)?.ok_or_else(not_signed_in)?;
    if s.coordinator != coordinator {
        return Err(CliError {
            code: exit::NOT_ALLOWED,
            message: format!(
                "your session is for {}, not {coordinator}: run `ward login --coordinator {coordinator}`",
                s.coordinator
            ),
        });
    }
    if s.expires_unix_ms <= now_ms() {
        return Err(CliError {
            code: exit::NOT_ALLOWED,
            message: "your session has expired: run `ward login`".into(),
        });
    }
    Ok(s)
}

fn bearer(s: &SavedSession) -> Result<Auth, CliError> {
    MetadataValue::try_from(format!("Bearer {}", s.token))
        .map(|v| Auth(Some(v)))
        .map_err(|_| usage("the saved session is not a token: run `ward login`"))
}

/// Adds the session, when there is one, to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Coord = CoordinatorClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>,
>;

fn missing(what: &str) -> CliError {
    usage(format!(
        "{what} is required to reach the coordinator (or set WARD_{})",
        what.trim_start_matches("--")
            .replace('-', "_")
            .to_uppercase()
    ))
}

fn connect_error(e: impl std::fmt::Display) -> CliError {
    CliError {
        code: exit::DAEMON_DOWN,
        message: e.to_string(),
    }
}

/// A client of the coordinator: as the client certificate given, or else
/// with the saved session.
pub async fn coordinator(a: &CoordinatorArgs) -> Result<Coord, CliError> {
    let url = a
        .coordinator
        .clone()
        .ok_or_else(|| missing("--coordinator"))?;
    let ca = a.tls_ca.clone().ok_or_else(|| missing("--tls-ca"))?;
    let (channel, auth) = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => {
            let target = ward_agent::client::TlsTarget {
                url,
                domain: a.tls_domain.clone(),
                ca,
                cert: cert.clone(),
                key: key.clone(),
            };
            let ch = ward_agent::client::connect_tls(&target)
                .await
                .map_err(connect_error)?;
            (ch, Auth(None))
        }
        (Some(_), None) => return Err(missing("--tls-key")),
        (None, Some(_)) => return Err(missing("--tls-cert")),
        (None, None) => {
            let auth = bearer(&load(&url)?)?;
            let ch = ward_agent::client::connect_tls_as_session(&url, a.tls_domain.as_deref(), &ca)
                .await
                .map_err(connect_error)?;
            (ch, auth)
        }
    };
    Ok(CoordinatorClient::with_interceptor(channel, auth))
}

/// `ward login`: the coordinator starts the device grant at its identity
/// provider; the person opens the address shown and enters the code; the
/// session that comes back is saved.
pub async fn login(a: &CoordinatorArgs, issuer: Option<&str>, json: bool) -> Result<u8, CliError> {
    let url = a
        .coordinator
        .clone()
        .ok_or_else(|| missing("--coordinator"))?;
    let ca = a.tls_ca.clone().ok_or_else(|| missing("--tls-ca"))?;
    let channel = ward_agent::client::connect_tls_as_session(&url, a.tls_domain.as_deref(), &ca)
        .await
        .map_err(connect_error)?;
    let mut client = CoordinatorClient::new(channel);
    let mut events = client
        .login(pb::LoginRequest {
            issuer: issuer.unwrap_or_default().to_owned(),
        })
        .await?
        .into_inner();
    while let Some(event) = events.message().await? {
        match event.kind {
            Some(pb::login_event::Kind::Prompt(p)) => render::login_prompt(&p, json),
            Some(pb::login_event::Kind::Session(s)) => {
                let identity = s.identity.unwrap_or_default();
                let path = save(&SavedSession {
                    coordinator: url.clone(),
                    name: identity.name.clone(),
                    issuer: identity.issuer.clone(),
                    expires_unix_ms: identity.session_expires_unix_ms,
                    token: s.token,
                })?;
                render::signed_in(&identity, &path, json);
                return Ok(exit::OK);
            }
            None => {}
        }
    }
    Err(CliError {
        code: exit::ERROR,
        message: "the coordinator ended the sign-in without a session".into(),
    })
}

/// What became of the saved session at its coordinator.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Ended now: refused from here on, on every replica.
    Now,
    /// Already over (expired, signed out, or its name forgotten).
    Already,
    /// Not asked (`--local`): it stays valid there until it expires.
    NotAsked,
}

/// `ward logout`: ends the saved session at the coordinator that issued
/// it, then forgets it here. If the coordinator cannot be reached the file
/// is kept (the session still holds there) unless `local`. A file others
/// could read is signed out all the same; one that is not a session is
/// removed only with `local`.
pub async fn logout(a: &CoordinatorArgs, local: bool, json: bool) -> Result<u8, CliError> {
    let path = session_path()?;
    let saved = match read_saved(&path, true) {
        Ok(Some(saved)) => saved,
        Ok(None) => {
            render::logged_out(&path, None, json);
            return Ok(exit::OK);
        }
        Err(e) if local => {
            eprintln!("warning: {}", e.message);
            remove(&path)?;
            render::logged_out(&path, Some(("", Ended::NotAsked)), json);
            return Ok(exit::OK);
        }
        Err(e) => {
            return Err(CliError {
                code: e.code,
                message: format!("{}; `ward logout --local` removes it", e.message),
            });
        }
    };
    let ended = if local {
        Ended::NotAsked
    } else {
        end_at_coordinator(a, &saved).await.map_err(|e| CliError {
            code: e.code,
            message: format!(
                "could not end the session at {}: {}. It stays valid there until it expires; \
                 run `ward logout` again, or `ward logout --local` to only forget it here",
                saved.coordinator, e.message
            ),
        })?
    };
    remove(&path)?;
    render::logged_out(&path, Some((&saved.name, ended)), json);
    Ok(exit::OK)
}

fn remove(path: &std::path::Path) -> Result<(), CliError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Asks the session's own coordinator to end it. Whether it had already
/// ended (expired, signed out, its name forgotten) is the coordinator's
/// word, not this host's clock.
async fn end_at_coordinator(a: &CoordinatorArgs, s: &SavedSession) -> Result<Ended, CliError> {
    let ca = a.tls_ca.clone().ok_or_else(|| missing("--tls-ca"))?;
    let channel =
        ward_agent::client::connect_tls_as_session(&s.coordinator, a.tls_domain.as_deref(), &ca)
            .await
            .map_err(connect_error)?;
    let mut client = CoordinatorClient::with_interceptor(channel, bearer(s)?);
    match client.logout(pb::LogoutRequest {}).await {
        Ok(_) => Ok(Ended::Now),
        Err(st) if st.code() == tonic::Code::Unauthenticated && already_over(st.message()) => {
            Ok(Ended::Already)
        }
        Err(st) => Err(st.into()),
    }
}

/// The coordinator's refusals of a session that can no longer be used
/// anywhere (`SessionError`'s words); any other refusal (an issuer this
/// replica does not trust yet, say) leaves it in place.
fn already_over(message: &str) -> bool {
    ["expired", "signed out", "no longer bound", "predates"]
        .iter()
        .any(|m| message.contains(m))
}
