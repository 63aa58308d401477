//! The one table of the benchmarks' targets: every threshold the report
//! judges a figure against, with the figure it applies to and why.
//!
//! **xtask alone owns these numbers; the benchmarks only measure.** The
//! bench tests (`tests/tests/native/bench.rs` and `tests/src/bench.rs`, the
//! VM loops in `tests/tests/vm/bench.rs`, the coordinator benches and the
//! compile example) write what they measured to `target/bench/*.json` and
//! carry no target: a benchmark is a measurement, not a pass/fail test, and
//! a target is the project's promise about a figure, not part of it. So a
//! target is changed here and only here, and `cargo xtask bench
//! --report-only` judges figures saved before the change by the new table.
//! (Results saved by older runs may still hold `target_*` fields the tests
//! used to write; nothing reads them.)
//!
//! A figure that is absent or not a number is reported as *not measured*,
//! never as met or missed.

/// How a figure must compare with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Strictly below the limit (`<`).
    Below,
    /// At most the limit (`≤`).
    AtMost,
}

/// The unit a target's limit is in, and so the unit the report must pass
/// the figure in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Millis,
    MiB,
    /// A ratio to the empty-program floor's cost (`× floor, bpf_stats`).
    XFloor,
    /// A relative change, 0.10 = 10%.
    Fraction,
}

/// One threshold.
#[derive(Debug, PartialEq)]
pub struct Target {
    /// A short name for tests and messages.
    pub name: &'static str,
    /// The figure it applies to: its JSON file in target/bench and field,
    /// or how the report derives it.
    pub figure: &'static str,
    /// The statistic judged, as the report prints it ("p99", "max"), or "".
    pub statistic: &'static str,
    pub bound: Bound,
    pub limit: f64,
    pub unit: Unit,
    /// Why this limit: where it was set.
    pub why: &'static str,
}

/// A figure against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No figure, or not a number (NaN): never counted as met or missed.
    NotMeasured,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::NotMeasured => "not measured",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Target {
    /// `value`, in [`Target::unit`], against the limit.
    pub fn judge(&self, value: Option<f64>) -> Verdict {
        match value {
            Some(v) if !v.is_nan() => {
                let met = match self.bound {
                    Bound::Below => v < self.limit,
                    Bound::AtMost => v <= self.limit,
                };
                if met { Verdict::Met } else { Verdict::Missed }
            }
            _ => Verdict::NotMeasured,
        }
    }

    /// The limit as the report prints it: "< 1 ms", "≤ 1.2× floor".
    pub fn limit_text(&self) -> String {
        let op = match self.bound {
            Bound::Below => "<",
            Bound::AtMost => "≤",
        };
        let l = self.limit;
        let value = match self.unit {
            Unit::Micros if l >= 1000.0 => format!("{} ms", l / 1000.0),
            Unit::Micros => format!("{l} µs"),
            Unit::Millis if l >= 1000.0 => format!("{} s", l / 1000.0),
            Unit::Millis => format!("{l} ms"),
            Unit::MiB => format!("{l} MiB"),
            Unit::XFloor => format!("{l}× floor"),
            Unit::Fraction => format!("{}%", 100.0 * l),
        };
        format!("{op} {value}")
    }
}

impl std::fmt::Display for Target {
    /// The statistic and the limit: "p99 < 2 ms".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.statistic.is_empty() {
            f.write_str(&self.limit_text())
        } else {
            write!(f, "{} {}", self.statistic, self.limit_text())
        }
    }
}

pub const FLOOR_UNMANAGED: Target = Target {
    name: "floor_unmanaged",
    figure: "syscall_overhead.json: open/exec/connect loops, condition unmanaged, 100k entries, \
             × empty-program floor from bpf_stats",
    statistic: "",
    bound: Bound::AtMost,
    limit: 1.2,
    unit: Unit::XFloor,
    why: "issue 7: \"enforcement at syscall speed\"; for a caller ward does not manage, \
          +3.3% on open+close under icount",
};

