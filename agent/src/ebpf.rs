//! The kernel object, embedded at build time, and how to load it portably.

// The walk cache's readers are a seqlock that relies on x86's ordering of
// loads (the BPF JIT emits plain loads); another architecture needs
// acquire loads there first.
#[cfg(not(target_arch = "x86_64"))]
compile_error!("ward's kernel programs assume x86_64 load ordering (walk_cache.rs)");

use aya::{Ebpf, EbpfError, EbpfLoader};
use ward_abi::globals;

use crate::btf::KernelOffsets;

/// ward's eBPF object (`agent-ebpf/programs`), built by `cargo xtask build-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("WARD_EBPF_OBJ"));

/// A loader with the layout globals of the running kernel filled in.
pub fn loader(offsets: &KernelOffsets) -> EbpfLoader<'_> {
    let mut loader = EbpfLoader::new();
    loader
        .override_global(globals::F_PATH_OFF, &offsets.file_f_path, true)
        .override_global(globals::F_MODE_OFF, &offsets.file_f_mode, true)
        .override_global(globals::F_FLAGS_OFF, &offsets.file_f_flags, true)
        .override_global(globals::F_INODE_OFF, &offsets.file_f_inode, true)
        .override_global(globals::S_ROOT_OFF, &offsets.sb_s_root, true)
        .override_global(
            globals::F_PRIVATE_DATA_OFF,
            &offsets.file_private_data,
            true,
        )
        .override_global(globals::I_DENTRY_OFF, &offsets.inode_i_dentry, true)
        .override_global(globals::D_ALIAS_OFF, &offsets.dentry_d_alias, true)
        .override_global(globals::BPRM_FILE_OFF, &offsets.bprm_file, true)
        .override_global(globals::LOGINUID_OFF, &offsets.task_loginuid, true)
        .override_global(globals::PATH_DENTRY_OFF, &offsets.path_dentry, true)
        .override_global(globals::D_PARENT_OFF, &offsets.dentry_d_parent, true)
        .override_global(globals::D_INODE_OFF, &offsets.dentry_d_inode, true)
        .override_global(globals::D_SB_OFF, &offsets.dentry_d_sb, true)
        .override_global(globals::D_NAME_OFF, &offsets.dentry_d_name, true)
        .override_global(globals::I_INO_OFF, &offsets.inode_i_ino, true)
        .override_global(globals::S_DEV_OFF, &offsets.sb_s_dev, true)
        .override_global(globals::VM_FILE_OFF, &offsets.vma_vm_file, true)
        .override_global(globals::SOCKET_SK_OFF, &offsets.socket_sk, true)
        .override_global(globals::SOCKET_TYPE_OFF, &offsets.socket_type, true)
        .override_global(globals::MSG_NAME_OFF, &offsets.msghdr_msg_name, true)
        .override_global(globals::MSG_NAMELEN_OFF, &offsets.msghdr_msg_namelen, true)
        .override_global(globals::SK_RCV_SADDR_OFF, &offsets.sock_rcv_saddr, true)
        .override_global(globals::UNIX_PATH_OFF, &offsets.unix_sock_path, true)
        .override_global(globals::CGROUP_KN_OFF, &offsets.cgroup_kn, true)
        .override_global(globals::KN_ID_OFF, &offsets.kernfs_node_id, true)
        .override_global(globals::CGROUP_ROOT_OFF, &offsets.cgroup_root, true)
        .override_global(
            globals::HIERARCHY_ID_OFF,
            &offsets.cgroup_root_hierarchy_id,
            true,
        )
        .override_global(globals::TASK_TGID_OFF, &offsets.task_tgid, true)
        .override_global(globals::TASK_PID_OFF, &offsets.task_pid, true)
        .override_global(globals::S_MAGIC_OFF, &offsets.sb_s_magic, true)
        .override_global(globals::MAP_NAME_OFF, &offsets.bpf_map_name, true)
        .override_global(globals::PROG_AUX_OFF, &offsets.bpf_prog_aux, true)
        .override_global(globals::PROG_AUX_NAME_OFF, &offsets.bpf_prog_aux_name, true)
        .override_global(globals::MNT_SB_OFF, &offsets.vfsmount_mnt_sb, true)
        .override_global(globals::SKC_DADDR_OFF, &offsets.skc_daddr, true)
        .override_global(globals::SKC_DPORT_OFF, &offsets.skc_dport, true)
        .override_global(globals::SKC_NUM_OFF, &offsets.skc_num, true)
        .override_global(globals::SKC_FAMILY_OFF, &offsets.skc_family, true)
        .override_global(globals::SKC_V6_DADDR_OFF, &offsets.skc_v6_daddr, true)
        .override_global(
            globals::SKC_V6_RCV_SADDR_OFF,
            &offsets.skc_v6_rcv_saddr,
            true,
        )
        .override_global(globals::SKC_COOKIE_OFF, &offsets.skc_cookie, true)
        .override_global(globals::SK_PROTOCOL_OFF, &offsets.sk_protocol, true)
        .override_global(globals::SKC_NET_OFF, &offsets.skc_net, true)
        .override_global(globals::NET_NS_INUM_OFF, &offsets.net_ns_inum, true);
    loader
}

/// Parses the object and creates its maps, unpinned. Programs are loaded
/// one by one by the caller.
pub fn load(offsets: &KernelOffsets) -> Result<Ebpf, EbpfError> {
    loader(offsets).load(OBJECT)
}
