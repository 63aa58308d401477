//! The compiler: Cedar decisions over every known principal, protected
//! resource and action, as a table the agent hands to the kernel.
//!
//! Principals (and resources) that agree on everything the policies read
//! of them form a class (see [`crate::footprint`]); each pair of classes
//! is evaluated once per action, and every member shares the result. An
//! attribute change moves one entity to another class, so an incremental
//! recompile evaluates at most one new row or column and reports only the
//! entries that changed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::SystemTime,
};

use crate::{
    Action,
    clock::{self, Clock, Env},
    directory::{Directory, EntityKey, Record},
    footprint::VarUse,
    policies::Policies,
};
use cedar_policy::{Authorizer, Context, Decision as CedarDecision, Entities, Entity, Request};

/// What a compiled entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    /// An explicit forbid: a guardrail no grant overrides.
    Forbid,
}

/// The decision for one (principal, action, resource), where one exists;
/// without one the resource's protection denies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    pub effect: Effect,
    /// The policy ids that decided it.
    pub reason: Vec<String>,
    /// For an allow from a time window: where the window closes.
    #[serde(skip)]
    pub until: Option<SystemTime>,
}

/// One compiled entry.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub principal: &'a EntityKey,
    pub action: Action,
    pub resource: &'a EntityKey,
    pub outcome: &'a Outcome,
}

/// An entry that differs after an incremental recompile.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub principal: EntityKey,
    pub action: Action,
    pub resource: EntityKey,
    pub old: Option<Arc<Outcome>>,
    pub new: Option<Arc<Outcome>>,
}

/// A principal that changed class (`None`: it is in none, i.e. it left
/// the directory or has just joined it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub principal: EntityKey,
    pub from: Option<u32>,
    pub to: Option<u32>,
}

/// An entry of one class's row that differs after an incremental
/// recompile (a resource moved to another resource class).
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub class: u32,
    pub action: Action,
    pub resource: EntityKey,
    pub old: Option<Arc<Outcome>>,
    pub new: Option<Arc<Outcome>>,
}

/// What an incremental recompile changed: per principal (`changes`, what
/// each person may now do), and as the kernel holds it, per class
/// (`moved` principals, and `rows` of classes that have members).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    pub changes: Vec<Change>,
    pub moved: Vec<Moved>,
    pub rows: Vec<RowChange>,
}

/// What a directory update did.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Everything was recompiled (class ids too): swap the whole table.
    Full,
    /// Only these entries changed.
    Delta(Delta),
}

/// Counters for `ward policy show` and the benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub principals: usize,
    pub resources: usize,
    pub principal_classes: usize,
    pub resource_classes: usize,
    /// Cedar evaluations since the last full compile.
    pub evaluations: u64,
    /// Evaluations where a policy raised an error (it then does not apply).
    pub evaluation_errors: u64,
    /// Decisions per principal: what everyone may do.
    pub decisions: usize,
    /// Decisions per class with members: what the kernel holds.
    pub class_decisions: usize,
}

type Row = Vec<(u32, Action, Arc<Outcome>)>;

/// Interned classes: a key string to a small id and a representative.
#[derive(Debug, Default)]
struct Classes {
    ids: HashMap<String, u32>,
    reps: Vec<Entity>,
}

impl Classes {
    fn intern(&mut self, key: String, rep: &Record) -> u32 {
        let next = self.reps.len() as u32;
        *self.ids.entry(key).or_insert_with(|| {
            self.reps.push(rep.cedar.clone());
            next
        })
    }
}

pub struct Compiler {
    policies: Policies,
    directory: Directory,
    env: Env,
    authorizer: Authorizer,
    time_dependent: BTreeSet<String>,
    time_forbid: bool,
    /// Contexts at the compile instant, then at each boundary.
    contexts: Vec<Context>,
    boundaries: Vec<SystemTime>,
    pclasses: Classes,
    rclasses: Classes,
    memo: HashMap<(u32, u32, Action), Option<Arc<Outcome>>>,
    principal_class: BTreeMap<EntityKey, u32>,
    members: HashMap<u32, BTreeSet<EntityKey>>,
    resources: Vec<EntityKey>,
    resource_index: HashMap<EntityKey, u32>,
    resource_class: Vec<u32>,
    rows: HashMap<u32, Arc<Row>>,
    stats: Stats,
}

