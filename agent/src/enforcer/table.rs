//! The decision table: what user space wants the kernel to decide, and how
//! entries for the same key combine.

use std::{collections::BTreeMap, fmt, time::Duration};

use ward_abi::{
    Effect, KEY_HEADER_BITS, MAX_PORT_RANGES, NEVER, NetRule, Op, RULE_FROM_GRANT, Rule,
    decision::outranks, subject,
};

use super::{NetPattern, clock, path::PathPattern};

/// Whom an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// Marks the object protected for every managed subject.
    Protected,
    Uid(u32),
    /// A managed workload cgroup, by id.
    Cgroup(u64),
    /// A principal class: Cedar policy's entries are keyed by class, and
    /// [`Classes`] takes uids and workloads to theirs.
    Class(u32),
}

impl Subject {
    pub fn raw(self) -> u64 {
        match self {
            Subject::Protected => subject::PROTECTED,
            Subject::Uid(uid) => subject::uid(uid),
            Subject::Cgroup(id) => subject::cgroup(id),
            Subject::Class(id) => subject::class(id),
        }
    }

    /// Whether a class may be given to this subject: a uid or a workload.
    pub fn classable(self) -> bool {
        matches!(self, Subject::Uid(_) | Subject::Cgroup(_))
    }
}

/// Class memberships: a uid or workload -> the principal class whose
/// [`Subject::Class`] entries apply to it.
pub type Classes = BTreeMap<Subject, u32>;

/// What an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Object {
    Path(PathPattern),
    Net(NetPattern),
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Path(p) => p.fmt(f),
            Object::Net(n) => n.fmt(f),
        }
    }
}

/// When an allow stops applying, on the kernel's boot clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expiry {
    /// Boot-clock nanoseconds (`CLOCK_BOOTTIME`).
    AtBootNs(u64),
    Never,
}

impl Expiry {
    /// `d` from now.
    pub fn after(d: Duration) -> Expiry {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1);
        Expiry::AtBootNs(clock::boot_ns().saturating_add(ns).min(NEVER - 1))
    }

    fn ns(self) -> u64 {
        match self {
            Expiry::AtBootNs(ns) => ns.min(NEVER - 1),
            Expiry::Never => NEVER,
        }
    }
}

/// One decision for one (subject, operation, object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub subject: Subject,
    pub op: Op,
    pub object: Object,
    pub effect: Effect,
    pub expires: Expiry,
    /// The rule or grant that produced it, for audit and explain.
    pub rule_id: u64,
    pub from_grant: bool,
}

/// Where an entry lands in the kernel: its map family and key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub subject: Subject,
    pub op: Op,
    pub object: ObjectKey,
}

/// The object part of a key; port ranges live in the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    Path(PathPattern),
    Net { addr: [u8; 16], prefix_bits: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error(
        "{object}: rules {rules:?} give {ranges} different port ranges for the same subject, \
         operation and network; the kernel holds at most {max} per network (protect the \
         network on every port, or split it)"
    )]
    TooManyPortRanges {
        object: String,
        ranges: usize,
        max: usize,
        rules: Vec<u64>,
    },
    #[error("operation {op:?} does not apply to {object}")]
    OpMismatch { op: Op, object: String },
    #[error("{subject:?} cannot be given a class: only uids and workloads are in classes")]
    NotClassable { subject: Subject },
}

impl Entry {
    pub fn slot(&self) -> Result<Slot, TableError> {
        let object = match (&self.object, self.op) {
            (Object::Path(p), Op::Read | Op::Write | Op::Exec) => ObjectKey::Path(p.clone()),
            (Object::Net(n), Op::Connect) => ObjectKey::Net {
                addr: n.mapped_addr(),
                prefix_bits: n.mapped_prefix_bits(),
            },
            _ => {
                return Err(TableError::OpMismatch {
                    op: self.op,
                    object: self.object.to_string(),
                });
            }
        };
        Ok(Slot {
            subject: self.subject,
            op: self.op,
            object,
        })
    }

    fn ports(&self) -> (u16, u16) {
        match &self.object {
            Object::Net(n) => n.ports,
            Object::Path(_) => (0, u16::MAX),
        }
    }
}

/// What one slot holds in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    File(Rule),
    Net(NetRule),
}

