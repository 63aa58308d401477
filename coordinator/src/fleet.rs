//! The agents connected right now, and delivery to exactly the ones a
//! grant or revocation targets.

use std::{collections::HashMap, sync::Mutex};

use tokio::sync::mpsc;
use ward_proto::v1::FleetMessage;

/// One open agent stream: each message with its outbox position, so the
/// stream can drop what its snapshot already holds.
pub type Outbox = mpsc::Sender<(i64, FleetMessage)>;

#[derive(Default)]
pub struct Fleet {
    streams: Mutex<HashMap<String, Vec<Outbox>>>,
}

impl Fleet {
    pub fn attach(&self, host: &str, tx: Outbox) {
        if let Ok(mut s) = self.streams.lock() {
            s.entry(host.to_owned()).or_default().push(tx);
        }
    }

    /// Sends to every open stream of each host; closed streams are dropped.
    /// Returns how many streams took it.
    pub fn deliver(&self, seq: i64, hosts: &[String], msg: &FleetMessage) -> usize {
        let Ok(mut s) = self.streams.lock() else {
            return 0;
        };
        let mut sent = 0;
        for h in hosts {
            if let Some(list) = s.get_mut(h) {
                list.retain(|tx| match tx.try_send((seq, msg.clone())) {
                    Ok(()) => {
                        sent += 1;
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Never drop a message and keep the stream: this
                        // one may be a revocation. Dropping the stream's
                        // sender ends it once the agent has read what is
                        // queued; the agent reconnects and resyncs from a
                        // snapshot, which holds exactly the live grants.
                        tracing::warn!(
                            host = %h,
                            "agent stream full; closing it so the agent resyncs"
                        );
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            }
        }
        sent
    }

    /// Closes every stream of `host` (a revoked host): dropping the
    /// senders ends them.
    pub fn disconnect(&self, host: &str) -> usize {
        self.streams
            .lock()
            .map(|mut s| s.remove(host).map_or(0, |v| v.len()))
            .unwrap_or(0)
    }

    pub fn connected(&self) -> Vec<String> {
        self.streams
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(_, v)| v.iter().any(|t| !t.is_closed()))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}
