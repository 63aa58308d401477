//! The kernel object, embedded at build time, and how to load it portably.

use aya::{Ebpf, EbpfError, EbpfLoader};
use ward_abi::globals;

use crate::btf::KernelOffsets;

/// ward's eBPF object (`agent-ebpf/programs`), built by `cargo xtask build-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("WARD_EBPF_OBJ"));

/// Parses the object and creates its maps, with the layout globals of the
/// running kernel filled in. Programs are loaded one by one by the caller.
pub fn load(offsets: &KernelOffsets) -> Result<Ebpf, EbpfError> {
    EbpfLoader::new()
        .override_global(globals::F_PATH_OFF, &offsets.file_f_path, true)
        .load(OBJECT)
}
