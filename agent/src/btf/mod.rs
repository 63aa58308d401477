//! Struct field offsets from the running kernel's BTF.
//!
//! rustc emits no CO-RE relocations, so the eBPF programs get every layout
//! they depend on from here, as read-only globals set before load.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use serde::Serialize;

mod reader;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source} (is CONFIG_DEBUG_INFO_BTF enabled?)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse kernel BTF: {0}")]
    Parse(String),
    #[error("kernel BTF has no type `struct {0}`")]
    MissingType(&'static str),
    #[error("kernel BTF has no field `{field}` in `struct {ty}`: {reason}")]
    MissingField {
        ty: &'static str,
        field: &'static str,
        reason: String,
    },
    #[error("`struct {ty}.{field}` is a bitfield; ward needs a byte offset")]
    Bitfield {
        ty: &'static str,
        field: &'static str,
    },
}

/// The offsets ward's programs need, on the kernel they will run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelOffsets {
    /// `offsetof(struct file, f_path)`.
    pub file_f_path: u64,
    /// `offsetof(struct file, f_mode)`.
    pub file_f_mode: u64,
    /// `offsetof(struct file, f_flags)`.
    pub file_f_flags: u64,
    /// `struct file.f_inode`, `struct super_block.s_root`: the walk cache.
    pub file_f_inode: u64,
    pub sb_s_root: u64,
    /// `struct file.private_data`, `struct inode.i_dentry`,
    /// `struct dentry.d_u.d_alias`: a file's own dentry under overlayfs.
    pub file_private_data: u64,
    pub inode_i_dentry: u64,
    pub dentry_d_alias: u64,
    /// `offsetof(struct linux_binprm, file)`.
    pub bprm_file: u64,
    /// `offsetof(struct task_struct, loginuid)`, or [`ward_abi::NO_OFFSET`]
    /// on kernels built without audit syscall support (no login uid there).
    pub task_loginuid: u64,
    /// The dentry walk: `struct path.dentry`, `struct dentry.{d_parent,
    /// d_inode, d_sb, d_name.name}`, `struct inode.i_ino`,
    /// `struct super_block.s_dev`.
    pub path_dentry: u64,
    pub dentry_d_parent: u64,
    pub dentry_d_inode: u64,
    pub dentry_d_sb: u64,
    pub dentry_d_name: u64,
    pub inode_i_ino: u64,
    pub sb_s_dev: u64,
    /// `offsetof(struct vm_area_struct, vm_file)`.
    pub vma_vm_file: u64,
    /// Sockets: `struct socket.{sk, type}`, `struct msghdr.{msg_name,
    /// msg_namelen}`, `struct sock.__sk_common.skc_rcv_saddr`.
    pub socket_sk: u64,
    pub socket_type: u64,
    pub msghdr_msg_name: u64,
    pub msghdr_msg_namelen: u64,
    pub sock_rcv_saddr: u64,
    /// `offsetof(struct unix_sock, path)`.
    pub unix_sock_path: u64,
    /// Index of the `dentry` parameter of the `inode_setattr` LSM hook.
    pub setattr_dentry_arg: u64,
    /// Whether the kernel has the `inode_set_acl` hooks (6.2+).
    pub acl_hooks: bool,
    /// Management by path: `struct cgroup.{kn, root}`,
    /// `struct kernfs_node.id`, `struct cgroup_root.hierarchy_id`.
    pub cgroup_kn: u64,
    pub kernfs_node_id: u64,
    pub cgroup_root: u64,
    pub cgroup_root_hierarchy_id: u64,
    /// Self-protection: `struct task_struct.tgid`, `struct bpf_map.name`,
    /// `struct bpf_prog.aux`, `struct bpf_prog_aux.name`,
    /// `struct vfsmount.mnt_sb`.
    pub task_tgid: u64,
    /// `struct task_struct.pid`, `struct super_block.s_magic`.
    pub task_pid: u64,
    pub sb_s_magic: u64,
    pub bpf_map_name: u64,
    pub bpf_prog_aux: u64,
    pub bpf_prog_aux_name: u64,
    pub vfsmount_mnt_sb: u64,
    /// Active teardown: `struct sock_common.{skc_daddr, skc_dport,
    /// skc_num, skc_family}`; the IPv6 addresses are
    /// [`ward_abi::NO_OFFSET`] on kernels without IPv6.
    pub skc_daddr: u64,
    pub skc_dport: u64,
    pub skc_num: u64,
    pub skc_family: u64,
    pub skc_v6_daddr: u64,
    pub skc_v6_rcv_saddr: u64,
    /// `struct sock_common.skc_cookie`; `struct sock.sk_protocol` or
    /// [`ward_abi::NO_OFFSET`] where it is a bitfield (before 5.6).
    pub skc_cookie: u64,
    pub sk_protocol: u64,
    /// `struct sock_common.skc_net` and `struct net.ns.inum`.
    pub skc_net: u64,
    pub net_ns_inum: u64,
}

