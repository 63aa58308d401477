//! The decision, written once. The eBPF programs compile it over their
//! maps and `ward explain` compiles it over the same maps read from user
//! space, so the answer explain gives is the kernel's by construction.
//!
//! Everything here is `#[inline(always)]` and bounded: the verifier must
//! see every loop end.

use crate::{
    Chain, Config, Effect, FileKey, KEY_HEADER_BITS, LOGIN_UID_UNSET, MAX_CGROUP_SUBJECTS,
    MAX_CHAIN, MAX_PORT_RANGES, MAX_UID_RANGES, NetRule, Op, RULE_FROM_GRANT, Rule, subject,
};

/// A managed caller, as the subjects its rules may be written for.
#[repr(C)]
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
/// most [`MAX_CGROUP_SUBJECTS`], as the subjects their keys make.
/// `ancestor(level)` returns 0 past the caller's own cgroup; `listed(id)`
/// the cgroup's [`crate::ManagedCgroup::key`] if it is listed.
#[inline(always)]
pub fn listed_ancestors(
    max_depth: i32,
    mut ancestor: impl FnMut(i32) -> u64,
    mut listed: impl FnMut(u64) -> Option<u64>,
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
        if let Some(key) = listed(id) {
            // Shift down: the newest (deepest) goes first; the shallowest
            // falls off when more than MAX_CGROUP_SUBJECTS are listed.
            let mut i = MAX_CGROUP_SUBJECTS - 1;
            while i > 0 {
                found[i] = found[i - 1];
                i -= 1;
            }
            found[0] = subject::cgroup(key);
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

/// Where [`decide`] finds each subject's most specific rule for the object:
/// the longest prefix for networks, the deepest object of the chain for
/// files. A trait, not a closure, so that the eBPF build inlines it (a
/// closure called several times becomes a BPF subprogram).
pub trait MostSpecific {
    /// [`subject::PROTECTED`] asks for the protection.
    fn most_specific(&mut self, subject: u64) -> Option<Found>;
}

/// User space (explain) passes closures.
impl<F: FnMut(u64) -> Option<Found>> MostSpecific for F {
    #[inline(always)]
    fn most_specific(&mut self, subject: u64) -> Option<Found> {
        self(subject)
    }
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

/// Nested network entries of one subject that one decision follows (a
/// /32 for one port inside a /16 for all ports, ...). Deeper nesting is
/// decided as a deny (fail closed), naming [`RULE_NEST_TOO_DEEP`].
pub const MAX_NET_NEST: usize = 8;

/// The rule id a deny carries when network entries nest deeper than
/// [`MAX_NET_NEST`] on the route to a destination.
pub const RULE_NEST_TOO_DEEP: u64 = u64::MAX - 1;

/// One subject's most specific network entry that covers `port`: the
/// longest prefix first, then each shorter prefix that contains it. So a
/// protection (or rule) for `10.20.0.5/32:5432` does not hide one for
/// `10.20.0.0/16:*` from a connect to port 22. Within an entry, the range
/// that decides the port is [`NetRule::covering`]'s.
#[inline(always)]
pub fn applicable_net_rule(port: u16, get: &mut impl NetLookup) -> Option<Found> {
    let mut bits = KEY_HEADER_BITS + 128;
    let mut i = 0;
    while i < MAX_NET_NEST {
        let entry = get.entry(bits)?;
        let at = entry.covering(port);
        if at < MAX_PORT_RANGES {
            return Some(Found {
                rule: entry.ranges[at],
                at: 0,
            });
        }
        let key_bits = entry.key_bits;
        if key_bits <= KEY_HEADER_BITS || key_bits > bits {
            return None; // the shortest prefix, or a value that is not a net rule's
        }
        bits = key_bits - 1;
        i += 1;
    }
    Some(Found {
        rule: deny_rule(RULE_NEST_TOO_DEEP),
        at: 0,
    })
}

/// Where [`applicable_net_rule`] looks up one prefix length. A trait, as
/// [`MostSpecific`] is, not a closure: a closure called in a loop becomes
/// a BPF subprogram, and its frame took 6.1's `socket_sendmsg` past the
/// 512-byte stack.
pub trait NetLookup {
    /// The trie's longest-prefix entry for the destination with a key of
    /// `bits` bits.
    fn entry(&mut self, bits: u32) -> Option<&NetRule>;
}

impl NetRule {
    /// The index of the range that decides `port`, or [`MAX_PORT_RANGES`]
    /// when none covers it: of those that cover it, a deny beats any
    /// allow, and among allows the one that lasts longest wins, as entries
    /// sharing one range are combined. An index, not a copy of the rule:
    /// the eBPF stack is small.
    #[inline(always)]
    pub fn covering(&self, port: u16) -> usize {
        let mut best = MAX_PORT_RANGES;
        let mut i = 0;
        while i < MAX_PORT_RANGES {
            if (i as u32) < self.len
                && applies(&self.ranges[i], port)
                && (best >= MAX_PORT_RANGES || outranks(&self.ranges[i], &self.ranges[best]))
            {
                best = i;
            }
            i += 1;
        }
        best
    }
}

/// Whether `a` decides over `b` where both apply: a deny beats any
/// allow; among allows, the later deadline.
#[inline(always)]
pub fn outranks(a: &Rule, b: &Rule) -> bool {
    let deny = Effect::Deny as u32;
    match (a.effect == deny, b.effect == deny) {
        (_, true) => false,
        (true, false) => true,
        (false, false) => a.expires_ns > b.expires_ns,
    }
}

/// Where Linux sends a connect or send to the unspecified address, as the
/// kernel keys it (IPv4 mapped into IPv6): `0.0.0.0` to the socket's bound
/// IPv4 address, else `127.0.0.1` (`ip_route_connect`); `::` to `::1`.
/// Every other address is itself. For IPv4 callers, [`unspecified_dest4`]
/// gives the same answer.
///
/// Without branches: the paths of an `if` here stay apart through the
/// whole decision after it, and the verifier walked each (4 s of the
/// load of each IPv6 cgroup hook on 6.18, 2.2 s without them). So the socket's bound
/// address is read whatever the destination.
#[inline(always)]
pub fn unspecified_dest(addr: [u8; 16], bound_v4: impl FnOnce() -> [u8; 4]) -> [u8; 16] {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let (w0, w1, w2, w3) = (w(0), w(4), w(8), w(12));
    let any = zero_mask(w0 | w1 | w2 | w3);
    let mapped_any =
        zero_mask(w0 | w1 | w3) & zero_mask(w2 ^ u32::from_ne_bytes([0, 0, 0xff, 0xff]));
    let bound = u32::from_ne_bytes(bound_v4());
    let v4 = bound | (u32::from_ne_bytes([127, 0, 0, 1]) & zero_mask(bound));
    let last = w3 | (u32::from_ne_bytes([0, 0, 0, 1]) & any) | (v4 & mapped_any);
    let mut out = addr;
    out[12..].copy_from_slice(&last.to_ne_bytes());
    out
}

/// [`unspecified_dest`] of an IPv4 address (network order), mapped. In
/// the branching form, which LLVM folds against the constant prefix: on
/// 6.18 the verifier takes 0.8 s over `ward_connect4` so, 1.9 s with the
/// branch-free form or a plain test of `ip`.
#[inline(always)]
pub fn unspecified_dest4(ip: [u8; 4], bound_v4: impl FnOnce() -> [u8; 4]) -> [u8; 16] {
    let addr = v4_mapped(ip);
    let mut out = addr;
    if addr == [0; 16] {
        out[15] = 1;
    } else if addr[..10] == [0; 10] && addr[10] == 0xff && addr[11] == 0xff && addr[12..] == [0; 4]
    {
        let bound = bound_v4();
        let v4 = if bound == [0; 4] {
            [127, 0, 0, 1]
        } else {
            bound
        };
        out[12..].copy_from_slice(&v4);
    }
    out
}

/// `ip` (network order) mapped into IPv6, as the kernel tables key it.
#[inline(always)]
pub fn v4_mapped(ip: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&ip);
    a
}

/// All ones if `x` is 0, else 0, computed without a branch.
#[inline(always)]
fn zero_mask(x: u32) -> u32 {
    (u64::from(x).wrapping_sub(1) >> 32) as u32
}

/// How many subject slots a caller has: uid, login uid, then the listed
/// cgroups.
pub const SUBJECT_SLOTS: usize = 2 + MAX_CGROUP_SUBJECTS;

impl Subjects {
    /// The subject in slot `i` (see [`SUBJECT_SLOTS`]), 0 if none.
    #[inline(always)]
    pub fn slot(&self, i: usize) -> u64 {
        match i {
            0 => self.by_uid,
            1 => self.by_login,
            n => self.by_cgroup.get(n - 2).copied().unwrap_or(0),
        }
    }

    /// The subject decision row `i` considers: slot `i`, or past the
    /// slots, the principal class of slot `i - SUBJECT_SLOTS` (0 if it
    /// has none). Grants are keyed by the subject, Cedar policy by its
    /// class, so both rows of a subject count.
    #[inline(always)]
    pub fn row(&self, i: usize, classes: &mut impl Classes) -> u64 {
        if i < SUBJECT_SLOTS {
            return self.slot(i);
        }
        let s = self.slot(i - SUBJECT_SLOTS);
        if s == 0 { 0 } else { classes.class_of(s) }
    }
}

/// Rows a decision considers after the protection: each subject slot,
/// then each one's class.
pub const DECISION_ROWS: usize = 2 * SUBJECT_SLOTS;

/// Where a subject's principal class is found: the live generation of
/// [`crate::maps::CLASSES`]. A trait, as [`MostSpecific`] is, so that the
/// eBPF build inlines it.
pub trait Classes {
    /// The [`subject::class`] `subject` is in, 0 if none.
    fn class_of(&mut self, subject: u64) -> u64;

    /// Whether classes are in use at all ([`crate::Config::classed`]):
    /// when not, a decision takes no class rows.
    #[inline(always)]
    fn in_use(&self) -> bool {
        true
    }
}

/// User space (explain, tests) passes closures.
impl<F: FnMut(u64) -> u64> Classes for F {
    #[inline(always)]
    fn class_of(&mut self, subject: u64) -> u64 {
        self(subject)
    }
}

/// A decision in progress: the protection is known, and each of the
/// caller's subjects is considered in turn. [`decide`] drives it with a
/// loop; the eBPF programs drive the same steps from a `bpf_loop`
/// callback, which the verifier checks once instead of per subject.
///
/// Plain scalars, all initialised: an Option with an uninitialised payload
/// lets LLVM read undefined registers, which the verifier rejects.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct Deciding {
    protection: Rule,
    protected_at: u32,
    port: u16,
    /// 1 once an allow counts, 2 once a deny decided.
    state: u16,
    now: u64,
    decided_subject: u64,
    decided: Rule,
}

const UNDECIDED: u16 = 0;
const ALLOWED: u16 = 1;
const DENIED: u16 = 2;

impl Deciding {
    /// `None` when the protection does not cover this port: the object is
    /// not protected and the caller is not decided on.
    #[inline(always)]
    pub fn new(protection: Found, now: u64, port: u16) -> Option<Deciding> {
        if !applies(&protection.rule, port) {
            return None;
        }
        Some(Deciding {
            protection: protection.rule,
            protected_at: protection.at,
            port,
            state: UNDECIDED,
            now,
            decided_subject: 0,
            decided: protection.rule,
        })
    }

    /// Considers one subject's most specific rule. Returns true once the
    /// decision is final (an explicit deny for any subject wins).
    #[inline(always)]
    pub fn consider(&mut self, subject: u64, found: Option<Found>) -> bool {
        let Some(found) = found else {
            return false;
        };
        let rule = found.rule;
        if subject == 0 || !applies(&rule, self.port) {
            return false;
        }
        if rule.effect != Effect::Allow as u32 {
            self.state = DENIED;
            self.decided_subject = subject;
            self.decided = rule;
            return true;
        }
        // An allow counts only until its deadline, on the boot clock.
        if self.state == UNDECIDED && self.now < rule.expires_ns {
            self.state = ALLOWED;
            self.decided_subject = subject;
            self.decided = rule;
        }
        false
    }

    /// The verdict: allowed only by an unexpired allow and no deny;
    /// nothing at all is a deny by the protection.
    #[inline(always)]
    pub fn verdict(&self) -> Verdict {
        let allow = self.state == ALLOWED;
        Verdict {
            allow,
            rule_id: self.decided.rule_id,
            by_grant: allow && self.decided.flags & RULE_FROM_GRANT != 0,
            decided_subject: self.decided_subject,
            decided: self.decided,
            protection: self.protection,
            protected_at: self.protected_at,
        }
    }
}

/// `None` when the object is not protected (the caller is not decided on).
/// Otherwise the caller's most specific rule per subject, then per
/// subject's class, decides: an explicit deny for any of them wins, an allow counts only until its
/// deadline on the boot clock, and nothing at all is a deny.
///
/// See [`MostSpecific`] for where rules come from.
#[inline(always)]
pub fn decide(
    who: &Subjects,
    now: u64,
    port: u16,
    rules: &mut impl MostSpecific,
    classes: &mut impl Classes,
) -> Option<Verdict> {
    let protection = rules.most_specific(subject::PROTECTED)?;
    let mut d = Deciding::new(protection, now, port)?;
    let rows = if classes.in_use() {
        DECISION_ROWS
    } else {
        SUBJECT_SLOTS
    };
    let mut i = 0;
    while i < rows {
        let subject = who.row(i, classes);
        i += 1;
        if subject != 0 && d.consider(subject, rules.most_specific(subject)) {
            break;
        }
    }
    Some(d.verdict())
}

/// The rule id a deny carries when the walk could not see the whole route
/// to the root (too deep, or too many nested objects).
pub const RULE_WALK_INCOMPLETE: u64 = u64::MAX;

/// What a walk's chain decides before any subject is looked at: `Err`
/// with a verdict when the walk was incomplete (fail closed), `Ok(None)`
/// when nothing on the route is an object.
#[inline(always)]
pub fn file_precheck(chain: &Chain) -> Result<Option<()>, Verdict> {
    if chain.complete == 0 {
        return Err(incomplete());
    }
    Ok(if chain.len == 0 { None } else { Some(()) })
}

/// A deny on every port, standing for `rule_id`.
#[inline(always)]
const fn deny_rule(rule_id: u64) -> Rule {
    Rule {
        effect: Effect::Deny as u32,
        flags: 0,
        expires_ns: 0,
        rule_id,
        port_first: 0,
        port_last: u16::MAX,
        _pad: 0,
    }
}

/// The deny for a walk that could not see the whole route to the root.
#[inline(always)]
fn incomplete() -> Verdict {
    let rule = deny_rule(RULE_WALK_INCOMPLETE);
    Verdict {
        allow: false,
        rule_id: RULE_WALK_INCOMPLETE,
        by_grant: false,
        decided_subject: 0,
        decided: rule,
        protection: rule,
        protected_at: 0,
    }
}

/// Most steps a [`FileDecision`] takes: for the protection and then each
/// subject slot and each one's class, one step per chain entry. A
/// decision takes only [`FileDecision::steps`] of them: its rows times
/// its chain's length.
pub const FILE_STEPS: u32 = ((1 + DECISION_ROWS) * MAX_CHAIN) as u32;

/// The file decision over a walk's chain, as small steps of one map lookup
/// each. User space runs them in a loop ([`decide_file`]); the eBPF
/// programs run the very same [`FileDecision::step_at`] from a `bpf_loop`
/// callback, which the verifier checks a few times instead of unrolling
/// every lookup.
///
/// Order: the protection (the deepest object with a protection entry),
/// then each subject's deepest object with an entry of its own, then the
/// same for each subject's class, as [`decide`] does for networks. Only
/// the caller's subjects are stepped through, and only as far as the
/// chain goes: a caller with one subject under one protected object
/// takes three steps (protection, subject, class), not [`FILE_STEPS`].
/// A class is looked up at the first step of its row, inside the step,
/// so the eBPF side checks that lookup once, not per subject.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct FileDecision {
    /// The walk's chain. The eBPF side walks straight into it (a per-CPU
    /// slot), so it is never copied.
    pub chain: Chain,
    /// [`subject::PROTECTED`], then the caller's non-zero subjects in slot
    /// order (see [`Subjects::slot`]); `rows` of them are used.
    slots: [u64; 1 + SUBJECT_SLOTS],
    rows: u32,
    op: u32,
    /// The current row already found its rule.
    found: u32,
    /// 1 once the protection is known, 2 if the object is unprotected.
    protected: u32,
    /// 1 when classes are in use: each subject's class gets a row.
    classed: u32,
    /// The subject the current row looks up (a subject, or its class; 0
    /// for a subject without a class).
    current: u64,
    deciding: Deciding,
}

