//! ward's kernel programs.
//!
//! Layout-dependent reads never use offsets baked in at build time: rustc
//! emits no BTF relocations, so user space reads them from the running
//! kernel's BTF and writes them into the read-only globals below before load.
#![no_std]
#![no_main]

mod file;
mod probe;

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
