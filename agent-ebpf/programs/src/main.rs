//! ward's kernel programs.
//!
//! Every hook follows the same shape: is the caller managed (one cached
//! lookup for everyone else)? is the object protected? is there an
//! unexpired allow for this subject? Deny otherwise, and report it.
//!
//! Layout-dependent reads never use offsets baked in at build time: rustc
//! emits no BTF relocations, so user space reads them from the running
//! kernel's BTF and writes them into the read-only globals in [`file`]
//! before load.
#![no_std]
#![no_main]
// Inline BPF asm: the one instruction that keeps an index bounded for the
// verifier (see `dentry::bounded`).
#![feature(asm_experimental_arch)]

mod cgroup;
mod dentry;
mod events;
mod file;
mod guard;
mod held;
mod maps;
mod net;
mod probe;
mod steps;
mod subject;
mod teardown;
mod walk_cache;

/// A layout global (an offset user space set from the kernel's BTF).
#[inline(always)]
fn rodata(v: &u64) -> usize {
    // SAFETY: a read-only global; the verifier sees the loaded constant.
    unsafe { core::ptr::read_volatile(v) as usize }
}

/// Adds `delta` to the u64 at `p` in one atomic instruction (BPF has
/// atomic add but no compare-and-swap loop that core's atomics need).
///
/// # Safety
/// `p` is an aligned u64 in a map value that lives for the program.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, delta: i64) {
    // SAFETY: the caller's promise.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {d}",
            p = in(reg) p,
            d = in(reg) delta,
        );
    }
}

/// An LSM program's return: 0, or `-errno`. The errno goes through
/// `black_box` because LLVM otherwise turns `if allow { 0 } else { -1 }`
/// into `-(allow & 1)`, and the verifier loses the range of a negation
/// ("R0 has unknown scalar value").
#[inline(always)]
fn verdict(allow: bool, errno: i32) -> i32 {
    // As an i64: a spilled i32 comes back zero-extended, out of range too.
    if allow {
        0
    } else {
        core::hint::black_box(-i64::from(errno)) as i32
    }
}

/// LSM programs must carry a GPL-compatible licence or the kernel refuses them.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; there is no unwinding in BPF.
    loop {}
}
