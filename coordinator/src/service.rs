//! `ward.v1.Coordinator`: who is calling (a client certificate, or a
//! person's session), what they may do, then the workflow; the agents'
//! fleet stream; and people's sign-in through an identity provider.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
};

use tokio::sync::{Notify, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use ward_proto::{
    identity::{canonical, peer_names},
    v1::{self as pb, coordinator_server::Coordinator, fleet_message},
};

use crate::{
    fleet::Fleet,
    now_ms,
    oidc::{DeviceLogin, Issuer, Issuers, OidcError, SignedIn},
    session::{Session, Sessions},
    store::{KnownHost, Person, Store},
    workflow::{InternalError, PAGE, Resume, Rules, Workflow, WorkflowError},
};

/// Where a page starts and how long it is, from a request's fields.
fn page_of(limit: u32, page_token: &str) -> Result<(i64, usize), Status> {
    let after = match page_token {
        "" => 0,
        t => t.parse::<i64>().map_err(|_| {
            Status::invalid_argument("page_token: not one this coordinator handed out")
        })?,
    };
    let limit = match limit as usize {
        0 => PAGE,
        n => n.min(PAGE),
    };
    Ok((after, limit))
}

fn token(next: Option<i64>) -> String {
    next.map(|n| n.to_string()).unwrap_or_default()
}

/// Agents present "NAME.agent"; anyone else is a person.
pub const AGENT_SUFFIX: &str = ".agent";

#[derive(Clone)]
pub struct CoordinatorService {
    workflow: Arc<Mutex<Workflow>>,
    /// The read path's own store connection: listings and the audit
    /// trail never hold the decision lock.
    reader: Arc<Mutex<Store>>,
    fleet: Arc<Fleet>,
    /// Wakes the outbox pump after a local change.
    changed: Arc<Notify>,
    /// Messages queued per agent stream.
    stream_buffer: usize,
    metrics: Arc<crate::metrics::Metrics>,
    /// Signs renewed agent certificates, when enrolment is configured.
    ca: Option<Arc<crate::enrolment::FleetCa>>,
    /// People's sign-in: the trusted issuers and the sessions issued.
    sso: Option<Sso>,
}

/// What people's sign-in needs.
#[derive(Clone)]
pub struct Sso {
    pub issuers: Arc<Issuers>,
    pub sessions: Arc<Sessions>,
    /// Device sign-ins waiting at the provider at once; more are refused.
    pub waiting: Arc<tokio::sync::Semaphore>,
    /// Those waiting, by the address that started them.
    pub waiting_by_peer: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

/// Device sign-ins one address may keep waiting.
const WAITING_PER_PEER: usize = 4;

/// One address's waiting sign-in; counted down when dropped.
pub struct PeerSlot {
    peer: Option<std::net::IpAddr>,
    counts: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&peer);
                }
            }
        }
    }
}

impl Sso {
    /// A waiting slot for `peer`, unless it holds its share already.
    fn waiting_from(&self, peer: Option<std::net::IpAddr>) -> Result<PeerSlot, Status> {
        if let Some(p) = peer {
            let mut counts = self
                .waiting_by_peer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(p).or_default();
            if *n >= WAITING_PER_PEER {
                return Err(Status::resource_exhausted(format!(
                    "{p} has {WAITING_PER_PEER} sign-ins waiting already; finish or cancel one"
                )));
            }
            *n += 1;
        }
        Ok(PeerSlot {
            peer,
            counts: self.waiting_by_peer.clone(),
        })
    }
}

fn status(e: WorkflowError) -> Status {
    let msg = e.to_string();
    match e {
        WorkflowError::Invalid { .. } | WorkflowError::UnknownHost(_) => {
            Status::invalid_argument(msg)
        }
        WorkflowError::NotEligible(_)
        | WorkflowError::OverMax(_)
        | WorkflowError::SelfApproval
        | WorkflowError::NotReviewer(_)
        | WorkflowError::NotYours(_)
        | WorkflowError::IdentityTaken(_)
        | WorkflowError::Enrolment(_) => Status::permission_denied(msg),
        WorkflowError::NotFound(_) => Status::not_found(msg),
        WorkflowError::WrongState { .. } => Status::failed_precondition(msg),
        WorkflowError::Store(_) | WorkflowError::Internal(_) => {
            tracing::error!(error = %msg, "internal error");
            Status::internal(msg)
        }
    }
}

