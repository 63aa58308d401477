//! The `ward.v1.Agent` service: authorization, then the engine.

use std::{pin::Pin, sync::Arc};

use tokio::sync::Mutex;
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};
use ward_abi::Op;
use ward_proto::{
    signing,
    v1::{self as pb, GrantState, agent_server::Agent},
};

use super::{
    authz::{self, Caller},
    engine::{Engine, EngineError},
    grant::{self, Grantee},
    store::Store,
};

/// Which transport a service instance answers on.
#[derive(Clone)]
pub enum Transport {
    Local {
        admin_group: String,
        /// Managed uid ranges: a caller whose audit login uid is in one
        /// (a managed human after sudo) never administers.
        managed_uids: Vec<[u32; 2]>,
    },
    Tls {
        allowed: Vec<String>,
        /// What a pushed grant must be signed with, and for which host.
        signed: SignedPushes,
    },
}

/// How a TLS listener checks what it is pushed.
#[derive(Clone)]
pub struct SignedPushes {
    pub keys: Vec<Vec<u8>>,
    pub host: String,
    /// Break-glass `tls.allow_unsigned_pushes`.
    pub allow_unsigned: bool,
}

impl SignedPushes {
    /// The grant a push carries, if this listener takes it as it came.
    fn accept(&self, req: pb::PushGrantRequest) -> Result<(pb::Grant, bool), String> {
        match (req.grant, req.signed) {
            (Some(_), Some(_)) => Err("send either grant or signed, not both".into()),
            (None, None) => Err("grant: is missing".into()),
            (Some(g), None) if self.allow_unsigned => Ok((g, false)),
            (Some(_), None) => Err(
                "unsigned grants are refused over TLS: send `signed`, a grant \
                 signed by a trusted coordinator key (tls.allow_unsigned_pushes is off)"
                    .into(),
            ),
            (None, Some(signed)) => {
                let g = signing::verify(&signed, &self.keys)
                    .map_err(|e| format!("signed: {e} (key {})", signed.key_id))?;
                if !ward_proto::hostset::names(&g, signed.host_proof.as_ref(), &self.host) {
                    return Err(format!(
                        "signed: signed for {}, not for this host `{}`",
                        ward_proto::hostset::describe(&g),
                        self.host
                    ));
                }
                Ok((g, true))
            }
        }
    }
}

#[derive(Clone)]
pub struct AgentService {
    engine: Arc<Mutex<Engine>>,
    transport: Transport,
    /// A second connection to the grant store: listings read there, in
    /// pages, without the engine lock that pushes and revocations take.
    reader: Arc<std::sync::Mutex<Store>>,
}

/// The most grants one ListGrants call reads.
pub const PAGE: usize = 1_000;

impl AgentService {
    /// `PushGrant`, uncounted.
    async fn push(
        &self,
        req: Request<pb::PushGrantRequest>,
    ) -> Result<Response<pb::PushGrantResponse>, Status> {
        let caller = self.caller(&req, "PushGrant").await?;
        self.require_admin(&caller, "PushGrant").await?;
        let req = req.into_inner();
        let grant = match &self.transport {
            Transport::Tls { signed, .. } => match signed.accept(req) {
                Ok((grant, true)) => grant,
                Ok((grant, false)) => {
                    tracing::warn!(grant_id = %grant.id, actor = %caller.actor(), "unsigned grant accepted over TLS (break-glass)");
                    grant
                }
                Err(why) => {
                    self.engine
                        .lock()
                        .await
                        .refuse_grant("", &caller.actor(), &why);
                    return Err(Status::permission_denied(why));
                }
            },
            // The local socket's caller is identified by the kernel, and
            // an administrator there may push what they decide.
            Transport::Local { .. } => match (req.grant, req.signed) {
                (Some(g), None) => g,
                (_, Some(_)) => {
                    return Err(Status::invalid_argument(
                        "signed: signed grants come over TLS or the coordinator's channel; \
                         push `grant` on the local socket",
                    ));
                }
                (None, None) => return Err(Status::invalid_argument("grant: is missing")),
            },
        };
        let id = grant.id.clone();
        let result = self.engine.lock().await.push(grant, &caller.actor());
        match result {
            Ok(r) => {
                tracing::debug!(grant_id = %id, actor = %caller.actor(), created = r.created, "grant pushed");
                Ok(Response::new(r))
            }
            Err(e) => {
                tracing::warn!(grant_id = %id, actor = %caller.actor(), error = %e, "grant refused");
                Err(status(e))
            }
        }
    }
    pub fn new(
        engine: Arc<Mutex<Engine>>,
        transport: Transport,
        reader: Arc<std::sync::Mutex<Store>>,
    ) -> Self {
        AgentService {
            engine,
            transport,
            reader,
        }
    }

