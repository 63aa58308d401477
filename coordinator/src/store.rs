//! The coordinator's state: requests (each kept as its protobuf encoding),
//! issued grants, known hosts, the audit trail, and an outbox of what
//! agents must hear.
//!
//! SQLite is the embedded default. PostgreSQL, given by URL, lets several
//! coordinator replicas share one state. Every decision runs in one
//! transaction that first takes the store's write lock (`BEGIN IMMEDIATE`
//! on SQLite, a transaction-scoped advisory lock on PostgreSQL), so two
//! replicas can never both count an approval past a request's threshold.
//! Each replica delivers what the outbox gains to the agents connected to
//! it, so an approval on one replica reaches agents streaming from another.

use std::{cell::RefCell, path::Path};

use prost::Message;
use rusqlite::{Connection, TransactionBehavior};
use ward_proto::v1::{AccessRequest, AuditEntry, FleetMessage, RequestState, SignedGrant};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("coordinator database (SQLite): {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("coordinator database (PostgreSQL): {0}")]
    Pg(#[from] postgres::Error),
    #[error("coordinator database holds an undecodable record: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("coordinator database holds an undecodable person: {0}")]
    Person(#[from] serde_json::Error),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    requester TEXT NOT NULL, state INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY, hosts TEXT NOT NULL, signed BLOB NOT NULL,
    expires_ms INTEGER NOT NULL, ended INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, labels TEXT NOT NULL, seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL, request_id TEXT NOT NULL,
    actor TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, hosts TEXT NOT NULL, message BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS join_tokens (
    hash TEXT PRIMARY KEY, host TEXT NOT NULL, expires_ms INTEGER NOT NULL,
    used_ms INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS revoked_hosts (name TEXT PRIMARY KEY, time_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS host_posture (
    name TEXT PRIMARY KEY, file_enforcement INTEGER NOT NULL, kernel TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    name TEXT PRIMARY KEY, issuer TEXT NOT NULL, subject TEXT NOT NULL, def TEXT NOT NULL,
    seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ended_sessions (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, expires_ms INTEGER NOT NULL);
";

const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE,
    requester TEXT NOT NULL, state BIGINT NOT NULL, body BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY, hosts TEXT NOT NULL, signed BYTEA NOT NULL,
    expires_ms BIGINT NOT NULL, ended BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, labels TEXT NOT NULL, seen_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGSERIAL PRIMARY KEY, time_ms BIGINT NOT NULL, request_id TEXT NOT NULL,
    actor TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq BIGSERIAL PRIMARY KEY, hosts TEXT NOT NULL, message BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS join_tokens (
    hash TEXT PRIMARY KEY, host TEXT NOT NULL, expires_ms BIGINT NOT NULL,
    used_ms BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS revoked_hosts (name TEXT PRIMARY KEY, time_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS host_posture (
    name TEXT PRIMARY KEY, file_enforcement BIGINT NOT NULL, kernel TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    name TEXT PRIMARY KEY, issuer TEXT NOT NULL, subject TEXT NOT NULL, def TEXT NOT NULL,
    seen_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS ended_sessions (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, expires_ms BIGINT NOT NULL);
";

/// A host as its agent last subscribed.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct KnownHost {
    pub name: String,
    /// "key=value".
    pub labels: Vec<String>,
    /// BPF LSM enforces file rules there; false until its agent says so.
    pub file_enforcement: bool,
    pub kernel: String,
}

/// A person as they last signed in through an identity provider: the
/// issuer and subject their name is bound to, and what their claims map to.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub def: ward_policy::EntityDef,
}

/// Why a join token was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No token has this secret (mistyped, forged, or from another fleet).
    Unknown,
    /// Taken already, for this host.
    Used(String),
    /// Past its deadline, for this host.
    Expired(String),
}

/// Serialises writers across PostgreSQL replicas (any fixed number).
const PG_WRITE_LOCK: i64 = 0x7761_7264;

pub enum Store {
    Sqlite(Connection),
    Postgres(Box<postgres::Client>),
}

/// One transaction's view of the store.
pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(RefCell<postgres::Transaction<'a>>),
}

/// A parameter, bound the same way on both databases.
#[derive(Debug, Clone, Copy)]
pub enum P<'a> {
    I(i64),
    T(&'a str),
    B(&'a [u8]),
}

/// A column value as read back.
#[derive(Debug, Clone)]
pub enum Col {
    I(i64),
    T(String),
    B(Vec<u8>),
}

impl Col {
    fn i(&self) -> i64 {
        match self {
            Col::I(v) => *v,
            _ => 0,
        }
    }
    fn t(self) -> String {
        match self {
            Col::T(v) => v,
            _ => String::new(),
        }
    }
    fn b(self) -> Vec<u8> {
        match self {
            Col::B(v) => v,
            _ => Vec::new(),
        }
    }
}

impl Store {
    pub fn open_sqlite(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let db = Connection::open(dir.join("coordinator.db"))?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SQLITE_SCHEMA)?;
        Ok(Store::Sqlite(db))
    }

    /// A PostgreSQL server, e.g. "postgres://ward@127.0.0.1:5432/ward",
    /// over TLS when the target says so.
    pub fn open_postgres(target: crate::database::Target) -> Result<Store, StoreError> {
        let mut client = match target.tls {
            Some(tls) => target
                .config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))?,
            None => target.config.connect(postgres::NoTls)?,
        };
        client.batch_execute(&format!(
            "SELECT pg_advisory_lock({PG_WRITE_LOCK}); {PG_SCHEMA} SELECT pg_advisory_unlock({PG_WRITE_LOCK});"
        ))?;
        Ok(Store::Postgres(Box::new(client)))
    }

    /// Runs `f` in one write transaction; it commits only if `f` succeeds.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(true, f)
    }

    /// Runs `f` in a transaction that does not take the write lock: for
    /// reads (listings, the audit trail, the outbox poll), so they never
    /// queue behind or hold up decisions on other replicas.
    pub fn read<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(false, f)
    }

    fn transaction<T, E: From<StoreError>>(
        &mut self,
        locked: bool,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        match self {
            Store::Sqlite(db) => {
                let behavior = if locked {
                    TransactionBehavior::Immediate
                } else {
                    TransactionBehavior::Deferred
                };
                let tx = db
                    .transaction_with_behavior(behavior)
                    .map_err(StoreError::from)?;
                let tx = Tx::Sqlite(tx);
                let out = f(&tx)?;
                let Tx::Sqlite(tx) = tx else { unreachable!() };
                tx.commit().map_err(StoreError::from)?;
                Ok(out)
            }
            Store::Postgres(client) => {
                let mut tx = client.transaction().map_err(StoreError::from)?;
                if locked {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_WRITE_LOCK])
                        .map_err(StoreError::from)?;
                }
                let tx = Tx::Postgres(RefCell::new(tx));
                let out = f(&tx)?;
                let Tx::Postgres(tx) = tx else { unreachable!() };
                tx.into_inner().commit().map_err(StoreError::from)?;
                Ok(out)
            }
        }
    }
}

