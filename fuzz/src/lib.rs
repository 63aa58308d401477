//! What ward's fuzz targets share: the shipped samples, a fixed clock, and
//! checks that a refusal names what it refuses.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ward_policy::{Clock, Directory, Env, FixedOffset, Policies};

/// The sample policy and directory that ship in `dist/`.
pub const SAMPLE_POLICY: &str = include_str!("../../dist/policy.cedar");
pub const SAMPLE_DIRECTORY: &str = include_str!("../../dist/directory.toml");
pub const COORDINATOR_POLICY: &str = include_str!("../../dist/coordinator.cedar");

/// 2025-01-01T00:00:00Z: targets decide against a fixed "now", so a crash
/// reproduces whenever it is replayed.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

pub fn clock() -> Clock {
    Clock::at(now(), Arc::new(FixedOffset(0)))
}

pub fn env() -> Env {
    let mut env = Env {
        host: "db1".into(),
        file_enforcement: true,
        kernel: "6.12.0".into(),
        ..Env::default()
    };
    env.labels.insert("env".into(), "prod".into());
    env
}

pub fn sample_policies() -> &'static Policies {
    static P: OnceLock<Policies> = OnceLock::new();
    P.get_or_init(|| {
        Policies::parse(&[("policy.cedar".into(), SAMPLE_POLICY.into())])
            .expect("dist/policy.cedar checks")
    })
}

pub fn sample_directory() -> &'static Directory {
    static D: OnceLock<Directory> = OnceLock::new();
    D.get_or_init(|| Directory::parse_toml(SAMPLE_DIRECTORY).expect("dist/directory.toml loads"))
}

/// Fuzz input as text; libFuzzer's bytes that are not UTF-8 are skipped,
/// as every file here is read with `read_to_string`.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A refusal must say something.
pub fn assert_message(what: &str, message: &str) {
    assert!(!message.trim().is_empty(), "{what}: an empty error message");
}

/// A protobuf field path (`objects[2].path`) must start with one of the
/// message's fields.
pub fn assert_field(what: &str, field: &str, fields: &[&str]) {
    let head = field.split(['[', '.', ' ']).next().unwrap_or_default();
    assert!(
        fields.contains(&head),
        "{what}: error names `{field}`, which is not a field of the message"
    );
}

/// What the agent does with a directory that loads: every resource must
/// be one the kernel table can hold (`check_resources`), the shipped policy
/// compiles over it, and a stand-in for something inside each resource
/// resolves. A refusal names the entity or the file.
pub fn check_directory(
    parsed: Result<Directory, ward_policy::DirectoryError>,
    again: impl Fn() -> Result<Directory, ward_policy::DirectoryError>,
) {
    use ward_policy::{Compiler, DirectoryError, EntityKey, Kind};
    match parsed {
        Ok(dir) => {
            let again = again().expect("parsing is a function of the text");
            assert!(dir.changed(&again).is_empty(), "a reparse differs");
            for r in dir.records() {
                for a in &r.ancestors {
                    assert!(dir.get(a).is_some(), "ancestor {a:?} is not listed");
                }
            }
            let resources: Vec<_> = dir.resources().map(|r| r.def.key()).collect();
            for EntityKey { kind, id } in &resources {
                let _ = dir.resource_for(*kind, id);
                if *kind == Kind::Path && id.ends_with('/') {
                    let _ = dir.resource_for(Kind::Path, &format!("{id}inside"));
                }
            }
            if ward_agent::daemon::policy::check_resources(&dir).is_ok() {
                let c = Compiler::new(sample_policies().clone(), dir, env(), &clock());
                let _ = c.decisions().count();
            }
        }
        Err(e) => {
            if let DirectoryError::Entity {
                entity, message, ..
            } = &e
            {
                assert_message("directory entity", &entity.to_string());
                assert_message("directory", message);
            }
            assert_message("directory", &e.to_string());
        }
    }
}

/// The fields of `ward.v1.Grant`, which a refused grant must name.
pub const GRANT_FIELDS: &[&str] = &[
    "id",
    "subject",
    "operations",
    "objects",
    "not_before_unix_ms",
    "expires_at_unix_ms",
    "reason",
];

/// The agent's check of a pushed grant, as `Engine::push` runs it, with
/// the default `agent.max_grant_duration` and a cgroup v2 host.
pub fn check_grant(g: &ward_proto::v1::Grant) {
    use prost::Message;
    use ward_agent::daemon::grant;
    let again = ward_proto::v1::Grant::decode(g.encode_to_vec().as_slice())
        .expect("an encoded grant decodes");
    assert_eq!(&again, g, "a grant changes on re-encoding");
    let max = Duration::from_secs(8 * 3600);
    let root = std::path::Path::new("/sys/fs/cgroup");
    match grant::validate(g, now(), max, Some(root)) {
        Ok(v) => {
            assert!(v.expires_at > now() && v.expires_at > v.not_before);
            assert!(!v.targets.is_empty());
            let entries = v.entries(1);
            assert_eq!(entries.len(), v.targets.len());
        }
        Err(e) => {
            assert_field("grant", &e.field, GRANT_FIELDS);
            assert_message("grant", &e.reason);
        }
    }
}
