//! The decision shared by every hook.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, maps::LpmTrie, maps::lpm_trie::Key};
use ward_abi::{Effect, RULE_FROM_GRANT, Rule, subject};

use crate::subject::Subjects;

pub struct Verdict {
    pub allow: bool,
    pub rule_id: u64,
    /// An allow that a JIT grant gave: audited like a deny.
    pub by_grant: bool,
}

/// A rule key whose subject can be rewritten in place between lookups.
pub trait RuleKey: Sized {
    fn set_subject(key: &mut Key<Self>, subject: u64);
}

impl RuleKey for ward_abi::PathKey {
    #[inline(always)]
    fn set_subject(key: &mut Key<Self>, subject: u64) {
        // Keys are packed; write without forming a reference.
        key.data.subject = subject;
    }
}

impl RuleKey for ward_abi::NetKey {
    #[inline(always)]
    fn set_subject(key: &mut Key<Self>, subject: u64) {
        key.data.subject = subject;
    }
}

#[inline(always)]
fn applies(rule: &Rule, port: u16) -> bool {
    port >= rule.port_first && port <= rule.port_last
}

/// `None` when the object is not protected (the caller is not decided on).
/// Otherwise the caller's most specific rule decides; an allow counts only
/// until its deadline, measured on the boot clock by the kernel itself.
#[inline(always)]
pub fn decide<K: RuleKey>(
    rules: &LpmTrie<K, Rule>,
    key: &mut Key<K>,
    who: &Subjects,
    port: u16,
) -> Option<Verdict> {
    K::set_subject(key, subject::PROTECTED);
    let protection = rules.get(&*key)?;
    if !applies(protection, port) {
        return None;
    }
    let protected_by = protection.rule_id;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // Plain scalars, all initialised: an Option with an uninitialised
    // payload lets LLVM read undefined registers, which the verifier rejects.
    let mut allowed = false;
    let mut allow_id = 0u64;
    let mut allow_by_grant = false;
    for subject in [who.by_uid, who.by_login, who.by_cgroup] {
        if subject == 0 {
            continue;
        }
        K::set_subject(key, subject);
        let Some(rule) = rules.get(&*key) else {
            continue;
        };
        if !applies(rule, port) {
            continue;
        }
        if rule.effect != Effect::Allow as u32 {
            // An explicit deny for any of the caller's subjects wins.
            return Some(Verdict {
                allow: false,
                rule_id: rule.rule_id,
                by_grant: false,
            });
        }
        if !allowed && now < rule.expires_ns {
            allowed = true;
            allow_id = rule.rule_id;
            allow_by_grant = rule.flags & RULE_FROM_GRANT != 0;
        }
    }
    Some(if allowed {
        Verdict {
            allow: true,
            rule_id: allow_id,
            by_grant: allow_by_grant,
        }
    } else {
        Verdict {
            allow: false,
            rule_id: protected_by,
            by_grant: false,
        }
    })
}
