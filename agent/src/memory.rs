//! Giving start-up memory back.
//!
//! Loading parses the kernel's BTF up to three times (aya's loader, LSM
//! attach, ward's field offsets): tens of MiB of small allocations, all
//! freed once the programs are in the kernel. glibc keeps freed heap pages
//! mapped, so without a trim wardd would sit at its start-up peak forever.

/// Returns free heap pages to the kernel. Cheap when there is nothing to
/// return; a no-op where the C library has no `malloc_trim`.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases pages that hold no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
