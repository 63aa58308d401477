//! The audit log: append-only JSON lines, rotated by size.
//!
//! Each record is one line, written with a single `write` and fsynced for
//! grant lifecycle records, so a crash never leaves half a record.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

pub struct Audit {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

/// One audit record. Never carries secrets: no certificates or keys, only
/// identities.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time_unix_ms: i64,
    /// grant_pushed, grant_revoked, grant_expired, grant_activated,
    /// grant_used, deny, call_refused.
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<&'a str>,
    /// Who did it: "uid:0", "tls:coordinator.example", or "kernel".
    pub actor: &'a str,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Audit {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, AuditError> {
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
        Ok(Audit {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
            keep,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record; `durable` fsyncs it before returning.
    pub fn write(&mut self, record: &Record<'_>, durable: bool) -> Result<(), AuditError> {
        let path = self.path.clone();
        let err = |source| AuditError {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(record).map_err(|e| err(std::io::Error::other(e)))?;
        line.push(b'\n');
        if self.size + line.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate().map_err(err)?;
        }
        self.file.write_all(&line).map_err(err)?;
        if durable {
            self.file.sync_data().map_err(err)?;
        }
        self.size += line.len() as u64;
        Ok(())
    }

    /// audit.jsonl -> audit.jsonl.1 -> ... -> audit.jsonl.{keep}, oldest dropped.
    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = fs::remove_file(name(self.keep));
        for n in (1..self.keep).rev() {
            let _ = fs::rename(name(n), name(n + 1));
        }
        fs::rename(&self.path, name(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_and_rotate_by_size() {
        let dir = std::env::temp_dir().join(format!("ward-audit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let mut audit = Audit::open(&path, 300, 2).unwrap();
        for i in 0..10 {
            let id = format!("g{i}");
            let rec = Record {
                time_unix_ms: i,
                kind: "grant_pushed",
                grant_id: Some(&id),
                actor: "uid:0",
                detail: serde_json::json!({"reason": "INC-1"}),
            };
            audit.write(&rec, true).unwrap();
        }
        let current = fs::read_to_string(&path).unwrap();
        for line in current.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["kind"], "grant_pushed");
        }
        assert!(fs::metadata(&path).unwrap().len() <= 300);
        assert!(dir.join("audit.jsonl.1").exists());
        assert!(dir.join("audit.jsonl.2").exists());
        assert!(
            !dir.join("audit.jsonl.3").exists(),
            "only `keep` rotations are kept"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
