//! Repeated audit records, counted instead of written.
//!
//! A local user can make the kernel deny, or the API refuse, thousands of
//! times a second. Written one by one, those records would rotate every
//! other record out of the audit log. Instead the first of a run (same
//! kind, subject, object and rule, or same caller and call) is written at
//! once, repeats within `WINDOW` are counted, and one summary record with
//! the count closes the run.

use std::collections::HashMap;

/// How long a run of repeats is counted before its summary is written.
pub const WINDOW_MS: i64 = 10_000;
/// Runs tracked at once; past this, all are summarised and forgotten.
const MAX_RUNS: usize = 4096;

/// An audit record owned, to be written later.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub time_unix_ms: i64,
    pub kind: String,
    pub grant_id: Option<String>,
    pub actor: String,
    pub detail: serde_json::Value,
}

#[derive(Debug)]
struct Run {
    started_ms: i64,
    first_ms: i64,
    last_ms: i64,
    repeats: u64,
    first: Pending,
}

#[derive(Debug, Default)]
pub struct Repeats {
    runs: HashMap<String, Run>,
}

impl Repeats {
    /// Notes `record` under `key`. Returns whether to write it now, and
    /// the summaries of runs that ended. Only this key's run is looked at:
    /// this is on the path of every kernel event. Other runs close at the
    /// tick (`due`).
    pub fn note(&mut self, key: String, record: &Pending) -> (bool, Vec<Pending>) {
        let now = record.time_unix_ms;
        let mut ended = Vec::new();
        match self.runs.get_mut(&key) {
            Some(run) if now - run.started_ms < WINDOW_MS => {
                run.repeats += 1;
                run.last_ms = now;
                return (false, ended);
            }
            // Its window has passed: close it and start anew.
            Some(_) => ended.extend(self.runs.remove(&key).and_then(summary)),
            None => {}
        }
        if self.runs.len() >= MAX_RUNS {
            ended.extend(self.drain());
        }
        self.runs.insert(
            key,
            Run {
                started_ms: now,
                first_ms: now,
                last_ms: now,
                repeats: 0,
                first: record.clone(),
            },
        );
        (true, ended)
    }

    /// Summaries of the runs whose window has passed at `now_ms`.
    pub fn due(&mut self, now_ms: i64) -> Vec<Pending> {
        let over: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| now_ms - r.started_ms >= WINDOW_MS)
            .map(|(k, _)| k.clone())
            .collect();
        over.into_iter()
            .filter_map(|k| self.runs.remove(&k).and_then(summary))
            .collect()
    }

    /// Every open run's summary, now (at shutdown, or when full).
    pub fn drain(&mut self) -> Vec<Pending> {
        self.runs.drain().filter_map(|(_, r)| summary(r)).collect()
    }
}

/// The record closing a run, if anything was repeated.
fn summary(run: Run) -> Option<Pending> {
    if run.repeats == 0 {
        return None;
    }
    let mut detail = run.first.detail.clone();
    if let Some(map) = detail.as_object_mut() {
        map.insert("repeated".into(), run.repeats.into());
        map.insert("first_unix_ms".into(), run.first_ms.into());
        map.insert("last_unix_ms".into(), run.last_ms.into());
    }
    Some(Pending {
        time_unix_ms: run.last_ms,
        detail,
        ..run.first
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(t: i64) -> Pending {
        Pending {
            time_unix_ms: t,
            kind: "deny".into(),
            grant_id: None,
            actor: "kernel".into(),
            detail: serde_json::json!({"object": "/srv/prod/db"}),
        }
    }

    #[test]
    fn a_run_is_written_once_and_closed_with_its_count() {
        let mut r = Repeats::default();
        assert_eq!(r.note("k".into(), &deny(0)), (true, vec![]));
        for t in 1..1000 {
            assert_eq!(r.note("k".into(), &deny(t)), (false, vec![]));
        }
        assert!(r.due(WINDOW_MS - 1).is_empty());
        let closed = r.due(WINDOW_MS);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].detail["repeated"], 999);
        assert_eq!(closed[0].detail["last_unix_ms"], 999);
        // After the window, the next one starts a new run.
        assert_eq!(r.note("k".into(), &deny(WINDOW_MS + 1)), (true, vec![]));
        assert!(r.drain().is_empty(), "nothing repeated in the new run");
    }

    #[test]
    fn a_run_past_its_window_closes_at_its_next_record_without_a_tick() {
        let mut r = Repeats::default();
        r.note("k".into(), &deny(0));
        r.note("k".into(), &deny(5));
        let (write, ended) = r.note("k".into(), &deny(WINDOW_MS));
        assert!(write, "a new run starts");
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].detail["repeated"], 1);
    }
}