/// Combines the entries that share a slot into the one kernel value.
/// Entries with the same port range (every file entry has the one range)
/// become one rule: a deny beats any allow (a forbid is a guardrail);
/// among allows, the one that lasts longest wins. A network slot keeps up
/// to [`MAX_PORT_RANGES`] distinct ranges, which the kernel decides the
/// same way per port ([`NetRule::pick`]).
pub fn combine<'a>(
    slot: &Slot,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<Option<Value>, TableError> {
    let mut by_ports: BTreeMap<(u16, u16), (&Entry, Vec<u64>)> = BTreeMap::new();
    for e in entries {
        match by_ports.entry(e.ports()) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((e, vec![e.rule_id]));
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let (best, ids) = o.get_mut();
                ids.push(e.rule_id);
                if outranks(&rule_of(e), &rule_of(best)) {
                    *best = e;
                }
            }
        }
    }
    match &slot.object {
        ObjectKey::Path(_) => Ok(by_ports
            .values()
            .next()
            .map(|(e, _)| Value::File(rule_of(e)))),
        ObjectKey::Net { .. } if by_ports.is_empty() => Ok(None),
        ObjectKey::Net { prefix_bits, .. } => {
            if by_ports.len() > MAX_PORT_RANGES {
                let (first, _) = by_ports.values().next().expect("not empty");
                return Err(TableError::TooManyPortRanges {
                    object: first.object.to_string(),
                    ranges: by_ports.len(),
                    max: MAX_PORT_RANGES,
                    rules: by_ports.values().flat_map(|(_, ids)| ids.clone()).collect(),
                });
            }
            let mut value = NetRule {
                key_bits: KEY_HEADER_BITS + prefix_bits,
                len: by_ports.len() as u32,
                ranges: [rule_of_nothing(); MAX_PORT_RANGES],
            };
            for (slot, (e, _)) in value.ranges.iter_mut().zip(by_ports.values()) {
                *slot = rule_of(e);
            }
            Ok(Some(Value::Net(value)))
        }
    }
}

/// The kernel rule an entry alone would be.
fn rule_of(e: &Entry) -> Rule {
    let (port_first, port_last) = e.ports();
    Rule {
        effect: e.effect as u32,
        flags: if e.from_grant { RULE_FROM_GRANT } else { 0 },
        expires_ns: e.expires.ns(),
        rule_id: e.rule_id,
        port_first,
        port_last,
        _pad: 0,
    }
}

/// An unused range of a [`NetRule`] (past its `len`).
const fn rule_of_nothing() -> Rule {
    Rule {
        effect: Effect::Deny as u32,
        flags: 0,
        expires_ns: 0,
        rule_id: 0,
        port_first: 0,
        port_last: 0,
        _pad: 0,
    }
}

/// Entries grouped by slot.
pub type Index = BTreeMap<Slot, Vec<Entry>>;

/// The boot-clock deadlines of connect entries, counted: when a held
/// connection may have to be reset. The next one after a time is found in
/// O(log n), however many grants there are.
#[derive(Debug, Default, Clone)]
pub struct ConnectDeadlines(BTreeMap<u64, usize>);

impl ConnectDeadlines {
    fn of(e: &Entry) -> Option<u64> {
        match e.expires {
            Expiry::AtBootNs(ns) if e.op == Op::Connect => Some(ns),
            _ => None,
        }
    }

    pub fn add(&mut self, e: &Entry) {
        if let Some(ns) = Self::of(e) {
            *self.0.entry(ns).or_default() += 1;
        }
    }

    pub fn remove(&mut self, e: &Entry) {
        if let Some(ns) = Self::of(e)
            && let std::collections::btree_map::Entry::Occupied(mut n) = self.0.entry(ns)
        {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }

    /// The first deadline later than `after`.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.0
            .range((Excluded(after), Unbounded))
            .next()
            .map(|(ns, _)| *ns)
    }
}

/// The table's base entries (every entry not from a grant: protections
/// and the Cedar policy) by slot, with their connect deadlines.
#[derive(Debug, Default, Clone)]
pub struct BaseRules {
    by_slot: Index,
    deadlines: ConnectDeadlines,
}

impl BaseRules {
    pub fn new(by_slot: Index) -> BaseRules {
        let mut deadlines = ConnectDeadlines::default();
        by_slot.values().flatten().for_each(|e| deadlines.add(e));
        BaseRules { by_slot, deadlines }
    }

    pub fn at(&self, slot: &Slot) -> impl Iterator<Item = &Entry> {
        self.by_slot.get(slot).into_iter().flatten()
    }

    pub fn push(&mut self, slot: Slot, e: Entry) {
        self.deadlines.add(&e);
        self.by_slot.entry(slot).or_default().push(e);
    }

