//! The agents connected right now, and delivery to exactly the ones a
//! grant or revocation targets.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prost::Message;
use tokio::sync::mpsc;
use ward_proto::{
    hostset::HostTree,
    v1::{FleetMessage, Grant, SignedGrant, fleet_message},
};

/// One open agent stream: each message with its outbox position, so the
/// stream can drop what its snapshot already holds.
pub type Outbox = mpsc::Sender<(i64, FleetMessage)>;

#[derive(Default)]
pub struct Fleet {
    streams: Mutex<HashMap<String, Vec<Outbox>>>,
    /// The trees of grants delivered or snapshotted here.
    pub trees: HostTrees,
}

impl Fleet {
    pub fn attach(&self, host: &str, tx: Outbox) {
        if let Ok(mut s) = self.streams.lock() {
            s.entry(host.to_owned()).or_default().push(tx);
        }
    }

    /// Sends to every open stream of each host, a grant named by root
    /// with that host's proof; closed streams are dropped. Returns how
    /// many streams took it.
    pub fn deliver(&self, seq: i64, hosts: &[String], msg: &FleetMessage) -> usize {
        let tree = match &msg.kind {
            Some(fleet_message::Kind::Grant(g)) => self.trees.tree(g, || hosts.to_vec()),
            _ => None,
        };
        let Ok(mut s) = self.streams.lock() else {
            return 0;
        };
        let mut sent = 0;
        for h in hosts {
            if let Some(list) = s.get_mut(h) {
                let mut msg = msg.clone();
                if let (Some(tree), Some(fleet_message::Kind::Grant(g))) = (&tree, &mut msg.kind) {
                    g.host_proof = tree.proof(h);
                }
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

/// The host trees of grants that name their hosts by root, built once per
/// grant: its delivery and every resubscribing agent's snapshot need one
/// proof each.
#[derive(Default)]
pub struct HostTrees {
    trees: Mutex<HashMap<String, Arc<HostTree>>>,
}

/// Trees kept at most; past this the cache starts over (grants end, and a
/// tree is cheap to build again: 10,000 hosts in milliseconds).
const MAX_TREES: usize = 256;

impl HostTrees {
    /// The tree of `signed`'s grant if it names its hosts by root, built
    /// from `hosts` (which must be that grant's hosts) on first use. None
    /// for a grant that lists its hosts, or whose root `hosts` do not
    /// give (then no proof is sent and agents refuse it: loud, not wrong).
    pub fn tree(
        &self,
        signed: &SignedGrant,
        hosts: impl FnOnce() -> Vec<String>,
    ) -> Option<Arc<HostTree>> {
        let grant = Grant::decode(signed.grant.as_slice()).ok()?;
        if grant.hosts_root.is_empty() {
            return None;
        }
        let mut trees = self.trees.lock().ok()?;
        if let Some(t) = trees.get(&grant.id)
            && t.root() == grant.hosts_root
        {
            return Some(t.clone());
        }
        let tree = Arc::new(HostTree::new(&hosts()));
        if tree.root() != grant.hosts_root {
            tracing::error!(grant_id = %grant.id, "a grant's hosts do not give its signed root; no proofs sent");
            return None;
        }
        if trees.len() >= MAX_TREES {
            trees.clear();
        }
        trees.insert(grant.id, tree.clone());
        Some(tree)
    }

    /// Gives each grant of a snapshot for `host` its proof.
    pub fn prove(&self, host: &str, grants: Vec<(SignedGrant, String)>) -> Vec<SignedGrant> {
        grants
            .into_iter()
            .map(|(mut g, hosts)| {
                if let Some(t) = self.tree(&g, || crate::store::hosts_of(&hosts)) {
                    g.host_proof = t.proof(host);
                }
                g
            })
            .collect()
    }
}