    /// Authenticates the caller; a failure is audited and refused.
    async fn caller<T>(&self, req: &Request<T>, call: &str) -> Result<Caller, Status> {
        let result = match &self.transport {
            Transport::Local {
                admin_group,
                managed_uids,
            } => authz::local(req, admin_group, managed_uids),
            Transport::Tls { allowed, .. } => authz::remote(req, allowed),
        };
        if let Err(status) = &result {
            let who = req
                .remote_addr()
                .map(|a| format!("tcp:{a}"))
                .unwrap_or_else(|| "unknown".into());
            self.engine
                .lock()
                .await
                .refused(&who, call, status.message());
        }
        result
    }

    async fn require_admin(&self, caller: &Caller, call: &str) -> Result<(), Status> {
        if caller.is_admin() {
            return Ok(());
        }
        let why = "only root and the admin group may do this";
        self.engine.lock().await.refused(&caller.actor(), call, why);
        Err(Status::permission_denied(format!("{call}: {why}")))
    }
}

/// The gRPC code an engine error is answered with.
pub(crate) fn code_of(e: &EngineError) -> tonic::Code {
    use tonic::Code;
    match e {
        EngineError::Invalid(_) | EngineError::Policy(_) => Code::InvalidArgument,
        EngineError::NotFound(_) => Code::NotFound,
        EngineError::Conflict(_) => Code::AlreadyExists,
        EngineError::Ended(_) | EngineError::NoPolicy => Code::FailedPrecondition,
        EngineError::NotEligible(_) => Code::PermissionDenied,
        EngineError::Enforcer(crate::enforcer::EnforcerError::Full { .. }) => {
            Code::ResourceExhausted
        }
        _ => Code::Internal,
    }
}

fn status(e: EngineError) -> Status {
    let code = code_of(&e);
    if code == tonic::Code::Internal {
        tracing::error!(error = %e, "internal error");
    }
    Status::new(code, e.to_string())
}

