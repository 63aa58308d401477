//! `ward doctor`: what the running kernel lets ward enforce.
//!
//! Every finding comes from trying the real thing (reading the LSM list,
//! loading an LSM program, attaching a cgroup program), never from guessing
//! by version, so ward never reports protection it cannot give.

mod probes;
mod render;

use serde::Serialize;

use crate::btf::KernelOffsets;

pub use render::render_text;

/// The scratch cgroups the connect probe attaches to are named this and
/// the prober's pid, and removed when it is done.
pub const PROBE_CGROUP_PREFIX: &str = "ward-doctor-";

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// The kernel does not offer it; ward degrades and says so.
    Unavailable,
    /// The check itself could not run (missing privileges, I/O error).
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier, for scripts: `kernel`, `bpf_lsm`, `lsm_program`, ...
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub detail: String,
}

/// Which kinds of enforcement this kernel supports, derived from the checks.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    /// File read/write and exec decisions (BPF LSM).
    pub file_and_exec: bool,
    /// Connect decisions, through BPF LSM or the cgroup connect hooks.
    pub network: bool,
    /// How a use already under way (an open file, a connection) ends when
    /// its permission does: `"lsm"`, checked at every read, write, send
    /// and receive on the kernel's clock; `"packets"` (cgroup hooks only),
    /// a held connection carries no more packets, on the kernel's clock,
    /// and open files are not ended; or `"none"`, only new opens and
    /// connects are refused.
    pub use_in_progress: &'static str,
    /// How a held connection's peer learns that it ended: `"sock_destroy"`,
    /// reset at the deadline (or the revoke) through sock_diag; or
    /// `"none"`, only when the holder next sends or receives.
    pub connection_teardown: &'static str,
    /// Whether managed subjects (root after `sudo` included) are kept from
    /// switching ward off: its BPF objects, the daemon, the pins' mount,
    /// kernel modules and kexec (`"lsm"`), or not at all (`"none"`).
    pub self_protection: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kernel: String,
    /// The kernel's lockdown mode (`none`, `integrity`, `confidentiality`),
    /// or `unavailable` without the lockdown LSM. Lockdown closes, for
    /// every user, routes into the kernel that ward's own refusals cover
    /// only for managed subjects.
    pub lockdown: String,
    pub checks: Vec<Check>,
    pub capabilities: Capabilities,
}

impl Report {
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    fn ok(&self, id: &str) -> bool {
        self.check(id).is_some_and(|c| c.status == Status::Ok)
    }

    /// 0 when everything works, 2 when ward can only enforce part of its
    /// model here, 1 when a check could not run at all.
    pub fn exit_code(&self) -> i32 {
        if self.checks.iter().any(|c| c.status == Status::Error) {
            1
        } else if self.checks.iter().any(|c| c.status == Status::Unavailable) {
            2
        } else {
            0
        }
    }
}

/// Runs every check against the running kernel.
pub fn run() -> Report {
    let offsets = KernelOffsets::from_running_kernel();
    // The probe programs read no struct fields, but the object's globals
    // must be set: zero stands in when BTF is unreadable (reported above).
    let probe_offsets = offsets.as_ref().copied().unwrap_or(KernelOffsets::UNUSED);
    let checks = vec![
        probes::kernel_version(),
        probes::btf(&offsets),
        probes::bpf_lsm_active(),
        probes::lsm_program(&probe_offsets),
        probes::cgroup_v2(),
        probes::cgroup_sock_addr(&probe_offsets),
        probes::connection_teardown(),
    ];
    let mut report = Report {
        kernel: crate::kernel::release(),
        lockdown: lockdown(),
        checks,
        capabilities: Capabilities {
            file_and_exec: false,
            network: false,
            use_in_progress: "none",
            connection_teardown: "none",
            self_protection: "none",
        },
    };
    let lsm = report.ok("bpf_lsm") && report.ok("lsm_program") && report.ok("btf");
    let network = lsm || report.ok("cgroup_sock_addr");
    let teardown = report.ok("sock_destroy");
    report.capabilities = Capabilities {
        file_and_exec: lsm,
        network,
        use_in_progress: if lsm {
            "lsm"
        } else if network {
            "packets"
        } else {
            "none"
        },
        connection_teardown: if network && teardown {
            "sock_destroy"
        } else {
            "none"
        },
        self_protection: if lsm { "lsm" } else { "none" },
    };
    report
}

/// The selected mode in `/sys/kernel/security/lockdown` (`[none]
/// integrity confidentiality`).
fn lockdown() -> String {
    match std::fs::read_to_string("/sys/kernel/security/lockdown") {
        Ok(s) => selected_lockdown(&s).unwrap_or("unknown").to_owned(),
        Err(_) => "unavailable".to_owned(),
    }
}

fn selected_lockdown(s: &str) -> Option<&str> {
    s.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
}

/// Prints a report as text or JSON; returns the exit status it implies.
pub fn print(report: &Report, json: bool) -> Result<i32, serde_json::Error> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", render_text(report));
    }
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_selected_lockdown_mode_is_the_bracketed_one() {
        assert_eq!(
            super::selected_lockdown("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(super::selected_lockdown("[none] integrity"), Some("none"));
        assert_eq!(super::selected_lockdown(""), None);
    }
}
