//! People signed in through an identity provider. Their ID token's claims,
//! mapped to attributes and groups by the coordinator's config, stand for
//! them in the `request`, `request_for` and `review` decisions: a claim
//! sets the attribute of that name over the directory's, and the groups it
//! names are added to the directory's.

use std::collections::BTreeMap;

use crate::directory::{EntityDef, EntityKey, Kind};

/// Signed-in people's claims, by user id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct People {
    by_id: BTreeMap<String, EntityDef>,
}

impl People {
    /// Adds (or replaces) one person; only users are people.
    pub fn insert(&mut self, def: EntityDef) {
        if def.kind == Kind::User {
            self.by_id.insert(def.id.clone(), def);
        }
    }

    pub fn get(&self, key: &EntityKey) -> Option<&EntityDef> {
        (key.kind == Kind::User)
            .then(|| self.by_id.get(&key.id))
            .flatten()
    }

    /// `claims` over `listed` (the directory's entry, if any).
    pub(crate) fn merged(listed: Option<&EntityDef>, claims: &EntityDef) -> EntityDef {
        let mut def = listed.cloned().unwrap_or_else(|| EntityDef {
            kind: Kind::User,
            id: claims.id.clone(),
            parents: Vec::new(),
            attrs: Default::default(),
        });
        for (k, v) in &claims.attrs {
            def.attrs.insert(k.clone(), v.clone());
        }
        for p in &claims.parents {
            if !def.parents.contains(p) {
                def.parents.push(p.clone());
            }
        }
        def
    }
}
