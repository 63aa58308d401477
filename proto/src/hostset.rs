//! Which hosts a signed grant is for.
//!
//! A grant for a few hosts lists them (`Grant.hosts`). A grant for many
//! names them by the root of a Merkle tree over the sorted names
//! (RFC 6962, SHA-256; `Grant.hosts_root`, `hosts_count`), and each agent
//! is sent, beside the signature, the inclusion proof of its own name.
//! Either way the signature covers exactly the set of hosts that was
//! decided, and a grant signed for other hosts is refused; but a grant for
//! 10,000 hosts reaches each of them as a few hundred bytes of proof, not
//! as 10,000 names.

use std::collections::HashMap;

use ct_merkle::{InclusionProof, RootHash, mem_backed_tree::MemoryBackedTree};
use sha2::Sha256;

use crate::v1::{Grant, HostProof};

/// Up to this many hosts are listed in the grant itself.
pub const INLINE_HOSTS: usize = 32;
/// The most hosts a grant may name by root.
pub const MAX_HOSTS: u64 = 1 << 32;

/// A grant's hosts as a Merkle tree, for proofs.
pub struct HostTree {
    tree: MemoryBackedTree<Sha256, String>,
    index: HashMap<String, u64>,
}

impl HostTree {
    /// Sorted and without repeats: one set of hosts, one root.
    pub fn new(hosts: &[String]) -> HostTree {
        let mut names: Vec<&String> = hosts.iter().collect();
        names.sort();
        names.dedup();
        let mut tree = MemoryBackedTree::new();
        let mut index = HashMap::with_capacity(names.len());
        for (i, h) in names.into_iter().enumerate() {
            tree.push(h.clone());
            index.insert(h.clone(), i as u64);
        }
        HostTree { tree, index }
    }

    pub fn root(&self) -> Vec<u8> {
        self.tree.root().as_bytes().to_vec()
    }

    pub fn count(&self) -> u64 {
        self.tree.len()
    }

    /// The proof that `host` is one of the hosts, if it is.
    pub fn proof(&self, host: &str) -> Option<HostProof> {
        let index = *self.index.get(host)?;
        Some(HostProof {
            index,
            path: self
                .tree
                .prove_inclusion(index as usize)
                .as_bytes()
                .to_vec(),
        })
    }
}

/// Names `hosts` in `grant` before it is signed: listed when they are
/// few, else by their tree's root. Returns the tree when one is used, for
/// the proofs each host is sent.
pub fn name_hosts(grant: &mut Grant, hosts: &[String]) -> Option<HostTree> {
    if hosts.len() <= INLINE_HOSTS {
        grant.hosts = hosts.to_vec();
        grant.hosts_root.clear();
        grant.hosts_count = 0;
        return None;
    }
    let tree = HostTree::new(hosts);
    grant.hosts.clear();
    grant.hosts_root = tree.root();
    grant.hosts_count = tree.count();
    Some(tree)
}

/// Whether the (verified) `grant` is for `host`: listed, or proved by
/// `proof` against the signed root. A grant with both forms, or neither,
/// names nobody.
pub fn names(grant: &Grant, proof: Option<&HostProof>, host: &str) -> bool {
    match (grant.hosts_root.is_empty(), proof) {
        (true, _) => grant.hosts.iter().any(|h| h == host),
        (false, _) if !grant.hosts.is_empty() => false,
        (false, None) => false,
        // Signed, but bounded anyway: the tree code asserts on sizes
        // past 2^63.
        (false, Some(_)) if grant.hosts_count == 0 || grant.hosts_count > MAX_HOSTS => false,
        (false, Some(p)) => {
            let Ok(digest) = <[u8; 32]>::try_from(grant.hosts_root.as_slice()) else {
                return false;
            };
            let Ok(path) = InclusionProof::<Sha256>::try_from_bytes(p.path.clone()) else {
                return false;
            };
            let root = RootHash::<Sha256>::new(digest.into(), grant.hosts_count);
            root.verify_inclusion(&host, p.index, &path).is_ok()
        }
    }
}

/// How a grant's hosts read in a refusal or a listing: the names, or
/// their count.
pub fn describe(grant: &Grant) -> String {
    if grant.hosts_root.is_empty() {
        format!("{:?}", grant.hosts)
    } else {
        format!("{} hosts (by Merkle root)", grant.hosts_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("host-{i}")).collect()
    }

    #[test]
    fn a_few_hosts_are_listed_and_many_are_proved() {
        let mut g = Grant::default();
        assert!(name_hosts(&mut g, &hosts(3)).is_none());
        assert!(names(&g, None, "host-1"));
        assert!(!names(&g, None, "host-9"));

        let fleet = hosts(10_000);
        let tree = name_hosts(&mut g, &fleet).expect("a tree for 10,000");
        assert!(g.hosts.is_empty());
        assert_eq!(g.hosts_count, 10_000);
        for h in ["host-0", "host-4711", "host-9999"] {
            let p = tree.proof(h).unwrap();
            assert!(p.path.len() <= 14 * 32, "{}", p.path.len());
            assert!(names(&g, Some(&p), h), "{h}");
        }
        assert!(tree.proof("host-10000").is_none());
        // Another host's proof names that host, not this one.
        let other = tree.proof("host-1").unwrap();
        assert!(!names(&g, Some(&other), "host-2"));
        assert!(!names(&g, Some(&other), "host-10000"));
        // No proof, a cut proof, a wrong index, a changed root: refused.
        let mine = tree.proof("host-2").unwrap();
        assert!(!names(&g, None, "host-2"));
        let mut cut = mine.clone();
        cut.path.truncate(32);
        assert!(!names(&g, Some(&cut), "host-2"));
        let mut moved = mine.clone();
        moved.index += 1;
        assert!(!names(&g, Some(&moved), "host-2"));
        let mut forged = g.clone();
        forged.hosts_root[0] ^= 1;
        assert!(!names(&forged, Some(&mine), "host-2"));
        // A count of none, or past the bound, names nobody (no panic).
        for count in [0, MAX_HOSTS + 1, u64::MAX] {
            let mut odd = g.clone();
            odd.hosts_count = count;
            assert!(!names(&odd, Some(&mine), "host-2"), "{count}");
        }
        // A root with a list beside it is malformed.
        let mut both = g.clone();
        both.hosts = vec!["host-2".into()];
        assert!(!names(&both, Some(&mine), "host-2"));
    }

    #[test]
    fn one_set_one_root_whatever_the_order() {
        let mut a = hosts(100);
        let t1 = HostTree::new(&a);
        a.reverse();
        a.push("host-5".into());
        let t2 = HostTree::new(&a);
        assert_eq!(t1.root(), t2.root());
        assert_eq!(t2.count(), 100);
    }
}
