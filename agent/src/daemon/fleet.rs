//! The agent's side of the fleet channel: it dials the coordinator over
//! mutual TLS, keeps the stream open, verifies every grant's signature
//! before the engine sees it, and resynchronises on every (re)connect.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use tokio::sync::Mutex;
use ward_proto::{
    hostset, signing,
    v1::{self as pb, coordinator_client::CoordinatorClient, fleet_message},
};

use super::{config::CoordinatorSection, engine::Engine};

/// Who issues the grants this channel manages.
pub const ISSUER: &str = "ward-coordinator";

/// Runs forever: connect, subscribe, apply; on any failure wait and retry.
/// An enrolled agent (`join_url`) also renews its certificate, in the same
/// task, so that a failure in either is the channel's failure.
pub async fn run(
    engine: Arc<Mutex<Engine>>,
    section: CoordinatorSection,
    host: String,
    labels: Vec<String>,
) {
    // Set when a renewal wrote a new certificate: the stream reconnects
    // with it.
    let renewed = tokio::sync::Notify::new();
    let sessions = async {
        let mut backoff = Backoff::default();
        loop {
            // Read each time: a renewal may bring a rotated key.
            let keys = section.keys();
            let ended = session(
                &engine,
                &section,
                &host,
                &labels,
                &keys,
                &mut backoff,
                &renewed,
            )
            .await;
            engine.lock().await.metrics.coordinator_stream_up.set(0);
            match ended {
                Ok(()) => {
                    tracing::warn!(host = %host, "coordinator closed the stream; reconnecting")
                }
                Err(e) => {
                    tracing::warn!(host = %host, error = %e, "coordinator unreachable; retrying")
                }
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
    };
    if section.join_url.is_some() {
        tokio::join!(sessions, crate::enrol::renew_forever(&section, &renewed));
    } else {
        sessions.await;
    }
}

/// How long an agent waits before each attempt to reach its coordinator.
///
/// The window starts at [`Backoff::FIRST`] and doubles up to
/// [`Backoff::MAX`] while the coordinator stays unreachable; each wait is
/// drawn evenly from the window ("full jitter"). When a coordinator
/// restarts, every agent's stream ends at once, and agents that all
/// waited the same time would all come back at once; spread out, a
/// fleet's reconnects arrive over the whole window instead.
#[derive(Debug, Clone)]
pub struct Backoff {
    window: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            window: Self::FIRST,
        }
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(200);
    pub const MAX: Duration = Duration::from_secs(5);

    /// The wait before the next attempt; the window doubles.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.window.mul_f64(fastrand::f64());
        self.window = (self.window * 2).min(Self::MAX);
        wait
    }

    /// A stream was established: a drop is retried soon, since it may
    /// have been closed so that this agent resyncs.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

async fn session(
    engine: &Arc<Mutex<Engine>>,
    section: &CoordinatorSection,
    host: &str,
    labels: &[String],
    keys: &[Vec<u8>],
    backoff: &mut Backoff,
    renewed: &tokio::sync::Notify,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = crate::client::connect_tls(&section.tls_target()).await?;
    let mut client = CoordinatorClient::new(channel)
        .max_decoding_message_size(ward_proto::transport::MAX_RESPONSE_BYTES);
    let posture = {
        let startup = &engine.lock().await.startup;
        pb::HostPosture {
            file_enforcement: startup.file_and_exec,
            kernel: startup.kernel.clone(),
        }
    };
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            host: host.to_owned(),
            labels: labels.to_vec(),
            posture: Some(posture),
        })
        .await?
        .into_inner();
    tracing::info!(host = %host, url = %section.url, "subscribed to the coordinator");
    engine.lock().await.metrics.coordinator_stream_up.set(1);
    backoff.reset();
    loop {
        let msg = tokio::select! {
            msg = stream.message() => match msg? {
                Some(msg) => msg,
                None => break,
            },
            () = renewed.notified() => {
                tracing::info!(host = %host, "certificate renewed; reconnecting with it");
                break;
            }
        };
        let mut engine = engine.lock().await;
        match msg.kind {
            Some(fleet_message::Kind::Snapshot(s)) => {
                let mut ids = BTreeSet::new();
                for g in &s.grants {
                    if let Some(id) = apply(&mut engine, g, host, keys) {
                        ids.insert(id);
                    }
                }
                engine.resync_issuer(ISSUER, &ids);
                tracing::info!(grants = ids.len(), "resynchronised with the coordinator");
            }
            Some(fleet_message::Kind::Grant(g)) => {
                apply(&mut engine, &g, host, keys);
            }
            Some(fleet_message::Kind::Revocation(r)) => {
                match engine.revoke(&r.grant_id, &r.reason, "coordinator") {
                    Ok(_) => tracing::info!(grant_id = %r.grant_id, "revoked by the coordinator"),
                    Err(e) => {
                        tracing::info!(grant_id = %r.grant_id, error = %e, "revocation had nothing to end")
                    }
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// Verifies and pushes one signed grant; returns its id if it stands.
fn apply(
    engine: &mut Engine,
    signed: &pb::SignedGrant,
    host: &str,
    keys: &[Vec<u8>],
) -> Option<String> {
    let metrics = engine.metrics.clone();
    let grant = match signing::verify(signed, keys) {
        Ok(g) => g,
        Err(e) => {
            metrics.push(Some(tonic::Code::PermissionDenied));
            engine.refuse_grant("", "coordinator", &format!("{e} (key {})", signed.key_id));
            return None;
        }
    };
    if !hostset::names(&grant, signed.host_proof.as_ref(), host) {
        metrics.push(Some(tonic::Code::PermissionDenied));
        let why = format!(
            "signed for {}, not for this host `{host}`",
            hostset::describe(&grant)
        );
        engine.refuse_grant(&grant.id, "coordinator", &why);
        return None;
    }
    let id = grant.id.clone();
    let pushed = engine.push(grant, "coordinator");
    metrics.push(pushed.as_ref().err().map(super::service::code_of));
    match pushed {
        Ok(_) => Some(id),
        // The engine audited this refusal itself.
        Err(e @ super::engine::EngineError::NotEligible(_)) => {
            tracing::warn!(grant_id = %id, error = %e, "coordinator grant refused by local policy");
            None
        }
        Err(e) => {
            engine.refuse_grant(&id, "coordinator", &e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_waits_are_drawn_from_a_doubling_capped_window() {
        let mut b = Backoff::default();
        let windows = [200, 400, 800, 1600, 3200, 5000, 5000];
        for w in windows {
            let wait = b.next_wait();
            assert!(wait <= Duration::from_millis(w), "{wait:?} > {w} ms");
        }
        // Spread, not fixed: 1,000 draws from the 5 s window cover it.
        let waits: Vec<Duration> = (0..1000).map(|_| b.next_wait()).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_millis(500)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(4500)));
        b.reset();
        assert!(b.next_wait() <= Backoff::FIRST);
    }
}
