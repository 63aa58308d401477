//! The Cedar policy as the kernel holds it: entries keyed by principal
//! class, and the class of each uid and workload. Kept here so that an
//! incremental recompile becomes the smallest kernel edit: a principal
//! that changes class is one membership update, and a class's entries are
//! written when its first member joins and removed when its last leaves.

use std::collections::HashMap;

use crate::enforcer::{Classes, Entry, Subject};

/// What the kernel holds of the classes.
#[derive(Debug, Default)]
pub struct HeldClasses {
    /// Who is in which class.
    members: Classes,
    /// Members per class; a class is held while it has one.
    counts: HashMap<u32, usize>,
    /// Each held class's entries, exactly as written.
    entries: HashMap<u32, Vec<Entry>>,
}

impl HeldClasses {
    pub fn members(&self) -> &Classes {
        &self.members
    }

    pub fn class_of(&self, subject: Subject) -> Option<u32> {
        self.members.get(&subject).copied()
    }

    /// Whether the kernel holds this class's entries.
    pub fn holds(&self, class: u32) -> bool {
        self.entries.contains_key(&class)
    }

    /// Records the entries written for a class.
    pub fn hold(&mut self, class: u32, entries: Vec<Entry>) {
        self.entries.insert(class, entries);
    }

    /// Puts `subject` in `class` (or in none). Returns the entries of the
    /// class it left if that class is now empty: they are to be removed.
    pub fn set(&mut self, subject: Subject, class: Option<u32>) -> Vec<Entry> {
        let from = match class {
            Some(c) => {
                *self.counts.entry(c).or_default() += 1;
                self.members.insert(subject, c)
            }
            None => self.members.remove(&subject),
        };
        let Some(f) = from else {
            return Vec::new();
        };
        let n = self.counts.entry(f).or_default();
        *n = n.saturating_sub(1);
        if *n > 0 {
            return Vec::new();
        }
        self.counts.remove(&f);
        self.entries.remove(&f).unwrap_or_default()
    }

    /// Classes with members, in order.
    pub fn classes(&self) -> Vec<u32> {
        let mut c: Vec<u32> = self.counts.keys().copied().collect();
        c.sort_unstable();
        c
    }

    /// Replaces one entry of a held class (a row change): returns whether
    /// the class is held, so the change is the kernel's to make.
    pub fn edit(&mut self, class: u32, old: Option<&Entry>, new: Option<&Entry>) -> bool {
        let Some(list) = self.entries.get_mut(&class) else {
            return false;
        };
        if let Some(o) = old
            && let Some(i) = list.iter().position(|e| e == o)
        {
            list.swap_remove(i);
        }
        if let Some(n) = new {
            list.push(n.clone());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforcer::{Expiry, Object, PathPattern};
    use ward_abi::{Effect, Op};

    fn entry(class: u32) -> Entry {
        Entry {
            subject: Subject::Class(class),
            op: Op::Read,
            object: Object::Path(PathPattern::parse("/srv/x/").unwrap()),
            effect: Effect::Allow,
            expires: Expiry::Never,
            rule_id: 1,
            from_grant: false,
        }
    }

    #[test]
    fn a_class_is_held_while_it_has_members_and_its_entries_go_with_the_last() {
        let mut h = HeldClasses::default();
        h.hold(1, vec![entry(1)]);
        assert!(h.set(Subject::Uid(1000), Some(1)).is_empty());
        assert!(h.set(Subject::Uid(1001), Some(1)).is_empty());
        // One leaves for class 2: class 1 keeps its other member.
        h.hold(2, vec![entry(2)]);
        assert!(h.set(Subject::Uid(1000), Some(2)).is_empty());
        assert_eq!(h.classes(), vec![1, 2]);
        // The last member of class 1 leaves: its entries are handed back.
        assert_eq!(h.set(Subject::Uid(1001), None), vec![entry(1)]);
        assert!(!h.holds(1));
        assert_eq!(h.classes(), vec![2]);
        assert_eq!(h.class_of(Subject::Uid(1000)), Some(2));
        // A row change of a class not held is not the kernel's.
        assert!(!h.edit(1, None, Some(&entry(1))));
        assert!(h.edit(2, Some(&entry(2)), None));
        assert_eq!(h.set(Subject::Uid(1000), None), Vec::<Entry>::new());
    }
}
