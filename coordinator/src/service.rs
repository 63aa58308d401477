//! `ward.v1.Coordinator`: who is calling (the client certificate), what
//! they may do, then the workflow; and the agents' fleet stream.

use std::{pin::Pin, sync::Arc};

use tokio::sync::{Mutex, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use ward_proto::{
    identity::peer_names,
    v1::{self as pb, coordinator_server::Coordinator, fleet_message},
};

use crate::{
    fleet::Fleet,
    workflow::{Delivery, Workflow, WorkflowError},
};

/// Agents present "NAME.agent"; anyone else is a person.
pub const AGENT_SUFFIX: &str = ".agent";

#[derive(Clone)]
pub struct CoordinatorService {
    workflow: Arc<Mutex<Workflow>>,
    fleet: Arc<Fleet>,
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
        | WorkflowError::NotYours(_) => Status::permission_denied(msg),
        WorkflowError::NotFound(_) => Status::not_found(msg),
        WorkflowError::WrongState { .. } => Status::failed_precondition(msg),
        WorkflowError::Store(_) => {
            tracing::error!(error = %msg, "store error");
            Status::internal(msg)
        }
    }
}

/// The person calling: the certificate's first name that is not an agent's.
fn person<T>(req: &Request<T>) -> Result<String, Status> {
    peer_names(req)
        .into_iter()
        .find(|n| !n.ends_with(AGENT_SUFFIX))
        .ok_or_else(|| {
            Status::permission_denied("this call is for people; agents may only subscribe")
        })
}

impl CoordinatorService {
    pub fn new(workflow: Arc<Mutex<Workflow>>, fleet: Arc<Fleet>) -> Self {
        CoordinatorService { workflow, fleet }
    }

    fn deliver(&self, d: Delivery) {
        if d.hosts.is_empty() {
            return;
        }
        let kind = if let Some(g) = d.grant {
            fleet_message::Kind::Grant(g)
        } else if let Some(id) = d.revoke {
            fleet_message::Kind::Revocation(pb::Revocation {
                grant_id: id,
                reason: "ended at the coordinator".into(),
            })
        } else {
            return;
        };
        let sent = self
            .fleet
            .deliver(&d.hosts, &pb::FleetMessage { kind: Some(kind) });
        tracing::info!(hosts = ?d.hosts, streams = sent, "delivered to agents");
    }

    fn answer(
        &self,
        r: Result<(pb::AccessRequest, Delivery), WorkflowError>,
        who: &str,
        call: &str,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        match r {
            Ok((req, d)) => {
                tracing::info!(actor = %who, call, request = %req.id, "ok");
                self.deliver(d);
                Ok(Response::new(req))
            }
            Err(e) => {
                tracing::warn!(actor = %who, call, error = %e, "refused");
                Err(status(e))
            }
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
        let who = person(&req)?;
        let r = self.workflow.lock().await.create(&who, req.into_inner());
        self.answer(r, &who, "CreateRequest")
    }

    async fn list_requests(
        &self,
        req: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let who = person(&req)?;
        let r = req.into_inner();
        let requests = self
            .workflow
            .lock()
            .await
            .list(&who, r.mine, r.pending)
            .map_err(status)?;
        Ok(Response::new(pb::ListRequestsResponse { requests }))
    }

    async fn approve(
        &self,
        req: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let who = person(&req)?;
        let r = req.into_inner();
        let out = self
            .workflow
            .lock()
            .await
            .review(&who, &r.id, true, &r.reason);
        self.answer(out, &who, "Approve")
    }

    async fn deny(
        &self,
        req: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let who = person(&req)?;
        let r = req.into_inner();
        if r.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: say why the request is denied",
            ));
        }
        let out = self
            .workflow
            .lock()
            .await
            .review(&who, &r.id, false, &r.reason);
        self.answer(out, &who, "Deny")
    }

    async fn release(
        &self,
        req: Request<pb::EndRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let who = person(&req)?;
        let r = req.into_inner();
        let reason = if r.reason.is_empty() {
            "released"
        } else {
            &r.reason
        };
        let out = self.workflow.lock().await.end(&who, &r.id, true, reason);
        self.answer(out, &who, "Release")
    }

    async fn revoke(
        &self,
        req: Request<pb::EndRequest>,
    ) -> Result<Response<pb::AccessRequest>, Status> {
        let who = person(&req)?;
        let r = req.into_inner();
        let reason = if r.reason.is_empty() {
            "revoked"
        } else {
            &r.reason
        };
        let out = self.workflow.lock().await.end(&who, &r.id, false, reason);
        self.answer(out, &who, "Revoke")
    }

    async fn audit(
        &self,
        req: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        person(&req)?;
        let entries = self
            .workflow
            .lock()
            .await
            .audit_since(req.get_ref().since_unix_ms)
            .map_err(status)?;
        Ok(Response::new(pb::AuditResponse { entries }))
    }

    type SubscribeStream = FleetStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<FleetStream>, Status> {
        let names = peer_names(&req);
        let r = req.into_inner();
        let expected = format!("{}{AGENT_SUFFIX}", r.host);
        if r.host.is_empty() || !names.contains(&expected) {
            tracing::warn!(host = %r.host, names = ?names, "subscribe refused");
            return Err(Status::permission_denied(format!(
                "only the agent of host `{}` ({expected}) may subscribe for it; the certificate names {names:?}",
                r.host
            )));
        }
        let (tx, rx) = mpsc::channel(1024);
        // Snapshot first, attached before the lock is released, so nothing
        // issued in between is missed.
        {
            let mut wf = self.workflow.lock().await;
            let grants = wf.subscribe(&r.host, &r.labels).map_err(status)?;
            let snapshot = pb::FleetMessage {
                kind: Some(fleet_message::Kind::Snapshot(pb::GrantSnapshot { grants })),
            };
            tx.send(snapshot)
                .await
                .map_err(|_| Status::unavailable("agent went away"))?;
            self.fleet.attach(&r.host, tx);
        }
        tracing::info!(host = %r.host, labels = ?r.labels, "agent subscribed");
        let stream = ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            stream, Ok,
        ))))
    }
}
