//! Reading what the runs saved in target/bench: the JSON files, and the VM
//! loops' rows as [`Overheads`].

use std::{fs, path::Path};

use anyhow::{Context, Result};

/// The loops the VM times, as named in its BENCH lines.
pub const SYSCALLS: [(&str, &str); 6] = [
    ("open_read", "open+close (read)"),
    ("open_write", "open+close (write)"),
    (
        "exec",
        "posix_spawn+execve+wait of a 129-byte static binary",
    ),
    ("connect", "TCP connect+accept+close on loopback"),
    ("read", "pread of 1 byte through a file opened once"),
    (
        "send_recv",
        "1 byte sent and received each way on a loopback connection made once",
    ),
];

/// The conditions with ward loaded, as the VM names them.
pub const CONDITIONS: [&str; 3] = ["unmanaged", "managed_unprotected", "managed_granted"];

/// How many of [`SYSCALLS`] open something (the rest use what is open).
pub const OPEN_LOOPS: usize = 4;

/// One loop's figures.
pub struct Overheads<'a> {
    pub rows: Vec<&'a serde_json::Value>,
    /// ns/op with no ward.
    pub base: f64,
    /// ns/op with the empty program on every hook the loop passes.
    pub floor: f64,
    /// LSM hooks one op passes through (exec: file_open and bprm_check).
    hooks: f64,
}

impl<'a> Overheads<'a> {
    pub fn of(rows: &'a [serde_json::Value], syscall: &str) -> Option<Self> {
        let rows: Vec<_> = rows.iter().filter(|r| r["syscall"] == syscall).collect();
        let find = |c: &str| {
            rows.iter()
                .find(|r| r["condition"] == c)
                .and_then(|r| r["ns"].as_f64())
        };
        Some(Overheads {
            base: find("baseline")?,
            floor: find("floor")?,
            hooks: if syscall == "exec" { 2.0 } else { 1.0 },
            rows,
        })
    }

    /// What one hook invocation costs outside the program (the BPF
    /// trampoline): the floor's timed cost less its in-BPF time. Taken from
    /// a loop whose timing repeats to the instruction (open_read).
    pub fn trampoline_ns(&self) -> f64 {
        (self.floor - self.base - self.bpf("floor", None)) / self.hooks
    }

    /// × floor from the kernel's own per-program times: (trampolines +
    /// ward's in-BPF time) / (trampolines + the empty program's). For loops
    /// whose op varies by more than the floor costs (exec, connect), this
    /// is the figure that means something; on open it matches the timed one.
    pub fn x_floor_bpf(&self, cond: &str, entries: Option<u64>, trampoline: f64) -> f64 {
        let t = trampoline * self.hooks;
        (t + self.bpf(cond, entries)) / (t + self.bpf("floor", None))
    }

    pub fn x_floor_timed(&self, cond: &str, entries: Option<u64>) -> f64 {
        self.ns(cond, entries)
            .map_or(f64::NAN, |v| (v - self.base) / (self.floor - self.base))
    }

    pub fn row(&self, cond: &str, entries: Option<u64>) -> Option<&serde_json::Value> {
        self.rows
            .iter()
            .find(|r| r["condition"] == cond && r["entries"].as_u64() == entries)
            .copied()
    }

    pub fn ns(&self, cond: &str, entries: Option<u64>) -> Option<f64> {
        self.row(cond, entries).and_then(|r| r["ns"].as_f64())
    }

    /// Summed in-BPF ns per op of every program that ran; NaN when the
    /// pass read no stats (a managed caller may not read ward's programs'
    /// stats: self-protection), never a 0 that would pass for "free".
    pub fn bpf(&self, cond: &str, entries: Option<u64>) -> f64 {
        self.row(cond, entries)
            .and_then(|r| r["bpf_ns"].as_object())
            .filter(|m| !m.is_empty())
            .map_or(f64::NAN, |m| m.values().filter_map(|v| v.as_f64()).sum())
    }

    pub fn percent(&self, v: f64) -> f64 {
        100.0 * (v - self.base) / self.base
    }

    /// The worst growth of ns/op from 1,000 to 100,000 entries over the
    /// ward conditions, as a fraction; None when no condition ran at both
    /// sizes (never a -inf that would pass for "met").
    pub fn growth(&self) -> Option<f64> {
        CONDITIONS
            .iter()
            .filter_map(|c| Some(self.ns(c, Some(100_000))? / self.ns(c, Some(1_000))? - 1.0))
            .reduce(f64::max)
    }
}

/// The VM loops' rows: the opening loops and the use loops, each from its
/// own run (`--only syscalls`, `--only uses`); at least one must be there.
pub fn syscall_rows(out: &Path) -> Result<Vec<serde_json::Value>> {
    let mut rows = Vec::new();
    let mut first_err = None;
    for name in ["syscall_overhead", "use_overhead"] {
        match read_json(out, name).and_then(|v| Ok(serde_json::from_value::<Vec<_>>(v)?)) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match (rows.is_empty(), first_err) {
        (true, Some(e)) => Err(e),
        _ => Ok(rows),
    }
}

pub fn read_json(out: &Path, name: &str) -> Result<serde_json::Value> {
    let path = out.join(format!("{name}.json"));
    serde_json::from_str(
        &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))
}
