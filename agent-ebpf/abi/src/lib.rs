//! Kernel ABI of ward: the `#[repr(C)]` types, map names and global names
//! that the eBPF programs (`ward-ebpf`) and user space (`ward-agent`) share.
//!
//! This is the single definition. Both sides compile against it, so a layout
//! change cannot reach one side only.
//!
//! # The decision model
//!
//! A *subject* is a managed caller seen as a uid ([`subject::uid`]) or as
//! the managed cgroup it runs in ([`subject::cgroup`]), and as the
//! principal class each of those is in ([`subject::class`]). Rules are
//! keyed by `(subject, op, object)`. Entries whose subject is
//! [`subject::PROTECTED`] mark an object as protected: a managed subject
//! may touch a protected object only through a matching, unexpired allow.
#![no_std]

/// Longest path pattern, in bytes, that ward accepts (Linux's `PATH_MAX`
/// less its NUL). The kernel side never matches names, only inodes, so this
/// is a sanity bound, not a kernel limit.
pub const PATH_MAX_LEN: usize = 4095;

/// Deepest dentry chain the kernel walks from an object to its
/// filesystem's root. A managed caller is denied an object whose walk did
/// not reach the root: what lies above it is unknown.
pub const MAX_WALK_DEPTH: u32 = 64;

/// Most object ids one walk collects (nested protections and grants on
/// one route to the root). More is refused as for a walk too deep.
pub const MAX_CHAIN: usize = 8;

/// Managed cgroups on one task's route to the root whose rules apply to it:
/// the deepest listed ancestor and the listed ones above it.
pub const MAX_CGROUP_SUBJECTS: usize = 4;

/// Names an event carries, leaf first, and the bytes of each.
pub const EVENT_NAMES: usize = 4;
pub const EVENT_NAME_LEN: usize = 64;

/// Deepest cgroup level whose ancestors are checked for being managed.
pub const MAX_CGROUP_DEPTH: i32 = 16;

/// How many managed uid ranges the config holds.
pub const MAX_UID_RANGES: usize = 4;

/// errno returned to a caller that ward denies.
pub const EACCES: i32 = 13;
/// errno returned to a denied connect.
pub const EPERM: i32 = 1;
/// errno returned to a send or receive on a socket whose permission ended.
pub const ECONNRESET: i32 = 104;

/// A layout global for a field this kernel does not have.
pub const NO_OFFSET: u64 = u64::MAX;

/// The audit login uid of a task that never logged in.
pub const LOGIN_UID_UNSET: u32 = u32::MAX;

/// Expiry meaning "never" (a standing rule).
pub const NEVER: u64 = u64::MAX;