impl KernelOffsets {
    /// Offsets for loading programs that read no struct fields (probes).
    pub const UNUSED: KernelOffsets = KernelOffsets {
        file_f_path: 0,
        file_f_mode: 0,
        file_f_flags: 0,
        file_f_inode: 0,
        sb_s_root: 0,
        file_private_data: 0,
        inode_i_dentry: 0,
        dentry_d_alias: 0,
        bprm_file: 0,
        task_loginuid: ward_abi::NO_OFFSET,
        path_dentry: 0,
        dentry_d_parent: 0,
        dentry_d_inode: 0,
        dentry_d_sb: 0,
        dentry_d_name: 0,
        inode_i_ino: 0,
        sb_s_dev: 0,
        vma_vm_file: 0,
        socket_sk: 0,
        socket_type: 0,
        msghdr_msg_name: 0,
        msghdr_msg_namelen: 0,
        sock_rcv_saddr: 0,
        unix_sock_path: 0,
        setattr_dentry_arg: 0,
        acl_hooks: false,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        cgroup_root: 0,
        cgroup_root_hierarchy_id: 0,
        task_tgid: 0,
        task_pid: 0,
        sb_s_magic: 0,
        bpf_map_name: 0,
        bpf_prog_aux: 0,
        bpf_prog_aux_name: 0,
        vfsmount_mnt_sb: 0,
        skc_daddr: 0,
        skc_dport: 0,
        skc_num: 0,
        skc_family: 0,
        skc_v6_daddr: ward_abi::NO_OFFSET,
        skc_v6_rcv_saddr: ward_abi::NO_OFFSET,
        skc_cookie: 0,
        sk_protocol: ward_abi::NO_OFFSET,
        skc_net: 0,
        net_ns_inum: 0,
    };

    /// Reads the offsets from `/sys/kernel/btf/vmlinux`, once per process:
    /// the running kernel does not change, and parsing all of its BTF is the
    /// slowest part of loading.
    pub fn from_running_kernel() -> Result<Self, BtfError> {
        static CACHE: OnceLock<KernelOffsets> = OnceLock::new();
        if let Some(o) = CACHE.get() {
            return Ok(*o);
        }
        let o = Self::from_file(Path::new(VMLINUX_BTF))?;
        Ok(*CACHE.get_or_init(|| o))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        offsets(&reader::Btf::parse(bytes)?)
    }
}

/// What offsets are read from: ward's [`reader`], and in the tests
/// btfparse, to check the reader against.
trait Layout {
    /// `offsetof(struct ty, field)`; `field` may be a dotted path.
    fn byte_offset(&self, ty: &'static str, field: &'static str) -> Result<u64, BtfError>;
    /// The position of parameter `param` of function `func`.
    fn param_index(&self, func: &'static str, param: &'static str) -> Result<u64, BtfError>;
    fn has_func(&self, name: &str) -> bool;
}

impl Layout for reader::Btf<'_> {
    fn byte_offset(&self, ty: &'static str, field: &'static str) -> Result<u64, BtfError> {
        reader::Btf::byte_offset(self, ty, field)
    }
    fn param_index(&self, func: &'static str, param: &'static str) -> Result<u64, BtfError> {
        reader::Btf::param_index(self, func, param)
    }
    fn has_func(&self, name: &str) -> bool {
        reader::Btf::has_func(self, name)
    }
}