    /// Removes one entry equal to `e` from `slot`, if there is one.
    pub fn remove(&mut self, slot: &Slot, e: &Entry) -> Option<Entry> {
        let entries = self.by_slot.get_mut(slot)?;
        let removed = entries.remove(entries.iter().position(|x| x == e)?);
        if entries.is_empty() {
            self.by_slot.remove(slot);
        }
        self.deadlines.remove(&removed);
        Some(removed)
    }

    pub fn next_connect_deadline(&self, after: u64) -> Option<u64> {
        self.deadlines.next_after(after)
    }
}

/// Grants by id, with an index of which grants touch each slot, so that
/// syncing a slot costs the grants on it, not every grant there is.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    by_id: BTreeMap<u64, Vec<Entry>>,
    /// Sorted ids per slot. Nearly every slot holds one grant, and a Vec of
    /// one is a fifth of the memory of a one-element BTreeSet.
    by_slot: BTreeMap<Slot, Vec<u64>>,
    deadlines: ConnectDeadlines,
}

impl Grants {
    pub fn from_map(by_id: BTreeMap<u64, Vec<Entry>>) -> Grants {
        let mut g = Grants::default();
        for (id, entries) in by_id {
            g.insert(id, entries);
        }
        g
    }

    pub fn get(&self, id: &u64) -> Option<&Vec<Entry>> {
        self.by_id.get(id)
    }

    /// Entries whose slot cannot be computed are kept but not indexed;
    /// callers check slots before inserting.
    pub fn insert(&mut self, id: u64, entries: Vec<Entry>) -> Option<Vec<Entry>> {
        let old = self.remove(&id);
        for e in &entries {
            self.deadlines.add(e);
            if let Ok(slot) = e.slot() {
                let ids = self.by_slot.entry(slot).or_default();
                if let Err(at) = ids.binary_search(&id) {
                    ids.insert(at, id);
                }
            }
        }
        self.by_id.insert(id, entries);
        old
    }

    pub fn remove(&mut self, id: &u64) -> Option<Vec<Entry>> {
        let old = self.by_id.remove(id)?;
        for e in &old {
            self.deadlines.remove(e);
            if let Ok(slot) = e.slot()
                && let Some(ids) = self.by_slot.get_mut(&slot)
            {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    self.by_slot.remove(&slot);
                }
            }
        }
        Some(old)
    }

    pub fn values(&self) -> impl Iterator<Item = &Vec<Entry>> {
        self.by_id.values()
    }

    pub fn next_connect_deadline(&self, after: u64) -> Option<u64> {
        self.deadlines.next_after(after)
    }

    /// The grant entries that land in `slot`.
    pub fn at<'a>(&'a self, slot: &'a Slot) -> impl Iterator<Item = &'a Entry> + 'a {
        self.by_slot
            .get(slot)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
            .flatten()
            .filter(move |e| e.slot().is_ok_and(|s| s == *slot))
    }
}