const NOT_YET: u32 = 0;
const PROTECTED: u32 = 1;
const UNPROTECTED: u32 = 2;

impl FileDecision {
    #[inline(always)]
    pub fn new(chain: &Chain, who: &Subjects, op: Op, now: u64, classed: u32) -> FileDecision {
        let none = deny_rule(0);
        let mut d = FileDecision {
            chain: *chain,
            slots: [0; 1 + SUBJECT_SLOTS],
            rows: 0,
            op: 0,
            found: 0,
            protected: NOT_YET,
            classed: 0,
            current: 0,
            deciding: Deciding {
                protection: none,
                protected_at: 0,
                port: 0,
                state: UNDECIDED,
                now: 0,
                decided_subject: 0,
                decided: none,
            },
        };
        d.reset(who, op, now, classed);
        d
    }

    /// Starts a decision in place, over the chain already in `self.chain`,
    /// field by field: the eBPF side keeps it in a per-CPU slot, and
    /// building a whole value there would be a memcpy, which BPF runs (and
    /// the verifier walks) byte by byte.
    #[inline(always)]
    /// `classed` is 1 when classes are in use, else 0.
    pub fn reset(&mut self, who: &Subjects, op: Op, now: u64, classed: u32) {
        self.slots[0] = subject::PROTECTED;
        // Pack the non-zero subjects: a zero one considers nothing, so
        // skipping it changes no answer, only how many steps there are.
        let mut rows = 1usize;
        let mut i = 0;
        while i < SUBJECT_SLOTS {
            let subject = who.slot(i);
            if subject != 0
                && let Some(slot) = self.slots.get_mut(rows)
            {
                *slot = subject;
                rows += 1;
            }
            i += 1;
        }
        self.rows = rows as u32;
        self.classed = classed & 1;
        self.op = op as u32;
        self.found = 0;
        self.protected = NOT_YET;
        self.deciding.protected_at = 0;
        self.deciding.port = 0;
        self.deciding.state = UNDECIDED;
        self.deciding.now = now;
        self.deciding.decided_subject = 0;
    }