/// Names of the maps, exactly as the `#[map]` statics in `ward-ebpf` are named.
pub mod maps {
    /// u32 0 -> [`super::Config`].
    pub const CONFIG: &str = "WARD_CONFIG";
    /// cgroup id (u64) -> [`super::ManagedCgroup`]: workloads ward enforces
    /// on, and the subject their rules are keyed by.
    pub const MANAGED_CGROUPS: &str = "WARD_MANAGED_CGROUPS";
    /// [`super::CgroupPath`] -> [`super::ManagedCgroup`]: managed cgroups by
    /// path. A cgroup created at one of these paths is listed in
    /// [`MANAGED_CGROUPS`] by the kernel itself, before any process can
    /// enter it.
    pub const CGROUP_PATHS: &str = "WARD_CGROUP_PATHS";
    /// Per-CPU u64 at index 0: cgroups created at a managed path that could
    /// not be listed (a full map). Reported loudly by the agent.
    pub const CGROUP_MISSED: &str = "WARD_CGROUP_MISSED";
    /// u32 0 -> [`super::Guard`]: what managed subjects may not touch.
    pub const GUARD: &str = "WARD_GUARD";
    /// cgroup id -> [`super::SubjectCacheEntry`]: the ancestor walk, memoised.
    pub const SUBJECT_CACHE: &str = "WARD_SUBJECT_CACHE";
    /// [`super::InodeKey`] -> [`super::ObjectIds`]: the inodes that rules
    /// are about (protected trees and files, and the objects of grants).
    pub const OBJECTS: &str = "WARD_OBJECTS";
    /// The two generations of file rules: [`super::FileKey`] -> [`super::Rule`].
    pub const FILE_RULES: [&str; 2] = ["WARD_FILE_RULES_0", "WARD_FILE_RULES_1"];
    /// The two generations of class memberships: a subject (u64, a
    /// [`super::subject::uid`] or [`super::subject::cgroup`]) -> its
    /// [`super::subject::class`] (u64). A caller's policy rules are its
    /// classes' rules; its grants stay keyed by the subject itself. Moving
    /// a principal to another class is one update of one entry.
    pub const CLASSES: [&str; 2] = ["WARD_CLASSES_0", "WARD_CLASSES_1"];
    /// u32 0 -> [`super::ExplainSlot`]: the kernel's own walk, for `ward explain`.
    pub const EXPLAIN: &str = "WARD_EXPLAIN";
    /// The two generations of network rules: [`super::NetKey`] -> [`super::Rule`].
    pub const NET_RULES: [&str; 2] = ["WARD_NET_RULES_0", "WARD_NET_RULES_1"];
    /// Ring buffer of [`super::Event`].
    pub const EVENTS: &str = "WARD_EVENTS";
    /// Per-CPU u64 at index 0: events lost because the ring buffer was full.
    pub const EVENTS_LOST: &str = "WARD_EVENTS_LOST";
    /// Per-CPU u64 at [`super::decision_slot`]: decisions on protected
    /// objects, by operation and outcome (for metrics).
    pub const DECISIONS: &str = "WARD_DECISIONS";
    /// u32 0 -> u64: bumped by the agent after every change to the rules
    /// or objects; a [`super::Held`] use decided in an older epoch is
    /// decided again.
    pub const RULES_EPOCH: &str = "WARD_RULES_EPOCH";
    /// Inode storage of [`super::CachedWalk`]: a walk's chain, kept on
    /// the inode it started from while nothing that could change it has
    /// happened (see [`FS_GENERATION`]).
    pub const WALK_CACHE: &str = "WARD_WALK_CACHE";
    /// u32 [`super::FS_GENERATION_SLOT`] -> u64: bumped by the kernel
    /// before and after every rename and whenever an inode gains a name,
    /// so a cached walk that could have seen the tree change is stale.
    /// u32 [`super::RENAMES_IN_FLIGHT_SLOT`] -> u64: renames begun and not
    /// yet ended; while any is, the cache is neither read nor filled.
    pub const FS_GENERATION: &str = "WARD_FS_GENERATION";
    /// `struct file *` -> [`super::Held`]: open files of protected objects.
    pub const HELD_FILES: &str = "WARD_HELD_FILES";
    /// `struct sock *` -> [`super::Held`]: connections to protected
    /// destinations.
    pub const HELD_SOCKS: &str = "WARD_HELD_SOCKS";
    /// u32 [`super::HELD_FILES_SLOT`] / [`super::HELD_SOCKS_SLOT`] -> u64:
    /// how many entries each held map has, so hooks skip it when empty.
    pub const HELD_COUNT: &str = "WARD_HELD_COUNT";
    /// u32 0 -> u64: the time (boot clock) a teardown pass decides as of.
    /// 0 for a pass that ends what has ended now; else the pass is a
    /// look-ahead that names what will have ended then, and records
    /// nothing. Only the agent's teardown pass reads it.
    pub const TEARDOWN_AS_OF: &str = "WARD_TEARDOWN_AS_OF";
}