/// Which of the footprint's facts an entity has: equal inputs, equal
/// decisions.
fn class_key(r: &Record, use_: &VarUse) -> String {
    let EntityKey { kind, id } = r.def.key();
    if use_.opaque {
        return format!("{kind}\u{0}id\u{0}{id}");
    }
    let mut key = kind.type_name().to_owned();
    for a in &use_.attrs {
        key.push('\u{0}');
        match r.def.attrs.get(a) {
            Some(v) => key.push_str(&v.to_string()),
            None => key.push('-'),
        }
    }
    key.push('\u{0}');
    let is = |(t, i): &(String, String)| t == kind.type_name() && *i == id;
    let within = |lit: &(String, String)| {
        is(lit)
            || r.ancestors
                .iter()
                .any(|a| a.kind.type_name() == lit.0 && a.id == lit.1)
    };
    for lit in &use_.eq {
        key.push(if is(lit) { '1' } else { '0' });
    }
    for lit in &use_.within {
        key.push(if within(lit) { '1' } else { '0' });
    }
    key
}

impl Compiler {
    /// Compiles everything at `clock.now`.
    pub fn new(policies: Policies, directory: Directory, env: Env, clock: &Clock) -> Compiler {
        let mut c = Compiler {
            policies,
            directory,
            env,
            authorizer: Authorizer::new(),
            time_dependent: BTreeSet::new(),
            time_forbid: false,
            contexts: Vec::new(),
            boundaries: Vec::new(),
            pclasses: Classes::default(),
            rclasses: Classes::default(),
            memo: HashMap::new(),
            principal_class: BTreeMap::new(),
            members: HashMap::new(),
            resources: Vec::new(),
            resource_index: HashMap::new(),
            resource_class: Vec::new(),
            rows: HashMap::new(),
            stats: Stats::default(),
        };
        c.recompile(clock);
        c
    }

