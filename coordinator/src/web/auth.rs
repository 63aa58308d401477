//! Who is asking, and whether the asking is theirs.
//!
//! - Sign-in: the authorization code flow with PKCE and a nonce. The
//!   state, nonce and verifier travel in a short-lived `__Host-ward-login`
//!   cookie (HttpOnly) sealed with the coordinator's key, so nothing is
//!   held on the server for a sign-in that may never finish, and the
//!   callback works on any replica; it must come back to the browser that
//!   started it, with the same state, within ten minutes.
//! - The session: the coordinator's own (as `ward login` gets), in a
//!   `__Host-ward-session` cookie: Secure, HttpOnly, SameSite=Lax, never
//!   in a URL or a log.
//! - CSRF: every POST carries a token derived from the session (the
//!   SHA-256 of it under a context), and a browser's `Origin`, when sent,
//!   must be the page's own.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};

use super::Web;
use crate::{now_ms, oidc::BrowserLogin};

pub(crate) const SESSION_COOKIE: &str = "__Host-ward-session";
const LOGIN_COOKIE: &str = "__Host-ward-login";
/// A browser sign-in must finish within this.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// A browser sign-in under way, as its sealed cookie carries it.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    pkce_verifier: String,
    started_unix_ms: i64,
}

/// The signed-in person on this request.
#[derive(Clone)]
pub(crate) struct Signed {
    pub name: String,
    /// Their session, as checked on this request.
    pub session: crate::session::Session,
    /// The token every form of theirs must carry.
    pub csrf: String,
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name`, if the request has it.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` value: `__Host-` cookies are Secure, on `/`, with no
/// domain.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let c = cookie::Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
        .build();
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The CSRF token for a session: unguessable without the session, which
/// script on another site cannot read (HttpOnly).
pub(crate) fn csrf_of(session_token: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"ward-csrf-v1\0");
    ctx.update(session_token.as_bytes());
    B64.encode(ctx.finish().as_ref())
}

/// The person whose session cookie this request carries, if it holds.
pub(crate) async fn signed(web: &Web, headers: &HeaderMap) -> Option<Signed> {
    let token = cookie(headers, SESSION_COOKIE)?;
    match web.service.session(&token).await {
        Ok(s) => Some(Signed {
            name: s.name.clone(),
            session: s,
            csrf: csrf_of(&token),
        }),
        Err(_) => None,
    }
}

/// Why a POST is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No session, or one that no longer holds.
    SignedOut,
    /// Sent from another site, or without the form's token.
    CrossSite,
}

/// A state-changing request: signed in, from the page's own origin, with
/// the form's token.
pub(crate) async fn check_post(
    web: &Web,
    headers: &HeaderMap,
    form_csrf: &str,
) -> Result<Signed, Refusal> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if origin.as_bytes() != web.public_url.trim_end_matches('/').as_bytes() {
            return Err(Refusal::CrossSite);
        }
    } else if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() != b"same-origin" && v.as_bytes() != b"none")
    {
        return Err(Refusal::CrossSite);
    }
    let signed = signed(web, headers).await.ok_or(Refusal::SignedOut)?;
    if !same(signed.csrf.as_bytes(), form_csrf.as_bytes()) {
        return Err(Refusal::CrossSite);
    }
    Ok(signed)
}

impl Web {
    /// Starts a browser sign-in: where to send the browser, and the cookie
    /// that carries the sign-in's own state until the callback.
    pub(crate) async fn start_login(&self) -> Result<(String, HeaderValue), String> {
        let issuer = self.sso.issuers.get("").await.map_err(|e| e.to_string())?;
        let login = issuer
            .start_browser(&self.callback_url())
            .map_err(|e| e.to_string())?;
        let pending = Pending {
            state: login.state,
            nonce: login.nonce,
            pkce_verifier: login.pkce_verifier,
            started_unix_ms: now_ms(),
        };
        // A struct of strings and an integer always serialises.
        let sealed = self
            .sso
            .sessions
            .seal_login(&serde_json::to_vec(&pending).unwrap_or_default());
        Ok((login.url, set_cookie(LOGIN_COOKIE, &sealed, LOGIN_TTL)))
    }

    pub(crate) fn callback_url(&self) -> String {
        format!("{}/callback", self.public_url.trim_end_matches('/'))
    }

    /// Finishes a browser sign-in: the state must be the one this browser
    /// started with; the code is exchanged with the PKCE verifier and the
    /// ID token checked against the nonce. Returns the session cookie and
    /// one clearing the sign-in's.
    pub(crate) async fn finish_login(
        &self,
        headers: &HeaderMap,
        code: &str,
        state: &str,
        from: &str,
    ) -> Result<[HeaderValue; 2], String> {
        let sealed = cookie(headers, LOGIN_COOKIE)
            .ok_or("this browser started no sign-in (or it took longer than 10 minutes)")?;
        let pending: Pending = self
            .sso
            .sessions
            .open_login(&sealed)
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or("the sign-in cookie is not this coordinator's; sign in again")?;
        if now_ms().saturating_sub(pending.started_unix_ms) > LOGIN_TTL.as_millis() as i64 {
            return Err("the sign-in took longer than 10 minutes; sign in again".into());
        }
        if !same(pending.state.as_bytes(), state.as_bytes()) {
            return Err("the sign-in's state does not match this browser's".into());
        }
        let login = BrowserLogin {
            url: String::new(),
            state: pending.state,
            nonce: pending.nonce,
            pkce_verifier: pending.pkce_verifier,
        };
        let issuer = self.sso.issuers.get("").await.map_err(|e| e.to_string())?;
        let signed_in = issuer
            .finish_browser(&self.callback_url(), code, &login)
            .await
            .map_err(|e| e.to_string())?;
        let (token, _) = self
            .service
            .sign_in(
                &self.sso,
                &issuer,
                &signed_in,
                &format!("the web page from {from}"),
            )
            .await
            .map_err(|s| s.message().to_owned())?;
        Ok([
            set_cookie(SESSION_COOKIE, &token, self.session_ttl),
            set_cookie(LOGIN_COOKIE, "", Duration::ZERO),
        ])
    }
}