/// Names of the read-only globals that user space sets before load.
pub mod globals {
    /// `offsetof(struct file, f_path)` on the running kernel, read from BTF.
    pub const F_PATH_OFF: &str = "F_PATH_OFF";
    /// `offsetof(struct file, f_mode)`.
    pub const F_MODE_OFF: &str = "F_MODE_OFF";
    /// `offsetof(struct file, f_flags)`.
    pub const F_FLAGS_OFF: &str = "F_FLAGS_OFF";
    /// `offsetof(struct linux_binprm, file)`.
    pub const BPRM_FILE_OFF: &str = "BPRM_FILE_OFF";
    /// `offsetof(struct task_struct, loginuid)`, or [`super::NO_OFFSET`]
    /// on kernels built without audit.
    pub const LOGINUID_OFF: &str = "LOGINUID_OFF";
    /// `offsetof(struct path, dentry)`.
    pub const PATH_DENTRY_OFF: &str = "PATH_DENTRY_OFF";
    /// `offsetof(struct dentry, d_parent)`.
    pub const D_PARENT_OFF: &str = "D_PARENT_OFF";
    /// `offsetof(struct dentry, d_inode)`.
    pub const D_INODE_OFF: &str = "D_INODE_OFF";
    /// `offsetof(struct dentry, d_sb)`.
    pub const D_SB_OFF: &str = "D_SB_OFF";
    /// `offsetof(struct dentry, d_name) + offsetof(struct qstr, name)`.
    pub const D_NAME_OFF: &str = "D_NAME_OFF";
    /// `offsetof(struct inode, i_ino)`.
    pub const I_INO_OFF: &str = "I_INO_OFF";
    /// `offsetof(struct super_block, s_dev)`.
    pub const S_DEV_OFF: &str = "S_DEV_OFF";
    /// `offsetof(struct vm_area_struct, vm_file)`.
    pub const VM_FILE_OFF: &str = "VM_FILE_OFF";
    /// `offsetof(struct socket, sk)`.
    pub const SOCKET_SK_OFF: &str = "SOCKET_SK_OFF";
    /// `offsetof(struct socket, type)`.
    pub const SOCKET_TYPE_OFF: &str = "SOCKET_TYPE_OFF";
    /// `offsetof(struct msghdr, msg_name)`.
    pub const MSG_NAME_OFF: &str = "MSG_NAME_OFF";
    /// `offsetof(struct msghdr, msg_namelen)`.
    pub const MSG_NAMELEN_OFF: &str = "MSG_NAMELEN_OFF";
    /// `offsetof(struct sock, __sk_common.skc_rcv_saddr)`: the bound IPv4
    /// address, where a connect to 0.0.0.0 goes.
    pub const SK_RCV_SADDR_OFF: &str = "SK_RCV_SADDR_OFF";
    /// `offsetof(struct unix_sock, path)`.
    pub const UNIX_PATH_OFF: &str = "UNIX_PATH_OFF";
    /// `offsetof(struct cgroup, kn)`.
    pub const CGROUP_KN_OFF: &str = "CGROUP_KN_OFF";
    /// `offsetof(struct kernfs_node, id)`: a cgroup's id.
    pub const KN_ID_OFF: &str = "KN_ID_OFF";
    /// `offsetof(struct cgroup, root)`.
    pub const CGROUP_ROOT_OFF: &str = "CGROUP_ROOT_OFF";
    /// `offsetof(struct cgroup_root, hierarchy_id)`.
    pub const HIERARCHY_ID_OFF: &str = "HIERARCHY_ID_OFF";
    /// `offsetof(struct task_struct, tgid)`.
    pub const TASK_TGID_OFF: &str = "TASK_TGID_OFF";
    /// `offsetof(struct task_struct, pid)`.
    pub const TASK_PID_OFF: &str = "TASK_PID_OFF";
    /// `offsetof(struct super_block, s_magic)`.
    pub const S_MAGIC_OFF: &str = "S_MAGIC_OFF";
    /// `offsetof(struct super_block, s_root)`.
    pub const S_ROOT_OFF: &str = "S_ROOT_OFF";
    /// `offsetof(struct file, f_inode)`.
    pub const F_INODE_OFF: &str = "F_INODE_OFF";
    /// `offsetof(struct file, private_data)`: an overlayfs file's real file.
    pub const F_PRIVATE_DATA_OFF: &str = "F_PRIVATE_DATA_OFF";
    /// `offsetof(struct inode, i_dentry)`: the head of its aliases.
    pub const I_DENTRY_OFF: &str = "I_DENTRY_OFF";
    /// `offsetof(struct dentry, d_u.d_alias)`: a dentry in its inode's list.
    pub const D_ALIAS_OFF: &str = "D_ALIAS_OFF";
    /// `offsetof(struct bpf_map, name)`.
    pub const MAP_NAME_OFF: &str = "MAP_NAME_OFF";
    /// `offsetof(struct bpf_prog, aux)`.
    pub const PROG_AUX_OFF: &str = "PROG_AUX_OFF";
    /// `offsetof(struct bpf_prog_aux, name)`.
    pub const PROG_AUX_NAME_OFF: &str = "PROG_AUX_NAME_OFF";
    /// `offsetof(struct vfsmount, mnt_sb)`.
    pub const MNT_SB_OFF: &str = "MNT_SB_OFF";
    /// Active teardown: `struct sock_common.{skc_daddr, skc_dport,
    /// skc_num, skc_family}`, and `{skc_v6_daddr, skc_v6_rcv_saddr}` or
    /// [`super::NO_OFFSET`] on kernels without IPv6.
    pub const SKC_DADDR_OFF: &str = "SKC_DADDR_OFF";
    pub const SKC_DPORT_OFF: &str = "SKC_DPORT_OFF";
    pub const SKC_NUM_OFF: &str = "SKC_NUM_OFF";
    pub const SKC_FAMILY_OFF: &str = "SKC_FAMILY_OFF";
    pub const SKC_V6_DADDR_OFF: &str = "SKC_V6_DADDR_OFF";
    pub const SKC_V6_RCV_SADDR_OFF: &str = "SKC_V6_RCV_SADDR_OFF";
    /// `offsetof(struct sock_common, skc_cookie)`.
    pub const SKC_COOKIE_OFF: &str = "SKC_COOKIE_OFF";
    /// `offsetof(struct sock, sk_protocol)`, or [`super::NO_OFFSET`] where
    /// it is a bitfield.
    pub const SK_PROTOCOL_OFF: &str = "SK_PROTOCOL_OFF";
    /// `offsetof(struct sock_common, skc_net)` and `offsetof(struct net,
    /// ns.inum)`: the socket's network namespace, where its reset is asked.
    pub const SKC_NET_OFF: &str = "SKC_NET_OFF";
    pub const NET_NS_INUM_OFF: &str = "NET_NS_INUM_OFF";
}