pub fn index<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Result<Index, TableError> {
    let mut idx = Index::new();
    for e in entries {
        idx.entry(e.slot()?).or_default().push(e.clone());
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(effect: Effect, expires: Expiry, id: u64) -> Entry {
        Entry {
            subject: Subject::Uid(1000),
            op: Op::Read,
            object: Object::Path(PathPattern::parse("/srv/prod/").unwrap()),
            effect,
            expires,
            rule_id: id,
            from_grant: id > 100,
        }
    }

    fn file_rule(es: &[Entry]) -> Option<Rule> {
        match combine(&es[0].slot().unwrap(), es).unwrap() {
            Some(Value::File(r)) => Some(r),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deny_beats_every_allow() {
        let es = [
            entry(Effect::Allow, Expiry::Never, 1),
            entry(Effect::Deny, Expiry::Never, 2),
            entry(Effect::Allow, Expiry::AtBootNs(5), 101),
        ];
        let rule = file_rule(&es).unwrap();
        assert_eq!(rule.effect, Effect::Deny as u32);
        assert_eq!(rule.rule_id, 2);
    }

    #[test]
    fn longest_allow_wins_and_keeps_its_origin() {
        let es = [
            entry(Effect::Allow, Expiry::AtBootNs(5), 101),
            entry(Effect::Allow, Expiry::AtBootNs(9), 102),
        ];
        let rule = file_rule(&es).unwrap();
        assert_eq!((rule.rule_id, rule.expires_ns), (102, 9));
        assert_eq!(rule.flags, RULE_FROM_GRANT);
        let slot = es[0].slot().unwrap();
        assert_eq!(combine(&slot, &[]).unwrap(), None);
    }

    fn net(ports: &str, effect: Effect, expires: Expiry, id: u64) -> Entry {
        Entry {
            subject: Subject::Uid(1000),
            op: Op::Connect,
            object: Object::Net(NetPattern::parse(&format!("10.0.0.0/8:{ports}")).unwrap()),
            effect,
            expires,
            rule_id: id,
            from_grant: id > 100,
        }
    }

    fn net_value(es: &[Entry]) -> Result<NetRule, TableError> {
        match combine(&es[0].slot()?, es)? {
            Some(Value::Net(v)) => Ok(v),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn port_ranges_on_one_network_are_kept_apart_and_decided_per_port() {
        let v = net_value(&[
            net("5432", Effect::Deny, Expiry::Never, 1),
            net("6379", Effect::Deny, Expiry::Never, 2),
            net("5432", Effect::Allow, Expiry::AtBootNs(50), 101),
            net("*", Effect::Allow, Expiry::AtBootNs(90), 102),
            net("6000-7000", Effect::Allow, Expiry::AtBootNs(70), 103),
        ])
        .unwrap();
        assert_eq!(v.len, 4, "5432, 6379, 6000-7000 and every port");
        assert_eq!(v.key_bits, KEY_HEADER_BITS + 96 + 8, "a /8, mapped");
        let at = |port| v.ranges.get(v.covering(port)).map(|r| r.rule_id);
        assert_eq!(at(5432), Some(1), "a deny on the port beats every allow");
        assert_eq!(at(6379), Some(2));
        assert_eq!(at(6500), Some(102), "the later deadline of two allows");
        assert_eq!(at(22), Some(102));
        let only = net_value(&[net("5432", Effect::Deny, Expiry::Never, 1)]).unwrap();
        assert_eq!(
            only.covering(22),
            MAX_PORT_RANGES,
            "no range covers 22: the next prefix decides"
        );
    }

    #[test]
    fn more_port_ranges_than_the_kernel_holds_are_refused_by_name() {
        let es: Vec<Entry> = (0..=MAX_PORT_RANGES as u16)
            .map(|i| {
                net(
                    &(1000 + i).to_string(),
                    Effect::Deny,
                    Expiry::Never,
                    i as u64 + 1,
                )
            })
            .collect();
        let err = net_value(&es).unwrap_err();
        assert!(
            matches!(&err, TableError::TooManyPortRanges { ranges: 5, max: 4, rules, .. } if rules.len() == 5),
            "{err}"
        );
        assert!(err.to_string().starts_with("10.0.0.0/8:"), "{err}");
        assert!(net_value(&es[..MAX_PORT_RANGES]).is_ok());
    }

    #[test]
    fn op_must_fit_the_object() {
        let mut e = entry(Effect::Allow, Expiry::Never, 1);
        e.op = Op::Connect;
        assert!(matches!(e.slot(), Err(TableError::OpMismatch { .. })));
    }

    #[test]
    fn the_next_connect_deadline_follows_grants_and_policy_edits() {
        let connect = |ns: u64, id| Entry {
            subject: Subject::Uid(1000),
            op: Op::Connect,
            object: Object::Net(NetPattern::parse("10.0.0.0/8:443").unwrap()),
            effect: Effect::Allow,
            expires: Expiry::AtBootNs(ns),
            rule_id: id,
            from_grant: true,
        };
        let mut g = Grants::default();
        g.insert(1, vec![connect(300, 1), connect(100, 1)]);
        g.insert(2, vec![connect(100, 2)]);
        // A file read's deadline is not a connection's.
        g.insert(3, vec![entry(Effect::Allow, Expiry::AtBootNs(50), 3)]);
        assert_eq!(g.next_connect_deadline(0), Some(100));
        assert_eq!(g.next_connect_deadline(100), Some(300), "strictly after");
        g.remove(&2);
        assert_eq!(
            g.next_connect_deadline(0),
            Some(100),
            "grant 1 still ends at 100"
        );
        g.insert(1, vec![connect(500, 1)]);
        assert_eq!(g.next_connect_deadline(0), Some(500), "replaced whole");
        g.remove(&1);
        assert_eq!(g.next_connect_deadline(0), None);

        let e = connect(200, 7);
        let slot = e.slot().unwrap();
        let mut p = BaseRules::new(index([&e]).unwrap());
        assert_eq!(p.next_connect_deadline(0), Some(200));
        p.push(slot.clone(), connect(150, 8));
        assert_eq!(p.next_connect_deadline(0), Some(150));
        assert!(p.remove(&slot, &connect(150, 8)).is_some());
        assert!(
            p.remove(&slot, &connect(150, 8)).is_none(),
            "only what is there"
        );
        assert_eq!(p.next_connect_deadline(0), Some(200));
        assert_eq!(p.next_connect_deadline(u64::MAX), None);
    }
}