fn offsets(l: &impl Layout) -> Result<KernelOffsets, BtfError> {
    Ok(KernelOffsets {
        file_f_path: l.byte_offset("file", "f_path")?,
        file_f_mode: l.byte_offset("file", "f_mode")?,
        file_f_flags: l.byte_offset("file", "f_flags")?,
        file_f_inode: l.byte_offset("file", "f_inode")?,
        sb_s_root: l.byte_offset("super_block", "s_root")?,
        file_private_data: l.byte_offset("file", "private_data")?,
        inode_i_dentry: l.byte_offset("inode", "i_dentry")?,
        dentry_d_alias: l.byte_offset("dentry", "d_u.d_alias")?,
        bprm_file: l.byte_offset("linux_binprm", "file")?,
        task_loginuid: l
            .byte_offset("task_struct", "loginuid")
            .unwrap_or(ward_abi::NO_OFFSET),
        path_dentry: l.byte_offset("path", "dentry")?,
        dentry_d_parent: l.byte_offset("dentry", "d_parent")?,
        dentry_d_inode: l.byte_offset("dentry", "d_inode")?,
        dentry_d_sb: l.byte_offset("dentry", "d_sb")?,
        dentry_d_name: l.byte_offset("dentry", "d_name.name")?,
        inode_i_ino: l.byte_offset("inode", "i_ino")?,
        sb_s_dev: l.byte_offset("super_block", "s_dev")?,
        vma_vm_file: l.byte_offset("vm_area_struct", "vm_file")?,
        socket_sk: l.byte_offset("socket", "sk")?,
        socket_type: l.byte_offset("socket", "type")?,
        msghdr_msg_name: l.byte_offset("msghdr", "msg_name")?,
        msghdr_msg_namelen: l.byte_offset("msghdr", "msg_namelen")?,
        sock_rcv_saddr: l.byte_offset("sock", "__sk_common.skc_rcv_saddr")?,
        unix_sock_path: l.byte_offset("unix_sock", "path")?,
        setattr_dentry_arg: l.param_index("bpf_lsm_inode_setattr", "dentry")?,
        acl_hooks: l.has_func("bpf_lsm_inode_set_acl"),
        cgroup_kn: l.byte_offset("cgroup", "kn")?,
        kernfs_node_id: l.byte_offset("kernfs_node", "id")?,
        cgroup_root: l.byte_offset("cgroup", "root")?,
        cgroup_root_hierarchy_id: l.byte_offset("cgroup_root", "hierarchy_id")?,
        task_tgid: l.byte_offset("task_struct", "tgid")?,
        task_pid: l.byte_offset("task_struct", "pid")?,
        sb_s_magic: l.byte_offset("super_block", "s_magic")?,
        bpf_map_name: l.byte_offset("bpf_map", "name")?,
        bpf_prog_aux: l.byte_offset("bpf_prog", "aux")?,
        bpf_prog_aux_name: l.byte_offset("bpf_prog_aux", "name")?,
        vfsmount_mnt_sb: l.byte_offset("vfsmount", "mnt_sb")?,
        skc_daddr: l.byte_offset("sock_common", "skc_daddr")?,
        skc_dport: l.byte_offset("sock_common", "skc_dport")?,
        skc_num: l.byte_offset("sock_common", "skc_num")?,
        skc_family: l.byte_offset("sock_common", "skc_family")?,
        skc_v6_daddr: l
            .byte_offset("sock_common", "skc_v6_daddr")
            .unwrap_or(ward_abi::NO_OFFSET),
        skc_v6_rcv_saddr: l
            .byte_offset("sock_common", "skc_v6_rcv_saddr")
            .unwrap_or(ward_abi::NO_OFFSET),
        skc_cookie: l.byte_offset("sock_common", "skc_cookie")?,
        sk_protocol: l
            .byte_offset("sock", "sk_protocol")
            .unwrap_or(ward_abi::NO_OFFSET),
        skc_net: l.byte_offset("sock_common", "skc_net")?,
        net_ns_inum: l.byte_offset("net", "ns.inum")?,
    })
}

/// aya's parsed copy of the kernel's BTF, which it needs to load LSM
/// programs. Parsed per call and not kept: it is tens of MiB of heap that
/// wardd needs only while it loads (see [`crate::memory::trim`]).
pub fn aya_btf() -> Result<aya::Btf, aya::BtfError> {
    aya::Btf::from_sys_fs()
}

#[cfg(test)]
mod tests {
    use btfparse::{Offset, Readable, TypeInformation, TypeVariant};

    use super::*;

    /// btfparse, the well-kept parser, as the reference the reader is
    /// checked against.
    struct Reference(TypeInformation);