/// Names of the programs in the object, and the hooks they attach to.
pub mod programs {
    /// LSM `file_open`: read, write (and the open of an executable).
    pub const FILE_OPEN: &str = "ward_file_open";
    /// LSM `bprm_check_security`: exec.
    pub const EXEC: &str = "ward_bprm_check";
    /// LSM `mmap_file`: exec of a file's code by mapping it executable (the
    /// dynamic loader's route).
    pub const MMAP_FILE: &str = "ward_mmap_file";
    /// LSM `file_mprotect`: making a file's mapping executable later.
    pub const FILE_MPROTECT: &str = "ward_file_mprotect";
    /// What keeps the walk cache ([`super::maps::WALK_CACHE`]) honest, as
    /// (program, LSM hook): an inode gaining a name bumps
    /// [`super::maps::FS_GENERATION`] (`inode_rename` bumps it too, before
    /// the move). Attached before any program that reads the cache.
    pub const WALK_CACHE_HOOKS: [(&str, &str); 2] = [
        ("ward_d_instantiate", "d_instantiate"),
        // Also a write hook (renaming is a change to both ends).
        ("ward_inode_rename", "inode_rename"),
    ];
    /// fexit of `vfs_rename`: bumps the generation again once the move is
    /// done, so a walk that ran during it is stale too.
    pub const RENAME_DONE: (&str, &str) = ("ward_rename_done", "vfs_rename");
    /// LSM `inode_getattr`: answers `ward explain` with the kernel's walk of
    /// the object the agent stats. Attached only while explaining.
    pub const EXPLAIN_GETATTR: &str = "ward_explain_getattr";
    /// The write hooks: every change to a protected object or tree, as
    /// (program, LSM hook). Each decides [`super::Op::Write`].
    pub const WRITE_HOOKS: [(&str, &str); 9] = [
        ("ward_inode_create", "inode_create"),
        ("ward_inode_link", "inode_link"),
        ("ward_inode_unlink", "inode_unlink"),
        ("ward_inode_symlink", "inode_symlink"),
        ("ward_inode_mkdir", "inode_mkdir"),
        ("ward_inode_rmdir", "inode_rmdir"),
        ("ward_inode_mknod", "inode_mknod"),
        // ("ward_inode_rename", "inode_rename") is attached first, with
        // WALK_CACHE_HOOKS: it invalidates the walk cache too.
        ("ward_inode_setxattr", "inode_setxattr"),
        ("ward_inode_removexattr", "inode_removexattr"),
    ];
    /// `inode_setattr` (truncate, chmod, chown, utimes): with its `idmap`
    /// parameter (6.8+), and without it.
    pub const SETATTR: (&str, &str) = ("ward_inode_setattr", "inode_setattr");
    pub const SETATTR_NO_IDMAP: (&str, &str) = ("ward_inode_setattr_nomap", "inode_setattr");
    /// Write hooks that only newer kernels have (6.2+: POSIX ACLs no
    /// longer pass through `inode_setxattr`); attached where they exist.
    pub const WRITE_HOOKS_IF_PRESENT: [(&str, &str); 2] = [
        ("ward_inode_set_acl", "inode_set_acl"),
        ("ward_inode_remove_acl", "inode_remove_acl"),
    ];
    /// LSM `socket_connect`: IPv4 and IPv6 connect.
    pub const SOCKET_CONNECT: &str = "ward_socket_connect";
    /// Use in progress, and the routes to a destination that are not a
    /// connect, as (program, LSM hook): reads and writes through a held
    /// file, sends (with an address: unconnected UDP, TCP Fast Open) and
    /// receives, and forgetting a held file or socket when it is freed.
    pub const USE_HOOKS: [(&str, &str); 7] = [
        ("ward_file_permission", "file_permission"),
        ("ward_file_free", "file_free_security"),
        ("ward_socket_sendmsg", "socket_sendmsg"),
        ("ward_socket_recvmsg", "socket_recvmsg"),
        ("ward_sk_free", "sk_free_security"),
        // Connecting to a unix socket bound to a path: a write to it.
        ("ward_unix_stream_connect", "unix_stream_connect"),
        ("ward_unix_may_send", "unix_may_send"),
    ];
    /// Active teardown: an iterator over [`super::maps::HELD_SOCKS`]
    /// (`iter/bpf_map_elem`) that names the held TCP connections whose
    /// permission has ended ([`super::EndedConn`]), for the agent to reset.
    /// Loaded by every agent, never attached to a hook or pinned: the
    /// agent runs it.
    pub const HELD_ENDED: &str = "ward_held_ended";
    /// The same over every TCP socket (`iter/tcp`), for kernels that refuse
    /// the map iterator: a pass then costs a walk of the TCP tables.
    pub const TCP_ENDED: &str = "ward_tcp_ended";
    /// Self-protection, as (program, LSM hook): ward's BPF objects, the
    /// daemon, the pins' mount, kernel modules and kexec.
    pub const GUARD_HOOKS: [(&str, &str); 11] = [
        ("ward_file_send_sigiotask", "file_send_sigiotask"),
        ("ward_sb_mount", "sb_mount"),
        ("ward_move_mount", "move_mount"),
        ("ward_bpf_map", "bpf_map"),
        ("ward_bpf_prog", "bpf_prog"),
        ("ward_bpf", "bpf"),
        ("ward_task_kill", "task_kill"),
        ("ward_ptrace_access_check", "ptrace_access_check"),
        ("ward_sb_umount", "sb_umount"),
        ("ward_kernel_read_file", "kernel_read_file"),
        ("ward_kernel_load_data", "kernel_load_data"),
    ];
    /// Management by path, as (program, BTF tracepoint): list a cgroup
    /// created at a managed path, forget it when removed. Attached with
    /// either kind of hook.
    pub const CGROUP_TRACEPOINTS: [(&str, &str); 2] = [
        ("ward_cgroup_mkdir", "cgroup_mkdir"),
        ("ward_cgroup_rmdir", "cgroup_rmdir"),
    ];
    /// wardd's exit, as (program, BTF tracepoint): its tgid stops being
    /// exempt, so no later process that gets the same pid is.
    pub const DAEMON_EXIT: (&str, &str) = ("ward_daemon_exit", "sched_process_exit");
    /// cgroup `sendmsg4`/`sendmsg6` (UDP with an address), for kernels
    /// without BPF LSM.
    pub const SENDMSG4: &str = "ward_sendmsg4";
    pub const SENDMSG6: &str = "ward_sendmsg6";
    /// cgroup `sock_release`, for kernels without BPF LSM: forgets a held
    /// connection when its socket is closed.
    pub const SOCK_RELEASE: &str = "ward_sock_release";
    /// cgroup `skb` egress and ingress, for kernels without BPF LSM: a held
    /// connection whose permission has ended carries no more packets,
    /// with or without the agent.
    pub const SKB_EGRESS: &str = "ward_skb_egress";
    pub const SKB_INGRESS: &str = "ward_skb_ingress";
    /// cgroup `connect4`, for kernels without BPF LSM.
    pub const CONNECT4: &str = "ward_connect4";
    /// cgroup `connect6`, for kernels without BPF LSM.
    pub const CONNECT6: &str = "ward_connect6";
    /// An LSM `file_open` program that allows everything: `ward doctor` loads
    /// it to learn whether this kernel accepts BPF LSM programs at all.
    pub const PROBE_LSM: &str = "ward_probe_lsm";
    /// An LSM `socket_connect` program that passes on the earlier verdict:
    /// the benchmarks' empty-program floor for connect.
    pub const PROBE_LSM_CONNECT: &str = "ward_probe_lsm_connect";
    /// An LSM program that allows, on any hook: the benchmarks' floor for
    /// the use hooks.
    pub const PROBE_LSM_ALLOW: &str = "ward_probe_lsm_allow";
    /// A cgroup `connect4` program that allows everything, for the same probe.
    pub const PROBE_CONNECT4: &str = "ward_probe_connect4";
}

