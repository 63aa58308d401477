//! `ward explain`: the kernel's own decision for a subject, operation and
//! object, with the rule that made it named.

use super::*;

impl Engine {
    /// The kernel's answer, from the kernel's own walk, maps and clock,
    /// through the decision function the hooks run.
    pub fn explain(
        &mut self,
        caller: &Caller,
        op: Op,
        object: &str,
    ) -> Result<pb::ExplainResponse, EngineError> {
        let probe = if op == Op::Connect {
            Probe::Addr(object.parse().map_err(|_| InvalidGrant {
                field: "object".into(),
                reason: format!("`{object}` is not ADDR:PORT"),
            })?)
        } else {
            if !object.starts_with('/') {
                return Err(InvalidGrant {
                    field: "object".into(),
                    reason: format!("`{object}` is not an absolute path"),
                }
                .into());
            }
            Probe::Path(object.to_owned())
        };
        let x = self.enforcer.explain(caller, op, &probe)?;
        if x.subjects.is_none() {
            return Ok(pb::ExplainResponse {
                allowed: true,
                decided_by: "unmanaged".into(),
                detail: "ward does not manage this subject: its uid, login uid and cgroup \
                         are in no managed range or subtree"
                    .into(),
                ..Default::default()
            });
        }
        let Some(v) = x.verdict else {
            return Ok(pb::ExplainResponse {
                allowed: true,
                decided_by: "unprotected".into(),
                detail: format!("no protection covers {object}"),
                ..Default::default()
            });
        };
        if v.rule_id == ward_abi::decision::RULE_WALK_INCOMPLETE {
            return Ok(pb::ExplainResponse {
                allowed: false,
                decided_by: "protection".into(),
                rule_id: "walk-incomplete".into(),
                detail: format!(
                    "{object} is more than {} levels deep or under more than {} nested \
                     objects; managed callers are denied what the kernel cannot walk",
                    ward_abi::MAX_WALK_DEPTH,
                    ward_abi::MAX_CHAIN
                ),
                ..Default::default()
            });
        }
        let protection = self.rule_name(v.protection.rule_id)?;
        let decided = v.decided;
        Ok(if v.allow && v.by_grant {
            pb::ExplainResponse {
                allowed: true,
                decided_by: "grant".into(),
                rule_id: self.rule_name(decided.rule_id)?,
                detail: format!("{object} is protected by {protection}; a grant allows it"),
                expires_at_unix_ms: boot_to_unix_ms(decided.expires_ns),
            }
        } else if v.allow {
            let by = self.rule_name(decided.rule_id)?;
            pb::ExplainResponse {
                allowed: true,
                decided_by: "policy".into(),
                detail: format!("{object} is protected by {protection}; {by}"),
                rule_id: by,
                expires_at_unix_ms: boot_to_unix_ms(decided.expires_ns),
            }
        } else if v.decided_subject != 0 {
            let by = self.rule_name(decided.rule_id)?;
            pb::ExplainResponse {
                allowed: false,
                decided_by: "deny".into(),
                detail: format!("an explicit deny covers it: {by}"),
                rule_id: by,
                ..Default::default()
            }
        } else {
            pb::ExplainResponse {
                allowed: false,
                decided_by: "protection".into(),
                rule_id: protection.clone(),
                detail: format!(
                    "{object} is protected by {protection} and no active grant allows it"
                ),
                ..Default::default()
            }
        })
    }

    /// A kernel rule id as people know it: a grant id or a config entry.
    pub(super) fn rule_name(&self, id: u64) -> Result<String, EngineError> {
        if (POLICY_BASE..PROTECTION_BASE).contains(&id) {
            return Ok(self
                .cedar
                .as_ref()
                .and_then(|p| p.rule_name(id))
                .map_or_else(
                    || format!("policy rule #{}", id - POLICY_BASE),
                    str::to_owned,
                ));
        }
        if id >= PROTECTION_BASE {
            let i = (id - PROTECTION_BASE) as usize;
            return Ok(self
                .protections
                .get(i)
                .map(|(name, _)| name.clone())
                .unwrap_or_else(|| format!("protection #{i}")));
        }
        Ok(self
            .store
            .id_of(id)?
            .unwrap_or_else(|| format!("rule #{id}")))
    }
}
