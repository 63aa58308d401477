//! Human-readable rendering of a doctor report.

use std::fmt::Write;

use super::{Report, Status};

pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .checks
        .iter()
        .map(|c| c.title.len())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        let mark = match c.status {
            Status::Ok => "ok",
            Status::Unavailable => "NO",
            Status::Error => "ERROR",
        };
        let _ = writeln!(out, "{mark:>5}  {:<width$}  {}", c.title, c.detail);
    }
    let caps = &report.capabilities;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "file and exec enforcement: {}",
        if caps.file_and_exec {
            "available (BPF LSM)"
        } else {
            "UNAVAILABLE on this kernel: ward cannot protect files or executables here"
        }
    );
    let net = if caps.file_and_exec {
        "available (BPF LSM)"
    } else if caps.network {
        "available (cgroup connect4/connect6/sendmsg4/sendmsg6 hooks only)"
    } else {
        "UNAVAILABLE on this kernel"
    };
    let _ = writeln!(out, "network enforcement:        {net}");
    let in_use = if caps.use_in_progress == "lsm" {
        "ends at the deadline, revoke or forbid: every read, write, send and \
         receive through a held file or connection is checked (BPF LSM)"
    } else if caps.use_in_progress == "packets" {
        "connections made under a grant carry no more packets once it ends, on \
         the kernel's clock, with or without wardd (cgroup skb hooks); open files \
         are NOT ended on this kernel"
    } else {
        "NOT ENDED on this kernel: open files and connections made under a grant \
         keep working after it ends; only new opens and connects are refused"
    };
    let _ = writeln!(out, "use in progress:            {in_use}");
    let teardown = if caps.connection_teardown == "sock_destroy" {
        "a held connection is reset when its permission ends: the peer sees a \
         reset at the deadline or revoke (sock_diag SOCK_DESTROY)"
    } else if caps.file_and_exec {
        "NOT AVAILABLE: a connection whose permission ends fails at its holder's \
         next send or receive, but its peer is not reset"
    } else {
        "NOT AVAILABLE: a connection whose permission ends carries no more \
         packets, but neither end is told (no reset)"
    };
    let _ = writeln!(out, "connection teardown:        {teardown}");
    let guard = if caps.self_protection == "lsm" {
        "managed subjects (root after sudo too) cannot detach ward's programs, \
         touch its maps, pins or files, signal or trace wardd, or load kernel \
         modules (BPF LSM)"
    } else {
        "NONE on this kernel: root can switch ward off"
    };
    let _ = writeln!(out, "self-protection:            {guard}");
    let lockdown = match report.lockdown.as_str() {
        "integrity" | "confidentiality" => format!(
            "{} (kernel memory, kexec and unsigned modules closed to everyone)",
            report.lockdown
        ),
        other => format!(
            "{other}: unmanaged root can still change the running kernel \
             (/dev/mem, unsigned modules, kexec); boot with lockdown=integrity"
        ),
    };
    let _ = writeln!(out, "kernel lockdown:            {lockdown}");
    out
}
