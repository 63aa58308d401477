//! The coordinator's state in SQLite: requests (each kept as its protobuf
//! encoding), issued grants, known hosts, and the audit trail.
//!
//! Every decision runs in one `BEGIN IMMEDIATE` transaction, which takes
//! the database's write lock first: two coordinator processes sharing the
//! database can never both count an approval past a request's threshold.

use std::path::Path;

use prost::Message;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use ward_proto::v1::{AccessRequest, AuditEntry, RequestState, SignedGrant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("coordinator database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("coordinator database holds an undecodable record: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub struct Store {
    db: Connection,
}

/// One transaction's view of the store.
pub struct Tx<'a>(rusqlite::Transaction<'a>);

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let db = Connection::open(dir.join("coordinator.db"))?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS requests (
                seq        INTEGER PRIMARY KEY AUTOINCREMENT,
                id         TEXT NOT NULL UNIQUE,
                requester  TEXT NOT NULL,
                state      INTEGER NOT NULL,
                body       BLOB NOT NULL
            );
            CREATE TABLE IF NOT EXISTS grants (
                id          TEXT PRIMARY KEY,
                hosts       TEXT NOT NULL,
                signed      BLOB NOT NULL,
                expires_ms  INTEGER NOT NULL,
                ended       INTEGER NOT NULL DEFAULT 0
            );
            CREATE TABLE IF NOT EXISTS hosts (
                name       TEXT PRIMARY KEY,
                labels     TEXT NOT NULL,
                seen_ms    INTEGER NOT NULL
            );
            CREATE TABLE IF NOT EXISTS audit (
                seq        INTEGER PRIMARY KEY AUTOINCREMENT,
                time_ms    INTEGER NOT NULL,
                request_id TEXT NOT NULL,
                actor      TEXT NOT NULL,
                kind       TEXT NOT NULL,
                detail     TEXT NOT NULL
            );",
        )?;
        Ok(Store { db })
    }

    /// Runs `f` in one write transaction; it commits only if `f` succeeds.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let tx = Tx(tx);
        let out = f(&tx)?;
        tx.0.commit().map_err(StoreError::from)?;
        Ok(out)
    }
}

fn hosts_text(hosts: &[String]) -> String {
    format!(",{},", hosts.join(","))
}

impl Tx<'_> {
    /// The next request id: r-1, r-2, ...
    pub fn next_id(&self) -> Result<String, StoreError> {
        let n: i64 =
            self.0
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM requests", [], |r| {
                    r.get(0)
                })?;
        Ok(format!("r-{n}"))
    }

    pub fn insert(&self, r: &AccessRequest) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO requests (id, requester, state, body) VALUES (?1, ?2, ?3, ?4)",
            params![r.id, r.requester, r.state, r.encode_to_vec()],
        )?;
        Ok(())
    }

    pub fn put(&self, r: &AccessRequest) -> Result<(), StoreError> {
        self.0.execute(
            "UPDATE requests SET state = ?2, body = ?3 WHERE id = ?1",
            params![r.id, r.state, r.encode_to_vec()],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        let body: Option<Vec<u8>> = self
            .0
            .query_row("SELECT body FROM requests WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(body
            .map(|b| AccessRequest::decode(b.as_slice()))
            .transpose()?)
    }

    /// Requests in `states` (all when empty), oldest first.
    pub fn list(&self, states: &[RequestState]) -> Result<Vec<AccessRequest>, StoreError> {
        let mut stmt = self
            .0
            .prepare("SELECT state, body FROM requests ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i32>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (state, body) = row?;
            if states.is_empty() || states.iter().any(|s| *s as i32 == state) {
                out.push(AccessRequest::decode(body.as_slice())?);
            }
        }
        Ok(out)
    }

    pub fn insert_grant(
        &self,
        id: &str,
        hosts: &[String],
        signed: &SignedGrant,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT OR REPLACE INTO grants (id, hosts, signed, expires_ms, ended) VALUES (?1, ?2, ?3, ?4, 0)",
            params![id, hosts_text(hosts), signed.encode_to_vec(), expires_ms],
        )?;
        Ok(())
    }

    pub fn end_grant(&self, id: &str) -> Result<(), StoreError> {
        self.0
            .execute("UPDATE grants SET ended = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Grants still running for `host`: what a reconnecting agent resyncs to.
    pub fn active_grants(&self, host: &str, now_ms: i64) -> Result<Vec<SignedGrant>, StoreError> {
        let mut stmt = self.0.prepare(
            "SELECT signed FROM grants WHERE ended = 0 AND expires_ms > ?1 AND hosts LIKE ?2 ORDER BY id",
        )?;
        let pattern = format!("%,{host},%");
        let rows = stmt.query_map(params![now_ms, pattern], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for b in rows {
            out.push(SignedGrant::decode(b?.as_slice())?);
        }
        Ok(out)
    }

    pub fn upsert_host(
        &self,
        name: &str,
        labels: &[String],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO hosts (name, labels, seen_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET labels = excluded.labels, seen_ms = excluded.seen_ms",
            params![name, labels.join(","), now_ms],
        )?;
        Ok(())
    }

    /// Every host that ever subscribed, with its labels.
    pub fn hosts(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let mut stmt = self
            .0
            .prepare("SELECT name, labels FROM hosts ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, labels) = row?;
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            out.push((name, labels));
        }
        Ok(out)
    }

    pub fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO audit (time_ms, request_id, actor, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.time_unix_ms, e.request_id, e.actor, e.kind, e.detail],
        )?;
        Ok(())
    }

    pub fn audit_since(&self, since_ms: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.0.prepare(
            "SELECT time_ms, request_id, actor, kind, detail FROM audit WHERE time_ms >= ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([since_ms], |r| {
            Ok(AuditEntry {
                time_unix_ms: r.get(0)?,
                request_id: r.get(1)?,
                actor: r.get(2)?,
                kind: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