    impl Layout for Reference {
        fn byte_offset(&self, ty: &'static str, field: &'static str) -> Result<u64, BtfError> {
            let types = &self.0;
            let id = types.id_of(ty).ok_or(BtfError::MissingType(ty))?;
            match types.offset_of(id, field) {
                Ok((_, Offset::ByteOffset(off))) => Ok(u64::from(off)),
                Ok((_, Offset::BitOffsetAndSize(..))) => Err(BtfError::Bitfield { ty, field }),
                Err(e) => Err(BtfError::MissingField {
                    ty,
                    field,
                    reason: format!("{e:?}"),
                }),
            }
        }

        fn param_index(&self, func: &'static str, param: &'static str) -> Result<u64, BtfError> {
            let types = &self.0;
            let id = types.id_of(func).ok_or(BtfError::MissingType(func))?;
            let missing = || BtfError::MissingField {
                ty: func,
                field: param,
                reason: String::new(),
            };
            let Some(TypeVariant::Func(f)) = types.from_id(id) else {
                return Err(missing());
            };
            let Some(TypeVariant::FuncProto(proto)) = types.from_id(*f.prototype_tid()) else {
                return Err(missing());
            };
            proto
                .parameter_list()
                .iter()
                .position(|p| p.name().as_deref() == Some(param))
                .map(|i| i as u64)
                .ok_or_else(missing)
        }

        fn has_func(&self, name: &str) -> bool {
            self.0.id_of(name).is_some()
        }
    }

    /// btfparse reads through this trait.
    struct BtfBytes<'a>(&'a [u8]);

    impl Readable for BtfBytes<'_> {
        fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
            let start = usize::try_from(offset).ok();
            let range = start.and_then(|s| Some(s..s.checked_add(buffer.len())?));
            match range.and_then(|r| self.0.get(r)) {
                Some(src) => {
                    buffer.copy_from_slice(src);
                    Ok(())
                }
                None => Err(btfparse::Error::new(
                    btfparse::ErrorKind::EOF,
                    "read past the end of the BTF data",
                )),
            }
        }
    }

    #[test]
    fn the_reader_finds_what_btfparse_finds_on_the_running_kernel() {
        let bytes = std::fs::read(VMLINUX_BTF).expect("kernel BTF");
        let reference = Reference(TypeInformation::new(&BtfBytes(&bytes)).expect("btfparse"));
        let theirs = offsets(&reference).expect("btfparse's offsets");
        let ours = KernelOffsets::from_bytes(&bytes).expect("the reader's offsets");
        assert_eq!(ours, theirs);
        // And where a field is not there, or is a bitfield, both say so.
        let btf = reader::Btf::parse(&bytes).unwrap();
        for (ty, field) in [
            ("file", "no_such_field"),
            ("no_such_struct", "x"),
            ("sk_buff", "cloned"),
            ("dentry", "d_name.no_such_field"),
        ] {
            let (a, b) = (btf.byte_offset(ty, field), reference.byte_offset(ty, field));
            assert_eq!(
                std::mem::discriminant(&a.unwrap_err()),
                std::mem::discriminant(&b.unwrap_err()),
                "{ty}.{field}"
            );
        }
        assert!(
            btf.param_index("bpf_lsm_file_open", "no_such_param")
                .is_err()
        );
    }

    #[test]
    fn running_kernel_has_file_f_path() {
        // Every kernel ward supports has BTF; this also runs in the test VMs.
        let offsets = KernelOffsets::from_running_kernel().expect("kernel BTF");
        // Where it is, read from each kernel's `pahole -C file` (the field
        // moved in 6.8's struct file reorder): a wrong field or a wrong
        // offset computation gives another number.
        let release = crate::kernel::release();
        let series: Vec<&str> = release.split(['.', '-']).take(2).collect();
        let known = match series.as_slice() {
            ["6", "1"] => 16,
            ["6", "12"] | ["6", "18"] => 64,
            _ => panic!("no known f_path offset for kernel {release}: add it here"),
        };
        assert_eq!(offsets.file_f_path, known, "{release}: {offsets:?}");
    }

    #[test]
    fn garbage_is_a_parse_error_not_a_panic() {
        let err = KernelOffsets::from_bytes(b"definitely not BTF").unwrap_err();
        assert!(matches!(err, BtfError::Parse(_)), "{err}");
    }

    #[test]
    fn truncated_btf_is_an_error() {
        let bytes = std::fs::read(VMLINUX_BTF).expect("kernel BTF");
        let err = KernelOffsets::from_bytes(&bytes[..bytes.len() / 3]);
        assert!(err.is_err());
    }
}
