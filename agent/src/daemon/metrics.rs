//! Prometheus metrics and a health check, served on a listener of their
//! own (`[metrics] listen`, off by default; loopback in the samples).
//!
//! What wardd does (pushes, policy reloads, events, the coordinator
//! stream) is counted as it happens; what the kernel and the store hold
//! (decisions, table sizes, program run time, grants by state) is read at
//! each scrape, so a scrape shows the kernel's own counts.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::Mutex;

use super::engine::Engine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// `accepted` or `refused`.
    pub outcome: &'static str,
    /// Why a push was refused (the gRPC status code's name), `none` when
    /// accepted.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `deny`, `allow_by_grant` or `tamper`.
    pub kind: &'static str,
}

/// What wardd counts as it goes. Shared by the engine and the services.
pub struct Metrics {
    /// Grant pushes, by outcome and reason.
    pub pushes: Family<PushLabels, Counter>,
    /// Policy reloads, `applied` or `rejected` (the old policy enforcing).
    pub policy_reloads: Family<OutcomeLabels, Counter>,
    /// Kernel events received, by kind.
    pub events: Family<EventLabels, Counter>,
    /// 1 while the coordinator stream is subscribed, else 0.
    pub coordinator_stream_up: Gauge,
}

impl Default for Metrics {
    /// Every series whose labels are known in advance starts at 0, so that
    /// `rate()` and `increase()` see the first event, and a dashboard or an
    /// alert finds the series before anything has happened.
    fn default() -> Metrics {
        let m = Metrics {
            pushes: Family::default(),
            policy_reloads: Family::default(),
            events: Family::default(),
            coordinator_stream_up: Gauge::default(),
        };
        let _ = m.pushes.get_or_create(&PushLabels {
            outcome: "accepted",
            reason: "none".into(),
        });
        for outcome in ["applied", "rejected"] {
            let _ = m.policy_reloads.get_or_create(&OutcomeLabels { outcome });
        }
        for kind in ["deny", "allow_by_grant", "tamper"] {
            let _ = m.events.get_or_create(&EventLabels { kind });
        }
        m
    }
}

impl Metrics {
    pub fn push(&self, refused: Option<tonic::Code>) {
        let labels = match refused {
            None => PushLabels {
                outcome: "accepted",
                reason: "none".into(),
            },
            Some(code) => PushLabels {
                outcome: "refused",
                reason: code_name(code),
            },
        };
        self.pushes.get_or_create(&labels).inc();
    }

    pub fn policy_reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.policy_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// `PermissionDenied` -> `permission_denied`.
fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// One scrape: wardd's counters, then what the kernel and the store hold
/// now, in the Prometheus text format.
pub async fn scrape(engine: &Mutex<Engine>) -> Result<String, String> {
    let mut registry = Registry::with_prefix("ward");
    let mut engine = engine.lock().await;
    let m = engine.metrics.clone();
    registry.register(
        "grant_pushes",
        "Grant pushes to this agent, by outcome and reason",
        m.pushes.clone(),
    );
    registry.register(
        "policy_reloads",
        "Policy reloads: applied, or rejected with the previous policy still enforcing",
        m.policy_reloads.clone(),
    );
    registry.register(
        "events",
        "Kernel events received (denials, uses of grants, attempts on ward itself)",
        m.events.clone(),
    );
    registry.register(
        "coordinator_stream_up",
        "1 while the coordinator stream is subscribed",
        m.coordinator_stream_up.clone(),
    );
    let now = engine.snapshot().map_err(|e| e.to_string())?;
    drop(engine);

    let decisions = Family::<DecisionLabels, Counter>::default();
    for (operation, outcome, n) in &now.decisions {
        decisions
            .get_or_create(&DecisionLabels { operation, outcome })
            .inc_by(*n);
    }
    registry.register(
        "kernel_decisions",
        "Decisions the kernel took on protected objects, by operation and outcome \
         (deny, allow_by_grant, allow_by_policy)",
        decisions,
    );
    let lost = Counter::<u64>::default();
    lost.inc_by(now.events_lost);
    registry.register(
        "events_lost",
        "Kernel events dropped because the ring buffer was full",
        lost,
    );
    let entries = Family::<MapLabels, Gauge>::default();
    let capacity = Family::<MapLabels, Gauge>::default();
    for (map, used, max) in &now.tables {
        entries.get_or_create(&MapLabels { map }).set(*used as i64);
        capacity.get_or_create(&MapLabels { map }).set(*max as i64);
    }
    registry.register("table_entries", "Entries in each kernel table", entries);
    registry.register(
        "table_capacity",
        "Entries each kernel table holds at most",
        capacity,
    );
    let grants = Family::<StateLabels, Gauge>::default();
    for (state, n) in &now.grants {
        grants.get_or_create(&StateLabels { state }).set(*n as i64);
    }
    registry.register("grants", "Grants this agent holds, by state", grants);
    // Only when the kernel keeps program statistics
    // (`kernel.bpf_stats_enabled=1`): otherwise every figure is 0.
    if now.programs.iter().any(|p| p.run_count > 0) {
        let runs = Family::<ProgramLabels, Counter>::default();
        let time = Family::<ProgramLabels, Counter<f64>>::default();
        for p in &now.programs {
            let labels = ProgramLabels {
                program: p.name.clone(),
            };
            runs.get_or_create(&labels).inc_by(p.run_count);
            time.get_or_create(&labels)
                .inc_by(p.run_time_ns as f64 / 1e9);
        }
        registry.register("bpf_program_runs", "Runs of each ward eBPF program", runs);
        registry.register(
            "bpf_program_run_seconds",
            "Time spent in each ward eBPF program",
            time,
        );
    }
    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| e.to_string())?;
    Ok(out)
}

/// What the kernel and the store hold, read for one scrape.
pub struct Snapshot {
    /// (operation, outcome, count).
    pub decisions: Vec<(&'static str, &'static str, u64)>,
    pub events_lost: u64,
    /// (map, entries, capacity).
    pub tables: Vec<(&'static str, u64, u64)>,
    /// (state, grants).
    pub grants: Vec<(&'static str, u64)>,
    pub programs: Vec<crate::enforcer::ProgramStats>,
}

/// Serves `/metrics` and `/healthz` (200 when the kernel's maps and the
/// store answer, else 503 with why) until the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Mutex<Engine>>,
) -> std::io::Result<()> {
    let scraped = engine.clone();
    ward_proto::metrics::serve(
        listener,
        move || {
            let engine = scraped.clone();
            async move {
                scrape(&engine)
                    .await
                    .map_err(|e| format!("kernel tables unreadable: {e}"))
            }
        },
        move || {
            let engine = engine.clone();
            async move { engine.lock().await.health().map_err(|e| e.to_string()) }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_become_label_values() {
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "permission_denied"
        );
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_name(tonic::Code::Internal), "internal");
    }
}
