//! Test failpoints, set by `WARD_TEST_FAILPOINT`: a crash, an error or a
//! panic at a named step.

use super::*;

/// Tests: `WARD_TEST_FAILPOINT=NAME` makes this step fail with an error.
pub(super) fn failpoint_error(name: &'static str) -> Result<(), EngineError> {
    if std::env::var("WARD_TEST_FAILPOINT").is_ok_and(|v| v == name) {
        return Err(EngineError::Failpoint(name));
    }
    Ok(())
}

/// Tests: `WARD_TEST_FAILPOINT=panic-NAME` panics here, as a bug would.
pub fn failpoint_panic(name: &str) {
    if std::env::var("WARD_TEST_FAILPOINT").is_ok_and(|v| v.strip_prefix("panic-") == Some(name)) {
        panic!("test failpoint panic-{name}");
    }
}

/// Crash tests: `WARD_TEST_FAILPOINT=NAME` makes the agent SIGKILL itself
/// at the named point, between a store write and the kernel update.
pub(super) fn failpoint(name: &str) {
    if std::env::var("WARD_TEST_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::warn!(failpoint = name, "test failpoint: killing wardd");
        // SAFETY: raising a signal at ourselves has no preconditions.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}
