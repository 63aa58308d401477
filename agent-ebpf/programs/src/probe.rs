//! Programs that decide nothing. `ward doctor` loads them to learn what the
//! running kernel accepts, without attaching anything that enforces; the
//! benchmarks attach them as the floor any enforcer on the same hook pays.

use aya_ebpf::{
    macros::{cgroup_sock_addr, lsm},
    programs::{LsmContext, SockAddrContext},
};

#[lsm(hook = "file_open")]
pub fn ward_probe_lsm(ctx: LsmContext) -> i32 {
    // Pass on whatever an earlier LSM decided.
    ctx.arg::<i32>(1)
}

/// The same for `socket_connect(sock, address, addrlen)`, whose earlier
/// verdict is the fourth argument: the benchmarks' floor for connect.
#[lsm(hook = "socket_connect")]
pub fn ward_probe_lsm_connect(ctx: LsmContext) -> i32 {
    ctx.arg::<i32>(3)
}

/// Allows, on any hook: the benchmarks' empty-program floor for the use
/// hooks (`file_permission`, `socket_sendmsg`, `socket_recvmsg`), whose
/// earlier verdicts sit at other arguments. Kernels from 6.10 check an LSM
/// program's return range, and a pass-through of the wrong argument fails.
#[lsm(hook = "file_permission")]
pub fn ward_probe_lsm_allow(_ctx: LsmContext) -> i32 {
    0
}

#[cgroup_sock_addr(connect4)]
pub fn ward_probe_connect4(_ctx: SockAddrContext) -> i32 {
    1 // allow
}