fn op(raw: i32) -> Result<Op, Status> {
    ward_proto::ops::op(raw)
        .ok_or_else(|| Status::invalid_argument("operation: missing or unknown"))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn push_grant(
        &self,
        req: Request<pb::PushGrantRequest>,
    ) -> Result<Response<pb::PushGrantResponse>, Status> {
        let pushed = self.push(req).await;
        let metrics = self.engine.lock().await.metrics.clone();
        metrics.push(pushed.as_ref().err().map(Status::code));
        pushed
    }

    async fn revoke_grant(
        &self,
        req: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::RevokeGrantResponse>, Status> {
        let caller = self.caller(&req, "RevokeGrant").await?;
        self.require_admin(&caller, "RevokeGrant").await?;
        let r = req.into_inner();
        let reason = if r.reason.is_empty() {
            "revoked"
        } else {
            &r.reason
        };
        let record = self
            .engine
            .lock()
            .await
            .revoke(&r.id, reason, &caller.actor())
            .map_err(status)?;
        tracing::debug!(grant_id = %r.id, actor = %caller.actor(), "grant revoked");
        Ok(Response::new(pb::RevokeGrantResponse {
            record: Some(record),
        }))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let caller = self.caller(&req, "ListGrants").await?;
        let only = if caller.is_admin() {
            None
        } else {
            caller.uid()
        };
        let r = req.into_inner();
        let after = match r.page_token.as_str() {
            "" => 0,
            t => t.parse::<i64>().map_err(|_| {
                Status::invalid_argument("page_token: not one this agent handed out")
            })?,
        };
        let limit = match r.limit as usize {
            0 => PAGE,
            n => n.min(PAGE),
        };
        let states: &'static [GrantState] = if r.all {
            &[
                GrantState::Scheduled,
                GrantState::Active,
                GrantState::Expired,
                GrantState::Revoked,
            ]
        } else {
            &[GrantState::Scheduled, GrantState::Active]
        };
        let reader = self.reader.clone();
        let (rows, next) = tokio::task::spawn_blocking(move || {
            reader
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .page(states, after, limit)
        })
        .await
        .map_err(|e| Status::internal(format!("grant listing failed: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let grants = rows
            .into_iter()
            .map(|s| s.record)
            .filter(|g| only.is_none() || super::engine::subject_uid(g) == only)
            .collect();
        Ok(Response::new(pb::ListGrantsResponse {
            grants,
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        self.caller(&req, "GetStatus").await?;
        let s = self.engine.lock().await.status().map_err(status)?;
        Ok(Response::new(s))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let caller = self.caller(&req, "Explain").await?;
        let r = req.into_inner();
        let op = op(r.operation)?;
        // Resolved exactly as a grant's subject is.
        let root = crate::cgroup::cgroup2_mount().ok();
        let (uid, workload) = match r.subject.as_ref().filter(|s| s.kind.is_some()) {
            None => (caller.uid(), None),
            Some(subject) => {
                match grant::grantee(Some(subject), root.as_deref())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?
                {
                    Grantee::User { uid, .. } => (Some(uid), None),
                    Grantee::Workload { path, .. } => (None, Some(path)),
                }
            }
        };
        let cgroup = match (workload, r.cgroup.as_str()) {
            (Some(w), "") => Some(w),
            (Some(_), _) => {
                return Err(Status::invalid_argument(
                    "cgroup: a workload subject runs in its own cgroup; name one or the other",
                ));
            }
            (None, "") => None,
            (None, c) => Some(c.to_owned()),
        };
        let asks_about_others = uid != caller.uid() || cgroup.is_some() || r.login_uid.is_some();
        if !caller.is_admin() && asks_about_others {
            let why = "you may only ask about yourself";
            self.engine
                .lock()
                .await
                .refused(&caller.actor(), "Explain", why);
            return Err(Status::permission_denied(format!("Explain: {why}")));
        }
        let cgroup = match (cgroup, root) {
            (None, _) => None,
            (Some(c), Some(root)) => {
                let dir = root.join(&c);
                if !dir.is_dir() {
                    return Err(Status::invalid_argument(format!(
                        "cgroup: `{c}`: no such cgroup"
                    )));
                }
                Some(dir)
            }
            (Some(_), None) => {
                return Err(Status::invalid_argument(
                    "cgroup: no cgroup v2 hierarchy on this host",
                ));
            }
        };
        let who = crate::enforcer::Caller {
            uid,
            login_uid: r.login_uid,
            cgroup,
        };
        let answer = self
            .engine
            .lock()
            .await
            .explain(&who, op, &r.object)
            .map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn apply_policy(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::PolicyStatus>, Status> {
        let caller = self.caller(&req, "ApplyPolicy").await?;
        self.require_admin(&caller, "ApplyPolicy").await?;
        let result = self.engine.lock().await.apply_policy(&caller.actor());
        match result {
            Ok(s) => {
                tracing::info!(actor = %caller.actor(), "policy applied on request");
                Ok(Response::new(s))
            }
            Err(e) => {
                tracing::warn!(actor = %caller.actor(), error = %e, "policy apply refused");
                Err(status(e))
            }
        }
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyStatus>, Status> {
        let caller = self.caller(&req, "GetPolicy").await?;
        self.require_admin(&caller, "GetPolicy").await?;
        let s = self.engine.lock().await.policy_status().map_err(status)?;
        Ok(Response::new(s))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = self.caller(&req, "WatchEvents").await?;
        self.require_admin(&caller, "WatchEvents").await?;
        let r = req.into_inner();
        let (past, rx) = self.engine.lock().await.subscribe(r.recent as usize);
        let past = tokio_stream::iter(past.into_iter().map(Ok));
        if !r.follow {
            return Ok(Response::new(Box::pin(past)));
        }
        let live = BroadcastStream::new(rx).filter_map(|item| match item {
            Ok(e) => Some(Ok(e)),
            // A slow watcher skips what it missed rather than stalling the agent.
            Err(_) => None,
        });
        Ok(Response::new(Box::pin(past.chain(live))))
    }
}
