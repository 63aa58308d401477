//! Durable grants, in SQLite.
//!
//! SQLite in WAL mode with `synchronous=FULL`: a committed grant survives a
//! crash or power loss, and it is the most widely audited embedded store
//! there is. The grant itself is kept as its protobuf encoding, exactly as
//! received, so a replay can be compared byte for byte.

use std::path::Path;

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use ward_proto::v1::{Grant, GrantRecord, GrantState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("grant database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("grant database holds an undecodable grant {id}: {source}")]
    Decode {
        id: String,
        source: prost::DecodeError,
    },
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A stored grant and the number the kernel knows it by.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Rule id in the kernel maps (never reused).
    pub kernel_id: u64,
    pub record: GrantRecord,
}

pub struct Store {
    db: Connection,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let db = Connection::open(dir.join("grants.db"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS grants (
                kernel_id   INTEGER PRIMARY KEY AUTOINCREMENT,
                id          TEXT NOT NULL UNIQUE,
                body        BLOB NOT NULL,
                state       INTEGER NOT NULL,
                received_ms INTEGER NOT NULL,
                ended_ms    INTEGER NOT NULL DEFAULT 0
            );",
        )?;
        Ok(Store { db })
    }

    pub fn get(&self, id: &str) -> Result<Option<Stored>, StoreError> {
        self.db
            .query_row(
                "SELECT kernel_id, id, body, state, received_ms, ended_ms FROM grants WHERE id = ?1",
                params![id],
                row,
            )
            .optional()?
            .map(decode)
            .transpose()
    }

    /// The id of the grant the kernel knows by `kernel_id` (the primary key:
    /// one indexed lookup, nothing decoded).
    pub fn id_of(&self, kernel_id: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT id FROM grants WHERE kernel_id = ?1",
                params![kernel_id as i64],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores a new grant; returns it with its kernel id.
    pub fn insert(
        &self,
        grant: &Grant,
        state: GrantState,
        now_ms: i64,
    ) -> Result<Stored, StoreError> {
        self.db.execute(
            "INSERT INTO grants (id, body, state, received_ms) VALUES (?1, ?2, ?3, ?4)",
            params![grant.id, grant.encode_to_vec(), state as i32, now_ms],
        )?;
        Ok(Stored {
            kernel_id: self.db.last_insert_rowid() as u64,
            record: GrantRecord {
                grant: Some(grant.clone()),
                state: state as i32,
                received_unix_ms: now_ms,
                ended_unix_ms: 0,
            },
        })
    }

    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM grants WHERE id = ?1", params![id])?;
        Ok(())
    }

    pub fn set_state(&self, id: &str, state: GrantState, ended_ms: i64) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE grants SET state = ?2, ended_ms = ?3 WHERE id = ?1",
            params![id, state as i32, ended_ms],
        )?;
        Ok(())
    }

    /// Grants in the given states, oldest first.
    pub fn list(&self, states: &[GrantState]) -> Result<Vec<Stored>, StoreError> {
        let mut stmt = self.db.prepare(
            "SELECT kernel_id, id, body, state, received_ms, ended_ms FROM grants ORDER BY kernel_id",
        )?;
        let rows = stmt.query_map([], row)?;
        let mut out = Vec::new();
        for r in rows {
            let stored = decode(r?)?;
            if states.iter().any(|s| *s as i32 == stored.record.state) {
                out.push(stored);
            }
        }
        Ok(out)
    }
}

type Row = (i64, String, Vec<u8>, i32, i64, i64);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode((kernel_id, id, body, state, received, ended): Row) -> Result<Stored, StoreError> {
    let grant =
        Grant::decode(body.as_slice()).map_err(|source| StoreError::Decode { id, source })?;
    Ok(Stored {
        kernel_id: kernel_id as u64,
        record: GrantRecord {
            grant: Some(grant),
            state,
            received_unix_ms: received,
            ended_unix_ms: ended,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str) -> Grant {
        Grant {
            id: id.to_owned(),
            reason: "INC-1".to_owned(),
            expires_at_unix_ms: 10,
            ..Default::default()
        }
    }

    #[test]
    fn grants_survive_reopening_and_keep_their_kernel_ids() {
        let dir = std::env::temp_dir().join(format!("ward-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a;
        {
            let s = Store::open(&dir).unwrap();
            a = s.insert(&grant("a"), GrantState::Active, 1).unwrap();
            let b = s.insert(&grant("b"), GrantState::Scheduled, 2).unwrap();
            assert_ne!(a.kernel_id, b.kernel_id);
            s.set_state("b", GrantState::Revoked, 3).unwrap();
            assert!(
                s.insert(&grant("a"), GrantState::Active, 4).is_err(),
                "ids are unique"
            );
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.get("a").unwrap(), Some(a.clone()));
        assert_eq!(s.id_of(a.kernel_id).unwrap().as_deref(), Some("a"));
        assert_eq!(s.id_of(u64::from(u32::MAX)).unwrap(), None);
        let b = s.get("b").unwrap().unwrap();
        assert_eq!(
            (b.record.state, b.record.ended_unix_ms),
            (GrantState::Revoked as i32, 3)
        );
        assert_eq!(s.list(&[GrantState::Active]).unwrap().len(), 1);
        s.delete("a").unwrap();
        assert_eq!(s.get("a").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