fn hosts_text(hosts: &[String]) -> String {
    format!(",{},", hosts.join(","))
}

/// The names in a `hosts` column's text.
pub fn hosts_of(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Tx<'_> {
    /// Runs a statement written with `?1`-style placeholders.
    fn exec(&self, sql: &str, params: &[P<'_>]) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(sqlite_value).collect();
                tx.execute(sql, rusqlite::params_from_iter(values))?;
            }
            Tx::Postgres(tx) => {
                let sql = pg_sql(sql);
                let owned = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    owned.iter().map(|b| b.as_ref()).collect();
                tx.borrow_mut().execute(sql.as_str(), &refs)?;
            }
        }
        Ok(())
    }

    /// The first column of the first row, 0 without one: for `COUNT(*)`
    /// and `COALESCE(MAX(..), 0)`, which both databases type as a 64-bit
    /// integer (a literal `1` is an int4 in PostgreSQL, which `Col` does
    /// not take).
    fn integer(&self, sql: &str, params: &[P<'_>]) -> Result<i64, StoreError> {
        let rows = self.query(sql, params)?;
        Ok(rows.first().and_then(|r| r.first()).map_or(0, Col::i))
    }

    fn query(&self, sql: &str, params: &[P<'_>]) -> Result<Vec<Vec<Col>>, StoreError> {
        match self {
            Tx::Sqlite(tx) => {
                let values: Vec<rusqlite::types::Value> = params.iter().map(sqlite_value).collect();
                let mut stmt = tx.prepare(sql)?;
                let n = stmt.column_count();
                let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Integer(v) => Col::I(v),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Col::T(String::from_utf8_lossy(t).into_owned())
                                }
                                rusqlite::types::ValueRef::Blob(b) => Col::B(b.to_vec()),
                                _ => Col::I(0),
                            })
                        })
                        .collect::<Result<Vec<_>, rusqlite::Error>>()
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Tx::Postgres(tx) => {
                let sql = pg_sql(sql);
                let owned = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    owned.iter().map(|b| b.as_ref()).collect();
                let rows = tx.borrow_mut().query(sql.as_str(), &refs)?;
                let mut out = Vec::new();
                for row in rows {
                    let mut cols = Vec::new();
                    for (i, c) in row.columns().iter().enumerate() {
                        let ty = c.type_();
                        cols.push(if *ty == postgres::types::Type::BYTEA {
                            Col::B(row.try_get(i)?)
                        } else if *ty == postgres::types::Type::TEXT {
                            Col::T(row.try_get(i)?)
                        } else {
                            Col::I(row.try_get(i)?)
                        });
                    }
                    out.push(cols);
                }
                Ok(out)
            }
        }
    }

    /// The next request id: r-1, r-2, ...
    pub fn next_id(&self) -> Result<String, StoreError> {
        let rows = self.query("SELECT COALESCE(MAX(seq), 0) + 1 FROM requests", &[])?;
        let n = rows.first().and_then(|r| r.first()).map_or(1, Col::i);
        Ok(format!("r-{n}"))
    }

    pub fn insert(&self, r: &AccessRequest) -> Result<(), StoreError> {
        let body = r.encode_to_vec();
        self.exec(
            "INSERT INTO requests (id, requester, state, body) VALUES (?1, ?2, ?3, ?4)",
            &[
                P::T(&r.id),
                P::T(&r.requester),
                P::I(r.state as i64),
                P::B(&body),
            ],
        )
    }

    pub fn put(&self, r: &AccessRequest) -> Result<(), StoreError> {
        let body = r.encode_to_vec();
        self.exec(
            "UPDATE requests SET state = ?2, body = ?3 WHERE id = ?1",
            &[P::T(&r.id), P::I(r.state as i64), P::B(&body)],
        )
    }

    pub fn get(&self, id: &str) -> Result<Option<AccessRequest>, StoreError> {
        let rows = self.query("SELECT body FROM requests WHERE id = ?1", &[P::T(id)])?;
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(b) => Ok(Some(AccessRequest::decode(b.b().as_slice())?)),
            None => Ok(None),
        }
    }

    /// The newest `limit` requests, newest first: in `state` and by
    /// `requester` (any case) when given. For the web page's lists, which
    /// show what happened last however many requests came before.
    pub fn newest(
        &self,
        state: Option<RequestState>,
        requester: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        let mut sql = String::from("SELECT body FROM requests WHERE 1 = 1");
        let mut params = Vec::new();
        if let Some(state) = state {
            params.push(P::I(state as i64));
            sql += &format!(" AND state = ?{}", params.len());
        }
        if let Some(requester) = requester {
            params.push(P::T(requester));
            sql += &format!(" AND LOWER(requester) = LOWER(?{})", params.len());
        }
        params.push(P::I(limit as i64));
        sql += &format!(" ORDER BY seq DESC LIMIT ?{}", params.len());
        self.query(&sql, &params)?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .map(|body| Ok(AccessRequest::decode(body.b().as_slice())?))
            .collect()
    }

    /// Up to `limit` requests in `states` (all when empty) after request
    /// seq `after`, and the last seq read when the page was full.
    pub fn list_page(
        &self,
        states: &[RequestState],
        after: i64,
        limit: usize,
    ) -> Result<(Vec<AccessRequest>, Option<i64>), StoreError> {
        let rows = self.query(
            "SELECT state, body, seq FROM requests WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            &[P::I(after), P::I(limit as i64)],
        )?;
        let full = rows.len() == limit;
        let mut last = None;
        let mut out = Vec::new();
        for row in rows {
            let mut it = row.into_iter();
            let (Some(state), Some(body), Some(seq)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            last = Some(seq.i());
            if states.is_empty() || states.iter().any(|s| *s as i64 == state.i()) {
                out.push(AccessRequest::decode(body.b().as_slice())?);
            }
        }
        Ok((out, last.filter(|_| full)))
    }

    pub fn list(&self, states: &[RequestState]) -> Result<Vec<AccessRequest>, StoreError> {
        let rows = self.query("SELECT state, body FROM requests ORDER BY seq", &[])?;
        let mut out = Vec::new();
        for row in rows {
            let mut it = row.into_iter();
            let (Some(state), Some(body)) = (it.next(), it.next()) else {
                continue;
            };
            if states.is_empty() || states.iter().any(|s| *s as i64 == state.i()) {
                out.push(AccessRequest::decode(body.b().as_slice())?);
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
        let body = signed.encode_to_vec();
        self.exec(
            "INSERT INTO grants (id, hosts, signed, expires_ms, ended) VALUES (?1, ?2, ?3, ?4, 0)
             ON CONFLICT (id) DO UPDATE SET hosts = excluded.hosts, signed = excluded.signed,
               expires_ms = excluded.expires_ms, ended = 0",
            &[
                P::T(id),
                P::T(&hosts_text(hosts)),
                P::B(&body),
                P::I(expires_ms),
            ],
        )
    }

    /// Whether the grant of request `id` has been signed and sent.
    pub fn has_grant(&self, id: &str) -> Result<bool, StoreError> {
        Ok(!self
            .query("SELECT id FROM grants WHERE id = ?1", &[P::T(id)])?
            .is_empty())
    }

    pub fn end_grant(&self, id: &str) -> Result<(), StoreError> {
        self.exec("UPDATE grants SET ended = 1 WHERE id = ?1", &[P::T(id)])
    }

    /// Grants still running for `host`: what a reconnecting agent resyncs
    /// to, each with its hosts (a [`hosts_of`] text) for the proof of a
    /// grant that names its hosts by root.
    pub fn active_grants(
        &self,
        host: &str,
        now_ms: i64,
    ) -> Result<Vec<(SignedGrant, String)>, StoreError> {
        // Matched exactly in Rust, not with LIKE: there `_` and `%` are
        // wildcards and SQLite compares case-insensitively, so `db_1` would
        // be sent `dbx1`'s grants. The text is `,a,b,`, and names hold no
        // comma, so `,host,` matches one whole name without splitting a
        // fleet-wide grant's 10,000 names for each resubscribing agent.
        let needle = hosts_text(&[host.to_owned()]);
        let rows = self.query(
            "SELECT signed, hosts FROM grants WHERE ended = 0 AND expires_ms > ?1 ORDER BY id",
            &[P::I(now_ms)],
        )?;
        rows.into_iter()
            .filter_map(|r| {
                let mut it = r.into_iter();
                let signed = it.next()?;
                let hosts = it.next()?.t();
                hosts.contains(&needle).then_some((signed, hosts))
            })
            .map(|(b, hosts)| Ok((SignedGrant::decode(b.b().as_slice())?, hosts)))
            .collect()
    }

    /// Remembers a host as it subscribed: its labels and, when its agent
    /// reports it, its posture.
    pub fn upsert_host(&self, host: &KnownHost, now_ms: i64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO hosts (name, labels, seen_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, seen_ms = excluded.seen_ms",
            &[P::T(&host.name), P::T(&host.labels.join(",")), P::I(now_ms)],
        )?;
        self.exec(
            "INSERT INTO host_posture (name, file_enforcement, kernel) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET file_enforcement = excluded.file_enforcement,
                 kernel = excluded.kernel",
            &[
                P::T(&host.name),
                P::I(i64::from(host.file_enforcement)),
                P::T(&host.kernel),
            ],
        )
    }

    /// Every host that ever subscribed, as it last did.
    pub fn hosts(&self) -> Result<Vec<KnownHost>, StoreError> {
        self.known_hosts("", &[])
    }

    /// One host as it last subscribed, if it ever did.
    pub fn host(&self, name: &str) -> Result<Option<KnownHost>, StoreError> {
        Ok(self
            .known_hosts("WHERE h.name = ?1", &[P::T(name)])?
            .into_iter()
            .next())
    }

    fn known_hosts(&self, filter: &str, params: &[P<'_>]) -> Result<Vec<KnownHost>, StoreError> {
        let rows = self.query(
            &format!(
                "SELECT h.name, h.labels, COALESCE(p.file_enforcement, 0), COALESCE(p.kernel, '')
                 FROM hosts h LEFT JOIN host_posture p ON p.name = h.name {filter} ORDER BY h.name"
            ),
            params,
        )?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let name = it.next().map(Col::t).unwrap_or_default();
                let labels = it.next().map(Col::t).unwrap_or_default();
                let file_enforcement = it.next().is_some_and(|c| c.i() != 0);
                let kernel = it.next().map(Col::t).unwrap_or_default();
                KnownHost {
                    name,
                    labels: hosts_of(&labels),
                    file_enforcement,
                    kernel,
                }
            })
            .collect())
    }

    /// Keeps a join token's hash, host and deadline.
    pub fn insert_token(&self, hash: &str, host: &str, expires_ms: i64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO join_tokens (hash, host, expires_ms) VALUES (?1, ?2, ?3)",
            &[P::T(hash), P::T(host), P::I(expires_ms)],
        )
    }

    /// Takes the token with this hash, once: Ok(host), or why not.
    pub fn take_token(
        &self,
        hash: &str,
        now_ms: i64,
    ) -> Result<Result<String, TokenRefusal>, StoreError> {
        let rows = self.query(
            "SELECT host, expires_ms, used_ms FROM join_tokens WHERE hash = ?1",
            &[P::T(hash)],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let mut it = row.into_iter();
        let host = it.next().map(Col::t).unwrap_or_default();
        let expires = it.next().map_or(0, |c| c.i());
        let used = it.next().map_or(0, |c| c.i());
        if used != 0 {
            return Ok(Err(TokenRefusal::Used(host)));
        }
        if expires <= now_ms {
            return Ok(Err(TokenRefusal::Expired(host)));
        }
        self.exec(
            "UPDATE join_tokens SET used_ms = ?1 WHERE hash = ?2",
            &[P::I(now_ms), P::T(hash)],
        )?;
        Ok(Ok(host))
    }

    pub fn revoke_host(&self, name: &str, now_ms: i64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO revoked_hosts (name, time_ms) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            &[P::T(name), P::I(now_ms)],
        )
    }

    pub fn host_revoked(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.integer(
            "SELECT COUNT(*) FROM revoked_hosts WHERE name = ?1",
            &[P::T(name)],
        )? > 0)
    }

    pub fn revoked_hosts(&self) -> Result<Vec<String>, StoreError> {
        let rows = self.query("SELECT name FROM revoked_hosts ORDER BY name", &[])?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().map(Col::t))
            .collect())
    }

    pub fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO audit (time_ms, request_id, actor, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[
                P::I(e.time_unix_ms),
                P::T(&e.request_id),
                P::T(&e.actor),
                P::T(&e.kind),
                P::T(&e.detail),
            ],
        )
    }

    /// Up to `limit` audit entries from `since_ms` after entry `after`,
    /// and the last entry's seq when the page was full.
    pub fn audit_page(
        &self,
        since_ms: i64,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<i64>), StoreError> {
        let rows = self.query(
            "SELECT time_ms, request_id, actor, kind, detail, seq FROM audit \
             WHERE time_ms >= ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            &[P::I(since_ms), P::I(after), P::I(limit as i64)],
        )?;
        let full = rows.len() == limit;
        let mut last = None;
        let entries = rows
            .into_iter()
            .map(|mut r| {
                last = r.pop().map(|seq| seq.i());
                audit_entry(r)
            })
            .collect();
        Ok((entries, last.filter(|_| full)))
    }

    /// Queues a message for the agents of `hosts`.
    pub fn send(&self, hosts: &[String], msg: &FleetMessage) -> Result<(), StoreError> {
        let body = msg.encode_to_vec();
        self.exec(
            "INSERT INTO outbox (hosts, message) VALUES (?1, ?2)",
            &[P::T(&hosts_text(hosts)), P::B(&body)],
        )
    }

    /// Messages queued after `seq`: (seq, hosts, message).
    pub fn outbox_after(
        &self,
        seq: i64,
    ) -> Result<Vec<(i64, Vec<String>, FleetMessage)>, StoreError> {
        let rows = self.query(
            "SELECT seq, hosts, message FROM outbox WHERE seq > ?1 ORDER BY seq",
            &[P::I(seq)],
        )?;
        rows.into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let seq = it.next().map_or(0, |c| c.i());
                let hosts = hosts_of(&it.next().map(Col::t).unwrap_or_default());
                let msg =
                    FleetMessage::decode(it.next().map(Col::b).unwrap_or_default().as_slice())?;
                Ok((seq, hosts, msg))
            })
            .collect()
    }

    /// Creates the named cursor at the audit log's end, if it is new.
    pub fn init_cursor(&self, cursor: &str) -> Result<(), StoreError> {
        let at = self.query("SELECT seq FROM cursors WHERE name = ?1", &[P::T(cursor)])?;
        if at.is_empty() {
            let head = self
                .query("SELECT COALESCE(MAX(seq), 0) FROM audit", &[])?
                .first()
                .and_then(|r| r.first())
                .map_or(0, Col::i);
            self.exec(
                "INSERT INTO cursors (name, seq) VALUES (?1, ?2)",
                &[P::T(cursor), P::I(head)],
            )?;
        }
        Ok(())
    }

    /// Audit entries of `kinds` after the named cursor, and moves the
    /// cursor past them: each entry is claimed once across replicas. A new
    /// cursor starts at the current end.
    pub fn claim_audit(&self, cursor: &str, kinds: &[&str]) -> Result<Vec<AuditEntry>, StoreError> {
        let at = self.query("SELECT seq FROM cursors WHERE name = ?1", &[P::T(cursor)])?;
        let head = self
            .query("SELECT COALESCE(MAX(seq), 0) FROM audit", &[])?
            .first()
            .and_then(|r| r.first())
            .map_or(0, Col::i);
        let Some(from) = at.first().and_then(|r| r.first()).map(Col::i) else {
            self.exec(
                "INSERT INTO cursors (name, seq) VALUES (?1, ?2)",
                &[P::T(cursor), P::I(head)],
            )?;
            return Ok(Vec::new());
        };
        let rows = self.query(
            "SELECT time_ms, request_id, actor, kind, detail FROM audit WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
            &[P::I(from), P::I(head)],
        )?;
        self.exec(
            "UPDATE cursors SET seq = ?2 WHERE name = ?1",
            &[P::T(cursor), P::I(head)],
        )?;
        Ok(rows
            .into_iter()
            .map(audit_entry)
            .filter(|e| kinds.contains(&e.kind.as_str()))
            .collect())
    }

    /// How many requests are in each state: (state, count).
    pub fn count_by_state(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = self.query("SELECT state, COUNT(*) FROM requests GROUP BY state", &[])?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let mut it = r.into_iter();
                Some((it.next()?.i(), it.next()?.i()))
            })
            .collect())
    }

    /// The person `name` is bound to, if anyone signed in as them.
    pub fn person(&self, name: &str) -> Result<Option<Person>, StoreError> {
        let rows = self.query(
            "SELECT name, issuer, subject, def FROM people WHERE name = ?1",
            &[P::T(name)],
        )?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(None);
        };
        let mut it = r.into_iter().map(Col::t);
        let (name, issuer, subject, def) = (
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
        );
        Ok(Some(Person {
            name,
            issuer,
            subject,
            def: serde_json::from_str(&def)?,
        }))
    }

    /// Everyone who ever signed in through an identity provider.
    pub fn person_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .query("SELECT name FROM people ORDER BY name", &[])?
            .into_iter()
            .filter_map(|r| r.into_iter().next().map(Col::t))
            .collect())
    }

    /// The newest audit entry's position: it moves with every decision,
    /// on any replica (the web page's live updates follow it).
    pub fn audit_head(&self) -> Result<i64, StoreError> {
        self.integer("SELECT COALESCE(MAX(seq), 0) FROM audit", &[])
    }

    /// The claims of those of `names` who signed in, for a decision.
    pub fn people(&self, names: &[&str]) -> Result<ward_policy::People, StoreError> {
        let mut people = ward_policy::People::default();
        for name in names {
            if let Some(p) = self.person(name)? {
                people.insert(p.def);
            }
        }
        Ok(people)
    }

    /// Forgets who `name` is bound to, and their claims; true if bound.
    pub fn forget_person(&self, name: &str) -> Result<bool, StoreError> {
        let bound = self.person(name)?.is_some();
        self.exec("DELETE FROM people WHERE name = ?1", &[P::T(name)])?;
        Ok(bound)
    }

    /// Records session `id` (of `name`, valid until `expires_ms`) as signed
    /// out. Sessions that expired an hour before `now_ms` are dropped from
    /// the record: their expiry refuses them anyway (the hour covers
    /// replicas' clocks that differ).
    pub fn end_session(
        &self,
        id: &str,
        name: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM ended_sessions WHERE expires_ms < ?1",
            &[P::I(now_ms.saturating_sub(3_600_000))],
        )?;
        self.exec(
            "INSERT INTO ended_sessions (id, name, expires_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO NOTHING",
            &[P::T(id), P::T(name), P::I(expires_ms)],
        )
    }

    /// Whether session `id` was signed out.
    pub fn session_ended(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.integer(
            "SELECT COUNT(*) FROM ended_sessions WHERE id = ?1",
            &[P::T(id)],
        )? > 0)
    }

    /// Records a sign-in: binds the name to its issuer and subject, or
    /// refreshes the claims of the identity it is bound to. The caller has
    /// checked that the name is not bound to another identity.
    pub fn put_person(&self, p: &Person, now_ms: i64) -> Result<(), StoreError> {
        let def = serde_json::to_string(&p.def)?;
        self.exec(
            "INSERT INTO people (name, issuer, subject, def, seen_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET def = excluded.def, seen_ms = excluded.seen_ms",
            &[
                P::T(&p.name),
                P::T(&p.issuer),
                P::T(&p.subject),
                P::T(&def),
                P::I(now_ms),
            ],
        )
    }

    /// The newest outbox position: a starting replica delivers from here
    /// (agents get everything older in their snapshot).
    pub fn outbox_head(&self) -> Result<i64, StoreError> {
        self.integer("SELECT COALESCE(MAX(seq), 0) FROM outbox", &[])
    }
}

