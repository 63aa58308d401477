//! Programs that decide nothing. `ward doctor` loads them to learn what the
//! running kernel accepts, without attaching anything that enforces.

use aya_ebpf::{
    macros::{cgroup_sock_addr, lsm},
    programs::{LsmContext, SockAddrContext},
};

#[lsm(hook = "file_open")]
pub fn ward_probe_lsm(ctx: LsmContext) -> i32 {
    // Pass on whatever an earlier LSM decided.
    ctx.arg::<i32>(1)
}

#[cgroup_sock_addr(connect4)]
pub fn ward_probe_connect4(_ctx: SockAddrContext) -> i32 {
    1 // allow
}
