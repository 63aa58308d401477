//! What each address does. Reads run on the reader's store connection,
//! decisions through the same service calls as gRPC.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Extension, Form, Router,
    extract::{FromRequest, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        AppendHeaders, IntoResponse, Redirect, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use maud::Markup;
use serde::Deserialize;
use tonic::Code;
use ward_proto::v1::{self as pb, RequestState};

use super::{
    Peer, Web,
    auth::{Refusal, SESSION_COOKIE, Signed, check_post, set_cookie, signed},
    pages::{self, AuditFilter, Detail, SINCE},
};
use crate::{now_ms, workflow::PAGE};

type Shared = State<Arc<Web>>;

pub(crate) fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/logout", post(logout))
        .route("/pending", get(pending))
        .route("/active", get(active))
        .route("/mine", get(mine))
        .route("/audit", get(audit))
        .route("/requests/{id}", get(request))
        .route("/requests/{id}/review", post(review))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/requests/{id}/release", post(release))
        .route("/events", get(events))
        .route("/static/ward.css", get(css))
        .route("/static/ward.js", get(js))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(web)
}

/// Only this origin's script and style; no frames, no foreign forms, no
/// referrer (the callback's URL carries the one-time code).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn secure_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // same-origin, not no-referrer: with no-referrer, browsers send
        // `Origin: null` on the page's own form posts.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

fn html(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

fn to_sign_in() -> Response {
    Redirect::to("/").into_response()
}

/// The HTTP status a refused call becomes.
fn status_of(s: &tonic::Status) -> StatusCode {
    match s.code() {
        Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn failed(who: Option<&Signed>, s: &tonic::Status) -> Response {
    html(
        status_of(s),
        pages::error("Something went wrong", s.message(), who),
    )
}

/// Why a [`Post`] did not reach its handler.
enum Unposted {
    /// Not a form this address takes.
    Form(Response),
    /// Refused by [`check_post`].
    Refused(Refusal),
}

impl IntoResponse for Unposted {
    fn into_response(self) -> Response {
        let r = match self {
            Unposted::Form(response) => return response,
            Unposted::Refused(r) => r,
        };
        let (status, message) = match r {
            Refusal::SignedOut => (
                StatusCode::FORBIDDEN,
                "You are not signed in (or your session ended). Sign in and try again.",
            ),
            Refusal::CrossSite => (
                StatusCode::FORBIDDEN,
                "This form was not sent from ward's own page, so it was refused.",
            ),
        };
        tracing::warn!(refusal = ?r, "web POST refused");
        html(status, pages::error("Refused", message, None))
    }
}

/// A form that changes something, as it reaches its handler: sent by a
/// signed-in person from the page's own origin with their form token
/// ([`check_post`]); refused with a page saying why otherwise.
struct Post<F> {
    who: Signed,
    form: F,
}

/// A form carrying the CSRF token [`Post`] checks.
trait WithCsrf {
    fn csrf(&self) -> &str;
}

impl<F> FromRequest<Arc<Web>> for Post<F>
where
    F: WithCsrf + serde::de::DeserializeOwned + Send,
{
    type Rejection = Unposted;

    async fn from_request(req: Request, web: &Arc<Web>) -> Result<Self, Unposted> {
        let headers = req.headers().clone();
        let Form(form) = Form::<F>::from_request(req, web)
            .await
            .map_err(|e| Unposted::Form(e.into_response()))?;
        let who = check_post(web, &headers, form.csrf())
            .await
            .map_err(Unposted::Refused)?;
        Ok(Post { who, form })
    }
}

async fn home(State(web): Shared, headers: HeaderMap) -> Response {
    if signed(&web, &headers).await.is_some() {
        return Redirect::to("/pending").into_response();
    }
    html(StatusCode::OK, pages::sign_in(&issuer_name(&web), None))
}

fn issuer_name(web: &Web) -> String {
    let issuers = web.sso.issuers.names();
    let first = issuers.first().map(String::as_str).unwrap_or("");
    first
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

async fn login(State(web): Shared) -> Response {
    match web.start_login().await {
        Ok((url, cookie)) => match HeaderValue::from_str(&url) {
            Ok(location) => (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, location), (header::SET_COOKIE, cookie)],
            )
                .into_response(),
            Err(_) => html(
                StatusCode::BAD_GATEWAY,
                pages::sign_in(
                    &issuer_name(&web),
                    Some("the provider's sign-in address is not a URL"),
                ),
            ),
        },
        Err(e) => {
            tracing::error!(error = %e, "web sign-in could not start");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::sign_in(
                    &issuer_name(&web),
                    Some(&format!("Sign-in is unavailable: {e}")),
                ),
            )
        }
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(web): Shared,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let outcome = match (&q.code, &q.state, &q.error) {
        (Some(code), Some(state), None) => {
            web.finish_login(&headers, code, state, &peer.ip().to_string())
                .await
        }
        // Only a well-formed error code is shown: anyone can send a
        // browser here with text of their choosing.
        (_, _, Some(e))
            if !e.is_empty()
                && e.len() <= 64
                && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            Err(format!("the identity provider refused it ({e})"))
        }
        (_, _, Some(_)) => Err("the identity provider refused it".into()),
        _ => Err("the identity provider sent no code".into()),
    };
    match outcome {
        // Away from the callback's address at once: it holds the code.
        Ok([session, clear]) => (
            StatusCode::SEE_OTHER,
            // Appended: two cookies, not one replacing the other.
            AppendHeaders([
                (header::LOCATION, HeaderValue::from_static("/")),
                (header::SET_COOKIE, session),
                (header::SET_COOKIE, clear),
            ]),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "web sign-in refused");
            html(
                StatusCode::FORBIDDEN,
                pages::sign_in(&issuer_name(&web), Some(&format!("Sign-in refused: {e}"))),
            )
        }
    }
}

