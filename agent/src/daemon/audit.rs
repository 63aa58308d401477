//! The audit trail: append-only JSON lines, hash-chained, in two files.
//!
//! - `audit_log` holds every record and is rotated by size; a flood of
//!   denies or refused calls can only push out other denies and refusals,
//!   because repeats are counted, not written (see `repeats`).
//! - `lifecycle_log` holds the grant lifecycle (pushed, activated, used,
//!   revoked, expired, refused) and is never rotated or trimmed by ward:
//!   ship and prune it with the host's log tooling.
//!
//! Each record carries `prev`, the SHA-256 of the line before it in its
//! file set (across rotations), so editing, inserting or deleting a record
//! breaks the chain; `ward audit verify` checks it. Each record is one
//! line, written with a single `write` and fsynced for lifecycle records,
//! so a crash never leaves half a record.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

/// The records that make up a grant's history.
pub const LIFECYCLE: &[&str] = &[
    "grant_pushed",
    "grant_activated",
    "grant_used",
    "grant_revoked",
    "grant_expired",
    "grant_refused",
];

/// `prev` of a file set's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record. Never carries secrets: no certificates or keys, only
/// identities.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time_unix_ms: i64,
    /// grant_pushed, grant_revoked, grant_expired, grant_activated,
    /// grant_used, grant_refused, deny, call_refused; and the host's own:
    /// policy_applied, policy_rejected, config_rejected, cgroups_unmanaged.
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<&'a str>,
    /// Who did it: "uid:0", "tls:coordinator.example", or "kernel".
    pub actor: &'a str,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// A record as written: the record and the hash of the line before it.
#[derive(Serialize)]
struct Chained<'a> {
    #[serde(flatten)]
    record: &'a Record<'a>,
    prev: &'a str,
}

pub struct Audit {
    all: Trail,
    lifecycle: Trail,
}

