//! The decision, written once. The eBPF programs compile it over their
//! maps and `ward explain` compiles it over the same maps read from user
//! space, so the answer explain gives is the kernel's by construction.
//!
//! Everything here is `#[inline(always)]` and bounded: the verifier must
//! see every loop end.

use crate::{
    Chain, Config, Effect, FileKey, LOGIN_UID_UNSET, MAX_CGROUP_SUBJECTS, MAX_CHAIN,
    MAX_UID_RANGES, Op, RULE_FROM_GRANT, Rule, subject,
};

/// A managed caller, as the subjects its rules may be written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subjects {
    pub uid: u32,
    /// Audit login uid, [`LOGIN_UID_UNSET`] if none or not read.
    pub login_uid: u32,
    pub cgroup: u64,
    /// [`subject::uid`] if the uid is in a managed range, else 0.
    pub by_uid: u64,
    /// [`subject::uid`] of the login uid if it differs from the uid and is
    /// in a managed range, else 0: `sudo` does not shed the human's rules.
    pub by_login: u64,
    /// The listed cgroups the caller runs under, deepest first
    /// ([`subject::cgroup`]; 0 past the last). A rule for any of them
    /// applies: a grant for `svc/app` reaches `svc/app`'s processes, and
    /// one for `svc` reaches them too.
    pub by_cgroup: [u64; MAX_CGROUP_SUBJECTS],
}

/// Whether `uid` is in one of the config's managed ranges.
#[inline(always)]
pub fn uid_managed(config: &Config, uid: u32) -> bool {
    let mut i = 0;
    while i < MAX_UID_RANGES {
        if (i as u32) < config.uid_ranges_len {
            let r = &config.uid_ranges[i];
            if uid >= r.first && uid <= r.last {
                return true;
            }
        }
        i += 1;
    }
    false
}

impl Subjects {
    /// The caller's subjects, or `None` if ward does not manage it.
    /// `by_cgroup` is the listed-cgroup walk of its cgroup (see
    /// [`listed_ancestors`]).
    #[inline(always)]
    pub fn resolve(
        config: &Config,
        uid: u32,
        login_uid: u32,
        cgroup: u64,
        by_cgroup: [u64; MAX_CGROUP_SUBJECTS],
    ) -> Option<Subjects> {
        let by_login =
            if login_uid != LOGIN_UID_UNSET && login_uid != uid && uid_managed(config, login_uid) {
                subject::uid(login_uid)
            } else {
                0
            };
        let by_uid = if uid_managed(config, uid) {
            subject::uid(uid)
        } else {
            0
        };
        if by_cgroup[0] == 0 && by_uid == 0 && by_login == 0 {
            return None;
        }
        Some(Subjects {
            uid,
            login_uid,
            cgroup,
            by_uid,
            by_login,
            by_cgroup,
        })
    }
}

/// The listed cgroups among `ancestors` (root first, as
/// `bpf_get_current_ancestor_cgroup_id` counts levels), deepest first, at
/// most [`MAX_CGROUP_SUBJECTS`]. `ancestor(level)` returns 0 past the
/// caller's own cgroup.
#[inline(always)]
pub fn listed_ancestors(
    max_depth: i32,
    mut ancestor: impl FnMut(i32) -> u64,
    mut listed: impl FnMut(u64) -> bool,
) -> ([u64; MAX_CGROUP_SUBJECTS], u64) {
    let mut found = [0u64; MAX_CGROUP_SUBJECTS];
    let mut deepest = 0u64;
    let mut level = 0;
    while level <= max_depth {
        let id = ancestor(level);
        if id == 0 {
            break;
        }
        deepest = id;
        if listed(id) {
            // Shift down: the newest (deepest) goes first; the shallowest
            // falls off when more than MAX_CGROUP_SUBJECTS are listed.
            let mut i = MAX_CGROUP_SUBJECTS - 1;
            while i > 0 {
                found[i] = found[i - 1];
                i -= 1;
            }
            found[0] = subject::cgroup(id);
        }
        level += 1;
    }
    (found, deepest)
}