#[derive(Deserialize)]
struct Csrf {
    #[serde(default)]
    csrf: String,
}

impl WithCsrf for Csrf {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Signs out: the session ends at the coordinator (on every replica),
/// not only in this browser. A session that had already ended is only
/// cleared from the browser (the form still came from the page itself).
async fn logout(
    State(web): Shared,
    Extension(Peer(peer)): Extension<Peer>,
    post: Result<Post<Csrf>, Unposted>,
) -> Response {
    match post {
        Ok(Post { who, .. }) => {
            let how = format!("the web page from {}", peer.ip());
            if let Err(s) = web.service.sign_out(&who.session, &how).await {
                return failed(Some(&who), &s);
            }
        }
        Err(Unposted::Refused(Refusal::SignedOut)) => {}
        Err(refused) => return refused.into_response(),
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, HeaderValue::from_static("/")),
            (
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, "", Duration::ZERO),
            ),
        ],
    )
        .into_response()
}

/// The newest requests `who` may see, newest first: in `state` when
/// given, and only their own with `mine`.
async fn requests(
    web: &Web,
    who: &str,
    state: Option<RequestState>,
    mine: bool,
) -> Result<Vec<pb::AccessRequest>, tonic::Status> {
    let who = who.to_owned();
    web.service
        .read(move |rules, store| rules.newest_visible(store, &who, state, mine, PAGE))
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))
}

async fn pending(State(web): Shared, headers: HeaderMap) -> Response {
    let Some(who) = signed(&web, &headers).await else {
        return to_sign_in();
    };
    let name = who.name.clone();
    let list = web
        .service
        .read(move |rules, store| rules.decidable_requests(store, &name, PAGE))
        .await;
    match list {
        Ok(list) => html(StatusCode::OK, pages::pending(&who, &list)),
        Err(e) => failed(Some(&who), &tonic::Status::internal(e.to_string())),
    }
}