/// Subject encodings: the kind in the top byte, the id below.
pub mod subject {
    /// Marks an object as protected for every managed subject.
    pub const PROTECTED: u64 = 0;
    const KIND_SHIFT: u32 = 56;
    const ID_MASK: u64 = (1 << KIND_SHIFT) - 1;
    pub const KIND_UID: u64 = 1;
    pub const KIND_CGROUP: u64 = 2;
    /// A principal class: everyone the Cedar policy decides alike. Policy
    /// rules are keyed by class; [`crate::maps::CLASSES`] takes a uid or
    /// workload subject to its class.
    pub const KIND_CLASS: u64 = 3;

    pub const fn uid(uid: u32) -> u64 {
        (KIND_UID << KIND_SHIFT) | uid as u64
    }

    /// A workload by its [`crate::ManagedCgroup::key`]: a cgroup id
    /// (kernfs inode numbers, far below 2^55) or a path's key (bit 55 set).
    pub const fn cgroup(id: u64) -> u64 {
        (KIND_CGROUP << KIND_SHIFT) | (id & ID_MASK)
    }

    pub const fn class(id: u32) -> u64 {
        (KIND_CLASS << KIND_SHIFT) | id as u64
    }

    pub const fn kind(subject: u64) -> u64 {
        subject >> KIND_SHIFT
    }

    pub const fn id(subject: u64) -> u64 {
        subject & ID_MASK
    }

    /// Set in every path key, so that none is ever a cgroup id.
    pub const PATH_KEY_BIT: u64 = 1 << 55;
}