impl Audit {
    pub fn open(
        path: &Path,
        lifecycle: &Path,
        max_bytes: u64,
        keep: u32,
    ) -> Result<Self, AuditError> {
        Ok(Audit {
            all: Trail::open(path, Some((max_bytes, keep)))?,
            lifecycle: Trail::open(lifecycle, None)?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.all.path
    }

    /// Appends one record; `durable` fsyncs it before returning. Lifecycle
    /// records go to both files and are always durable.
    pub fn write(&mut self, record: &Record<'_>, durable: bool) -> Result<(), AuditError> {
        let life = LIFECYCLE.contains(&record.kind);
        if life {
            self.lifecycle.append(record, true)?;
        }
        self.all.append(record, durable || life)
    }
}

/// One chained file set: the current file and, if rotated, its `.N`s.
struct Trail {
    path: PathBuf,
    file: File,
    size: u64,
    /// Rotate beyond this size, keeping this many old files; None: never.
    rotation: Option<(u64, u32)>,
    /// Hex SHA-256 of the last line written.
    head: String,
    records: u64,
}

impl Trail {
    fn open(path: &Path, rotation: Option<(u64, u32)>) -> Result<Trail, AuditError> {
        let err = |source| AuditError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        // The chain goes on from the newest line of the set.
        let mut head = GENESIS.to_owned();
        for p in rotated(path, rotation.map_or(0, |(_, keep)| keep)) {
            if let Some(line) = last_line(&p).map_err(err)? {
                head = hash(line.as_bytes());
                break;
            }
        }
        Ok(Trail {
            path: path.to_owned(),
            file,
            size,
            rotation,
            head,
            records: 0,
        })
    }

    fn append(&mut self, record: &Record<'_>, durable: bool) -> Result<(), AuditError> {
        let path = self.path.clone();
        let err = |source| AuditError {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&Chained {
            record,
            prev: &self.head,
        })
        .map_err(|e| err(std::io::Error::other(e)))?;
        let head = hash(&line);
        line.push(b'\n');
        if let Some((max, keep)) = self.rotation
            && self.size + line.len() as u64 > max
            && self.size > 0
        {
            self.rotate(keep).map_err(err)?;
        }
        self.file.write_all(&line).map_err(err)?;
        if durable {
            self.file.sync_data().map_err(err)?;
        }
        self.size += line.len() as u64;
        self.head = head;
        self.records += 1;
        // Anchors outside the file: with these in the journal, even a
        // rewrite of the whole chain by root shows.
        if self.records.is_multiple_of(1000) {
            tracing::info!(file = %self.path.display(), head = %self.head, "audit chain head");
        }
        Ok(())
    }

    /// audit.jsonl -> audit.jsonl.1 -> ... -> audit.jsonl.{keep}, oldest dropped.
    fn rotate(&mut self, keep: u32) -> std::io::Result<()> {
        let name = |n: u32| numbered(&self.path, n);
        let _ = fs::remove_file(name(keep));
        for n in (1..keep).rev() {
            let _ = fs::rename(name(n), name(n + 1));
        }
        fs::rename(&self.path, name(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        tracing::info!(file = %self.path.display(), head = %self.head, "audit log rotated");
        Ok(())
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// A file set newest first: the current file, then `.1` .. `.keep`.
fn rotated(path: &Path, keep: u32) -> Vec<PathBuf> {
    std::iter::once(path.to_owned())
        .chain((1..=keep).map(|n| numbered(path, n)))
        .collect()
}

fn hash(line: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, line)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The last complete line of a file, if any; reads only its tail.
fn last_line(path: &Path) -> std::io::Result<Option<String>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut take = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(take);
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        let text = String::from_utf8_lossy(&tail);
        let body = text.strip_suffix('\n').unwrap_or(&text);
        match body.rfind('\n') {
            Some(i) => return Ok(Some(body[i + 1..].to_owned())),
            None if start == 0 => return Ok((!body.is_empty()).then(|| body.to_owned())),
            None => take *= 4,
        }
    }
}

/// What `ward audit verify` found in one file set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verified {
    pub files: Vec<PathBuf>,
    pub records: u64,
    /// The first record does not chain to genesis: older files were
    /// rotated away (or removed).
    pub starts_mid_chain: bool,
    /// Where the chain breaks: file, line (1-based), and why.
    pub broken: Option<(PathBuf, u64, String)>,
    /// Hex SHA-256 of the last record: compare with the journal's
    /// "audit chain head" anchors.
    pub head: String,
}

/// Checks the chain of the file set at `path` (and its rotated `.N`s),
/// oldest record first.
pub fn verify(path: &Path) -> std::io::Result<Verified> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut n = 1;
    while numbered(path, n).exists() {
        files.push(numbered(path, n));
        n += 1;
    }
    files.reverse();
    files.push(path.to_owned());
    let mut out = Verified {
        files: files.clone(),
        records: 0,
        starts_mid_chain: false,
        broken: None,
        head: GENESIS.to_owned(),
    };
    let mut prev: Option<String> = None;
    for file in &files {
        let text = fs::read_to_string(file)?;
        for (i, line) in text.lines().enumerate() {
            let at = |why: String| Some((file.clone(), i as u64 + 1, why));
            let claimed = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("prev").and_then(|p| p.as_str()).map(str::to_owned));
            let Some(claimed) = claimed else {
                out.broken = at("not a chained JSON record".into());
                return Ok(out);
            };
            match &prev {
                None => out.starts_mid_chain = claimed != GENESIS,
                Some(p) if *p != claimed => {
                    out.broken = at(format!(
                        "prev is {claimed}, but the record before it hashes to {p}"
                    ));
                    return Ok(out);
                }
                Some(_) => {}
            }
            let h = hash(line.as_bytes());
            prev = Some(h.clone());
            out.head = h;
            out.records += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64, kind: &str) -> (String, i64, String) {
        (format!("g{i}"), i, kind.to_owned())
    }

    #[test]
    fn records_chain_across_rotation_and_a_changed_record_breaks_the_chain() {
        let dir = std::env::temp_dir().join(format!("ward-audit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let life = dir.join("lifecycle.jsonl");
        let mut audit = Audit::open(&path, &life, 400, 2).unwrap();
        let write = |audit: &mut Audit, (id, i, kind): (String, i64, String)| {
            let rec = Record {
                time_unix_ms: i,
                kind: &kind,
                grant_id: Some(&id),
                actor: "uid:0",
                detail: serde_json::json!({"reason": "INC-1"}),
            };
            audit.write(&rec, false).unwrap();
        };
        write(&mut audit, rec(0, "grant_pushed"));
        for i in 1..20 {
            write(&mut audit, rec(i, "deny"));
        }
        assert!(fs::metadata(&path).unwrap().len() <= 400);
        assert!(dir.join("audit.jsonl.2").exists());
        assert!(!dir.join("audit.jsonl.3").exists(), "only `keep` are kept");
        // The lifecycle file kept what rotation dropped from the other.
        let lifecycle = fs::read_to_string(&life).unwrap();
        assert!(lifecycle.contains("\"g0\"") && !lifecycle.contains("deny"));

        let v = verify(&path).unwrap();
        assert_eq!(v.broken, None);
        assert!(v.starts_mid_chain, "the oldest files were rotated away");
        assert_eq!(v.files.len(), 3);
        let v = verify(&life).unwrap();
        assert!(v.broken.is_none() && !v.starts_mid_chain && v.records == 1);

        // Reopened, the chain goes on from the last line.
        drop(audit);
        let mut audit = Audit::open(&path, &life, 400, 2).unwrap();
        write(&mut audit, rec(20, "grant_revoked"));
        assert_eq!(verify(&path).unwrap().broken, None);
        assert_eq!(verify(&life).unwrap().records, 2);

        // Editing a record in a rotated file breaks the chain after it.
        let old = dir.join("audit.jsonl.1");
        let text = fs::read_to_string(&old).unwrap();
        fs::write(&old, text.replacen("INC-1", "INC-2", 1)).unwrap();
        let v = verify(&path).unwrap();
        let (file, line, why) = v.broken.expect("a changed record is found");
        assert!(file == old || file == path, "{file:?}");
        assert!(line >= 1 && why.contains("hashes to"), "{why}");
        let _ = fs::remove_dir_all(&dir);
    }
}