async fn active(State(web): Shared, headers: HeaderMap) -> Response {
    let Some(who) = signed(&web, &headers).await else {
        return to_sign_in();
    };
    match requests(&web, &who.name, Some(RequestState::Approved), false).await {
        Ok(list) => {
            let now = now_ms();
            let list: Vec<_> = list
                .into_iter()
                .filter(|r| r.expires_at_unix_ms > now)
                .collect();
            html(StatusCode::OK, pages::active(&who, &list))
        }
        Err(s) => failed(Some(&who), &s),
    }
}

async fn mine(State(web): Shared, headers: HeaderMap) -> Response {
    let Some(who) = signed(&web, &headers).await else {
        return to_sign_in();
    };
    match requests(&web, &who.name, None, true).await {
        Ok(list) => html(StatusCode::OK, pages::mine(&who, &list)),
        Err(s) => failed(Some(&who), &s),
    }
}

async fn audit(
    State(web): Shared,
    headers: HeaderMap,
    Query(mut f): Query<AuditFilter>,
) -> Response {
    let Some(who) = signed(&web, &headers).await else {
        return to_sign_in();
    };
    if !SINCE.iter().any(|(v, _)| *v == f.since) {
        f.since = "24h".into();
    }
    let since = humantime::parse_duration(&f.since).unwrap_or(Duration::from_secs(86_400));
    let since_ms = now_ms() - since.as_millis() as i64;
    let (name, filter) = (
        who.name.clone(),
        (f.requester.clone(), f.host.clone(), f.state.clone()),
    );
    let entries = web
        .service
        .read(move |rules, store| {
            let entries = rules.visible_audit(store, &name, since_ms, 0, PAGE)?.items;
            let (requester, host, state) = filter;
            if requester.is_empty() && host.is_empty() && state.is_empty() {
                return Ok(entries);
            }
            store.read(|tx| {
                let mut cache = std::collections::HashMap::new();
                let mut out = Vec::new();
                for e in entries {
                    if !cache.contains_key(&e.request_id) {
                        cache.insert(e.request_id.clone(), tx.get(&e.request_id)?);
                    }
                    let Some(Some(r)) = cache.get(&e.request_id) else {
                        continue;
                    };
                    let keep = (requester.is_empty()
                        || r.requester.eq_ignore_ascii_case(&requester))
                        && (host.is_empty() || r.hosts.contains(&host))
                        && (state.is_empty() || crate::workflow::state_name(r.state) == state);
                    if keep {
                        out.push(e);
                    }
                }
                Ok(out)
            })
        })
        .await;
    match entries {
        Ok(mut entries) => {
            entries.reverse();
            html(StatusCode::OK, pages::audit(&who, &f, &entries))
        }
        Err(e) => failed(Some(&who), &tonic::Status::internal(e.to_string())),
    }
}

/// A request's page, if `who` may see it.
async fn detail(web: &Web, who: &str, id: &str) -> Result<Detail, tonic::Status> {
    let (who, id) = (who.to_owned(), id.to_owned());
    web.service
        .read(move |rules, store| {
            store.read(|tx| {
                let Some(req) = tx.get(&id)? else {
                    return Ok(None);
                };
                if !rules.may_see(tx, &who, &tx.people(&[&who])?, &req)? {
                    return Ok(None);
                }
                let (groups, attributes) = rules.requester_view(tx, &req)?;
                let (others, more_others) = if req.state == RequestState::Pending as i32 {
                    rules.other_reviewers(tx, &req, 20, 500)?
                } else {
                    (Vec::new(), false)
                };
                let others = others
                    .into_iter()
                    .filter(|o| !o.eq_ignore_ascii_case(&who))
                    .collect();
                Ok(Some(Detail {
                    may_decide: rules.may_decide(tx, &who, &req)?,
                    may_revoke: rules.may_revoke(tx, &who, &req)?,
                    mine: req.requester.eq_ignore_ascii_case(&who),
                    groups,
                    attributes,
                    others,
                    more_others,
                    req,
                }))
            })
        })
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .ok_or_else(|| tonic::Status::not_found("no such request, or not one you may see"))
}

#[derive(Deserialize)]
struct Done {
    done: Option<String>,
}