/// An operation ward decides.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Read = 1,
    Write = 2,
    Exec = 3,
    Connect = 4,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Read, Op::Write, Op::Exec, Op::Connect];

    /// The operation's one name, in the CLI, logs, audit records and
    /// Cedar action ids alike.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Exec => "exec",
            Op::Connect => "connect",
        }
    }

    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Op::Read),
            2 => Some(Op::Write),
            3 => Some(Op::Exec),
            4 => Some(Op::Connect),
            _ => None,
        }
    }
}

/// What a matching rule decides.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    Deny = 0,
    Allow = 1,
}

impl Effect {
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Effect::Deny),
            1 => Some(Effect::Allow),
            _ => None,
        }
    }
}

/// [`decision_slot`] outcomes.
pub const DECIDED_DENY: u32 = 0;
pub const DECIDED_ALLOW_BY_GRANT: u32 = 1;
pub const DECIDED_ALLOW_BY_POLICY: u32 = 2;
/// Slots of [`maps::DECISIONS`]: (the largest [`Op`] + 1) × 3 outcomes.
pub const DECISION_SLOTS: u32 = 15;

/// The [`maps::DECISIONS`] slot of an operation and an outcome.
#[inline(always)]
pub const fn decision_slot(op: u32, outcome: u32) -> u32 {
    op * 3 + outcome
}

/// [`Rule::flags`]: the entry comes from a JIT grant (its uses are audited).
pub const RULE_FROM_GRANT: u32 = 1;

/// Value of every rule trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// An [`Effect`] as u32.
    pub effect: u32,
    /// [`RULE_FROM_GRANT`], ...
    pub flags: u32,
    /// Boot-clock ns (`bpf_ktime_get_boot_ns`) after which an allow no
    /// longer applies; [`NEVER`] for standing rules.
    pub expires_ns: u64,
    /// Id of the rule or grant that produced this entry.
    pub rule_id: u64,
    /// Network rules: the inclusive port range; 0..=65535 for any port.
    pub port_first: u16,
    pub port_last: u16,
    /// Zero: the layout has no implicit padding (map values are copied
    /// as bytes).
    pub _pad: u32,
}

/// How many port ranges one network entry holds: distinct ranges for the
/// same (subject, operation, network), e.g. PostgreSQL's 5432 and Redis's
/// 6379 on one address. More is refused, naming the network.
pub const MAX_PORT_RANGES: usize = 4;

/// Value of the network rule tries: one (subject, operation, network)
/// with its port ranges, each decided like a [`Rule`] of its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRule {
    /// The prefix length of this entry's key ([`KEY_HEADER_BITS`] +
    /// address bits), so that a lookup whose port no range covers can go
    /// on to the next shorter prefix.
    pub key_bits: u32,
    /// How many of `ranges` are used, from the first.
    pub len: u32,
    pub ranges: [Rule; MAX_PORT_RANGES],
}

/// [`Held::state`]: the last decision allowed the use.
pub const HELD_ALLOWED: u32 = 1;
/// [`Held::state`]: the last decision ended it; until the rules change,
/// every use is refused without deciding again.
pub const HELD_DENIED: u32 = 2;
/// Slots of [`maps::HELD_COUNT`].
pub const HELD_FILES_SLOT: u32 = 0;
pub const HELD_SOCKS_SLOT: u32 = 1;

/// Value of [`maps::HELD_FILES`] and [`maps::HELD_SOCKS`]: a use of a
/// protected object that a decision allowed (an open file, a connection).
/// Every read, write, send and receive through it checks this, and the
/// decision is taken again, for the same subjects, when the rules changed
/// (`epoch`) or the allow's deadline (`until`) passed. So a use ends when
/// its permission does, on the kernel's clock, whoever holds it by then.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct Held {
    /// The subjects the use was decided for: the opener's.
    pub who: decision::Subjects,
    /// [`maps::RULES_EPOCH`] when it was last decided.
    pub epoch: u64,
    /// Boot-clock ns until which the last allow holds ([`NEVER`] for a
    /// standing one).
    pub until: u64,
    /// Sockets: the destination decided on (IPv4 mapped into IPv6).
    pub addr: [u8; 16],
    /// Sockets: host byte order.
    pub port: u16,
    /// Sockets: 4 or 6, for events.
    pub family: u16,
    /// [`HELD_ALLOWED`] or [`HELD_DENIED`].
    pub state: u32,
}

/// A held TCP connection whose permission has ended, as the teardown
/// iterator ([`programs::HELD_ENDED`]) writes it: what `SOCK_DESTROY` needs
/// to find exactly that socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndedConn {
    /// The socket's cookie (unique for the boot), so that a socket that
    /// reused the addresses is never the one reset; 0 when the kernel has
    /// not made one for it (then its addresses, which name one live
    /// socket, decide).
    pub cookie: u64,
    /// Local and remote address: IPv4 in the first 4 bytes for
    /// [`EndedConn::family`] `AF_INET` (2), else IPv6 (10).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub _pad: u16,
    /// The inode number of the socket's network namespace (as
    /// `/proc/PID/ns/net` shows it), 0 if it could not be read:
    /// `SOCK_DESTROY` finds sockets of the namespace it is asked in.
    pub netns: u64,
}

