//! JIT eligibility: the Cedar `request` action decides who may be granted
//! what, and for how long at most; a `forbid` on the operation itself is a
//! guardrail no grant gets past.

use std::time::Duration;

use cedar_policy::Decision;

use crate::{
    Action,
    clock::{Clock, Env},
    compile::Compiler,
    directory::{DirectoryError, EntityKey, Kind, Record},
    people::People,
};

/// Reviewers needed when a `request` permit does not say.
pub const DEFAULT_APPROVALS: u32 = 1;

/// What one `request` permit allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub policy: String,
    pub max: Option<Duration>,
    pub approvals: u32,
    /// The permit waives the reason (`@reason("optional")`).
    pub reason_optional: bool,
}

/// The fewest approvals any applying permit needs for `duration`, or None
/// when every permit caps below it.
pub fn approvals_for(terms: &[Terms], duration: Duration) -> Option<u32> {
    terms
        .iter()
        .filter(|t| t.max.is_none_or(|m| duration <= m))
        .map(|t| t.approvals)
        .min()
}

/// One grant target to check: who, which operation, on what.
#[derive(Debug, Clone)]
pub struct GrantCheck {
    /// Who is granted: a user, or a workload.
    pub principal: EntityKey,
    /// Who asks (`context.requester`): the user themselves, or the person
    /// asking on a workload's behalf. None for an operator's local grant.
    pub requester: Option<EntityKey>,
    pub action: Action,
    /// A path, a tree ending in "/", or "ADDR[/PREFIX]:PORTS".
    pub object: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    /// Eligible; a grant may last at most `max` (None: the agent's own cap).
    Eligible {
        max: Option<Duration>,
        policies: Vec<String>,
        /// Per permit that applies: its cap and the approvals it needs.
        terms: Vec<Terms>,
    },
    /// No `request` permit applies (or a `request` forbid does).
    NotEligible { reason: String },
    /// A forbid on the operation itself: no grant may override it.
    Forbidden { policies: Vec<String> },
}

fn resource_kind(action: Action) -> Kind {
    match action {
        Action::Read | Action::Write => Kind::Path,
        Action::Exec => Kind::Executable,
        Action::Connect => Kind::Network,
    }
}

impl Compiler {
    /// The principal a grant names: its directory entry, or a bare entity
    /// (no attributes, no groups) when the directory does not list it.
    pub fn principal_record(&self, key: &EntityKey) -> Result<Record, DirectoryError> {
        self.person_record(key, &People::default())
    }

    /// [`Compiler::principal_record`], with a signed-in person's claims
    /// over their directory entry.
    pub fn person_record(
        &self,
        key: &EntityKey,
        people: &People,
    ) -> Result<Record, DirectoryError> {
        if let Some(claims) = people.get(key) {
            let listed = self.directory().get(key).map(|r| &r.def);
            return self.directory().stand_in(People::merged(listed, claims));
        }
        if let Some(r) = self.directory().get(key) {
            return Ok(r.clone());
        }
        if key.kind == Kind::Workload
            && let Some(r) = self
                .directory()
                .of_kind(Kind::Workload)
                .find(|r| r.def.attrs.get("cgroup").and_then(|v| v.as_str()) == Some(&key.id))
        {
            return Ok(r.clone());
        }
        let mut attrs = serde_json::Map::new();
        if key.kind == Kind::Workload {
            attrs.insert("cgroup".into(), key.id.clone().into());
        }
        self.directory().stand_in(crate::EntityDef {
            kind: key.kind,
            id: key.id.clone(),
            parents: Vec::new(),
            attrs,
        })
    }

    /// Whether `check` may be granted now, and for how long at most.
    pub fn eligibility(
        &self,
        check: &GrantCheck,
        clock: &Clock,
    ) -> Result<Eligibility, DirectoryError> {
        self.eligibility_in(self.env(), check, &People::default(), clock)
    }