/// Who is calling: the one identity the client certificate names, or
/// the person a session names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    Person(String),
    /// The agent of this host.
    Agent(String),
}

/// The session a call presents, if any: `authorization: Bearer TOKEN`.
fn bearer<T>(req: &Request<T>) -> Result<Option<&str>, Status> {
    let Some(v) = req.metadata().get("authorization") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Some(t.trim()))
        .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer SESSION`"))
}

/// The session a call presents, if any. One call has one identity: a
/// session beside a client certificate is refused.
fn session_token<T>(req: &Request<T>) -> Result<Option<&str>, Status> {
    let token = bearer(req)?;
    if token.is_some() && !peer_names(req).is_empty() {
        return Err(refused(
            "the call presents both a client certificate and a session; present one",
        ));
    }
    Ok(token)
}

/// Where a call came from, for the audit.
fn address(peer: Option<std::net::IpAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_owned(), |p| p.to_string())
}

fn refused(e: impl std::fmt::Display) -> Status {
    tracing::warn!(error = %e, "caller refused");
    Status::unauthenticated(e.to_string())
}

impl CoordinatorService {
    pub fn new(
        workflow: Arc<Mutex<Workflow>>,
        reader: Arc<Mutex<Store>>,
        fleet: Arc<Fleet>,
        changed: Arc<Notify>,
        stream_buffer: usize,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        CoordinatorService {
            workflow,
            reader,
            fleet,
            changed,
            stream_buffer: stream_buffer.max(1),
            metrics,
            ca: None,
            sso: None,
        }
    }

    /// People may sign in through `sso`'s issuers and call with sessions.
    pub fn with_sso(mut self, sso: Sso) -> Self {
        self.sso = Some(sso);
        self
    }

    /// The caller: by certificate, or by session (checked against the
    /// store's binding of its name). Presenting both is refused: one call
    /// has one identity.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let Some(token) = session_token(req)? else {
            let names = peer_names(req);
            if names.is_empty() {
                return Err(refused(
                    "no client certificate and no session: sign in with `ward login`",
                ));
            }
            let id = canonical(&names).map_err(refused)?;
            return Ok(match id.strip_suffix(AGENT_SUFFIX) {
                Some(host) => Caller::Agent(host.to_owned()),
                None => Caller::Person(id),
            });
        };
        Ok(Caller::Person(self.session(token).await?.name))
    }

    /// The session `token` is, if it holds.
    pub(crate) async fn session(&self, token: &str) -> Result<Session, Status> {
        let Some(sso) = &self.sso else {
            return Err(refused(
                "this coordinator has no [[oidc]] issuer: sessions are refused",
            ));
        };
        // Signature, expiry and issuer first: a forged or stale token
        // costs no store read, and the read takes no decision lock.
        let s = sso.sessions.verified(token, now_ms()).map_err(refused)?;
        let (reader, name, id) = (self.reader.clone(), s.name.clone(), s.id.clone());
        let (bound, ended) = tokio::task::spawn_blocking(move || {
            let mut store = reader.lock().unwrap_or_else(|p| p.into_inner());
            store.read(|tx| {
                Ok::<_, crate::store::StoreError>((tx.person(&name)?, tx.session_ended(&id)?))
            })
        })
        .await
        .map_err(|e| status(InternalError::Worker(e).into()))?
        .map_err(|e| status(e.into()))?;
        sso.sessions
            .still_holds(&s, bound.as_ref(), ended)
            .map_err(refused)?;
        Ok(s)
    }

    /// Ends `session` (already checked), on every replica from now on.
    pub(crate) async fn sign_out(&self, session: &Session, how: &str) -> Result<(), Status> {
        let (s, how) = (session.clone(), how.to_owned());
        self.with(move |wf| wf.sign_out(&s, &how))
            .await
            .map_err(status)?;
        tracing::info!(person = %session.name, "signed out");
        Ok(())
    }

    /// The person calling; agents may only subscribe.
    async fn person<T>(&self, req: &Request<T>) -> Result<String, Status> {
        match self.caller(req).await? {
            Caller::Person(p) => Ok(p),
            Caller::Agent(_) => Err(Status::permission_denied(
                "this call is for people; agents may only subscribe",
            )),
        }
    }

    /// Renewals are signed by `ca`.
    pub fn with_fleet_ca(mut self, ca: Arc<crate::enrolment::FleetCa>) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Runs `f` on the workflow in a blocking thread: the stores are
    /// synchronous clients.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Workflow) -> Result<T, WorkflowError> + Send + 'static,
    ) -> Result<T, WorkflowError> {
        let wf = self.workflow.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = wf.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .unwrap_or_else(|e| Err(InternalError::Worker(e).into()))
    }

    /// Runs a read on the reader's connection, with the rules in force;
    /// the decision lock is held only to take those.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Rules, &mut Store) -> Result<T, WorkflowError> + Send + 'static,
    ) -> Result<T, WorkflowError> {
        let (wf, reader) = (self.workflow.clone(), self.reader.clone());
        tokio::task::spawn_blocking(move || {
            let rules = wf.lock().unwrap_or_else(|p| p.into_inner()).rules.clone();
            let mut store = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&rules, &mut store)
        })
        .await
        .unwrap_or_else(|e| Err(InternalError::Worker(e).into()))
    }

    fn answer(
        &self,
        r: Result<pb::AccessRequest, WorkflowError>,
        who: &str,
        call: &str,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        match r {
            Ok(req) => {
                tracing::info!(actor = %who, call, request = %req.id, "ok");
                match call {
                    "CreateRequest" => self.metrics.decided(&req, "policy"),
                    "Approve" | "Deny" => self.metrics.decided(&req, "review"),
                    _ => {}
                }
                self.changed.notify_one();
                Ok(Response::new(req))
            }
            Err(e) => {
                tracing::warn!(actor = %who, call, error = %e, "refused");
                Err(status(e))
            }
        }
    }
}

pub type LoginStream = Pin<Box<dyn Stream<Item = Result<pb::LoginEvent, Status>> + Send>>;

/// Who a caller is, as `WhoAmI` and a sign-in say.
fn identity(name: &str, person: Option<&Person>, session: Option<&Session>) -> pb::Identity {
    pb::Identity {
        name: name.to_owned(),
        via: if session.is_some() {
            "session"
        } else {
            "certificate"
        }
        .into(),
        issuer: person.map(|p| p.issuer.clone()).unwrap_or_default(),
        subject: person.map(|p| p.subject.clone()).unwrap_or_default(),
        groups: person
            .map(|p| p.def.parents.iter().map(|g| g.id.clone()).collect())
            .unwrap_or_default(),
        attributes: person
            .map(|p| {
                p.def
                    .attrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        session_expires_unix_ms: session.map_or(0, |s| s.expires_unix_ms),
    }
}

impl CoordinatorService {
    /// Waits for the person to sign in at the provider, then binds them
    /// and issues their session.
    async fn finish_login(
        &self,
        sso: &Sso,
        issuer: &Issuer,
        device: &DeviceLogin,
        from: &str,
    ) -> Result<pb::LoginEvent, Status> {
        let signed = issuer.finish_device(device).await.map_err(|e| {
            tracing::warn!(issuer = %issuer.section.issuer, error = %e, "device sign-in refused");
            Status::unauthenticated(e.to_string())
        })?;
        let (token, identity) = self.sign_in(sso, issuer, &signed, from).await?;
        Ok(pb::LoginEvent {
            kind: Some(pb::login_event::Kind::Session(pb::LoginSession {
                token,
                identity: Some(identity),
            })),
        })
    }

    /// A verified sign-in becomes a person (the config's claim mapping),
    /// bound to the issuer and subject, and a session. Shared by the
    /// device grant and the web page.
    pub async fn sign_in(
        &self,
        sso: &Sso,
        issuer: &Issuer,
        signed: &SignedIn,
        from: &str,
    ) -> Result<(String, pb::Identity), Status> {
        let person = issuer.section.person(signed).map_err(|e| {
            tracing::warn!(issuer = %signed.issuer, subject = %signed.subject, error = %e, "sign-in refused");
            Status::permission_denied(e.to_string())
        })?;
        let p = person.clone();
        let from = from.to_owned();
        self.with(move |wf| wf.sign_in(&p, &from))
            .await
            .map_err(|e| {
                tracing::warn!(person = %person.name, error = %e, "sign-in refused");
                status(e)
            })?;
        let (token, session) = sso
            .sessions
            .issue(&person, now_ms())
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(person = %person.name, issuer = %person.issuer, subject = %person.subject, "signed in");
        Ok((token, identity(&person.name, Some(&person), Some(&session))))
    }
}

impl CoordinatorService {
    /// Release (by the requester) or revoke (by a reviewer or admin).
    async fn end(
        &self,
        req: Request<pb::EndRequest>,
        release: bool,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let who = self.person(&req).await?;
        let r = req.into_inner();
        self.end_as(&who, &r.id, release, &r.reason)
            .await
            .map(Response::new)
    }

    /// One review by `who`, however they called (gRPC or the web page).
    pub(crate) async fn review_as(
        &self,
        who: &str,
        id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<pb::AccessRequest, Status> {
        if !approve && reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: say why the request is denied",
            ));
        }
        let (w, id, reason) = (who.to_owned(), id.to_owned(), reason.to_owned());
        let out = self
            .with(move |wf| wf.review(&w, &id, approve, &reason))
            .await;
        let call = if approve { "Approve" } else { "Deny" };
        self.answer(out, who, call).map(Response::into_inner)
    }

    /// Release or revoke by `who`, however they called.
    pub(crate) async fn end_as(
        &self,
        who: &str,
        id: &str,
        release: bool,
        reason: &str,
    ) -> Result<pb::AccessRequest, Status> {
        let (default, call) = if release {
            ("released", "Release")
        } else {
            ("revoked", "Revoke")
        };
        let reason = if reason.trim().is_empty() {
            default.to_owned()
        } else {
            reason.to_owned()
        };
        let (w, id) = (who.to_owned(), id.to_owned());
        let out = self.with(move |wf| wf.end(&w, &id, release, &reason)).await;
        self.answer(out, who, call).map(Response::into_inner)
    }
}

/// Delivers what the outbox gains, from this replica or any other sharing
/// the store, to the agents connected here.
pub async fn pump(
    head: i64,
    workflow: Arc<Mutex<Workflow>>,
    fleet: Arc<Fleet>,
    changed: Arc<Notify>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut last = head;
    metrics
        .delivered
        .store(last, std::sync::atomic::Ordering::Relaxed);
    loop {
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(100), changed.notified()).await;
        let wf = workflow.clone();
        let after = last;
        let batch = tokio::task::spawn_blocking(move || {
            wf.lock()
                .unwrap_or_else(|p| p.into_inner())
                .outbox_after(after)
        })
        .await;
        match batch {
            Ok(Ok(rows)) => {
                for (seq, hosts, msg) in rows {
                    let sent = fleet.deliver(seq, &hosts, &msg);
                    tracing::info!(
                        seq,
                        hosts = hosts.len(),
                        streams = sent,
                        "delivered to agents"
                    );
                    last = seq;
                }
                metrics
                    .delivered
                    .store(last, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "reading the outbox"),
            Err(e) => tracing::error!(error = %e, "outbox worker failed"),
        }
    }
}

type FleetStream = Pin<Box<dyn Stream<Item = Result<pb::FleetMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn create_request(
        &self,
        req: Request<pb::CreateRequestRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let who = self.person(&req).await?;
        let (w, body) = (who.clone(), req.into_inner());
        let r = self.with(move |wf| wf.create(&w, body)).await;
        self.answer(r, &who, "CreateRequest")
    }

    async fn list_requests(
        &self,
        req: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let who = self.person(&req).await?;
        let r = req.into_inner();
        let (after, limit) = page_of(r.limit, &r.page_token)?;
        let page = self
            .read(move |rules, store| {
                rules.visible_requests(store, &who, (r.mine, r.pending), after, limit)
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListRequestsResponse {
            requests: page.items,
            next_page_token: token(page.next),
        }))
    }

    async fn approve(
        &self,
        req: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let who = self.person(&req).await?;
        let r = req.into_inner();
        self.review_as(&who, &r.id, true, &r.reason)
            .await
            .map(Response::new)
    }

    async fn deny(
        &self,
        req: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let who = self.person(&req).await?;
        let r = req.into_inner();
        self.review_as(&who, &r.id, false, &r.reason)
            .await
            .map(Response::new)
    }

    async fn release(
        &self,
        req: Request<pb::EndRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        self.end(req, true).await
    }

    async fn revoke(
        &self,
        req: Request<pb::EndRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        self.end(req, false).await
    }

    async fn audit(
        &self,
        req: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        let who = self.person(&req).await?;
        let r = req.into_inner();
        let (after, limit) = page_of(r.limit, &r.page_token)?;
        let page = self
            .read(move |rules, store| {
                rules.visible_audit(store, &who, r.since_unix_ms, after, limit)
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AuditResponse {
            entries: page.items,
            next_page_token: token(page.next),
        }))
    }

    type SubscribeStream = FleetStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<FleetStream>, Status> {
        let who = self.caller(&req).await?;
        let r = req.into_inner();
        if who != Caller::Agent(r.host.clone()) {
            tracing::warn!(host = %r.host, caller = ?who, "subscribe refused");
            return Err(Status::permission_denied(format!(
                "only the agent of host `{}` ({}{AGENT_SUFFIX}, lowercase) may subscribe for it; \
                 the certificate names {who:?}",
                r.host, r.host
            )));
        }
        // Stored comma-separated: a comma would make one name two.
        if r.host.is_empty() || r.host.contains(',') {
            return Err(Status::invalid_argument(format!(
                "host: `{}` is not a host name",
                r.host
            )));
        }
        let known = KnownHost::subscribing(&r.host, &r.labels, r.posture.as_ref());
        let (tx, rx) = mpsc::channel(self.stream_buffer);
        // Attach first, then read the snapshot and the outbox position it
        // reflects. The stream sends the snapshot, then only what the
        // outbox gained after it: a revocation delivered while the
        // snapshot was read is neither lost nor overtaken by the older
        // snapshot (which would bring the revoked grant back).
        self.fleet.attach(&r.host, tx);
        let k = known.clone();
        let mut resume = self
            .read(move |_, store| Resume::read(store, &k))
            .await
            .map_err(status)?;
        if matches!(resume, Resume::Changed) {
            resume = self
                .with(move |wf| wf.subscribe(&known))
                .await
                .map_err(status)?;
        }
        let resume = match resume {
            Resume::Grants(snapshot) => snapshot,
            // Nothing queued on the attached stream reaches the agent:
            // the receiver is dropped with this refusal.
            Resume::Changed => {
                return Err(Status::internal("the host's record was not written"));
            }
            Resume::Revoked => {
                tracing::warn!(host = %r.host, "subscribe refused: the host is revoked");
                return Err(Status::permission_denied(format!(
                    "host `{}` is revoked",
                    r.host
                )));
            }
        };
        tracing::info!(host = %r.host, labels = ?r.labels, "agent subscribed");
        let snapshot = pb::FleetMessage {
            kind: Some(fleet_message::Kind::Snapshot(pb::GrantSnapshot {
                grants: self.fleet.trees.prove(&r.host, resume.grants),
            })),
        };
        let since = resume.seq;
        let newer =
            tokio_stream::StreamExt::filter_map(ReceiverStream::new(rx), move |(seq, m)| {
                (seq > since).then_some(Ok(m))
            });
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok(snapshot)),
            newer,
        ))))
    }

    type LoginStream = LoginStream;

    async fn login(&self, req: Request<pb::LoginRequest>) -> Result<Response<LoginStream>, Status> {
        let Some(sso) = self.sso.clone() else {
            return Err(Status::failed_precondition(
                "this coordinator has no [[oidc]] issuer: people use client certificates",
            ));
        };
        let peer = req.remote_addr().map(|a| a.ip());
        let permit = sso.waiting.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("too many sign-ins are waiting; try again shortly")
        })?;
        // One address may keep only a few sign-ins waiting: nobody holds
        // every slot from one machine.
        let slot = sso.waiting_from(peer)?;
        // The audit says where a device sign-in was started: the code may
        // have been phished to someone else's browser (RFC 8628, 5.4).
        let from = format!("the device grant, started from {}", address(peer));
        let issuer = sso
            .issuers
            .get(&req.get_ref().issuer)
            .await
            .map_err(|e| match e {
                OidcError::NotConfigured(_) => Status::invalid_argument(format!("issuer: {e}")),
                e => {
                    tracing::error!(error = %e, "identity provider unavailable");
                    Status::unavailable(e.to_string())
                }
            })?;
        let device = issuer.start_device().await.map_err(|e| {
            tracing::error!(error = %e, "device sign-in could not start");
            Status::unavailable(e.to_string())
        })?;
        let prompt = pb::LoginPrompt {
            user_code: device.user_code.clone(),
            verification_uri: device.verification_uri.clone(),
            verification_uri_complete: device.verification_uri_complete.clone().unwrap_or_default(),
            expires_unix_ms: now_ms().saturating_add(device.expires_in.as_millis() as i64),
        };
        let (tx, rx) = mpsc::channel(2);
        let _ = tx
            .send(Ok(pb::LoginEvent {
                kind: Some(pb::login_event::Kind::Prompt(prompt)),
            }))
            .await;
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = (permit, slot);
            // A client that hangs up stops the polling.
            let done = tokio::select! {
                r = this.finish_login(&sso, &issuer, &device, &from) => r,
                () = tx.closed() => return,
            };
            let _ = tx.send(done).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::Identity>, Status> {
        let session = match session_token(&req)? {
            Some(t) => Some(self.session(t).await?),
            None => None,
        };
        let who = match &session {
            Some(s) => Caller::Person(s.name.clone()),
            None => self.caller(&req).await?,
        };
        let name = match who {
            Caller::Agent(host) => {
                return Ok(Response::new(pb::Identity {
                    name: format!("{host}{AGENT_SUFFIX}"),
                    via: "certificate".into(),
                    ..Default::default()
                }));
            }
            Caller::Person(name) => name,
        };
        let n = name.clone();
        let person = self
            .read(move |_, store| Ok(store.read(|tx| tx.person(&n))?))
            .await
            .map_err(status)?;
        Ok(Response::new(identity(
            &name,
            person.as_ref(),
            session.as_ref(),
        )))
    }

    async fn logout(
        &self,
        req: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let Some(token) = session_token(&req)? else {
            return Err(Status::failed_precondition(
                "this call presents no session (a certificate is not signed out)",
            ));
        };
        let session = self.session(token).await?;
        let from = address(req.remote_addr().map(|a| a.ip()));
        self.sign_out(&session, &format!("ward logout from {from}"))
            .await?;
        Ok(Response::new(pb::LogoutResponse { name: session.name }))
    }

    async fn renew(
        &self,
        req: Request<pb::CertificateRequest>,
    ) -> Result<Response<pb::Enrolled>, Status> {
        let Caller::Agent(host) = self.caller(&req).await? else {
            return Err(Status::permission_denied(
                "only an agent renews, its own certificate",
            ));
        };
        let Some(ca) = self.ca.clone() else {
            return Err(Status::failed_precondition(
                "this coordinator has no [enrolment] section: certificates are managed by hand",
            ));
        };
        let csr = req.into_inner().csr_der;
        let (cert, not_after) = ca
            .issue_agent(&host, &csr)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let h = host.clone();
        let signing_key = self
            .with(move |wf| {
                wf.renew(&h, not_after)?;
                Ok(wf.rules.signer.public_hex())
            })
            .await
            .map_err(status)?;
        tracing::info!(host = %host, not_after_unix_ms = not_after, "agent certificate renewed");
        Ok(Response::new(pb::Enrolled {
            host,
            certificate_pem: cert,
            ca_pem: ca.ca_pem.clone(),
            signing_public_keys: vec![signing_key],
            not_after_unix_ms: not_after,
        }))
    }
}