pub const FLOOR_MANAGED_UNPROTECTED: Target = Target {
    name: "floor_managed_unprotected",
    figure: "syscall_overhead.json: open/exec/connect loops, condition managed_unprotected, \
             100k entries, × floor from bpf_stats",
    statistic: "",
    bound: Bound::AtMost,
    limit: 2.0,
    unit: Unit::XFloor,
    why: "issue 7: \"enforcement at syscall speed\" for managed callers too",
};

pub const FLOOR_MANAGED_GRANTED: Target = Target {
    name: "floor_managed_granted",
    figure: "syscall_overhead.json: open/exec/connect loops, condition managed_granted, \
             100k entries, × floor from bpf_stats",
    statistic: "",
    bound: Bound::AtMost,
    limit: 4.0,
    unit: Unit::XFloor,
    why: "issue 7; published anchors: KubeArmor's BPF-LSM enforcer 1–8%, vArmor 1.3–2.6%",
};

pub const FLOOR_USE_GRANTED: Target = Target {
    name: "floor_use_granted",
    figure: "use_overhead.json: read and send_recv loops, condition managed_granted, \
             100k entries, × floor from bpf_stats",
    statistic: "",
    bound: Bound::AtMost,
    limit: 2.0,
    unit: Unit::XFloor,
    why: "issue 13: a use of what a grant let open is checked on every read and send",
};

pub const GROWTH: Target = Target {
    name: "growth",
    figure: "syscall_overhead.json: ns/op at 100k entries over ns/op at 1k, worst open/exec/connect \
             loop and condition",
    statistic: "",
    bound: Bound::Below,
    limit: 0.10,
    unit: Unit::Fraction,
    why: "issue 7: lookups must not grow with the table",
};

pub const PUSH_P99: Target = Target {
    name: "push_p99",
    figure: "push_to_enforced.json: p99_us",
    statistic: "p99",
    bound: Bound::Below,
    limit: 2000.0,
    unit: Unit::Micros,
    why: "issue 7, kept by issue 13: a grant is usable as soon as it is pushed",
};

pub const EXPIRY_MAX: Target = Target {
    name: "expiry_max",
    figure: "expiry_precision.json: max_us",
    statistic: "max",
    bound: Bound::Below,
    limit: 1000.0,
    unit: Unit::Micros,
    why: "issue 7; issue 13: the end is enforced by the kernel's own clock comparison",
};

pub const TEARDOWN_MAX: Target = Target {
    name: "teardown_max",
    figure: "teardown_precision.json: max_us, and ordinary_peer.max_us",
    statistic: "max",
    bound: Bound::Below,
    limit: 1000.0,
    unit: Unit::Micros,
    why: "issue 13: a connection made under a grant ends within 1 ms of its deadline",
};

pub const COMPILE_FULL: Target = Target {
    name: "compile_full",
    figure: "policy_compile.json: full_compile_ms.median",
    statistic: "",
    bound: Bound::Below,
    limit: 1000.0,
    unit: Unit::Millis,
    why: "issue 5: 10k users × 1k resources × 4 actions compile in under a second",
};

pub const COMPILE_INCREMENTAL: Target = Target {
    name: "compile_incremental",
    figure: "policy_compile.json: incremental_compile_ms.median",
    statistic: "",
    bound: Bound::Below,
    limit: 10.0,
    unit: Unit::Millis,
    why: "issue 5: one attribute change touches only the affected entries",
};

pub const RSS_IDLE: Target = Target {
    name: "rss_idle",
    figure: "memory.json: rss_idle_kib / 1024",
    statistic: "",
    bound: Bound::Below,
    limit: 30.0,
    unit: Unit::MiB,
    why: "issue 7: an agent on every host stays small",
};

pub const RSS_WITH_GRANTS: Target = Target {
    name: "rss_with_grants",
    figure: "memory.json: rss_with_grants_kib / 1024, with 100k grants",
    statistic: "",
    bound: Bound::Below,
    limit: 100.0,
    unit: Unit::MiB,
    why: "issue 7: memory grows with grants, but stays bounded at 100k",
};

