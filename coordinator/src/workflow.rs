//! The rules of the JIT workflow: who may ask for what, who may approve,
//! when access starts and ends. Every state change is one transaction and
//! one audit entry.

use std::{sync::Arc, time::Duration};

use ward_policy::{
    Action, Clock, Compiler, Eligibility, EntityKey, Env, GrantCheck, Kind, People, approvals_for,
};
use ward_proto::v1::{
    self as pb, AccessRequest, AuditEntry, CreateRequestRequest, FleetMessage, Grant, RequestState,
    Review, SignedGrant, fleet_message, object, subject,
};

use crate::{
    now_ms,
    session::Session,
    signer::Signer,
    store::{KnownHost, Person, Store, StoreError, Tx},
};

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("not eligible: {0}")]
    NotEligible(String),
    #[error("over the maximum duration: {0}")]
    OverMax(String),
    #[error("unknown host: {0}")]
    UnknownHost(String),
    #[error("self-approval: nobody may approve or deny their own request")]
    SelfApproval,
    #[error("not a reviewer: {0}")]
    NotReviewer(String),
    #[error("not yours: {0}")]
    NotYours(String),
    #[error("no request `{0}`")]
    NotFound(String),
    /// A sign-in whose name is bound to another issuer's or subject's
    /// identity: nobody takes over a name through a second provider.
    #[error("identity: {0}")]
    IdentityTaken(String),
    #[error("request `{id}` is {state}")]
    WrongState { id: String, state: String },
    /// Never the caller's fault.
    #[error("internal error: {0}")]
    Internal(#[from] InternalError),
    /// A join or renewal refused (bad token, revoked host).
    #[error("{0}")]
    Enrolment(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What failed inside the coordinator while serving a call.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    /// The blocking worker running the call panicked or was cancelled.
    #[error("worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// The fleet CA could not sign an agent's certificate from a CSR
    /// that parsed.
    #[error("issuing the agent certificate: {0}")]
    IssueCertificate(#[from] crate::enrolment::EnrolError),
}

fn invalid(field: &str, reason: impl Into<String>) -> WorkflowError {
    WorkflowError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

pub(crate) fn audit(
    tx: &Tx<'_>,
    id: &str,
    actor: &str,
    kind: &str,
    detail: impl Into<String>,
) -> Result<(), StoreError> {
    tx.audit(&AuditEntry {
        time_unix_ms: now_ms(),
        request_id: id.to_owned(),
        actor: actor.to_owned(),
        kind: kind.to_owned(),
        detail: detail.into(),
    })
}

pub struct Workflow {
    pub store: Store,
    /// Shared with the read path (listings, the audit trail), which runs
    /// on its own store connection without the decision lock.
    pub rules: Arc<Rules>,
    pub pending_ttl: Duration,
    /// How far ahead a request may schedule its start.
    pub max_schedule_ahead: Duration,
}

/// No grant lasts longer than this, whatever policy says: it keeps every
/// deadline a plain, comparable instant.
const MAX_DURATION_MS: i64 = 366 * 86_400_000;

/// Everything a decision consults besides the store.
pub struct Rules {
    pub policy: Compiler,
    pub signer: Arc<Signer>,
    pub admins: Vec<String>,
}

pub(crate) fn state_name(s: i32) -> String {
    RequestState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("REQUEST_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// The most objects, and policy checks ((operation, object) pairs times
/// hosts), one request may ask for: a request is decided under the
/// decision lock, so none may hold it for long.
const MAX_OBJECTS: usize = 64;
const MAX_CHECKS: usize = 20_000;

/// Refuses a request too big to decide quickly, naming the field.
fn bounded(r: &CreateRequestRequest) -> Result<(), WorkflowError> {
    let limits = [
        ("operations", r.operations.len(), 4),
        ("objects", r.objects.len(), MAX_OBJECTS),
        ("hosts", r.hosts.len(), 10_000),
        ("host_labels", r.host_labels.len(), 16),
        ("reason", r.reason.len(), 1_024),
        ("ticket", r.ticket.len(), 256),
        ("workload", r.workload.len(), 4_096),
    ];
    for (field, got, max) in limits {
        if got > max {
            return Err(invalid(
                field,
                format!("{got} is more than the {max} allowed"),
            ));
        }
    }
    Ok(())
}

/// Each (operation, object) pair a request asks for, checked for fit.
fn targets(r: &CreateRequestRequest) -> Result<Vec<(Action, String)>, WorkflowError> {
    if r.operations.is_empty() {
        return Err(invalid(
            "operations",
            "name at least one: read, write, exec or connect",
        ));
    }
    if r.objects.is_empty() {
        return Err(invalid(
            "objects",
            "name at least one path, executable or network",
        ));
    }
    let mut out = Vec::new();
    for (i, raw) in r.operations.iter().enumerate() {
        let Some(action) = ward_proto::ops::op(*raw).map(Action::from) else {
            return Err(invalid(
                &format!("operations[{i}]"),
                format!("unknown operation {raw}"),
            ));
        };
        for (j, o) in r.objects.iter().enumerate() {
            out.push((action, fitting(action, i, j, o)?));
        }
    }
    Ok(out)
}

/// The object of one (operation, object) pair of a request, if the pair is
/// one that policy evaluates. A grant carries every operation on every
/// object, and the coordinator signs only pairs it evaluated, so a request
/// with any other pair is refused whole.
fn fitting(action: Action, i: usize, j: usize, o: &pb::Object) -> Result<String, WorkflowError> {
    let (kind, name) = match &o.kind {
        Some(object::Kind::Path(p)) => ("path", p),
        Some(object::Kind::PathPrefix(p)) => ("path prefix", p),
        Some(object::Kind::Executable(p)) => ("executable", p),
        Some(object::Kind::Network(n)) => ("network", n),
        None => return Err(invalid(&format!("objects[{j}]"), "is empty")),
    };
    let fits = match &o.kind {
        Some(object::Kind::Path(_) | object::Kind::PathPrefix(_)) => {
            matches!(action, Action::Read | Action::Write)
        }
        Some(object::Kind::Executable(_)) => action == Action::Exec,
        _ => action == Action::Connect,
    };
    if !fits {
        return Err(invalid(
            &format!("operations[{i}] on objects[{j}]"),
            format!(
                "{} does not apply to {kind} `{name}`; a request grants every \
                 operation on every object, so ask for each kind of object in a \
                 request of its own",
                action.name()
            ),
        ));
    }
    Ok(name.clone())
}

/// Whether two names are one person. Certificate identities are
/// canonical (lowercase) already; this also holds for records stored
/// before they were.
fn same_person(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `who` could still approve or deny `req`, policy aside: not its
/// requester, and not one of its reviewers yet.
fn yet_to_review(who: &str, req: &AccessRequest) -> bool {
    !same_person(&req.requester, who) && !req.reviews.iter().any(|r| same_person(&r.reviewer, who))
}

fn labels_of(labels: &[String]) -> std::collections::BTreeMap<String, String> {
    labels
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The host as policy sees it: the labels and posture its agent last
/// reported, the same facts its own agent decides with.
fn host_env(h: &KnownHost) -> Env {
    Env {
        host: h.name.clone(),
        labels: labels_of(&h.labels),
        file_enforcement: h.file_enforcement,
        kernel: h.kernel.clone(),
    }
}

/// The hosts `policy` can tell apart: one of each set of labels and
/// posture, unless some policy reads the host's name. A request to 10,000
/// hosts of one label set is decided once, not 10,000 times.
fn distinct_hosts<'a>(policy: &Compiler, hosts: &'a [KnownHost]) -> Vec<&'a KnownHost> {
    if policy.policies().reads_host_name() {
        return hosts.iter().collect();
    }
    let mut seen = std::collections::BTreeSet::new();
    hosts
        .iter()
        .filter(|h| {
            let mut labels = h.labels.clone();
            labels.sort();
            seen.insert((labels, h.file_enforcement, h.kernel.clone()))
        })
        .collect()
}

/// `name` as last seen; a host never seen has no labels and enforces no
/// file rules.
fn known_host(known: &[KnownHost], name: &str) -> KnownHost {
    known
        .iter()
        .find(|k| k.name == name)
        .cloned()
        .unwrap_or_else(|| KnownHost {
            name: name.to_owned(),
            ..Default::default()
        })
}

/// Who a request would grant: the requester, or a directory workload.
#[derive(Debug, Clone)]
struct Grantee {
    /// The Cedar principal `request` is decided for.
    principal: EntityKey,
    /// For a workload, its cgroup: what the grant names.
    cgroup: Option<String>,
}

impl Rules {
    /// Whom a request by `requester` for `workload` ("" for themselves)
    /// would grant. A workload must be in the directory, by name or cgroup.
    fn grantee(&self, requester: &str, workload: &str) -> Result<Grantee, WorkflowError> {
        if workload.is_empty() {
            return Ok(Grantee {
                principal: EntityKey::new(Kind::User, requester),
                cgroup: None,
            });
        }
        let Some(w) = self.policy.known_workload(workload) else {
            return Err(invalid(
                "workload",
                format!(
                    "unknown workload `{workload}`: the directory lists no workload by that \
                     name or cgroup"
                ),
            ));
        };
        let Some(cgroup) = w.def.attrs.get("cgroup").and_then(|v| v.as_str()) else {
            return Err(invalid(
                "workload",
                format!("workload `{workload}` has no cgroup in the directory"),
            ));
        };
        Ok(Grantee {
            principal: w.def.key(),
            cgroup: Some(cgroup.to_owned()),
        })
    }

    /// Checks a target list for `grantee`, asked by `requester`, on each
    /// host, returning the approvals policy requires (the most any host
    /// needs) and the policies. For a workload, `requester` must also be
    /// permitted `request_for` on it.
    fn eligibility(
        &self,
        requester: &str,
        grantee: &Grantee,
        targets: &[(Action, String)],
        hosts: &[KnownHost],
        duration: Duration,
        people: &People,
    ) -> Result<(u32, Vec<String>, bool), WorkflowError> {
        let clock = Clock::system();
        let asker = EntityKey::new(Kind::User, requester);
        let mut required = 0;
        let mut policies = Vec::new();
        let mut reason_waived = true;
        for host in distinct_hosts(&self.policy, hosts) {
            let (name, env) = (&host.name, host_env(host));
            for (action, object) in targets {
                if grantee.cgroup.is_some()
                    && !self
                        .policy
                        .may_request_for(&env, &asker, &grantee.principal, *action, people, &clock)
                        .map_err(|e| invalid("workload", e.to_string()))?
                {
                    return Err(WorkflowError::NotEligible(format!(
                        "{requester} may not ask for {} on behalf of workload `{}`: no \
                         `request_for` policy permits it (host {name})",
                        action.name(),
                        grantee.principal.id
                    )));
                }
                let check = GrantCheck {
                    principal: grantee.principal.clone(),
                    requester: Some(asker.clone()),
                    action: *action,
                    object: object.clone(),
                };
                let e = self
                    .policy
                    .eligibility_in(&env, &check, people, &clock)
                    .map_err(|e| invalid("objects", e.to_string()))?;
                match e {
                    Eligibility::Eligible {
                        max,
                        policies: p,
                        terms,
                    } => {
                        let Some(n) = approvals_for(&terms, duration) else {
                            return Err(WorkflowError::OverMax(format!(
                                "{} asked for {} on {object} on {name}; policy allows at most {}",
                                humantime::format_duration(duration),
                                action.name(),
                                max.map_or("-".into(), |m| humantime::format_duration(m)
                                    .to_string())
                            )));
                        };
                        required = required.max(n);
                        reason_waived &= terms.iter().any(|t| t.reason_optional);
                        policies.extend(p);
                    }
                    Eligibility::NotEligible { reason } => {
                        return Err(WorkflowError::NotEligible(format!(
                            "{reason} (host {name})"
                        )));
                    }
                    Eligibility::Forbidden { policies } => {
                        return Err(WorkflowError::NotEligible(format!(
                            "{} on {object} is forbidden by {} on {name}",
                            action.name(),
                            policies.join(", ")
                        )));
                    }
                }
            }
        }
        policies.sort();
        policies.dedup();
        Ok((required, policies, reason_waived))
    }

    /// Approves: the grant starts counting now, not at the request. A
    /// grant scheduled to start later is signed and sent only then, after
    /// policy is checked again (`activate_due`).
    fn issue(
        &self,
        tx: &Tx<'_>,
        req: &mut AccessRequest,
        actor: &str,
    ) -> Result<(), WorkflowError> {
        let now = now_ms();
        let start = req.not_before_unix_ms.max(now);
        req.state = RequestState::Approved as i32;
        req.approved_unix_ms = now;
        req.expires_at_unix_ms = start.saturating_add(req.duration_ms);
        let span = format!(
            "until {} on {}",
            req.expires_at_unix_ms,
            req.hosts.join(",")
        );
        let detail = if start > now {
            format!("scheduled from {start} {span}; policy is checked again at the start")
        } else {
            self.deliver(tx, req)?;
            span
        };
        audit(tx, &req.id, actor, "approved", detail)?;
        Ok(())
    }

    /// Signs an approved request's grant and sends it to its hosts.
    fn deliver(&self, tx: &Tx<'_>, req: &AccessRequest) -> Result<(), WorkflowError> {
        let now = now_ms();
        let start = req.not_before_unix_ms.max(now);
        let subject = if req.workload.is_empty() {
            subject::Kind::User(req.requester.clone())
        } else {
            subject::Kind::Workload(req.workload.clone())
        };
        let mut grant = Grant {
            id: req.id.clone(),
            subject: Some(pb::Subject {
                kind: Some(subject),
            }),
            operations: req.operations.clone(),
            objects: req.objects.clone(),
            not_before_unix_ms: if start > now { start } else { 0 },
            expires_at_unix_ms: req.expires_at_unix_ms,
            // Agents require a reason; a waived one is said as such.
            reason: if req.reason.trim().is_empty() {
                format!("request {} (policy waives the reason)", req.id)
            } else {
                req.reason.clone()
            },
            ticket: req.ticket.clone(),
            approvers: req
                .reviews
                .iter()
                .filter(|r| r.approve)
                .map(|r| r.reviewer.clone())
                .collect(),
            issuer: "ward-coordinator".into(),
            ..Default::default()
        };
        // Each host's proof is made where it is sent (`fleet::HostTrees`).
        let _ = ward_proto::hostset::name_hosts(&mut grant, &req.hosts);
        let signed = self.signer.sign(&grant);
        tx.insert_grant(&req.id, &req.hosts, &signed, req.expires_at_unix_ms)?;
        tx.send(
            &req.hosts,
            &FleetMessage {
                kind: Some(fleet_message::Kind::Grant(signed)),
            },
        )?;
        Ok(())
    }

    /// Whether policy still allows an approved request at its start, with
    /// the approvals it has: time windows, the directory and host labels
    /// may all have changed since it was asked for.
    fn still_allowed(&self, tx: &Tx<'_>, req: &AccessRequest) -> Result<(), WorkflowError> {
        let create = CreateRequestRequest {
            operations: req.operations.clone(),
            objects: req.objects.clone(),
            ..Default::default()
        };
        let known = tx.hosts()?;
        let hosts: Vec<KnownHost> = req.hosts.iter().map(|h| known_host(&known, h)).collect();
        let duration = Duration::from_millis(req.duration_ms.max(0) as u64);
        let grantee = self.grantee(&req.requester, &req.workload)?;
        let people = tx.people(&[&req.requester])?;
        let (required, _, _) = self.eligibility(
            &req.requester,
            &grantee,
            &targets(&create)?,
            &hosts,
            duration,
            &people,
        )?;
        let approvals = req.reviews.iter().filter(|r| r.approve).count() as u32;
        if approvals < required {
            return Err(WorkflowError::NotEligible(format!(
                "policy now requires {required} approvals and the request has {approvals}"
            )));
        }
        Ok(())
    }

    /// People named in `admins` may see and revoke every request.
    fn is_admin(&self, who: &str) -> bool {
        self.admins.iter().any(|a| a.eq_ignore_ascii_case(who))
    }

    /// Whether `who` may see `req` and its audit trail: its requester, an
    /// admin, or someone Cedar lets review it.
    pub(crate) fn may_see(
        &self,
        tx: &Tx<'_>,
        who: &str,
        people: &People,
        req: &AccessRequest,
    ) -> Result<bool, WorkflowError> {
        Ok(same_person(&req.requester, who)
            || self.is_admin(who)
            || self.may_review(tx, who, people, req)?)
    }

    /// Whether `reviewer` may review `req` on every host it targets, each
    /// host seen with the labels its agent reported.
    fn may_review(
        &self,
        tx: &Tx<'_>,
        reviewer: &str,
        people: &People,
        req: &AccessRequest,
    ) -> Result<bool, WorkflowError> {
        self.reviews_all(&self.review_checks(&tx.hosts()?, req)?, reviewer, people)
    }

    /// What reviewing `req` takes: one Cedar `review` check per operation,
    /// object and distinct host, each host as `known` (the agents' reports)
    /// has it. Built once per request, then asked of each reviewer
    /// ([`Rules::reviews_all`]).
    fn review_checks(
        &self,
        known: &[KnownHost],
        req: &AccessRequest,
    ) -> Result<ReviewChecks, WorkflowError> {
        let create = CreateRequestRequest {
            operations: req.operations.clone(),
            objects: req.objects.clone(),
            ..Default::default()
        };
        let principal = self.grantee(&req.requester, &req.workload)?.principal;
        let hosts: Vec<KnownHost> = req.hosts.iter().map(|h| known_host(known, h)).collect();
        let hosts = distinct_hosts(&self.policy, &hosts);
        let mut checks = Vec::new();
        for (action, object) in targets(&create)? {
            for host in &hosts {
                checks.push((
                    host_env(host),
                    GrantCheck {
                        principal: principal.clone(),
                        requester: Some(EntityKey::new(Kind::User, &req.requester)),
                        action,
                        object: object.clone(),
                    },
                ));
            }
        }
        Ok(ReviewChecks(checks))
    }

    /// Whether Cedar lets `reviewer` review every one of `checks`.
    fn reviews_all(
        &self,
        checks: &ReviewChecks,
        reviewer: &str,
        people: &People,
    ) -> Result<bool, WorkflowError> {
        let clock = Clock::system();
        let reviewer = EntityKey::new(Kind::User, reviewer);
        for (env, check) in &checks.0 {
            let ok = self
                .policy
                .may_review(env, &reviewer, check, people, &clock)
                .map_err(|e| invalid("objects", e.to_string()))?;
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// One request's `review` checks: each host's environment and the grant
/// it would carry there.
struct ReviewChecks(Vec<(Env, GrantCheck)>);

/// A requester's groups, and their attributes as (name, value) text.
pub(crate) type RequesterView = (Vec<String>, Vec<(String, String)>);

/// What the web page shows beside a request, decided by the same rules
/// the calls use.
impl Rules {
    /// Whether `who` may approve or deny `req` now (not their own).
    pub(crate) fn may_decide(
        &self,
        tx: &Tx<'_>,
        who: &str,
        req: &AccessRequest,
    ) -> Result<bool, WorkflowError> {
        Ok(yet_to_review(who, req) && self.may_review(tx, who, &tx.people(&[who])?, req)?)
    }

    /// The pending requests `who` may approve or deny now, newest first:
    /// each decided once, at most `limit` read.
    pub(crate) fn decidable_requests(
        &self,
        store: &mut Store,
        who: &str,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, WorkflowError> {
        store.read(|tx| {
            let (people, known) = (tx.people(&[who])?, tx.hosts()?);
            let mut out = Vec::new();
            for r in tx.newest(Some(RequestState::Pending), None, limit)? {
                if yet_to_review(who, &r)
                    && self.reviews_all(&self.review_checks(&known, &r)?, who, &people)?
                {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    /// The newest `limit` requests `who` may see, newest first: in
    /// `state` when given, and only their own with `mine`.
    pub(crate) fn newest_visible(
        &self,
        store: &mut Store,
        who: &str,
        state: Option<RequestState>,
        mine: bool,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, WorkflowError> {
        store.read(|tx| {
            let rows = tx.newest(state, mine.then_some(who), limit)?;
            if mine {
                return Ok(rows);
            }
            let people = tx.people(&[who])?;
            let mut out = Vec::new();
            for r in rows {
                if self.may_see(tx, who, &people, &r)? {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    /// Whether `who` may revoke `req`: an admin or one of its reviewers.
    pub(crate) fn may_revoke(
        &self,
        tx: &Tx<'_>,
        who: &str,
        req: &AccessRequest,
    ) -> Result<bool, WorkflowError> {
        Ok(self.is_admin(who) || self.may_review(tx, who, &tx.people(&[who])?, req)?)
    }

    /// Up to `max` other people who may approve `req`: the directory's
    /// users and everyone who signed in, checked at most `scan` of them;
    /// true when there may be more. The request's checks are built once
    /// and everyone's claims read in one go.
    pub(crate) fn other_reviewers(
        &self,
        tx: &Tx<'_>,
        req: &AccessRequest,
        max: usize,
        scan: usize,
    ) -> Result<(Vec<String>, bool), WorkflowError> {
        let mut names: Vec<String> = self
            .policy
            .directory()
            .of_kind(Kind::User)
            .map(|r| r.def.id.clone())
            .chain(tx.person_names()?)
            .collect();
        names.sort();
        names.dedup();
        let more = names.len() > scan;
        names.truncate(scan);
        let checks = self.review_checks(&tx.hosts()?, req)?;
        let people = tx.people(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
        let mut found = Vec::new();
        for name in names {
            if yet_to_review(&name, req) && self.reviews_all(&checks, &name, &people)? {
                found.push(name);
                if found.len() == max {
                    return Ok((found, true));
                }
            }
        }
        Ok((found, more))
    }

    /// The requester as policy sees them: groups, then attributes.
    pub(crate) fn requester_view(
        &self,
        tx: &Tx<'_>,
        req: &AccessRequest,
    ) -> Result<RequesterView, WorkflowError> {
        let key = EntityKey::new(Kind::User, &req.requester);
        let record = self
            .policy
            .person_record(&key, &tx.people(&[&req.requester])?)
            .map_err(|e| invalid("requester", e.to_string()))?;
        let groups = record
            .ancestors
            .iter()
            .filter(|k| k.kind == Kind::Group)
            .map(|k| k.id.clone())
            .collect();
        let attrs = record
            .def
            .attrs
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect();
        Ok((groups, attrs))
    }
}

impl Workflow {
    /// Decides with new policy and directory from now on; requests in
    /// flight are checked against it at review and at a scheduled start.
    pub fn replace_policy(&mut self, policy: Compiler) {
        self.rules = Arc::new(Rules {
            policy,
            signer: self.rules.signer.clone(),
            admins: self.rules.admins.clone(),
        });
    }

    /// Which known hosts a request names; an unknown one is an error.
    fn resolve_hosts(
        tx: &Tx<'_>,
        r: &CreateRequestRequest,
    ) -> Result<Vec<KnownHost>, WorkflowError> {
        let known = tx.hosts()?;
        let mut out: Vec<KnownHost> = Vec::new();
        for h in &r.hosts {
            match known.iter().find(|k| k.name == *h) {
                Some(k) => out.push(k.clone()),
                None => {
                    return Err(WorkflowError::UnknownHost(format!(
                        "`{h}`: no agent by that name has connected"
                    )));
                }
            }
        }
        if !r.host_labels.is_empty() {
            let matching: Vec<_> = known
                .iter()
                .filter(|k| r.host_labels.iter().all(|l| k.labels.contains(l)))
                .cloned()
                .collect();
            if matching.is_empty() {
                return Err(WorkflowError::UnknownHost(format!(
                    "no host has labels {}",
                    r.host_labels.join(",")
                )));
            }
            out.extend(matching);
        }
        if out.is_empty() {
            return Err(invalid(
                "hosts",
                "name hosts (host=NAME) or labels (KEY=VALUE)",
            ));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub fn create(
        &mut self,
        requester: &str,
        r: CreateRequestRequest,
    ) -> Result<AccessRequest, WorkflowError> {
        bounded(&r)?;
        let targets = targets(&r)?;
        if r.duration_ms <= 0 {
            return Err(invalid("duration", "must be longer than 0s"));
        }
        if r.duration_ms > MAX_DURATION_MS {
            return Err(invalid("duration", "is longer than ward allows (366d)"));
        }
        let ahead = self.max_schedule_ahead.as_millis() as i64;
        if r.not_before_unix_ms > now_ms().saturating_add(ahead) {
            return Err(invalid(
                "not_before",
                format!(
                    "starts more than {} from now (max_schedule_ahead)",
                    humantime::format_duration(self.max_schedule_ahead)
                ),
            ));
        }
        let duration = Duration::from_millis(r.duration_ms as u64);
        let rules = &self.rules;
        self.store.write(|tx| {
            let hosts = Self::resolve_hosts(tx, &r)?;
            let checks = targets.len() * hosts.len();
            if checks > MAX_CHECKS {
                return Err(invalid(
                    "hosts",
                    format!(
                        "the request needs {checks} policy checks ((operation, object) pairs \
                         times {} hosts); at most {MAX_CHECKS}: split it",
                        hosts.len()
                    ),
                ));
            }
            let grantee = rules.grantee(requester, &r.workload)?;
            let people = tx.people(&[requester])?;
            let (required, policies, reason_waived) =
                rules.eligibility(requester, &grantee, &targets, &hosts, duration, &people)?;
            if r.reason.trim().is_empty() && !reason_waived {
                return Err(invalid(
                    "reason",
                    "is required: say why, e.g. an incident or ticket",
                ));
            }
            let mut req = AccessRequest {
                id: tx.next_id()?,
                requester: requester.to_owned(),
                operations: r.operations.clone(),
                objects: r.objects.clone(),
                hosts: hosts.iter().map(|h| h.name.clone()).collect(),
                duration_ms: r.duration_ms,
                reason: r.reason.clone(),
                ticket: r.ticket.clone(),
                not_before_unix_ms: r.not_before_unix_ms,
                state: RequestState::Pending as i32,
                approvals_required: required,
                reviews: Vec::new(),
                created_unix_ms: now_ms(),
                policies,
                // The grant names the cgroup, however the request named it.
                workload: grantee.cgroup.clone().unwrap_or_default(),
                ..Default::default()
            };
            tx.insert(&req)?;
            audit(
                tx,
                &req.id,
                requester,
                "created",
                format!("reason: {}", req.reason),
            )?;
            if required == 0 {
                rules.issue(tx, &mut req, "policy")?;
                tx.put(&req)?;
            }
            Ok(req)
        })
    }

    fn load(tx: &Tx<'_>, id: &str) -> Result<AccessRequest, WorkflowError> {
        tx.get(id)?
            .ok_or_else(|| WorkflowError::NotFound(id.to_owned()))
    }

    fn expect(req: &AccessRequest, states: &[RequestState]) -> Result<(), WorkflowError> {
        if states.iter().any(|s| *s as i32 == req.state) {
            Ok(())
        } else {
            Err(WorkflowError::WrongState {
                id: req.id.clone(),
                state: state_name(req.state),
            })
        }
    }

    /// One review. `approve` false denies: one denial denies.
    pub fn review(
        &mut self,
        reviewer: &str,
        id: &str,
        approve: bool,
        reason: &str,
    ) -> Result<AccessRequest, WorkflowError> {
        let rules = &self.rules;
        let result = self.store.write(|tx| {
            let mut req = Self::load(tx, id)?;
            Self::expect(&req, &[RequestState::Pending])?;
            if same_person(&req.requester, reviewer) {
                return Err(WorkflowError::SelfApproval);
            }
            if !rules.may_review(tx, reviewer, &tx.people(&[reviewer])?, &req)? {
                return Err(WorkflowError::NotReviewer(format!(
                    "no `review` policy lets {reviewer} review {id}"
                )));
            }
            if req
                .reviews
                .iter()
                .any(|r| same_person(&r.reviewer, reviewer))
            {
                return Err(invalid(
                    "id",
                    format!("{reviewer} has already reviewed {id}"),
                ));
            }
            req.reviews.push(Review {
                reviewer: reviewer.to_owned(),
                approve,
                reason: reason.to_owned(),
                time_unix_ms: now_ms(),
            });
            if !approve {
                req.state = RequestState::Denied as i32;
                req.ended_unix_ms = now_ms();
                audit(tx, id, reviewer, "denied", reason)?;
            } else {
                let approvals = req.reviews.iter().filter(|r| r.approve).count() as u32;
                audit(
                    tx,
                    id,
                    reviewer,
                    "approval",
                    format!("{approvals} of {}", req.approvals_required),
                )?;
                if approvals >= req.approvals_required {
                    rules.issue(tx, &mut req, reviewer)?;
                }
            }
            tx.put(&req)?;
            Ok(req)
        });
        self.audit_refusal(id, reviewer, &result);
        result
    }

    /// A refused review or end is audited in its own transaction: the
    /// refused one rolled back.
    fn audit_refusal<T>(&mut self, id: &str, actor: &str, result: &Result<T, WorkflowError>) {
        let Err(
            e @ (WorkflowError::SelfApproval
            | WorkflowError::NotReviewer(_)
            | WorkflowError::NotYours(_)),
        ) = result
        else {
            return;
        };
        let why = e.to_string();
        if let Err(err) = self
            .store
            .write(|tx| audit(tx, id, actor, "refused", why).map_err(WorkflowError::from))
        {
            tracing::error!(error = %err, "could not audit a refusal");
        }
    }

    /// Ends access early: `release` by the requester, `revoke` by a
    /// reviewer or an admin.
    pub fn end(
        &mut self,
        caller: &str,
        id: &str,
        release: bool,
        reason: &str,
    ) -> Result<AccessRequest, WorkflowError> {
        let rules = &self.rules;
        let result = self.store.write(|tx| {
            let mut req = Self::load(tx, id)?;
            Self::expect(&req, &[RequestState::Pending, RequestState::Approved])?;
            if release && !same_person(&req.requester, caller) {
                return Err(WorkflowError::NotYours(format!(
                    "{id} is {}'s; only the requester releases it",
                    req.requester
                )));
            }
            if !release
                && !rules.is_admin(caller)
                && !rules.may_review(tx, caller, &tx.people(&[caller])?, &req)?
            {
                return Err(WorkflowError::NotReviewer(format!(
                    "only an admin or a reviewer of {id} may revoke it"
                )));
            }
            let was_approved = req.state == RequestState::Approved as i32;
            req.state = if release {
                RequestState::Released
            } else {
                RequestState::Revoked
            } as i32;
            req.ended_unix_ms = now_ms();
            tx.put(&req)?;
            tx.end_grant(id)?;
            audit(
                tx,
                id,
                caller,
                if release { "released" } else { "revoked" },
                reason,
            )?;
            if was_approved {
                let revocation = pb::Revocation {
                    grant_id: id.to_owned(),
                    reason: reason.to_owned(),
                };
                tx.send(
                    &req.hosts,
                    &FleetMessage {
                        kind: Some(fleet_message::Kind::Revocation(revocation)),
                    },
                )?;
            }
            Ok(req)
        });
        self.audit_refusal(id, caller, &result);
        result
    }

    /// Records a sign-in through an identity provider. The first sign-in
    /// binds the name to the issuer and subject; later ones refresh the
    /// claims, and one from another identity is refused.
    pub fn sign_in(&mut self, person: &Person, from: &str) -> Result<(), WorkflowError> {
        self.store.write(|tx| {
            if let Some(bound) = tx.person(&person.name)?
                && (bound.issuer != person.issuer || bound.subject != person.subject)
            {
                return Err(WorkflowError::IdentityTaken(format!(
                    "`{}` is bound to subject {:?} of {}; the sign-in by subject {:?} of {} is \
                     refused",
                    person.name, bound.subject, bound.issuer, person.subject, person.issuer
                )));
            }
            tx.put_person(person, now_ms())?;
            audit(
                tx,
                "",
                &person.name,
                "signed-in",
                format!(
                    "through {} as subject {:?}, by {from}",
                    person.issuer, person.subject
                ),
            )?;
            Ok(())
        })
    }

    /// Ends one session (`ward logout`, the page's sign-out): refused from
    /// now on, on every replica.
    pub fn sign_out(&mut self, session: &Session, how: &str) -> Result<(), WorkflowError> {
        self.store.write(|tx| {
            tx.end_session(
                &session.id,
                &session.name,
                session.expires_unix_ms,
                now_ms(),
            )?;
            audit(
                tx,
                "",
                &session.name,
                "signed-out",
                format!("by {how}: one session through {} ended", session.issuer),
            )?;
            Ok(())
        })
    }

    /// Forgets a signed-in person (`ward-coordinator person forget`):
    /// their binding and claims go, so every session issued for the name
    /// ends at its next call, on every replica, and the next sign-in binds
    /// the name afresh. False if nobody was bound to it.
    pub fn forget_person(&mut self, name: &str, actor: &str) -> Result<bool, WorkflowError> {
        let name = name.to_ascii_lowercase();
        self.store.write(|tx| {
            let Some(bound) = tx.person(&name)? else {
                return Ok(false);
            };
            tx.forget_person(&name)?;
            audit(
                tx,
                "",
                actor,
                "person_forgotten",
                format!(
                    "{name}: the binding to subject {:?} of {} and its claims removed; its \
                     sessions end",
                    bound.subject, bound.issuer
                ),
            )?;
            Ok(true)
        })
    }

    /// Pending requests past their TTL, and access past its deadline,
    /// become expired; scheduled grants whose start has come are checked
    /// against policy again and delivered, or revoked.
    pub fn sweep(&mut self) -> Result<usize, WorkflowError> {
        let ttl = self.pending_ttl.as_millis() as i64;
        let rules = &self.rules;
        let activated = self.store.write(|tx| {
            let now = now_ms();
            let mut n = 0;
            for mut req in tx.list(&[RequestState::Approved])? {
                if req.not_before_unix_ms > now
                    || req.expires_at_unix_ms <= now
                    || tx.has_grant(&req.id)?
                {
                    continue;
                }
                match rules.still_allowed(tx, &req) {
                    Ok(()) => {
                        rules.deliver(tx, &req)?;
                        audit(
                            tx,
                            &req.id,
                            "policy",
                            "activated",
                            "policy allows it at its start",
                        )?;
                    }
                    Err(WorkflowError::Store(e)) => return Err(e.into()),
                    Err(e) => {
                        req.state = RequestState::Revoked as i32;
                        req.ended_unix_ms = now;
                        tx.put(&req)?;
                        audit(
                            tx,
                            &req.id,
                            "policy",
                            "revoked",
                            format!("at its start, policy no longer allows it: {e}"),
                        )?;
                    }
                }
                n += 1;
            }
            Ok::<_, WorkflowError>(n)
        })?;
        let expired = self.store.write(|tx| {
            let now = now_ms();
            let mut n = 0;
            for mut req in tx.list(&[RequestState::Pending, RequestState::Approved])? {
                let pending = req.state == RequestState::Pending as i32;
                let due = if pending {
                    req.created_unix_ms + ttl <= now
                } else {
                    req.expires_at_unix_ms <= now
                };
                if !due {
                    continue;
                }
                req.state = RequestState::Expired as i32;
                req.ended_unix_ms = now;
                tx.put(&req)?;
                tx.end_grant(&req.id)?;
                let why = if pending {
                    "pending past its TTL"
                } else {
                    "reached its deadline"
                };
                audit(tx, &req.id, "coordinator", "expired", why)?;
                n += 1;
            }
            Ok::<_, WorkflowError>(n)
        })?;
        Ok(activated + expired)
    }

    /// An agent connects and its record changed (or is new): remember its
    /// labels and posture; hand back its active grants.
    pub fn subscribe(&mut self, host: &KnownHost) -> Result<Resume, WorkflowError> {
        self.store.write(|tx| {
            // Again under the lock: it may have been revoked since the read.
            if tx.host_revoked(&host.name)? {
                return Ok(Resume::Revoked);
            }
            tx.upsert_host(host, now_ms())?;
            Ok(Resume::Grants(Snapshot::read(tx, &host.name)?))
        })
    }
}

/// A host's active grants (each with its hosts, as stored), and the
/// outbox position they reflect: what the outbox gained up to `seq` is in
/// `grants` already.
#[derive(Debug)]
pub struct Snapshot {
    pub grants: Vec<(SignedGrant, String)>,
    pub seq: i64,
}

impl Snapshot {
    /// The position is read first: writes are serialised, so under any
    /// isolation the grants are at least as new as `seq`, and a message
    /// after `seq` that they already reflect is only repeated (grants and
    /// revocations are idempotent by id), never lost.
    fn read(tx: &Tx<'_>, host: &str) -> Result<Snapshot, WorkflowError> {
        Ok(Snapshot {
            seq: tx.outbox_head()?,
            grants: tx.active_grants(host, now_ms())?,
        })
    }
}

/// What an agent that subscribes is owed, read without the write lock.
#[derive(Debug)]
pub enum Resume {
    /// The host is revoked: refuse it.
    Revoked,
    /// Known as it subscribes now: its active grants.
    Grants(Snapshot),
    /// New, or its labels or posture changed: [`Workflow::subscribe`]
    /// records it under the write lock.
    Changed,
}

impl Resume {
    /// Most subscribes are reconnects of hosts exactly as the store knows
    /// them; those take one read and no write, so a fleet resyncing after
    /// a restart does not queue 10,000 fsynced writes behind one lock.
    pub fn read(store: &mut Store, host: &KnownHost) -> Result<Resume, WorkflowError> {
        store.read(|tx| {
            if tx.host_revoked(&host.name)? {
                return Ok(Resume::Revoked);
            }
            if tx.host(&host.name)?.as_ref() != Some(host) {
                return Ok(Resume::Changed);
            }
            Ok(Resume::Grants(Snapshot::read(tx, &host.name)?))
        })
    }
}

impl KnownHost {
    /// The host as its agent describes itself when it subscribes.
    pub fn subscribing(host: &str, labels: &[String], posture: Option<&pb::HostPosture>) -> Self {
        KnownHost {
            name: host.to_owned(),
            labels: labels.to_vec(),
            file_enforcement: posture.is_some_and(|p| p.file_enforcement),
            kernel: posture.map(|p| p.kernel.clone()).unwrap_or_default(),
        }
    }
}

impl Workflow {
    /// What the outbox gained after `seq`.
    pub fn outbox_after(
        &mut self,
        seq: i64,
    ) -> Result<Vec<(i64, Vec<String>, FleetMessage)>, WorkflowError> {
        self.store.read(|tx| Ok(tx.outbox_after(seq)?))
    }

    pub fn outbox_head(&mut self) -> Result<i64, WorkflowError> {
        self.store.read(|tx| Ok(tx.outbox_head()?))
    }
}

impl Workflow {
    /// Webhooks start from now: what happened before they were configured
    /// is not posted.
    pub fn init_notifications(&mut self) -> Result<(), WorkflowError> {
        self.store.write(|tx| Ok(tx.init_cursor("webhooks")?))
    }

    /// Writes one audit entry of the coordinator's own (e.g. a webhook
    /// that could not be delivered).
    pub fn record(
        &mut self,
        request_id: &str,
        actor: &str,
        kind: &str,
        detail: String,
    ) -> Result<(), WorkflowError> {
        self.store
            .write(|tx| Ok(audit(tx, request_id, actor, kind, detail)?))
    }

    /// Audit events for the webhooks, each claimed once across replicas.
    pub fn claim_notifications(
        &mut self,
        kinds: &[&str],
    ) -> Result<Vec<AuditEntry>, WorkflowError> {
        self.store
            .write(|tx| Ok(tx.claim_audit("webhooks", kinds)?))
    }
}

/// The most requests or audit entries one listing call reads.
pub const PAGE: usize = 1_000;

/// One page of a listing, and where the next starts (None: the end).
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

impl Rules {
    /// The requests `caller` may see (their own, those Cedar lets them
    /// review, or all for an admin; with `mine`, only their own), at most
    /// `limit` read after request `after`. Runs on a reader's store: no
    /// decision waits for it.
    pub fn visible_requests(
        &self,
        store: &mut Store,
        caller: &str,
        (mine, pending): (bool, bool),
        after: i64,
        limit: usize,
    ) -> Result<Page<AccessRequest>, WorkflowError> {
        let states: &[RequestState] = if pending {
            &[RequestState::Pending]
        } else {
            &[]
        };
        store.read(|tx| {
            let people = tx.people(&[caller])?;
            let (rows, next) = tx.list_page(states, after, limit)?;
            let mut items = Vec::new();
            for r in rows {
                let show = if mine {
                    same_person(&r.requester, caller)
                } else {
                    self.may_see(tx, caller, &people, &r)?
                };
                if show {
                    items.push(r);
                }
            }
            Ok(Page { items, next })
        })
    }

    /// The audit entries `caller` may read from `since_ms` (everything for
    /// an admin, else those of the requests they may see), at most `limit`
    /// read after entry `after`.
    pub fn visible_audit(
        &self,
        store: &mut Store,
        caller: &str,
        since_ms: i64,
        after: i64,
        limit: usize,
    ) -> Result<Page<AuditEntry>, WorkflowError> {
        store.read(|tx| {
            let (entries, next) = tx.audit_page(since_ms, after, limit)?;
            if self.is_admin(caller) {
                return Ok(Page {
                    items: entries,
                    next,
                });
            }
            let people = tx.people(&[caller])?;
            let mut seen = std::collections::HashMap::<String, bool>::new();
            let mut items = Vec::new();
            for e in entries {
                let show = match seen.get(&e.request_id) {
                    Some(show) => *show,
                    None => {
                        let show = match tx.get(&e.request_id)? {
                            Some(req) => self.may_see(tx, caller, &people, &req)?,
                            None => false,
                        };
                        seen.insert(e.request_id.clone(), show);
                        show
                    }
                };
                if show {
                    items.push(e);
                }
            }
            Ok(Page { items, next })
        })
    }
}

#[cfg(test)]
mod tests {
    use ward_policy::{Directory, Policies};

    use super::*;

    fn compiler(policy: &str) -> Compiler {
        let policies = Policies::parse(&[("p.cedar".into(), policy.into())]).unwrap();
        Compiler::new(
            policies,
            Directory::default(),
            Env::default(),
            &Clock::system(),
        )
    }

    fn host(name: &str, labels: &[&str], lsm: bool) -> KnownHost {
        KnownHost {
            name: name.into(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            file_enforcement: lsm,
            kernel: "6.12".into(),
        }
    }

    /// Hosts alike in labels and posture are decided once, unless a policy
    /// reads the host's name, which can tell each apart.
    #[test]
    fn hosts_are_decided_once_per_label_set_and_posture() {
        let hosts = [
            host("a", &["env=prod", "tier=db"], true),
            host("b", &["tier=db", "env=prod"], true),
            host("c", &["env=prod", "tier=db"], false),
            host("d", &["env=stg"], true),
        ];
        let by_labels = compiler(
            r#"permit(principal, action == Action::"request", resource)
               when { context.host.labels.contains("env=prod") };"#,
        );
        let names: Vec<&str> = distinct_hosts(&by_labels, &hosts)
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, ["a", "c", "d"]);
        let by_name = compiler(
            r#"permit(principal, action == Action::"request", resource)
               when { context.host.name == "b" };"#,
        );
        assert_eq!(distinct_hosts(&by_name, &hosts).len(), 4);
    }
}
