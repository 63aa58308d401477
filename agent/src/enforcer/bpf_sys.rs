//! The few bpf(2) commands ward makes itself, where aya 0.14 keeps them
//! private: links that can be pinned, and iterators over a map.

use std::io;

pub const BPF_OBJ_PIN: libc::c_long = 6;
pub const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_ITER_CREATE: libc::c_long = 33;
/// `enum bpf_attach_type`: an iterator's link.
pub const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr` is at most 128 bytes here; unused bytes must be zero.
pub type Attr = [u64; 16];

pub fn bpf(cmd: libc::c_long, attr: &Attr) -> io::Result<i32> {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}