/// What decided, for events and explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    /// The deciding rule, or the protection when nothing allowed.
    pub rule_id: u64,
    /// An allow that a JIT grant gave: audited like a deny.
    pub by_grant: bool,
    /// The subject whose rule decided, 0 if none did (then `decided` is
    /// the protection). Plain fields, not an Option: see [`decide`].
    pub decided_subject: u64,
    pub decided: Rule,
    /// The protection that made the object decided on.
    pub protection: Rule,
    /// Files: the chain index of the protecting object.
    pub protected_at: u32,
}

/// A rule found for one subject, and where (the chain index for files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub rule: Rule,
    pub at: u32,
}

#[inline(always)]
fn applies(rule: &Rule, port: u16) -> bool {
    port >= rule.port_first && port <= rule.port_last
}

/// `None` when the object is not protected (the caller is not decided on).
/// Otherwise the caller's most specific rule per subject decides: an
/// explicit deny for any subject wins, an allow counts only until its
/// deadline on the boot clock, and nothing at all is a deny.
///
/// `most_specific(subject)` is the subject's most specific rule for the
/// object: the longest prefix for networks, the deepest object of the
/// chain for files. [`subject::PROTECTED`] asks for the protection.
#[inline(always)]
pub fn decide(
    who: &Subjects,
    now: u64,
    port: u16,
    mut most_specific: impl FnMut(u64) -> Option<Found>,
) -> Option<Verdict> {
    let protection = most_specific(subject::PROTECTED)?;
    if !applies(&protection.rule, port) {
        return None;
    }
    // Plain scalars, all initialised: an Option with an uninitialised
    // payload lets LLVM read undefined registers, which the verifier rejects.
    let mut allowed = false;
    let mut allow = protection.rule;
    let mut allow_subject = 0u64;
    let mut i = 0;
    while i < 2 + MAX_CGROUP_SUBJECTS {
        let subject = match i {
            0 => who.by_uid,
            1 => who.by_login,
            n => who.by_cgroup[(n - 2) & (MAX_CGROUP_SUBJECTS - 1)],
        };
        i += 1;
        if subject == 0 {
            continue;
        }
        let Some(found) = most_specific(subject) else {
            continue;
        };
        let rule = found.rule;
        if !applies(&rule, port) {
            continue;
        }
        if rule.effect != Effect::Allow as u32 {
            return Some(Verdict {
                allow: false,
                rule_id: rule.rule_id,
                by_grant: false,
                decided_subject: subject,
                decided: rule,
                protection: protection.rule,
                protected_at: protection.at,
            });
        }
        if !allowed && now < rule.expires_ns {
            allowed = true;
            allow = rule;
            allow_subject = subject;
        }
    }
    Some(Verdict {
        allow: allowed,
        rule_id: allow.rule_id,
        by_grant: allowed && allow.flags & RULE_FROM_GRANT != 0,
        decided_subject: allow_subject,
        decided: allow,
        protection: protection.rule,
        protected_at: protection.at,
    })
}

/// The rule id a deny carries when the walk could not see the whole route
/// to the root (too deep, or too many nested objects).
pub const RULE_WALK_INCOMPLETE: u64 = u64::MAX;

/// The file decision over a walk's chain. `get` looks up one key in the
/// live file rule map.
#[inline(always)]
pub fn decide_file(
    chain: &Chain,
    who: &Subjects,
    op: Op,
    now: u64,
    get: impl Fn(&FileKey) -> Option<Rule>,
) -> Option<Verdict> {
    if chain.complete == 0 {
        // Fail closed: an ancestor we could not see may be protected.
        let rule = Rule {
            effect: Effect::Deny as u32,
            flags: 0,
            expires_ns: 0,
            rule_id: RULE_WALK_INCOMPLETE,
            port_first: 0,
            port_last: u16::MAX,
            _pad: 0,
        };
        return Some(Verdict {
            allow: false,
            rule_id: RULE_WALK_INCOMPLETE,
            by_grant: false,
            decided_subject: 0,
            decided: rule,
            protection: rule,
            protected_at: 0,
        });
    }
    if chain.len == 0 {
        return None; // the common case: nothing on the route is an object
    }
    decide(who, now, 0, |subject| {
        let mut i = 0;
        while i < MAX_CHAIN {
            if (i as u32) >= chain.len {
                break;
            }
            let key = FileKey {
                subject,
                op: op as u32,
                object: chain.ids[i],
            };
            if let Some(rule) = get(&key) {
                return Some(Found { rule, at: i as u32 });
            }
            i += 1;
        }
        None
    })
}
