//! Simulated agents for the fleet tests and benchmarks: each one a real
//! mutual-TLS stream to a coordinator (its own certificate, its own
//! connection), following a fleet channel as wardd does. A snapshot
//! replaces what it holds, a grant adds, a revocation removes; when the
//! stream ends it waits with wardd's own [`Backoff`] and subscribes again.
//! What each agent holds is tracked here, from its events, so a test asks
//! "does every agent hold exactly these grants?".

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use ward_agent::{client::TlsTarget, daemon::fleet::Backoff};
use ward_proto::v1::{self as pb, coordinator_client::CoordinatorClient, fleet_message};

/// Asks, as dave, for connect to 10.0.0.0/8:5432 on every host labelled
/// `label` (auto-approved by the test policy where hosts are env=test):
/// the request's id.
pub fn grant_to_label(
    rt: &tokio::runtime::Runtime,
    c: &super::Coordinator,
    label: &str,
    reason: &str,
) -> String {
    let mut dave = rt.block_on(c.grpc("dave"));
    rt.block_on(dave.create_request(pb::CreateRequestRequest {
        operations: vec![pb::Operation::Connect as i32],
        objects: vec![pb::Object {
            kind: Some(pb::object::Kind::Network("10.0.0.0/8:5432".into())),
        }],
        host_labels: vec![label.to_owned()],
        duration_ms: 600_000,
        reason: reason.to_owned(),
        ..Default::default()
    }))
    .unwrap()
    .into_inner()
    .id
}

/// What an agent saw, and when.
#[derive(Debug)]
enum Seen {
    Snapshot(Vec<String>),
    Grant(String),
    Revocation(String),
}

/// Only a grant's id: decoding skips the rest (its host list is as long
/// as the fleet), as a fast agent would not, but the simulator must not
/// be the bottleneck it measures.
#[derive(Clone, PartialEq, Message)]
struct GrantId {
    #[prost(string, tag = "1")]
    id: String,
}

/// One agent's view, kept from its events.
#[derive(Debug, Default, Clone)]
pub struct Held {
    pub grants: BTreeSet<String>,
    /// Snapshots received: one per (re)subscription.
    pub snapshots: usize,
}

pub struct SimFleet {
    events: mpsc::UnboundedReceiver<(usize, Instant, Seen)>,
    held: Vec<Held>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimFleet {
    /// Starts one agent per `(host, labels, target)` on `rt`; at most
    /// `in_flight` handshakes run at once.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        agents: Vec<(String, Vec<String>, TlsTarget)>,
        in_flight: usize,
    ) -> SimFleet {
        let (tx, events) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(in_flight));
        let held = vec![Held::default(); agents.len()];
        let tasks = agents
            .into_iter()
            .enumerate()
            .map(|(i, (host, labels, target))| {
                let (tx, gate) = (tx.clone(), gate.clone());
                rt.spawn(async move {
                    let mut backoff = Backoff::default();
                    loop {
                        let _ = follow(i, &host, &labels, &target, &gate, &tx, &mut backoff).await;
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                })
            })
            .collect();
        SimFleet {
            events,
            held,
            tasks,
        }
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes events until every agent satisfies `done`, or `limit` passes
    /// (then panics, naming how many do not). Returns, per agent, when it
    /// first did: the instant of the event that made it so, or now for
    /// agents that already did.
    pub fn wait_all(
        &mut self,
        rt: &tokio::runtime::Runtime,
        what: &str,
        limit: Duration,
        done: impl Fn(&Held) -> bool,
    ) -> Vec<Instant> {
        let now = Instant::now();
        let mut when: Vec<Option<Instant>> =
            self.held.iter().map(|h| done(h).then_some(now)).collect();
        let mut left = when.iter().filter(|w| w.is_none()).count();
        let deadline = tokio::time::Instant::now() + limit;
        while left > 0 {
            let next =
                rt.block_on(async { tokio::time::timeout_at(deadline, self.events.recv()).await });
            let Ok(Some((i, at, seen))) = next else {
                panic!(
                    "{what}: {left} of {} agents not there after {limit:?}",
                    self.len()
                );
            };
            let ok = done(self.take(i, seen));
            match (ok, when[i]) {
                (true, None) => {
                    when[i] = Some(at);
                    left -= 1;
                }
                // An agent that was there and left again (a resync that
                // has not yet seen what it missed) is waited for anew.
                (false, Some(_)) => {
                    when[i] = None;
                    left += 1;
                }
                _ => {}
            }
        }
        when.into_iter().flatten().collect()
    }

    /// Takes events for `period`: what the agents hold once things
    /// settle.
    pub fn settle(&mut self, rt: &tokio::runtime::Runtime, period: Duration) -> &[Held] {
        let until = tokio::time::Instant::now() + period;
        while let Ok(Some((i, _, seen))) =
            rt.block_on(async { tokio::time::timeout_at(until, self.events.recv()).await })
        {
            self.take(i, seen);
        }
        &self.held
    }

    pub fn held(&self) -> &[Held] {
        &self.held
    }

    fn take(&mut self, i: usize, seen: Seen) -> &Held {
        let h = &mut self.held[i];
        match seen {
            Seen::Snapshot(ids) => {
                h.grants = ids.into_iter().collect();
                h.snapshots += 1;
            }
            Seen::Grant(id) => {
                h.grants.insert(id);
            }
            Seen::Revocation(id) => {
                h.grants.remove(&id);
            }
        }
        h
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One subscription, until the stream ends.
async fn follow(
    i: usize,
    host: &str,
    labels: &[String],
    target: &TlsTarget,
    gate: &Semaphore,
    tx: &mpsc::UnboundedSender<(usize, Instant, Seen)>,
    backoff: &mut Backoff,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut stream = {
        let _turn = gate.acquire().await?;
        let ch = ward_agent::client::connect_tls(target).await?;
        CoordinatorClient::new(ch)
            .max_decoding_message_size(ward_proto::transport::MAX_RESPONSE_BYTES)
            .subscribe(pb::SubscribeRequest {
                host: host.to_owned(),
                labels: labels.to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner()
    };
    backoff.reset();
    while let Some(m) = stream.message().await? {
        let seen = match m.kind {
            Some(fleet_message::Kind::Snapshot(s)) => Seen::Snapshot(
                s.grants
                    .iter()
                    .map(|g| GrantId::decode(g.grant.as_slice()).map(|g| g.id))
                    .collect::<Result<_, _>>()?,
            ),
            Some(fleet_message::Kind::Grant(g)) => {
                Seen::Grant(GrantId::decode(g.grant.as_slice())?.id)
            }
            Some(fleet_message::Kind::Revocation(r)) => Seen::Revocation(r.grant_id),
            None => continue,
        };
        tx.send((i, Instant::now(), seen))?;
    }
    Ok(())
}
