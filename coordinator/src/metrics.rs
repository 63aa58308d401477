//! Prometheus metrics and a health check for the coordinator, on a
//! listener of their own (`[metrics] listen`, off by default).
//!
//! Decisions, approval latency and webhook deliveries are counted as they
//! happen on this replica; requests by state, the connected agents and the
//! outbox backlog are read at each scrape (requests from the shared store,
//! so every replica reports the fleet's).

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use ward_proto::v1::RequestState;

use crate::{fleet::Fleet, store::Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `approved` or `denied`.
    pub decision: &'static str,
    /// `policy` (decided at creation) or `review`.
    pub by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `delivered` (2xx), `retried` (an attempt that will be tried again), or
    /// `failed` (given up, and recorded in the audit log).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// What this replica counts as it goes.
pub struct Metrics {
    pub decisions: Family<DecisionLabels, Counter>,
    /// Seconds from a request's creation to its approval.
    pub approval_seconds: Histogram,
    pub webhooks: Family<WebhookLabels, Counter>,
    /// The last outbox position this replica delivered.
    pub delivered: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            decisions: Family::default(),
            // 0.5 s to about 36 h.
            approval_seconds: Histogram::new(exponential_buckets(0.5, 4.0, 10)),
            webhooks: Family::default(),
            delivered: AtomicI64::new(0),
        };
        // Known series start at 0: `rate()` sees the first event, and
        // dashboards find them before anything happens.
        for decision in ["approved", "denied"] {
            for by in ["policy", "review"] {
                let _ = m.decisions.get_or_create(&DecisionLabels { decision, by });
            }
        }
        for outcome in ["delivered", "retried", "failed"] {
            let _ = m.webhooks.get_or_create(&WebhookLabels { outcome });
        }
        m
    }
}

impl Metrics {
    /// Counts a request that a call left approved or denied.
    pub fn decided(&self, r: &ward_proto::v1::AccessRequest, by: &'static str) {
        let decision = match RequestState::try_from(r.state) {
            Ok(RequestState::Approved) => {
                let ms = (r.approved_unix_ms - r.created_unix_ms).max(0);
                self.approval_seconds.observe(ms as f64 / 1000.0);
                "approved"
            }
            Ok(RequestState::Denied) => "denied",
            _ => return,
        };
        self.decisions
            .get_or_create(&DecisionLabels { decision, by })
            .inc();
    }

    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels { outcome })
            .inc();
    }
}

/// One scrape, in the Prometheus text format.
fn scrape(metrics: &Metrics, store: &mut Store, connected: usize) -> Result<String, String> {
    let (by_state, head) = store
        .read(|tx| -> Result<_, crate::store::StoreError> {
            Ok((tx.count_by_state()?, tx.outbox_head()?))
        })
        .map_err(|e| e.to_string())?;
    let mut registry = Registry::with_prefix("ward_coordinator");
    registry.register(
        "request_decisions",
        "Requests approved or denied, by whom (policy at creation, or review)",
        metrics.decisions.clone(),
    );
    registry.register(
        "request_approval_seconds",
        "Time from a request's creation to its approval",
        metrics.approval_seconds.clone(),
    );
    registry.register(
        "webhook_deliveries",
        "Webhook posts: delivered, refused by the receiver, or failed",
        metrics.webhooks.clone(),
    );
    let requests = Family::<StateLabels, Gauge>::default();
    for state in [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Denied,
        RequestState::Expired,
        RequestState::Released,
        RequestState::Revoked,
    ] {
        let n = by_state
            .iter()
            .find(|(s, _)| *s == state as i64)
            .map_or(0, |(_, n)| *n);
        requests
            .get_or_create(&StateLabels {
                state: state_name(state),
            })
            .set(n);
    }
    registry.register(
        "requests",
        "Access requests in the store, by state",
        requests,
    );
    let agents = Gauge::<i64>::default();
    agents.set(connected as i64);
    registry.register(
        "connected_agents",
        "Agent streams connected to this replica",
        agents,
    );
    let backlog = Gauge::<i64>::default();
    backlog.set((head - metrics.delivered.load(Ordering::Relaxed)).max(0));
    registry.register(
        "outbox_backlog",
        "Outbox messages this replica has not delivered yet",
        backlog,
    );
    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| e.to_string())?;
    Ok(out)
}

fn state_name(s: RequestState) -> &'static str {
    match s {
        RequestState::Pending => "pending",
        RequestState::Approved => "approved",
        RequestState::Denied => "denied",
        RequestState::Expired => "expired",
        RequestState::Released => "released",
        RequestState::Revoked => "revoked",
        RequestState::Unspecified => "unspecified",
    }
}

/// Serves `/metrics` and `/healthz` (200 when the store answers, else 503
/// naming why) until the listener fails. The store is the scrape's own
/// connection: a scrape never holds the decision lock.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    fleet: Arc<Fleet>,
) -> std::io::Result<()> {
    let store = Arc::new(std::sync::Mutex::new(store));
    let scraped = store.clone();
    ward_proto::metrics::serve(
        listener,
        move || {
            let (metrics, store, fleet) = (metrics.clone(), scraped.clone(), fleet.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                    scrape(&metrics, &mut store, fleet.connected().len())
                })
                .await
                .map_err(|e| format!("scrape: {e}"))?
            }
        },
        move || {
            let store = store.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                    store
                        .read(|tx| -> Result<_, crate::store::StoreError> { tx.outbox_head() })
                        .map(drop)
                        .map_err(|e| format!("store: {e}"))
                })
                .await
                .map_err(|e| format!("health: {e}"))?
            }
        },
    )
    .await
}