    /// [`Compiler::eligibility`] on another host: the coordinator asks once
    /// per target host, with that host's labels and the signed-in people.
    pub fn eligibility_in(
        &self,
        env: &Env,
        check: &GrantCheck,
        people: &People,
        clock: &Clock,
    ) -> Result<Eligibility, DirectoryError> {
        let principal = self.person_record(&check.principal, people)?;
        let resource = self
            .directory()
            .resource_for(resource_kind(check.action), &check.object)?;
        let guard = self.authorize(env, &principal, check.action.name(), &resource, None, clock);
        if guard.decision() == Decision::Deny {
            let policies: Vec<String> = guard
                .diagnostics()
                .reason()
                .map(|p| p.to_string())
                .collect();
            if !policies.is_empty() {
                return Ok(Eligibility::Forbidden { policies });
            }
        }
        let requester = match &check.requester {
            Some(r) => Some(self.person_record(r, people)?),
            None => None,
        };
        let resp = self.authorize_for(
            env,
            &principal,
            "request",
            &resource,
            Some(check.action.name()),
            requester.as_ref(),
            clock,
        );
        let mut policies: Vec<String> =
            resp.diagnostics().reason().map(|p| p.to_string()).collect();
        policies.sort();
        let who = format!("{}::{:?}", check.principal.kind, check.principal.id);
        let what = format!("{} on {}", check.action.name(), check.object);
        if resp.decision() == Decision::Deny {
            let reason = if policies.is_empty() {
                format!("{who} is not eligible for {what}: no `request` policy permits it")
            } else {
                format!(
                    "{who} is not eligible for {what}: forbidden by {}",
                    policies.join(", ")
                )
            };
            return Ok(Eligibility::NotEligible { reason });
        }
        // The longest cap among the permits that apply; one without a cap
        // leaves only the agent's.
        let info = &self.policies().info;
        let caps: Vec<Option<Duration>> = policies
            .iter()
            .map(|id| info.get(id).and_then(|i| i.max_duration))
            .collect();
        let max = if caps.iter().any(Option::is_none) {
            None
        } else {
            caps.into_iter().flatten().max()
        };
        let terms = policies
            .iter()
            .map(|id| Terms {
                policy: id.clone(),
                max: info.get(id).and_then(|i| i.max_duration),
                approvals: info
                    .get(id)
                    .and_then(|i| i.approvals)
                    .unwrap_or(DEFAULT_APPROVALS),
                reason_optional: info.get(id).is_some_and(|i| i.reason_optional),
            })
            .collect();
        Ok(Eligibility::Eligible {
            max,
            policies,
            terms,
        })
    }

    /// The directory's workload named `name`, or whose cgroup is `name`.
    pub fn known_workload(&self, name: &str) -> Option<&Record> {
        self.directory()
            .get(&EntityKey::new(Kind::Workload, name))
            .or_else(|| {
                self.directory()
                    .of_kind(Kind::Workload)
                    .find(|r| r.def.attrs.get("cgroup").and_then(|v| v.as_str()) == Some(name))
            })
    }

    /// Whether `requester` may ask for `action` on `workload`'s behalf
    /// (the Cedar `request_for` action). Both must be in the directory.
    pub fn may_request_for(
        &self,
        env: &Env,
        requester: &EntityKey,
        workload: &EntityKey,
        action: Action,
        people: &People,
        clock: &Clock,
    ) -> Result<bool, DirectoryError> {
        let principal = self.person_record(requester, people)?;
        let Some(resource) = self.known_workload(&workload.id) else {
            return Ok(false);
        };
        let resp = self.authorize_for(
            env,
            &principal,
            "request_for",
            resource,
            Some(action.name()),
            Some(&principal),
            clock,
        );
        Ok(resp.decision() == Decision::Allow)
    }

    /// Whether `reviewer` may approve or deny `check` (the Cedar `review`
    /// action). Nobody reviews their own request; the caller checks that.
    pub fn may_review(
        &self,
        env: &Env,
        reviewer: &EntityKey,
        check: &GrantCheck,
        people: &People,
        clock: &Clock,
    ) -> Result<bool, DirectoryError> {
        let principal = self.person_record(reviewer, people)?;
        let resource = self
            .directory()
            .resource_for(resource_kind(check.action), &check.object)?;
        let resp = self.authorize(
            env,
            &principal,
            "review",
            &resource,
            Some(check.action.name()),
            clock,
        );
        Ok(resp.decision() == Decision::Allow)
    }
}