/// Bits of `subject` + `op` at the start of every network rule key.
pub const KEY_HEADER_BITS: u32 = 96;

/// The identity of an inode as the kernel sees it: its superblock's
/// device (`s_dev`, kernel encoding `major << 20 | minor`) and its number.
/// Every name of a file, in every mount namespace, bind mount and chroot,
/// leads to the same identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Value of [`maps::OBJECTS`]: the object ids an inode stands for. 0 = none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectIds {
    /// Rules for this inode itself (a file rule such as `/etc/shadow`).
    pub exact: u32,
    /// Rules for the tree under this directory, itself included
    /// (`/srv/prod/`).
    pub tree: u32,
}

/// Key of the file rule maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey {
    pub subject: u64,
    pub op: u32,
    /// An object id from [`ObjectIds`].
    pub object: u32,
}

/// The objects one walk met, deepest first: what a file *is*, whatever
/// name the caller used. Aligned to 8 so that copying or clearing it is a
/// few word stores, not a byte loop the verifier walks byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub ids: [u32; MAX_CHAIN],
    /// Dentry levels above the object where `ids[i]` was found (0 = itself).
    pub levels: [u32; MAX_CHAIN],
    pub len: u32,
    /// 1 when the walk reached the filesystem root within
    /// [`MAX_WALK_DEPTH`] levels and every object fit in [`MAX_CHAIN`].
    pub complete: u32,
}

/// Value of [`maps::EXPLAIN`]: user space writes `tid`, stats the object,
/// and reads the chain the kernel's walk found for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExplainSlot {
    pub tid: u32,
    /// Set by the kernel once `chain` holds the answer.
    pub done: u32,
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
    pub chain: Chain,
}

/// Data part of the LPM trie key of the network rule tries. IPv4 addresses
/// are stored IPv4-mapped (`::ffff:a.b.c.d`), so one trie serves both
/// families and a v4-mapped IPv6 connect meets the IPv4 rules.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetKey {
    pub subject: u64,
    pub op: u32,
    pub addr: [u8; 16],
}

/// A managed uid range, inclusive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

/// The single entry of [`maps::CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Which rule generation (0 or 1) lookups use. Flipping it swaps a whole
    /// table in one store.
    pub active: u32,
    /// Bumped whenever the managed cgroup set changes; stale
    /// [`SubjectCacheEntry`]s are ignored.
    pub cgroup_generation: u32,
    pub uid_ranges_len: u32,
    /// Bit `g` set: generation `g`'s class map may hold memberships, so
    /// its decisions consider classes. A generation with none skips the
    /// class rows: a host with grants and no Cedar policy pays nothing
    /// for them. Set before the generation is made active (or before its
    /// first membership is written), so a reader never sees a class
    /// without its bit.
    pub classed: u32,
    pub uid_ranges: [UidRange; MAX_UID_RANGES],
}

impl Config {
    /// 1 if the active generation's decisions consider classes, else 0.
    /// A number, not a bool: the eBPF side computes its loop bounds from
    /// it without a branch, which would split the verifier's walk of
    /// everything after it in two.
    #[inline(always)]
    pub fn classed_active(&self) -> u32 {
        (self.classed >> (self.active & 1)) & 1
    }
}

/// Value of [`maps::MANAGED_CGROUPS`] and [`maps::CGROUP_PATHS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManagedCgroup {
    /// The workload's key: what its rules name, as [`subject::cgroup`].
    /// A cgroup managed by path carries its path's key, so rules survive
    /// the cgroup being removed and created again (a unit's restart); one
    /// managed by id alone carries its id.
    pub key: u64,
    /// [`MANAGED_BY_PATH`], ...
    pub flags: u32,
    pub _pad: u32,
}

/// [`ManagedCgroup::flags`]: listed because of a [`maps::CGROUP_PATHS`]
/// entry; the kernel forgets it when the cgroup is removed.
pub const MANAGED_BY_PATH: u32 = 1;

/// Longest cgroup path ward follows by name, NUL included.
pub const CGROUP_PATH_LEN: usize = 256;

/// Key of [`maps::CGROUP_PATHS`]: a cgroup's path from its hierarchy's
/// root as the kernel prints it (`/system.slice/backup.service`),
/// NUL-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupPath {
    pub path: [u8; CGROUP_PATH_LEN],
}

/// Most superblocks [`Guard::sb_devs`] names.
pub const GUARD_SB_DEVS: usize = 4;