    /// How many steps this decision takes: a row (the protection, then each
    /// subject, then each subject's class) per object of the chain.
    #[inline(always)]
    pub fn steps(&self) -> u32 {
        // 2 × rows − 1 with classes, else rows: arithmetic, not a branch.
        ((self.rows << self.classed) - self.classed) * self.len()
    }

    /// The chain's length, as the steps count it (never past
    /// [`MAX_CHAIN`], which the walk does not fill beyond).
    #[inline(always)]
    fn len(&self) -> u32 {
        if (self.chain.len as usize) < MAX_CHAIN {
            self.chain.len
        } else {
            MAX_CHAIN as u32
        }
    }

    /// Where step `index` is: its row (protection, then subjects) and its
    /// position in the chain. The eBPF side bounds both on the registers it
    /// indexes with before [`FileDecision::step_at`].
    #[inline(always)]
    pub fn position(&self, index: u32) -> (usize, usize) {
        let len = self.len();
        if len == 0 {
            return (usize::MAX, usize::MAX);
        }
        ((index / len) as usize, (index % len) as usize)
    }

    /// Step `index`; true when the decision is final and the rest can be
    /// skipped.
    #[inline(always)]
    pub fn step(
        &mut self,
        index: u32,
        get: impl Fn(&FileKey) -> Option<Rule>,
        classes: &mut impl Classes,
    ) -> bool {
        let (row, at) = self.position(index);
        self.step_at(row, at, get, classes)
    }

