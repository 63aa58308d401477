//! The kernel's boot clock, which expiries are measured on: it counts
//! suspend and cannot be set, so moving the wall clock extends nothing.

/// `CLOCK_BOOTTIME` now, in ns: what `bpf_ktime_get_boot_ns` returns.
pub fn boot_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is always available on Linux");
    (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64
}
