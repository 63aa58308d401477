//! Durable grants, in SQLite.
//!
//! SQLite in WAL mode with `synchronous=FULL`: a committed grant survives a
//! crash or power loss, and it is the most widely audited embedded store
//! there is. The grant itself is kept as its protobuf encoding, exactly as
//! received, so a replay can be compared byte for byte. Its two deadlines
//! are also columns, so the lifecycle tick asks SQLite for what is due
//! instead of decoding every grant.

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

/// The table as first released; [`add_deadline_columns`] brings it up to
/// date, so a new store and an old one take the same path.
const GRANTS_TABLE_V1: &str = "CREATE TABLE IF NOT EXISTS grants (
    kernel_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    body        BLOB NOT NULL,
    state       INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    ended_ms    INTEGER NOT NULL DEFAULT 0
);";

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let db = Connection::open(dir.join("grants.db"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(GRANTS_TABLE_V1)?;
        add_deadline_columns(&db)?;
        db.execute_batch(
            "CREATE INDEX IF NOT EXISTS grants_by_state ON grants (state, expires_ms);",
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
            "INSERT INTO grants (id, body, state, received_ms, not_before_ms, expires_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                grant.id,
                grant.encode_to_vec(),
                state as i32,
                now_ms,
                grant.not_before_unix_ms,
                grant.expires_at_unix_ms
            ],
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
        self.select(&format!("state IN ({})", state_list(states)), params![])
    }

    /// Live grants with something to do at `now_ms`: active ones past
    /// their deadline, scheduled ones whose start (or deadline) has come.
    pub fn due(&self, now_ms: i64) -> Result<Vec<Stored>, StoreError> {
        self.select(
            &format!(
                "(state = {active} AND expires_ms <= ?1) OR \
                 (state = {scheduled} AND (not_before_ms <= ?1 OR expires_ms <= ?1))",
                active = GrantState::Active as i32,
                scheduled = GrantState::Scheduled as i32,
            ),
            params![now_ms],
        )
    }

    /// How many grants are in `state`; nothing decoded.
    pub fn count(&self, state: GrantState) -> Result<u64, StoreError> {
        let n: i64 = self.db.query_row(
            "SELECT COUNT(*) FROM grants WHERE state = ?1",
            params![state as i32],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Up to `limit` grants in `states` after kernel id `after`, and the
    /// last id read when the page was full (there may be more).
    pub fn page(
        &self,
        states: &[GrantState],
        after: i64,
        limit: usize,
    ) -> Result<(Vec<Stored>, Option<i64>), StoreError> {
        let rows = self.query(
            &format!("state IN ({}) AND kernel_id > ?1", state_list(states)),
            " LIMIT ?2",
            params![after, limit as i64],
        )?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|s| s.kernel_id as i64))
            .flatten();
        Ok((rows, next))
    }

    /// The `n` grants changed last (pushed, or ended), newest first.
    pub fn latest(&self, n: usize) -> Result<Vec<Stored>, StoreError> {
        let mut stmt = self.db.prepare(
            "SELECT kernel_id, id, body, state, received_ms, ended_ms FROM grants \
             ORDER BY MAX(received_ms, ended_ms) DESC, kernel_id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![n as i64], row)?;
        rows.map(|r| decode(r?)).collect()
    }

    fn select(
        &self,
        condition: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Stored>, StoreError> {
        self.query(condition, "", args)
    }

    fn query(
        &self,
        condition: &str,
        limit: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Stored>, StoreError> {
        let mut stmt = self.db.prepare(&format!(
            "SELECT kernel_id, id, body, state, received_ms, ended_ms FROM grants \
             WHERE {condition} ORDER BY kernel_id{limit}"
        ))?;
        let rows = stmt.query_map(args, row)?;
        rows.map(|r| decode(r?)).collect()
    }
}

/// `1, 2`: grant states as SQL integer literals (enum values, not input).
fn state_list(states: &[GrantState]) -> String {
    let v: Vec<String> = states.iter().map(|s| (*s as i32).to_string()).collect();
    if v.is_empty() {
        "NULL".into()
    } else {
        v.join(", ")
    }
}

/// Stores from before the deadline columns get them, filled from each
/// grant's own body, in one transaction.
fn add_deadline_columns(db: &Connection) -> Result<(), StoreError> {
    let has: bool = db
        .prepare("SELECT 1 FROM pragma_table_info('grants') WHERE name = 'expires_ms'")?
        .exists([])?;
    if has {
        return Ok(());
    }
    let tx = db.unchecked_transaction()?;
    tx.execute_batch(
        "ALTER TABLE grants ADD COLUMN not_before_ms INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE grants ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0;",
    )?;
    let rows: Vec<Row> = tx
        .prepare("SELECT kernel_id, id, body, state, received_ms, ended_ms FROM grants")?
        .query_map([], row)?
        .collect::<Result<_, _>>()?;
    for r in rows {
        let stored = decode(r)?;
        let g = stored.record.grant.unwrap_or_default();
        tx.execute(
            "UPDATE grants SET not_before_ms = ?2, expires_ms = ?3 WHERE kernel_id = ?1",
            params![
                stored.kernel_id as i64,
                g.not_before_unix_ms,
                g.expires_at_unix_ms
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
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
        assert_eq!(s.count(GrantState::Active).unwrap(), 1);
        s.delete("a").unwrap();
        assert_eq!(s.get("a").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn due_finds_exactly_the_grants_whose_time_has_come() {
        let dir = std::env::temp_dir().join(format!("ward-store-due-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir).unwrap();
        let at = |id: &str, not_before: i64, expires: i64| Grant {
            id: id.to_owned(),
            not_before_unix_ms: not_before,
            expires_at_unix_ms: expires,
            ..Default::default()
        };
        s.insert(&at("live", 0, 100), GrantState::Active, 0)
            .unwrap();
        s.insert(&at("past", 0, 50), GrantState::Active, 0).unwrap();
        s.insert(&at("starts", 40, 100), GrantState::Scheduled, 0)
            .unwrap();
        s.insert(&at("later", 70, 100), GrantState::Scheduled, 0)
            .unwrap();
        s.insert(&at("ended", 0, 10), GrantState::Revoked, 0)
            .unwrap();
        let ids = |v: Vec<Stored>| -> Vec<String> {
            v.into_iter().map(|x| x.record.grant.unwrap().id).collect()
        };
        assert_eq!(ids(s.due(60).unwrap()), ["past", "starts"]);
        assert_eq!(
            ids(s.due(100).unwrap()),
            ["live", "past", "starts", "later"]
        );
        assert!(s.due(5).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store written before the deadline columns existed is migrated on
    /// open, each grant's deadlines taken from its own body.
    #[test]
    fn an_old_store_gets_its_deadline_columns_filled() {
        let dir = std::env::temp_dir().join(format!("ward-store-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        {
            let db = Connection::open(dir.join("grants.db")).unwrap();
            db.execute_batch(GRANTS_TABLE_V1).unwrap();
            let g = Grant {
                id: "old".into(),
                expires_at_unix_ms: 50,
                ..Default::default()
            };
            db.execute(
                "INSERT INTO grants (id, body, state, received_ms) VALUES ('old', ?1, ?2, 0)",
                params![g.encode_to_vec(), GrantState::Active as i32],
            )
            .unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert!(s.due(49).unwrap().is_empty());
        assert_eq!(s.due(50).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