fn audit_entry(r: Vec<Col>) -> AuditEntry {
    let mut it = r.into_iter();
    AuditEntry {
        time_unix_ms: it.next().map_or(0, |c| c.i()),
        request_id: it.next().map(Col::t).unwrap_or_default(),
        actor: it.next().map(Col::t).unwrap_or_default(),
        kind: it.next().map(Col::t).unwrap_or_default(),
        detail: it.next().map(Col::t).unwrap_or_default(),
    }
}

fn sqlite_value(p: &P<'_>) -> rusqlite::types::Value {
    match *p {
        P::I(v) => rusqlite::types::Value::Integer(v),
        P::T(t) => rusqlite::types::Value::Text(t.to_owned()),
        P::B(b) => rusqlite::types::Value::Blob(b.to_vec()),
    }
}

fn pg_params(params: &[P<'_>]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
            match *p {
                P::I(v) => Box::new(v),
                P::T(t) => Box::new(t.to_owned()),
                P::B(b) => Box::new(b.to_vec()),
            }
        })
        .collect()
}

/// `?1` placeholders to PostgreSQL's `$1`.
fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot holds the grants signed for that host, by exact name: no
    /// wildcard, no case folding.
    #[test]
    fn a_host_snapshot_matches_host_names_exactly() {
        let dir = std::env::temp_dir().join(format!("ward-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open_sqlite(&dir).unwrap();
        let signed = |id: &str| SignedGrant {
            grant: id.as_bytes().to_vec(),
            signature: vec![1],
            key_id: "k".into(),
            host_proof: None,
        };
        store
            .write(|tx| -> Result<(), StoreError> {
                tx.insert_grant("for-dbx1", &["dbx1".into()], &signed("for-dbx1"), i64::MAX)?;
                tx.insert_grant("for-DB1", &["DB1".into()], &signed("for-DB1"), i64::MAX)?;
                tx.insert_grant(
                    "for-both",
                    &["web".into(), "db_1".into()],
                    &signed("for-both"),
                    i64::MAX,
                )
            })
            .unwrap();
        let got: Vec<Vec<u8>> = store
            .read(|tx| -> Result<_, StoreError> { tx.active_grants("db_1", 0) })
            .unwrap()
            .into_iter()
            .map(|(g, _)| g.grant)
            .collect();
        assert_eq!(got, vec![b"for-both".to_vec()]);
        let folded = store
            .read(|tx| -> Result<_, StoreError> { tx.active_grants("db1", 0) })
            .unwrap();
        assert!(folded.is_empty(), "`db1` is not `DB1`");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A host's posture is what its agent last said, and a host whose
    /// agent never said (an older agent) enforces no file rules.
    #[test]
    fn hosts_keep_the_posture_their_agents_report() {
        let dir = std::env::temp_dir().join(format!("ward-store-posture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open_sqlite(&dir).unwrap();
        let lsm = KnownHost {
            name: "db1".into(),
            labels: vec!["env=prod".into()],
            file_enforcement: true,
            kernel: "6.12.0".into(),
        };
        store
            .write(|tx| -> Result<(), StoreError> {
                tx.upsert_host(&lsm, 1)?;
                // A host from before postures were kept.
                tx.exec(
                    "INSERT INTO hosts (name, labels, seen_ms) VALUES ('old', '', 1)",
                    &[],
                )
            })
            .unwrap();
        let hosts = store.read(|tx| tx.hosts()).unwrap();
        assert_eq!(
            hosts,
            [
                lsm.clone(),
                KnownHost {
                    name: "old".into(),
                    ..Default::default()
                }
            ]
        );
        // The agent restarts on a kernel without BPF LSM: the host follows.
        let cgroup_only = KnownHost {
            file_enforcement: false,
            kernel: "6.18.0".into(),
            ..lsm
        };
        store.write(|tx| tx.upsert_host(&cgroup_only, 2)).unwrap();
        assert_eq!(store.read(|tx| tx.hosts()).unwrap()[0], cgroup_only);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
