//! `ward.v1.Enrolment` on its own listener: server-authenticated TLS, since
//! a joining host has no certificate yet. The one call takes a join token
//! and a CSR and returns the host's certificate; the token is the whole
//! authentication, checked and spent in one store transaction.

use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};
use ward_proto::{
    join_token::JoinToken,
    v1::{self as pb, enrolment_server::Enrolment},
};

use crate::{
    enrolment::{FleetCa, parse_csr},
    workflow::{InternalError, Workflow, WorkflowError},
};

#[derive(Clone)]
pub struct JoinService {
    workflow: Arc<Mutex<Workflow>>,
    ca: Arc<FleetCa>,
}

impl JoinService {
    pub fn new(workflow: Arc<Mutex<Workflow>>, ca: Arc<FleetCa>) -> JoinService {
        JoinService { workflow, ca }
    }
}

#[tonic::async_trait]
impl Enrolment for JoinService {
    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::Enrolled>, Status> {
        let peer = req.remote_addr();
        let r = req.into_inner();
        // A malformed token is refused before the store is asked; the
        // message never repeats it.
        let token = JoinToken::parse(&r.token)
            .map_err(|e| Status::invalid_argument(format!("token: {e}")))?;
        let hash = token.hash();
        if token.ca_sha256 != self.ca.fingerprint {
            return Err(Status::permission_denied(
                "the join token is for another fleet CA",
            ));
        }
        let csr = r
            .csr
            .ok_or_else(|| Status::invalid_argument("csr: is missing"))?
            .csr_der;
        // The CSR is checked before the token is spent: a bad one costs
        // the host nothing.
        let (wf, ca) = (self.workflow.clone(), self.ca.clone());
        let joined = tokio::task::spawn_blocking(move || {
            parse_csr(&csr).map_err(|e| WorkflowError::Invalid {
                field: "csr".into(),
                reason: e.to_string(),
            })?;
            let mut wf = wf.lock().unwrap_or_else(|p| p.into_inner());
            let host = wf.join(&hash)?;
            let (cert, not_after) = ca
                .issue_agent(&host, &csr)
                .map_err(InternalError::IssueCertificate)?;
            Ok((host, cert, not_after, wf.rules.signer.public_hex()))
        })
        .await
        .unwrap_or_else(|e| Err(InternalError::Worker(e).into()));
        match joined {
            Ok((host, cert, not_after, key)) => {
                tracing::info!(host = %host, peer = ?peer, "host joined");
                Ok(Response::new(pb::Enrolled {
                    host,
                    certificate_pem: cert,
                    ca_pem: self.ca.ca_pem.clone(),
                    signing_public_keys: vec![key],
                    not_after_unix_ms: not_after,
                }))
            }
            Err(e) => {
                tracing::warn!(peer = ?peer, error = %e, "join refused");
                Err(match e {
                    WorkflowError::Invalid { .. } => Status::invalid_argument(e.to_string()),
                    WorkflowError::Enrolment(_) => Status::permission_denied(e.to_string()),
                    _ => Status::internal(e.to_string()),
                })
            }
        }
    }
}
