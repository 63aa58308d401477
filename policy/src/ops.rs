//! The Cedar actions as the kernel's operations, and back: the one
//! conversion between the two vocabularies.

use ward_abi::Op;

use crate::{Action, Effect};

impl From<Action> for Op {
    fn from(a: Action) -> Op {
        match a {
            Action::Read => Op::Read,
            Action::Write => Op::Write,
            Action::Exec => Op::Exec,
            Action::Connect => Op::Connect,
        }
    }
}

impl From<Op> for Action {
    fn from(op: Op) -> Action {
        match op {
            Op::Read => Action::Read,
            Op::Write => Action::Write,
            Op::Exec => Action::Exec,
            Op::Connect => Action::Connect,
        }
    }
}

/// A Cedar `forbid` is a kernel deny; a permit, an allow.
impl From<Effect> for ward_abi::Effect {
    fn from(e: Effect) -> ward_abi::Effect {
        match e {
            Effect::Allow => ward_abi::Effect::Allow,
            Effect::Forbid => ward_abi::Effect::Deny,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_its_operation_by_name_and_back() {
        for a in Action::ALL {
            let op = Op::from(a);
            assert_eq!(Action::from(op), a);
            assert_eq!(op.name(), a.name());
        }
    }
}
