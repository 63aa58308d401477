//! `cargo xtask bench` runs this: compile 10,000 users × 1,000 protected
//! resources × the 4 kernel actions, fully and after one attribute change.
//!
//! Usage: compile_bench [USERS RESOURCES RUNS] — prints one JSON object.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ward_policy::{Clock, Compiler, Directory, Env, FixedOffset, Policies, Update, fixture};

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    serde_json::json!({ "median": v[v.len() / 2], "min": v[0], "max": v[v.len() - 1] })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (users, resources, runs) = match args[..] {
        [u, r, n] => (u, r, n),
        _ => (10_000, 1_000, 5),
    };
    let policies = Policies::parse(&[("bench.cedar".into(), fixture::POLICIES.into())])
        .expect("bench policies");
    let env = Env {
        host: "db1".into(),
        labels: [("env".to_owned(), "prod".to_owned())].into(),
        file_enforcement: true,
        kernel: "6.12".into(),
    };
    // A fixed Monday, 10:00 UTC, so every run compiles the same table.
    let clock = Clock::at(
        UNIX_EPOCH + Duration::from_secs(1_796_032_800),
        Arc::new(FixedOffset(0)),
    );
    let text = fixture::directory(users, resources, None);
    // u7 moves to a department of their own: a new class.
    let tweaked_text = fixture::directory(users, resources, Some((7, "d99")));
    let t = Instant::now();
    let dir = Directory::parse_toml(&text).expect("bench directory");
    let load = t.elapsed();
    let tweaked = Directory::parse_toml(&tweaked_text).expect("bench directory");
    let (mut full, mut incremental, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let c = Compiler::new(policies.clone(), dir.clone(), env.clone(), &clock);
        full.push(ms(t.elapsed()));
        last = Some(c);
    }
    let mut c = last.expect("at least one run");
    let stats_full = c.stats().clone();
    let kernel_entries = c.decisions().count();
    let mut changed = 0;
    let mut evaluations = 0;
    for i in 0..runs {
        // Alternate between the two directories: each step is one change.
        let next = if i % 2 == 0 {
            tweaked.clone()
        } else {
            dir.clone()
        };
        let t = Instant::now();
        let found = c.directory().changed(&next);
        diff.push(ms(t.elapsed()));
        let before = c.stats().evaluations;
        let t = Instant::now();
        let (update, previous) = c.apply_directory(next, &found, &clock);
        incremental.push(ms(t.elapsed()));
        drop(previous);
        evaluations = c.stats().evaluations - before;
        match update {
            Update::Delta(d) => changed = d.changes.len(),
            Update::Full => panic!("one attribute change recompiled everything"),
        }
        assert_eq!(found.len(), 1);
    }
    let out = serde_json::json!({
        "users": users,
        "resources": resources,
        "actions": 4,
        "runs": runs,
        "directory_parse_ms": ms(load),
        "full_compile_ms": stats(full),
        "incremental_compile_ms": stats(incremental),
        "directory_diff_ms": stats(diff),
        "principal_classes": stats_full.principal_classes,
        "resource_classes": stats_full.resource_classes,
        "evaluations_full": stats_full.evaluations,
        "evaluations_incremental": evaluations,
        "entries_changed_incremental": changed,
        "decisions": kernel_entries,
        "class_decisions": stats_full.class_decisions,
        "compiled_at": SystemTime::UNIX_EPOCH.elapsed().map(|d| d.as_secs()).unwrap_or(0),
    });
    println!("{out}");
}