pub const LDAP_SYNC: Target = Target {
    name: "ldap_sync",
    figure: "ldap_sync.json: sync_ms.median (10,000 users, 100 groups, from slapd over StartTLS)",
    statistic: "",
    bound: Bound::Below,
    limit: 2000.0,
    unit: Unit::Millis,
    why: "issue 16: a directory of 10,000 people read, mapped and checked in under 2 s",
};

pub const FAN_OUT_10K: Target = Target {
    name: "fan_out_10k",
    figure: "coordinator_fan_out.json: agents_10000.all_delivered_us / 1000",
    statistic: "",
    bound: Bound::Below,
    limit: 1000.0,
    unit: Unit::Millis,
    why: "issue 16: one grant reaches a fleet of 10,000 agents in under a second",
};

pub const REVOKE_10K: Target = Target {
    name: "revoke_10k",
    figure: "coordinator_fan_out.json: agents_10000.all_revoked_us / 1000",
    statistic: "",
    bound: Bound::Below,
    limit: 1000.0,
    unit: Unit::Millis,
    why: "issue 16: a revocation reaches a fleet of 10,000 agents in under a second",
};

pub const FAN_OUT_REPLICAS: Target = Target {
    name: "fan_out_replicas",
    figure: "coordinator_fan_out_replicas.json: agents_10000.all_delivered_us / 1000 (5,000 \
             streams on each of two replicas sharing PostgreSQL)",
    statistic: "",
    bound: Bound::Below,
    limit: 1000.0,
    unit: Unit::Millis,
    why: "issue 16: across two replicas too, one grant reaches 10,000 agents in under a second",
};

pub const REVOKE_REPLICAS: Target = Target {
    name: "revoke_replicas",
    figure: "coordinator_fan_out_replicas.json: agents_10000.all_revoked_us / 1000 (decided on \
             the other replica)",
    statistic: "",
    bound: Bound::Below,
    limit: 1000.0,
    unit: Unit::Millis,
    why: "issue 16: across two replicas too, a revocation reaches 10,000 agents in under a second",
};

pub const RESYNC_10K: Target = Target {
    name: "resync_10k",
    figure: "coordinator_fan_out.json: resync_10000.all_resynced_ms (coordinator killed and \
             restarted, one of two grants revoked at once; every agent resubscribed and holding \
             exactly the other)",
    statistic: "",
    bound: Bound::Below,
    limit: 30000.0,
    unit: Unit::Millis,
    why: "issue 16: a fleet of 10,000 resyncs after a coordinator restart within 30 s, none \
          losing a grant or keeping a revoked one",
};

pub const DIRECTORY_MEMORY: Target = Target {
    name: "directory_memory",
    figure: "directory_in_kernel.json: kernel_memory_mib (wardd's maps, fdinfo memlock, with \
             the 10k × 1k × 4 directory loaded)",
    statistic: "",
    bound: Bound::Below,
    limit: 64.0,
    unit: Unit::MiB,
    why: "issue 16: the 10,000 × 1,000 × 4 directory fits the kernel in under 64 MiB",
};

pub const DIRECTORY_LOAD: Target = Target {
    name: "directory_load",
    figure: "directory_in_kernel.json: full_compile_and_load_ms (wardd's compile_ms + kernel_ms)",
    statistic: "median",
    bound: Bound::Below,
    limit: 1000.0,
    unit: Unit::Millis,
    why: "issue 16: the same directory compiled and loaded into the kernel in under a second",
};

pub const ATTRIBUTE_TO_KERNEL: Target = Target {
    name: "attribute_to_kernel",
    figure: "directory_in_kernel.json: attribute_change_ms (one person into a class the kernel \
             holds: wardd's compile_ms + kernel_ms, the directory file read included, the poll \
             interval not)",
    statistic: "median",
    bound: Bound::Below,
    limit: 10.0,
    unit: Unit::Millis,
    why: "issue 16: one attribute change reaches the kernel within 10 ms of the edit being seen",
};