async fn request(
    State(web): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let Some(who) = signed(&web, &headers).await else {
        return to_sign_in();
    };
    match detail(&web, &who.name, &id).await {
        Ok(d) => {
            // Said only when the request shows it: a link with `done=` in
            // it cannot make the page claim what did not happen.
            let reviewed = |approve: bool| {
                d.req
                    .reviews
                    .iter()
                    .any(|r| r.approve == approve && r.reviewer.eq_ignore_ascii_case(&who.name))
            };
            let state = crate::workflow::state_name(d.req.state);
            let notice = match done.done.as_deref() {
                Some("approved") if reviewed(true) => Some("You approved this request."),
                Some("denied") if reviewed(false) => Some("You denied this request."),
                Some("revoked") if state == "revoked" => Some("Access revoked."),
                Some("released") if state == "released" => Some("Access released."),
                _ => None,
            };
            html(StatusCode::OK, pages::request(&who, &d, notice, None))
        }
        Err(s) => failed(Some(&who), &s),
    }
}

/// After a decision: back to the request's page, or the page again with
/// why it was refused.
async fn decided(
    web: &Web,
    who: &Signed,
    id: &str,
    done: &str,
    out: Result<pb::AccessRequest, tonic::Status>,
) -> Response {
    match out {
        Ok(_) => Redirect::to(&format!("/requests/{id}?done={done}")).into_response(),
        Err(s) => match detail(web, &who.name, id).await {
            Ok(d) => html(
                status_of(&s),
                pages::request(who, &d, None, Some(s.message())),
            ),
            Err(_) => failed(Some(who), &s),
        },
    }
}

#[derive(Deserialize)]
struct ReviewForm {
    #[serde(default)]
    csrf: String,
    decision: String,
    #[serde(default)]
    comment: String,
}

impl WithCsrf for ReviewForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn review(
    State(web): Shared,
    Path(id): Path<String>,
    Post { who, form: f }: Post<ReviewForm>,
) -> Response {
    let approve = match f.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return failed(
                Some(&who),
                &tonic::Status::invalid_argument(format!(
                    "decision: `{other}` is not approve or deny"
                )),
            );
        }
    };
    let out = web
        .service
        .review_as(&who.name, &id, approve, &f.comment)
        .await;
    let done = if approve { "approved" } else { "denied" };
    decided(&web, &who, &id, done, out).await
}

#[derive(Deserialize)]
struct EndForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

impl WithCsrf for EndForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn revoke(
    State(web): Shared,
    Path(id): Path<String>,
    Post { who, form: f }: Post<EndForm>,
) -> Response {
    let reason = if f.reason.trim().is_empty() {
        format!("revoked on the web page by {}", who.name)
    } else {
        f.reason
    };
    let out = web.service.end_as(&who.name, &id, false, &reason).await;
    decided(&web, &who, &id, "revoked", out).await
}

async fn release(
    State(web): Shared,
    Path(id): Path<String>,
    Post { who, .. }: Post<EndForm>,
) -> Response {
    let out = web
        .service
        .end_as(&who.name, &id, true, "released on the web page")
        .await;
    decided(&web, &who, &id, "released", out).await
}

/// Server-sent events: `changed` whenever any decision is audited, on any
/// replica; the page then fetches itself again.
async fn events(State(web): Shared, headers: HeaderMap) -> Response {
    if signed(&web, &headers).await.is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let changes = tokio_stream::wrappers::WatchStream::from_changes(web.version.clone());
    let events = tokio_stream::StreamExt::map(changes, |v| {
        Ok::<_, Infallible>(Event::default().event("changed").data(v.to_string()))
    });
    // Ended after a while (the browser reconnects at once, with its
    // session checked again): no stream outlives its session for long.
    let events = futures_util::StreamExt::take_until(events, tokio::time::sleep(SSE_LIFETIME));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// How long one live-update stream lasts before the browser reconnects.
const SSE_LIFETIME: Duration = Duration::from_secs(300);

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/ward.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/ward.js"),
    )
        .into_response()
}
