//! Giving start-up memory back.
//!
//! Loading parses the kernel's BTF up to three times (aya's loader, LSM
//! attach, ward's field offsets): tens of MiB of small allocations, all
//! freed once the programs are in the kernel. glibc keeps freed heap pages
//! mapped, so without a trim wardd would sit at its start-up peak forever.
//!
//! The same holds for churn: each pushed grant leaves short-lived buffers
//! (protobuf, SQL, audit JSON) between its long-lived entries, and glibc's
//! per-thread arenas each keep their own free memory. Measured with 100,000
//! grants, the live heap was 40 MB while RSS was 146 MB; one arena per
//! thread pool and a trim after churn bring it to what is live.

use std::time::{Duration, Instant};

/// Caps malloc arenas. Call first thing in `main`, before any thread: wardd
/// is not allocation-bound, and every extra arena is memory kept twice.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt with a documented parameter, before threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the kernel. Cheap when there is nothing to
/// return; a no-op where the C library has no `malloc_trim`.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases pages that hold no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims after enough grant churn, at most once per `every`: the tick calls
/// [`Trimmer::changed`] per grant added or ended and [`Trimmer::tick`] each
/// round.
#[derive(Debug)]
pub struct Trimmer {
    changes: u64,
    last: Instant,
    every: Duration,
}

impl Trimmer {
    /// Churn below this is not worth a walk of the heap.
    const MIN_CHANGES: u64 = 256;

    pub fn new(every: Duration) -> Self {
        Trimmer {
            changes: 0,
            last: Instant::now(),
            every,
        }
    }

    pub fn changed(&mut self) {
        self.changes += 1;
    }

    /// Asks for a trim on the next [`Trimmer::tick`] that is allowed one,
    /// whatever the churn (after a large one-off, like a full recompile).
    pub fn request(&mut self) {
        self.changes = self.changes.max(Self::MIN_CHANGES);
    }

    /// Trims if there was churn and the last trim is `every` ago; returns
    /// whether it trimmed.
    pub fn tick(&mut self) -> bool {
        if self.changes < Self::MIN_CHANGES || self.last.elapsed() < self.every {
            return false;
        }
        trim();
        self.changes = 0;
        self.last = Instant::now();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_churn_and_not_more_often_than_asked() {
        let mut t = Trimmer::new(Duration::ZERO);
        assert!(!t.tick(), "no churn, no trim");
        for _ in 0..Trimmer::MIN_CHANGES {
            t.changed();
        }
        assert!(t.tick());
        assert!(!t.tick(), "the churn was consumed");
        let mut slow = Trimmer::new(Duration::from_secs(3600));
        for _ in 0..10_000 {
            slow.changed();
        }
        assert!(!slow.tick(), "too soon after the last");
    }
}