    /// The step for `row` at chain position `at` (see [`Self::position`]).
    #[inline(always)]
    pub fn step_at(
        &mut self,
        row: usize,
        at: usize,
        get: impl Fn(&FileKey) -> Option<Rule>,
        classes: &mut impl Classes,
    ) -> bool {
        if row > DECISION_ROWS || at >= MAX_CHAIN {
            return true;
        }
        if at == 0 {
            self.found = 0;
            if row == 1 && self.protected != PROTECTED {
                // No object on the route has a protection entry.
                self.protected = UNPROTECTED;
                return true;
            }
            let subjects = self.rows as usize - 1;
            self.current = if row <= subjects {
                self.slots.get(row).copied().unwrap_or(0)
            } else {
                // A class row: the class of the subject `subjects` rows up.
                match self.slots.get(row - subjects).copied().unwrap_or(0) {
                    0 => 0,
                    s => classes.class_of(s),
                }
            };
        }
        if self.found != 0 || at as u32 >= self.chain.len {
            return false;
        }
        let subject = self.current;
        if row != 0 && subject == 0 {
            return false; // the protection's subject is 0; no other row's is
        }
        let key = FileKey {
            subject,
            op: self.op,
            object: self.chain.ids.get(at).copied().unwrap_or(0),
        };
        let Some(rule) = get(&key) else {
            return false;
        };
        self.found = 1;
        let found = Found {
            rule,
            at: at as u32,
        };
        if row == 0 {
            self.protected = PROTECTED;
            self.deciding.protection = rule;
            self.deciding.protected_at = found.at;
            self.deciding.decided = rule;
            return false;
        }
        self.deciding.consider(subject, Some(found))
    }

