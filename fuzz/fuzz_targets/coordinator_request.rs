//! A `ward.v1.CreateRequestRequest` as raw protobuf bytes, decided by
//! `Workflow::create`, what the coordinator's CreateRequest call runs:
//! bounds, operation/object fit, duration and schedule, hosts, workload
//! and Cedar eligibility, against the shipped `coordinator.cedar` and a
//! SQLite store with two known hosts. The first byte picks the requester.
#![no_main]

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use ward_coordinator::{
    signer::Signer,
    store::{KnownHost, Store, StoreError},
    workflow::{Rules, Workflow, WorkflowError},
};
use ward_policy::{Compiler, Directory, Policies};
use ward_proto::v1::CreateRequestRequest;

/// `CreateRequestRequest`'s fields, which a refusal must name.
const FIELDS: &[&str] = &[
    "operations",
    "objects",
    "hosts",
    "host_labels",
    "duration",
    "reason",
    "ticket",
    "not_before",
    "workload",
];

const REQUESTERS: &[&str] = &["alice", "bob", "carol", "mallory"];

// The sample directory has `oncall` and `leads` already.
const EXTRA_DIRECTORY: &str = r#"
[groups.staff]
[groups.infra]
[users.carol]
groups = ["oncall", "infra", "staff"]
[users.dave]
groups = ["leads"]
[executables."/usr/bin/psql"]
[networks."10.0.0.0/8:*"]
"#;

const PREFIX: &str = "ward-fuzz-coordinator-";

/// Stores left by runs that have ended (libFuzzer exits without unwinding).
fn remove_stale(base: &std::path::Path) {
    for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(PREFIX)
            && !std::path::Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn workflow() -> &'static Mutex<Workflow> {
    static W: OnceLock<Mutex<Workflow>> = OnceLock::new();
    W.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        remove_stale(&base);
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open_sqlite(&dir).expect("a SQLite store");
        store
            .write(|tx| -> Result<(), StoreError> {
                let host = |name: &str, label: &str| KnownHost {
                    name: name.into(),
                    labels: vec![label.into()],
                    file_enforcement: true,
                    kernel: "6.12.0".into(),
                };
                tx.upsert_host(&host("db1", "env=prod"), 0)?;
                tx.upsert_host(&host("stg1", "env=staging"), 0)
            })
            .expect("hosts");
        let signer = Signer::create(&dir.join("signing.pk8")).expect("a signing key");
        let policies = Policies::parse(&[(
            "coordinator.cedar".into(),
            ward_fuzz::COORDINATOR_POLICY.into(),
        )])
        .expect("dist/coordinator.cedar checks");
        let directory =
            Directory::parse_toml(&format!("{}{EXTRA_DIRECTORY}", ward_fuzz::SAMPLE_DIRECTORY))
                .expect("the coordinator's directory");
        let policy = Compiler::new(
            policies,
            directory,
            ward_policy::Env::default(),
            &ward_fuzz::clock(),
        );
        Mutex::new(Workflow {
            store,
            rules: Arc::new(Rules {
                policy,
                signer: Arc::new(signer),
                admins: vec!["security-oncall".into()],
            }),
            pending_ttl: Duration::from_secs(3600),
            max_schedule_ahead: Duration::from_secs(30 * 86_400),
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, body)) = data.split_first() else {
        return;
    };
    let Ok(r) = CreateRequestRequest::decode(body) else {
        return;
    };
    let requester = REQUESTERS[usize::from(who) % REQUESTERS.len()];
    let mut wf = workflow().lock().unwrap_or_else(|p| p.into_inner());
    match wf.create(requester, r.clone()) {
        Ok(req) => {
            assert!(!req.id.is_empty());
            assert!(req.duration_ms > 0 && req.duration_ms == r.duration_ms);
            assert!(!req.hosts.is_empty());
        }
        Err(WorkflowError::Invalid { field, reason }) => {
            ward_fuzz::assert_field("request", &field, FIELDS);
            ward_fuzz::assert_message("request", &reason);
        }
        Err(WorkflowError::Store(e)) => panic!("the store failed: {e}"),
        Err(e) => ward_fuzz::assert_message("request", &e.to_string()),
    }
});
