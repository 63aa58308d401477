//! Who is asking, and whether the asking is theirs.
//!
//! - Sign-in: the authorization code flow with PKCE and a nonce. The
//!   state, nonce and verifier stay on the server, under a random id in a
//!   short-lived `__Host-ward-login` cookie; the callback must come back
//!   in the browser that started it, with the same state.
//! - The session: the coordinator's own (as `ward login` gets), in a
//!   `__Host-ward-session` cookie: Secure, HttpOnly, SameSite=Lax, never
//!   in a URL or a log.
//! - CSRF: every POST carries a token derived from the session (the
//!   SHA-256 of it under a context), and a browser's `Origin`, when sent,
//!   must be the page's own.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::rand::SecureRandom;

use super::Web;
use crate::oidc::BrowserLogin;

pub(crate) const SESSION_COOKIE: &str = "__Host-ward-session";
const LOGIN_COOKIE: &str = "__Host-ward-login";
/// A browser sign-in must finish within this.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Sign-ins under way at once; the oldest are dropped past this.
const MAX_PENDING: usize = 4096;

/// A browser sign-in under way.
pub(crate) struct Pending {
    login: BrowserLogin,
    at: Instant,
}

/// The signed-in person on this request.
#[derive(Clone)]
pub(crate) struct Signed {
    pub name: String,
    /// The token every form of theirs must carry.
    pub csrf: String,
}

/// 32 random bytes, URL-safe.
fn random_id() -> String {
    let mut b = [0u8; 32];
    // The system's random source does not fail on Linux once booted.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    B64.encode(b)
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
            name: s.name,
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
    /// Starts a browser sign-in: remembers it, and says where to send the
    /// browser and which cookie to set.
    pub(crate) async fn start_login(&self) -> Result<(String, HeaderValue), String> {
        let issuer = self.sso.issuers.get("").await.map_err(|e| e.to_string())?;
        let login = issuer
            .start_browser(&self.callback_url())
            .map_err(|e| e.to_string())?;
        let url = login.url.clone();
        let id = random_id();
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        logins.retain(|_, p| p.at.elapsed() < LOGIN_TTL);
        if logins.len() >= MAX_PENDING
            && let Some(oldest) = logins
                .iter()
                .min_by_key(|(_, p)| p.at)
                .map(|(k, _)| k.clone())
        {
            logins.remove(&oldest);
        }
        logins.insert(
            id.clone(),
            Pending {
                login,
                at: Instant::now(),
            },
        );
        Ok((url, set_cookie(LOGIN_COOKIE, &id, LOGIN_TTL)))
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
    ) -> Result<[HeaderValue; 2], String> {
        let id = cookie(headers, LOGIN_COOKIE)
            .ok_or("this browser started no sign-in (or it took longer than 10 minutes)")?;
        let pending = self
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .filter(|p| p.at.elapsed() < LOGIN_TTL)
            .ok_or("the sign-in expired or was used already; sign in again")?;
        if !same(pending.login.state.as_bytes(), state.as_bytes()) {
            return Err("the sign-in's state does not match this browser's".into());
        }
        let issuer = self.sso.issuers.get("").await.map_err(|e| e.to_string())?;
        let signed_in = issuer
            .finish_browser(&self.callback_url(), code, &pending.login)
            .await
            .map_err(|e| e.to_string())?;
        let (token, _) = self
            .service
            .sign_in(&self.sso, &issuer, &signed_in)
            .await
            .map_err(|s| s.message().to_owned())?;
        Ok([
            set_cookie(SESSION_COOKIE, &token, self.session_ttl),
            set_cookie(LOGIN_COOKIE, "", Duration::ZERO),
        ])
    }
}