    /// `None` when nothing protects the object.
    #[inline(always)]
    pub fn verdict(&self) -> Option<Verdict> {
        (self.protected == PROTECTED).then(|| self.deciding.verdict())
    }
}

/// The file decision over a walk's chain. `get` looks up one key in the
/// live file rule map.
#[inline(always)]
pub fn decide_file(
    chain: &Chain,
    who: &Subjects,
    op: Op,
    now: u64,
    get: impl Fn(&FileKey) -> Option<Rule>,
    classes: &mut impl Classes,
) -> Option<Verdict> {
    match file_precheck(chain) {
        Err(deny) => return Some(deny),
        Ok(None) => return None,
        Ok(Some(())) => {}
    }
    let mut d = FileDecision::new(chain, who, op, now, u32::from(classes.in_use()));
    let steps = d.steps();
    let mut i = 0;
    while i < steps {
        if d.step(i, &get, classes) {
            break;
        }
        i += 1;
    }
    d.verdict()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashMap;

    use super::*;
    use crate::{Effect, NEVER};

    /// The file decision as the README states it, written plainly: the
    /// deepest protected object, then each subject's deepest rule in slot
    /// order; any deny wins, an allow counts until its deadline.
    fn reference(
        chain: &Chain,
        who: &Subjects,
        op: Op,
        now: u64,
        rules: &HashMap<(u64, u32, u32), Rule>,
        classes: &HashMap<u64, u64>,
    ) -> Option<(bool, u64, u64, u32)> {
        if chain.complete == 0 {
            return Some((false, RULE_WALK_INCOMPLETE, 0, 0));
        }
        let ids = &chain.ids[..chain.len as usize];
        let deepest = |subject: u64| {
            ids.iter()
                .enumerate()
                .find_map(|(at, id)| rules.get(&(subject, op as u32, *id)).map(|r| (at, *r)))
        };
        let (protected_at, protection) = deepest(subject::PROTECTED)?;
        let mut decided = (false, protection.rule_id, 0u64);
        let slots = (0..SUBJECT_SLOTS).map(|i| who.slot(i));
        let rows: std::vec::Vec<u64> = slots
            .clone()
            .chain(slots.map(|s| classes.get(&s).copied().unwrap_or(0)))
            .collect();
        for s in rows {
            if s == 0 {
                continue;
            }
            let Some((_, rule)) = deepest(s) else {
                continue;
            };
            if rule.effect != Effect::Allow as u32 {
                return Some((false, rule.rule_id, s, protected_at as u32));
            }
            if !decided.0 && now < rule.expires_ns {
                decided = (true, rule.rule_id, s);
            }
        }
        Some((decided.0, decided.1, decided.2, protected_at as u32))
    }

    /// A small xorshift, so the cases repeat without a dependency.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn the_stepped_file_decision_is_the_plain_one_for_every_chain_and_subject_set() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let candidates = [
            subject::uid(1000),
            subject::uid(1001),
            subject::cgroup(7),
            subject::cgroup(8),
            subject::cgroup(9),
            subject::class(1),
            subject::class(2),
        ];
        // uid 1000 and cgroup 7 share a class; uid 1001 has its own;
        // the other cgroups have none.
        let classes: HashMap<u64, u64> = [
            (subject::uid(1000), subject::class(1)),
            (subject::cgroup(7), subject::class(1)),
            (subject::uid(1001), subject::class(2)),
        ]
        .into();
        let mut decided_by_rule = 0;
        let mut decided_by_class = 0;
        for case in 0..20_000u64 {
            let len = rng.below(MAX_CHAIN as u64 + 1) as usize;
            let mut chain = Chain {
                ids: [0; MAX_CHAIN],
                levels: [0; MAX_CHAIN],
                len: len as u32,
                complete: u32::from(rng.below(20) != 0),
            };
            for (at, id) in chain.ids.iter_mut().enumerate().take(len) {
                *id = 100 + at as u32;
            }
            // A caller's subjects are never classes themselves.
            let pick = |rng: &mut Rng| {
                if rng.below(3) == 0 {
                    0
                } else {
                    candidates[rng.below(candidates.len() as u64 - 2) as usize]
                }
            };
            let who = Subjects {
                uid: 1000,
                login_uid: LOGIN_UID_UNSET,
                cgroup: 7,
                by_uid: pick(&mut rng),
                by_login: pick(&mut rng),
                by_cgroup: [
                    pick(&mut rng),
                    pick(&mut rng),
                    pick(&mut rng),
                    pick(&mut rng),
                ],
            };
            let op = [Op::Read, Op::Write, Op::Exec][rng.below(3) as usize];
            let now = 1_000;
            let mut rules = HashMap::new();
            for n in 0..rng.below(12) {
                let subject = if rng.below(3) == 0 {
                    subject::PROTECTED
                } else {
                    candidates[rng.below(candidates.len() as u64) as usize]
                };
                let id = 100 + rng.below(MAX_CHAIN as u64) as u32;
                let effect = if rng.below(4) == 0 {
                    Effect::Deny
                } else {
                    Effect::Allow
                };
                let expires_ns = [NEVER, 500, 2_000][rng.below(3) as usize];
                rules.insert(
                    (subject, op as u32, id),
                    Rule {
                        effect: effect as u32,
                        flags: 0,
                        expires_ns,
                        rule_id: case * 100 + n + 1,
                        port_first: 0,
                        port_last: u16::MAX,
                        _pad: 0,
                    },
                );
            }
            let got = decide_file(
                &chain,
                &who,
                op,
                now,
                |k| rules.get(&(k.subject, k.op, k.object)).copied(),
                &mut |s| classes.get(&s).copied().unwrap_or(0),
            )
            .map(|v| (v.allow, v.rule_id, v.decided_subject, v.protected_at));
            let want = reference(&chain, &who, op, now, &rules, &classes);
            assert_eq!(
                got, want,
                "case {case}: chain {chain:?} who {who:?} rules {rules:?}"
            );
            if matches!(want, Some((_, _, s, _)) if s != 0) {
                decided_by_rule += 1;
            }
            if matches!(want, Some((_, _, s, _)) if subject::kind(s) == subject::KIND_CLASS) {
                decided_by_class += 1;
            }
        }
        // The cases reach real decisions, not only "unprotected", and
        // classes decide some of them.
        assert!(decided_by_rule > 1_000, "{decided_by_rule}");
        assert!(decided_by_class > 200, "{decided_by_class}");
    }

    #[test]
    fn a_decision_takes_a_step_per_subject_and_object_not_every_slot() {
        let mut chain = Chain {
            ids: [0; MAX_CHAIN],
            levels: [0; MAX_CHAIN],
            len: 1,
            complete: 1,
        };
        chain.ids[0] = 100;
        let who = Subjects {
            uid: 1000,
            login_uid: LOGIN_UID_UNSET,
            cgroup: 0,
            by_uid: subject::uid(1000),
            by_login: 0,
            by_cgroup: [0; MAX_CGROUP_SUBJECTS],
        };
        let d = FileDecision::new(&chain, &who, Op::Read, 0, 1);
        assert_eq!(d.steps(), 3, "protection, the uid, the uid's class");
        let d = FileDecision::new(&chain, &who, Op::Read, 0, 0);
        assert_eq!(d.steps(), 2, "no classes in use: no class row");
        chain.len = MAX_CHAIN as u32;
        let all = Subjects {
            by_login: subject::uid(1001),
            by_cgroup: [subject::cgroup(1); MAX_CGROUP_SUBJECTS],
            ..who
        };
        assert_eq!(
            FileDecision::new(&chain, &all, Op::Read, 0, 1).steps(),
            FILE_STEPS
        );
    }

    /// Where an unspecified destination goes, as Linux routes it; both
    /// forms agree on every IPv4 address.
    #[test]
    fn unspecified_destinations_go_where_linux_sends_them() {
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let bound = [10, 1, 2, 3];
        for (dest, bound_v4, want) in [
            ("::", [0; 4], "::1"),
            ("::", bound, "::1"),
            ("::ffff:0.0.0.0", [0; 4], "::ffff:127.0.0.1"),
            ("::ffff:0.0.0.0", bound, "::ffff:10.1.2.3"),
            ("::1", bound, "::1"),
            ("::ffff:0.0.0.5", bound, "::ffff:0.0.0.5"),
            ("::ffff:1:0", bound, "::ffff:1:0"),
            ("1::", bound, "1::"),
            ("::1:0:0:0", bound, "::1:0:0:0"),
            ("::fffe:0:0", bound, "::fffe:0:0"),
            ("2001:db8::", bound, "2001:db8::"),
        ] {
            assert_eq!(unspecified_dest(v6(dest), || bound_v4), v6(want), "{dest}");
        }
        for ip in [
            [0; 4],
            [127, 0, 0, 1],
            [10, 1, 2, 3],
            [0, 0, 0, 1],
            [1, 0, 0, 0],
        ] {
            for b in [[0; 4], bound] {
                assert_eq!(
                    unspecified_dest4(ip, || b),
                    unspecified_dest(v4_mapped(ip), || b),
                    "{ip:?} bound {b:?}"
                );
            }
        }
    }
}