/// The single entry of [`maps::GUARD`]: ward's own parts, which managed
/// subjects may not stop, trace, detach or unmount.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// wardd's process id (0: none registered).
    pub daemon_tgid: u32,
    pub _pad: u32,
    /// Kernel `s_dev`s of filesystems that hold ward's pins, and those they
    /// are mounted under (0: unused slot).
    pub sb_devs: [u32; GUARD_SB_DEVS],
}

/// What a managed subject tried against ward itself ([`Event::op`] of a
/// [`event_kind::TAMPER`] event).
pub mod tamper {
    /// A file descriptor for one of ward's maps (by id or pin).
    pub const BPF_MAP: u32 = 1;
    /// A file descriptor for one of ward's programs.
    pub const BPF_PROG: u32 = 2;
    /// Detaching or replacing a BPF link.
    pub const BPF_LINK: u32 = 3;
    /// A signal to wardd.
    pub const SIGNAL: u32 = 4;
    /// ptrace (or /proc/PID/mem and the like) of wardd.
    pub const PTRACE: u32 = 5;
    /// Unmounting the filesystem of ward's pins, or one above it.
    pub const UMOUNT: u32 = 6;
    /// Loading a kernel module.
    pub const MODULE: u32 = 7;
    /// Loading a kernel for kexec.
    pub const KEXEC: u32 = 8;
    /// Loading or attaching a BPF program.
    pub const BPF_LOAD: u32 = 9;
    /// Changing its own audit login uid (shedding management).
    pub const LOGINUID: u32 = 10;
    /// Leaving its managed cgroup.
    pub const CGROUP_ESCAPE: u32 = 11;
}

/// Slots of [`maps::FS_GENERATION`].
pub const FS_GENERATION_SLOT: u32 = 0;
pub const RENAMES_IN_FLIGHT_SLOT: u32 = 1;

/// `struct bpf_spin_lock`, under the name the verifier looks for in a map
/// value's BTF.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct bpf_spin_lock {
    pub val: u32,
}

/// Value of [`maps::WALK_CACHE`]: the chain a walk found from `dentry`,
/// valid while the rules epoch and the fs generation it was found in
/// stand. Written under `lock` (two CPUs may fill it at once), read as a
/// seqlock: `seq` is odd while a write is under way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CachedWalk {
    pub lock: bpf_spin_lock,
    pub seq: u32,
    pub epoch: u64,
    pub fs_generation: u64,
    /// The `struct dentry *` walked from: an inode with several names has
    /// a chain per name, and only this one's is kept.
    pub dentry: u64,
    pub chain: Chain,
}

/// Value of [`maps::SUBJECT_CACHE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubjectCacheEntry {
    pub generation: u32,
    pub _pad: u32,
    /// The listed cgroups on the route to the root, deepest first, as
    /// [`subject::cgroup`]s; 0 past the last. All 0: unmanaged.
    pub subjects: [u64; MAX_CGROUP_SUBJECTS],
}

/// [`Event::kind`].
pub mod event_kind {
    pub const DENY: u32 = 1;
    pub const ALLOW_BY_GRANT: u32 = 2;
    /// A managed subject's attempt on ward itself, refused; `op` is a
    /// [`super::tamper`] code and `rule_id` its detail (the signal, the
    /// module or kexec file's kind, ...).
    pub const TAMPER: u32 = 3;
}

/// One kernel decision, sent to user space over [`maps::EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// Boot-clock ns.
    pub time_ns: u64,
    pub cgroup: u64,
    pub rule_id: u64,
    pub pid: u32,
    pub uid: u32,
    /// [`event_kind`].
    pub kind: u32,
    /// An [`Op`].
    pub op: u32,
    /// Network events: port, and 4 or 6 for the family (0 for files).
    pub port: u16,
    pub family: u16,
    /// Audit login uid (`u32::MAX` when unset or unknown).
    pub login_uid: u32,
    /// Files: the object id that protects it, and how many dentry levels
    /// below that object the file is (0: the object itself).
    pub object_id: u32,
    pub levels: u32,
    /// Files: the identity of what was touched.
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
    /// Files: the names from the file up towards the object, leaf first,
    /// each NUL-terminated (at most [`EVENT_NAMES`]). Network: `names[0]`
    /// holds the 16-byte address.
    pub names: [[u8; EVENT_NAME_LEN]; EVENT_NAMES],
}

pub mod decision;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without pointers; any bit pattern is a
    // valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::ManagedCgroup {}
    unsafe impl aya::Pod for super::CgroupPath {}
    unsafe impl aya::Pod for super::Guard {}
    unsafe impl aya::Pod for super::SubjectCacheEntry {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::ObjectIds {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::ExplainSlot {}
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::NetRule {}
    unsafe impl aya::Pod for super::Rule {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Held {}
}