    /// A full recompile, e.g. at a time boundary.
    pub fn recompile(&mut self, clock: &Clock) {
        self.time_dependent = self
            .policies
            .time_dependent()
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.time_forbid = self.policies.has_time_dependent_forbid();
        self.boundaries = clock::boundaries(&self.policies.footprint.time, clock);
        self.contexts = std::iter::once(clock.now)
            .chain(self.boundaries.iter().copied())
            .map(|t| self.env.context(clock.zone.local(t), None, None))
            .collect();
        self.pclasses = Classes::default();
        self.rclasses = Classes::default();
        self.memo.clear();
        self.principal_class.clear();
        self.members.clear();
        self.rows.clear();
        self.stats = Stats::default();
        self.resources = self.directory.resources().map(|r| r.def.key()).collect();
        self.resource_index = self
            .resources
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u32))
            .collect();
        let ruse = self.policies.footprint.resource.clone();
        self.resource_class = self
            .directory
            .resources()
            .map(|r| self.rclasses.intern(class_key(r, &ruse), r))
            .collect();
        let principals: Vec<EntityKey> = self.directory.principals().map(|r| r.def.key()).collect();
        for p in principals {
            self.place_principal(&p);
        }
        self.refresh_stats();
    }

    pub fn set_policies(&mut self, policies: Policies, clock: &Clock) {
        self.policies = policies;
        self.recompile(clock);
    }

    pub fn set_env(&mut self, env: Env, clock: &Clock) {
        self.env = env;
        self.recompile(clock);
    }

    /// Takes a new directory. Attribute and membership changes of users,
    /// workloads and resources recompile only what they affect; a resource
    /// added or removed recompiles everything.
    pub fn set_directory(&mut self, directory: Directory, clock: &Clock) -> Update {
        let changed = self.directory.changed(&directory);
        self.apply_directory(directory, &changed, clock).0
    }

    /// [`Compiler::set_directory`] with the changed keys already known;
    /// returns the previous directory so the caller decides when to free it.
    pub fn apply_directory(
        &mut self,
        directory: Directory,
        changed: &BTreeSet<EntityKey>,
        clock: &Clock,
    ) -> (Update, Directory) {
        let resources_moved = changed.iter().any(|k| {
            k.kind.is_resource() && (self.directory.get(k).is_none() || directory.get(k).is_none())
        });
        let previous = std::mem::replace(&mut self.directory, directory);
        if resources_moved {
            self.recompile(clock);
            return (Update::Full, previous);
        }
        let mut delta = Delta::default();
        for key in changed {
            if key.kind.is_principal() {
                self.principal_changed(key, &mut delta);
            } else if key.kind.is_resource() {
                self.resource_changed(key, &mut delta);
            }
        }
        self.refresh_stats();
        (Update::Delta(delta), previous)
    }

    /// The class a principal is in, if the directory lists it. Class ids
    /// hold until the next full compile ([`Update::Full`]).
    pub fn class_of(&self, principal: &EntityKey) -> Option<u32> {
        self.principal_class.get(principal).copied()
    }

    /// Every principal with its class.
    pub fn memberships(&self) -> impl Iterator<Item = (&EntityKey, u32)> {
        self.principal_class.iter().map(|(k, c)| (k, *c))
    }

    /// One class's entries: what each of its members may do. Empty for a
    /// class without members.
    pub fn class_row(&self, class: u32) -> impl Iterator<Item = (Action, &EntityKey, &Outcome)> {
        self.rows.get(&class).into_iter().flat_map(move |row| {
            row.iter()
                .map(move |(ri, action, o)| (*action, &self.resources[*ri as usize], o.as_ref()))
        })
    }

    /// The compiled entries.
    pub fn decisions(&self) -> impl Iterator<Item = Decision<'_>> {
        self.principal_class.iter().flat_map(move |(p, pc)| {
            self.rows.get(pc).into_iter().flat_map(move |row| {
                row.iter().map(move |(ri, action, o)| Decision {
                    principal: p,
                    action: *action,
                    resource: &self.resources[*ri as usize],
                    outcome: o,
                })
            })
        })
    }

    /// The entries of one principal.
    pub fn decisions_for(&self, principal: &EntityKey) -> Vec<Decision<'_>> {
        let Some((p, pc)) = self.principal_class.get_key_value(principal) else {
            return Vec::new();
        };
        self.rows
            .get(pc)
            .into_iter()
            .flat_map(|row| row.iter())
            .map(|(ri, action, o)| Decision {
                principal: p,
                action: *action,
                resource: &self.resources[*ri as usize],
                outcome: o,
            })
            .collect()
    }

    /// Every protected resource.
    pub fn resources(&self) -> &[EntityKey] {
        &self.resources
    }

    pub fn principals(&self) -> impl Iterator<Item = &EntityKey> {
        self.principal_class.keys()
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Where the table must be recompiled next: the first instant after
    /// the compile where what the policies read of the clock changes.
    pub fn next_boundary(&self) -> Option<SystemTime> {
        self.boundaries.first().copied()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// One request, evaluated now: for `request` eligibility and for
    /// checks on objects that are not in the table.
    pub(crate) fn authorize(
        &self,
        env: &Env,
        principal: &Record,
        action: &str,
        resource: &Record,
        operation: Option<&str>,
        clock: &Clock,
    ) -> cedar_policy::Response {
        self.authorize_for(env, principal, action, resource, operation, None, clock)
    }

    /// [`Compiler::authorize`] with `requester` (who asks, for `request`
    /// and `request_for`) in the context and among the entities.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn authorize_for(
        &self,
        env: &Env,
        principal: &Record,
        action: &str,
        resource: &Record,
        operation: Option<&str>,
        requester: Option<&Record>,
        clock: &Clock,
    ) -> cedar_policy::Response {
        let context = env.context(
            clock.zone.local(clock.now),
            operation,
            requester.map(|r| r.cedar.uid()),
        );
        let mut records = vec![principal.cedar.clone(), resource.cedar.clone()];
        if let Some(r) = requester
            && r.cedar.uid() != principal.cedar.uid()
        {
            records.push(r.cedar.clone());
        }
        let entities = Entities::from_entities(records, None).unwrap_or_else(|_| Entities::empty());
        let request = Request::new(
            principal.cedar.uid(),
            crate::action_uid(action),
            resource.cedar.uid(),
            context,
            None,
        )
        .expect("no schema given, so the request is not checked");
        self.authorizer
            .is_authorized(&request, &self.policies.set, &entities)
    }

    fn refresh_stats(&mut self) {
        self.stats.principals = self.principal_class.len();
        self.stats.resources = self.resources.len();
        self.stats.principal_classes = self.members.len();
        self.stats.resource_classes = self.resource_class.iter().collect::<BTreeSet<_>>().len();
        self.stats.decisions = self
            .principal_class
            .values()
            .map(|pc| self.rows.get(pc).map_or(0, |r| r.len()))
            .sum();
        self.stats.class_decisions = self
            .members
            .keys()
            .map(|pc| self.rows.get(pc).map_or(0, |r| r.len()))
            .sum();
    }

    /// Puts a principal in its class, computing the class's row if new.
    fn place_principal(&mut self, key: &EntityKey) {
        let Some(record) = self.directory.get(key) else {
            return;
        };
        let record = record.clone();
        let pc = self.pclasses.intern(
            class_key(&record, &self.policies.footprint.principal),
            &record,
        );
        if let Some(old) = self.principal_class.insert(key.clone(), pc)
            && old != pc
        {
            self.leave_class(key, old);
        }
        self.members.entry(pc).or_default().insert(key.clone());
        if !self.rows.contains_key(&pc) {
            let row = self.row(pc);
            self.rows.insert(pc, Arc::new(row));
        }
    }

    /// Drops a principal from a class's members; an empty class goes, and
    /// so does its row: rows are kept current only for classes with
    /// members, so one joining it again later gets a fresh row.
    fn leave_class(&mut self, key: &EntityKey, pc: u32) {
        if let Some(m) = self.members.get_mut(&pc) {
            m.remove(key);
            if m.is_empty() {
                self.members.remove(&pc);
                self.rows.remove(&pc);
            }
        }
    }

    fn row(&mut self, pc: u32) -> Row {
        let mut row = Vec::new();
        for ri in 0..self.resources.len() {
            let rc = self.resource_class[ri];
            let kind = self.resources[ri].kind;
            for &action in Action::for_kind(kind) {
                if let Some(o) = self.outcome(pc, rc, action) {
                    row.push((ri as u32, action, o));
                }
            }
        }
        row
    }

    fn outcome(&mut self, pc: u32, rc: u32, action: Action) -> Option<Arc<Outcome>> {
        if let Some(o) = self.memo.get(&(pc, rc, action)) {
            return o.clone();
        }
        let p = self.pclasses.reps[pc as usize].clone();
        let r = self.rclasses.reps[rc as usize].clone();
        let o = self.evaluate(&p, &r, action).map(Arc::new);
        self.memo.insert((pc, rc, action), o.clone());
        o
    }

    fn evaluate(&mut self, p: &Entity, r: &Entity, action: Action) -> Option<Outcome> {
        let Ok(entities) = Entities::from_entities([p.clone(), r.clone()], None) else {
            self.stats.evaluation_errors += 1;
            return None;
        };
        let at = |this: &mut Compiler, i: usize| {
            this.stats.evaluations += 1;
            let request = Request::new(
                p.uid(),
                action.uid(),
                r.uid(),
                this.contexts[i].clone(),
                None,
            )
            .expect("no schema given, so the request is not checked");
            let resp = this
                .authorizer
                .is_authorized(&request, &this.policies.set, &entities);
            if resp.diagnostics().errors().next().is_some() {
                this.stats.evaluation_errors += 1;
            }
            resp
        };
        let resp = at(self, 0);
        let mut reason: Vec<String> = resp
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        reason.sort();
        match resp.decision() {
            CedarDecision::Deny if reason.is_empty() => None,
            CedarDecision::Deny => Some(Outcome {
                effect: Effect::Forbid,
                reason,
                until: None,
            }),
            CedarDecision::Allow => {
                let timed =
                    self.time_forbid || reason.iter().any(|id| self.time_dependent.contains(id));
                let until = if timed {
                    (1..self.contexts.len())
                        .find(|&i| at(self, i).decision() != CedarDecision::Allow)
                        .map(|i| self.boundaries[i - 1])
                } else {
                    None
                };
                Some(Outcome {
                    effect: Effect::Allow,
                    reason,
                    until,
                })
            }
        }
    }

    fn principal_changed(&mut self, key: &EntityKey, delta: &mut Delta) {
        let from = self.principal_class.get(key).copied();
        let old_row = from
            .and_then(|pc| self.rows.get(&pc))
            .cloned()
            .unwrap_or_default();
        if self.directory.get(key).is_none() {
            if let Some(pc) = self.principal_class.remove(key) {
                self.leave_class(key, pc);
            }
        } else {
            self.place_principal(key);
        }
        let to = self.principal_class.get(key).copied();
        if from != to {
            delta.moved.push(Moved {
                principal: key.clone(),
                from,
                to,
            });
        }
        let new_row = to
            .and_then(|pc| self.rows.get(&pc))
            .cloned()
            .unwrap_or_default();
        if Arc::ptr_eq(&old_row, &new_row) {
            return;
        }
        let old: HashMap<(u32, Action), &Arc<Outcome>> =
            old_row.iter().map(|(r, a, o)| ((*r, *a), o)).collect();
        let new: HashMap<(u32, Action), &Arc<Outcome>> =
            new_row.iter().map(|(r, a, o)| ((*r, *a), o)).collect();
        let mut slots: BTreeSet<(u32, Action)> = old.keys().copied().collect();
        slots.extend(new.keys().copied());
        let changes = slots.into_iter().filter_map(|slot| {
            let (o, n) = (old.get(&slot).copied(), new.get(&slot).copied());
            (o != n).then(|| Change {
                principal: key.clone(),
                action: slot.1,
                resource: self.resources[slot.0 as usize].clone(),
                old: o.cloned(),
                new: n.cloned(),
            })
        });
        delta.changes.extend(changes);
    }

    fn resource_changed(&mut self, key: &EntityKey, delta: &mut Delta) {
        let (Some(&ri), Some(record)) = (self.resource_index.get(key), self.directory.get(key))
        else {
            return;
        };
        let record = record.clone();
        let rc = self.rclasses.intern(
            class_key(&record, &self.policies.footprint.resource),
            &record,
        );
        let old_rc = std::mem::replace(&mut self.resource_class[ri as usize], rc);
        if old_rc == rc {
            return;
        }
        let changes = &mut delta.changes;
        let classes: Vec<u32> = self.members.keys().copied().collect();
        for pc in classes {
            for &action in Action::for_kind(key.kind) {
                let old = self.outcome(pc, old_rc, action);
                let new = self.outcome(pc, rc, action);
                if old == new {
                    continue;
                }
                if let Some(row) = self.rows.get_mut(&pc) {
                    let row = Arc::make_mut(row);
                    row.retain(|(r, a, _)| !(*r == ri && *a == action));
                    if let Some(n) = &new {
                        let at = row.partition_point(|(r, a, _)| (*r, *a) < (ri, action));
                        row.insert(at, (ri, action, n.clone()));
                    }
                }
                for p in self.members.get(&pc).into_iter().flatten() {
                    changes.push(Change {
                        principal: p.clone(),
                        action,
                        resource: key.clone(),
                        old: old.clone(),
                        new: new.clone(),
                    });
                }
                delta.rows.push(RowChange {
                    class: pc,
                    action,
                    resource: key.clone(),
                    old,
                    new,
                });
            }
        }
    }
}
