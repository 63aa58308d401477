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

mod dentry;
mod events;
mod file;
mod maps;
mod net;
mod probe;
mod steps;
mod subject;

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
