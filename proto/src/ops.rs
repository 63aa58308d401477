//! The wire's operations as the kernel's, and back: the one conversion
//! between `ward.v1.Operation` and [`ward_abi::Op`].

use ward_abi::Op;

use crate::v1::Operation;

/// The operation a wire value names; `None` for `OPERATION_UNSPECIFIED`
/// and for values this build does not know.
pub fn op(raw: i32) -> Option<Op> {
    Operation::try_from(raw).ok()?.try_into().ok()
}

/// `OPERATION_UNSPECIFIED` names no operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("operation unspecified")]
pub struct Unspecified;

impl TryFrom<Operation> for Op {
    type Error = Unspecified;

    fn try_from(o: Operation) -> Result<Op, Unspecified> {
        match o {
            Operation::Read => Ok(Op::Read),
            Operation::Write => Ok(Op::Write),
            Operation::Exec => Ok(Op::Exec),
            Operation::Connect => Ok(Op::Connect),
            Operation::Unspecified => Err(Unspecified),
        }
    }
}

impl From<Op> for Operation {
    fn from(op: Op) -> Operation {
        match op {
            Op::Read => Operation::Read,
            Op::Write => Operation::Write,
            Op::Exec => Operation::Exec,
            Op::Connect => Operation::Connect,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_crosses_the_wire_and_back() {
        for o in Op::ALL {
            assert_eq!(op(Operation::from(o) as i32), Some(o));
        }
        assert_eq!(op(Operation::Unspecified as i32), None);
        assert_eq!(op(99), None);
    }
}