pub const CLASS_LOOKUP: Target = Target {
    name: "class_lookup",
    figure: "syscall_overhead.json: open/exec/connect loops, managed_granted_classed over \
             managed_granted (the caller in a principal class, classes in use), × floor from \
             bpf_stats, 100k entries, worst loop",
    statistic: "",
    bound: Bound::AtMost,
    limit: 0.05,
    unit: Unit::Fraction,
    why: "issue 16: a managed caller's open+close no more than 5% above today's figure for the \
          same condition: the class lookup must be cheap",
};

/// Every target, for listing and tests.
pub const ALL: [&Target; 22] = [
    &FLOOR_UNMANAGED,
    &FLOOR_MANAGED_UNPROTECTED,
    &FLOOR_MANAGED_GRANTED,
    &FLOOR_USE_GRANTED,
    &GROWTH,
    &PUSH_P99,
    &EXPIRY_MAX,
    &TEARDOWN_MAX,
    &COMPILE_FULL,
    &COMPILE_INCREMENTAL,
    &RSS_IDLE,
    &RSS_WITH_GRANTS,
    &LDAP_SYNC,
    &FAN_OUT_10K,
    &REVOKE_10K,
    &FAN_OUT_REPLICAS,
    &REVOKE_REPLICAS,
    &RESYNC_10K,
    &DIRECTORY_MEMORY,
    &DIRECTORY_LOAD,
    &ATTRIBUTE_TO_KERNEL,
    &CLASS_LOOKUP,
];

/// The × floor target of a loop's condition: the opening loops (open, exec,
/// connect) have one per ward condition; the use loops (read, send_recv)
/// only for a managed caller's granted uses.
pub fn floor(opens: bool, condition: &str) -> Option<&'static Target> {
    match (opens, condition) {
        (true, "unmanaged") => Some(&FLOOR_UNMANAGED),
        (true, "managed_unprotected") => Some(&FLOOR_MANAGED_UNPROTECTED),
        (true, "managed_granted") => Some(&FLOOR_MANAGED_GRANTED),
        (false, "managed_granted") => Some(&FLOOR_USE_GRANTED),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_over_its_limit_is_missed_and_a_missing_one_not_measured() {
        assert_eq!(PUSH_P99.judge(Some(1999.0)), Verdict::Met);
        assert_eq!(PUSH_P99.judge(Some(2000.0)), Verdict::Missed);
        assert_eq!(FLOOR_UNMANAGED.judge(Some(1.2)), Verdict::Met);
        assert_eq!(FLOOR_UNMANAGED.judge(Some(1.21)), Verdict::Missed);
        assert_eq!(PUSH_P99.judge(None), Verdict::NotMeasured);
        assert_eq!(PUSH_P99.judge(Some(f64::NAN)), Verdict::NotMeasured);
        // -inf is a number below every limit, but no growth figure may
        // produce it: see report's test of an empty growth figure.
        assert_eq!(GROWTH.judge(Some(0.02)), Verdict::Met);
    }

    #[test]
    fn limits_print_in_their_unit() {
        assert_eq!(PUSH_P99.to_string(), "p99 < 2 ms");
        assert_eq!(EXPIRY_MAX.to_string(), "max < 1 ms");
        assert_eq!(FLOOR_UNMANAGED.to_string(), "≤ 1.2× floor");
        assert_eq!(GROWTH.to_string(), "< 10%");
        assert_eq!(COMPILE_FULL.to_string(), "< 1 s");
        assert_eq!(COMPILE_INCREMENTAL.to_string(), "< 10 ms");
        assert_eq!(RSS_IDLE.to_string(), "< 30 MiB");
    }

    #[test]
    fn every_target_is_named_once_and_says_why() {
        let mut names: Vec<_> = ALL.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(
            ALL.iter()
                .all(|t| !t.why.is_empty() && !t.figure.is_empty())
        );
    }

    #[test]
    fn use_loops_have_no_unmanaged_target() {
        assert_eq!(floor(false, "unmanaged"), None);
        assert_eq!(floor(false, "managed_granted"), Some(&FLOOR_USE_GRANTED));
        assert_eq!(floor(true, "unmanaged"), Some(&FLOOR_UNMANAGED));
    }
}
