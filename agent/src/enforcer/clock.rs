//! The kernel's boot clock, which expiries are measured on: it counts
//! suspend and cannot be set, so moving the wall clock extends nothing.

/// `CLOCK_BOOTTIME` now, in ns: what `bpf_ktime_get_boot_ns` returns.
pub fn boot_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is always available on Linux");
    (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The wall clock minus the boot clock, in ns, measured so that a
/// preemption between the two reads cannot skew it: each try brackets one
/// boot-clock read between two wall-clock reads, and the tightest bracket
/// wins (its error is at most half its width, normally tens of ns). A
/// single unbracketed pair under load was seen off by 1.5 ms, and an
/// expiry converted with it ended that much late.
pub fn wall_minus_boot_ns() -> i128 {
    const TRIES: usize = 5;
    let mut best: Option<(i128, i128)> = None; // (width, offset)
    for _ in 0..TRIES {
        let w1 = wall_ns();
        let b = boot_ns() as i128;
        let w2 = wall_ns();
        let width = w2 - w1;
        if width < 0 {
            continue; // the wall clock stepped back inside the bracket
        }
        let offset = w1 + width / 2 - b;
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset));
        }
        if width < 2_000 {
            break; // as tight as it gets
        }
    }
    best.map_or(0, |(_, offset)| offset)
}

fn wall_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_stable_between_calls() {
        // Both clocks tick at the same rate: two estimates a moment apart
        // agree to well under a millisecond.
        let a = wall_minus_boot_ns();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = wall_minus_boot_ns();
        assert!((a - b).abs() < 200_000, "{a} vs {b}");
    }
}
