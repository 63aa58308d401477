//! `explain` gives the kernel's answer: for every case here, what
//! `Enforcer::explain` says is what a real attempt meets. And workload
//! rules reach exactly the cgroup subtree they name.

use std::path::Path;

use ward_abi::{Effect, Op};
use ward_agent::{
    cgroup::OwnedCgroup,
    enforcer::{
        Caller, Enforcer, EnforcerConfig, Entry, Expiry, Object, PathPattern, Probe, Subject,
    },
};
use ward_tests::{Identity, OpenOutcome, TempDir, lifecycle::protection, open_in};

use crate::support::cgroups;

const USER: u32 = 4343;

fn uid_enforcer() -> Enforcer {
    Enforcer::load(EnforcerConfig {
        uid_ranges: vec![(4000, 4999)],
        ..Default::default()
    })
    .expect("load enforcer")
}

fn tree(p: &Path) -> Object {
    let s = format!("{}/", p.display().to_string().trim_end_matches('/'));
    Object::Path(PathPattern::parse(&s).unwrap())
}

fn allow(subject: Subject, op: Op, object: &Object, id: u64) -> Entry {
    Entry {
        subject,
        op,
        object: object.clone(),
        effect: Effect::Allow,
        expires: Expiry::Never,
        rule_id: id,
        from_grant: true,
    }
}

/// One case: who, what, and how the attempt is made.
struct Case<'a> {
    what: &'a str,
    cgroup: Option<&'a OwnedCgroup>,
    id: Option<Identity>,
    op: Op,
    path: &'a Path,
}

fn flags(op: Op) -> i32 {
    match op {
        Op::Write => libc::O_WRONLY | libc::O_CREAT,
        _ => libc::O_RDONLY,
    }
}

/// Asserts explain and the kernel agree; returns the shared answer.
fn agree(enforcer: &mut Enforcer, case: &Case<'_>) -> bool {
    let caller = Caller {
        uid: Some(case.id.map_or(0, |i| i.uid)),
        login_uid: case.id.and_then(|i| i.login_uid),
        cgroup: case.cgroup.map(|c| c.path().to_owned()),
    };
    let explained = enforcer
        .explain(
            &caller,
            case.op,
            &Probe::Path(case.path.to_str().unwrap().to_owned()),
        )
        .expect("explain")
        .allowed();
    let outcome = open_in(case.cgroup, case.id, case.path, flags(case.op));
    let kernel = match outcome {
        OpenOutcome::Opened => true,
        OpenOutcome::Refused(libc::EACCES) => false,
        other => panic!("{}: unexpected {other:?}", case.what),
    };
    assert_eq!(
        explained, kernel,
        "{}: explain said {explained}, the kernel {kernel}",
        case.what
    );
    kernel
}

fn user(login_uid: Option<u32>, uid: u32) -> Option<Identity> {
    Some(Identity {
        login_uid,
        uid,
        gid: uid,
    })
}

#[test]
fn explain_matches_the_kernel_for_users_login_uids_links_and_new_names() {
    let dir = TempDir::new("explain-users");
    let secret = dir.file("prod/secret.txt");
    let deep = dir.file("prod/a/b/c/deep.txt");
    let alias = dir.path().join("alias.txt");
    std::fs::hard_link(&secret, &alias).unwrap();
    for d in ["prod", "prod/a", "prod/a/b", "prod/a/b/c"] {
        let p = dir.path().join(d);
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    for f in [&secret, &deep] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    }
    let fresh = dir.path().join("prod/a/new.txt");
    let object = tree(&dir.path().join("prod"));
    let mut enforcer = uid_enforcer();
    enforcer
        .apply(&[
            protection(Op::Read, &object),
            protection(Op::Write, &object),
        ])
        .unwrap();
    let cases = |op| {
        [
            ("managed uid", user(None, USER), &secret as &Path),
            ("deep file", user(None, USER), &deep),
            ("hard link outside the tree", user(None, USER), &alias),
            (
                "root with a managed login uid",
                user(Some(USER), 0),
                &secret,
            ),
            ("unmanaged uid", user(None, 5000), &secret),
            ("a name to be created", user(None, USER), &fresh),
        ]
        .map(|(what, id, path)| (what, id, path, op))
    };
    let mut answers = Vec::new();
    for (what, id, path, op) in cases(Op::Read).into_iter().chain(cases(Op::Write)) {
        if op == Op::Read && path == fresh.as_path() {
            continue; // reading what does not exist is ENOENT either way
        }
        let c = Case {
            what,
            cgroup: None,
            id,
            op,
            path,
        };
        answers.push(agree(&mut enforcer, &c));
    }
    assert!(answers.iter().any(|a| !a), "some cases are denied");
    assert!(
        answers.iter().any(|a| *a),
        "some are allowed (the unmanaged)"
    );
    // A grant to the user, for read only on the subtree `a/`: explain
    // follows the kernel through nested objects.
    let sub = tree(&dir.path().join("prod/a"));
    enforcer
        .grant(9, vec![allow(Subject::Uid(USER), Op::Read, &sub, 9)])
        .unwrap();
    for (what, path, allowed) in [
        ("granted subtree", &deep as &Path, true),
        ("outside the grant", &secret, false),
    ] {
        let c = Case {
            what,
            cgroup: None,
            id: user(None, USER),
            op: Op::Read,
            path,
        };
        assert_eq!(agree(&mut enforcer, &c), allowed, "{what}");
    }
    let c = Case {
        what: "the sudo'd human keeps the human's grant",
        cgroup: None,
        id: user(Some(USER), 0),
        op: Op::Read,
        path: &deep,
    };
    assert!(agree(&mut enforcer, &c));
}

#[test]
fn a_workload_rule_reaches_its_cgroup_subtree_and_nothing_else() {
    let dir = TempDir::new("explain-workloads");
    let secret = dir.file("prod/secret.txt");
    let object = tree(&dir.path().join("prod"));
    let (svc, other) = cgroups("explain-svc");
    let app = OwnedCgroup::create(svc.path(), "app").unwrap();
    let sibling = OwnedCgroup::create(svc.path(), "sibling").unwrap();
    let worker = OwnedCgroup::create(app.path(), "worker").unwrap();
    let mut enforcer = Enforcer::load(EnforcerConfig::default()).unwrap();
    enforcer.manage_cgroup(svc.id()).unwrap();
    enforcer.apply(&[protection(Op::Read, &object)]).unwrap();
    let read = |enforcer: &mut Enforcer, what, cg| {
        agree(
            enforcer,
            &Case {
                what,
                cgroup: Some(cg),
                id: None,
                op: Op::Read,
                path: &secret,
            },
        )
    };
    assert!(!read(&mut enforcer, "svc, no grant", &svc));
    assert!(read(&mut enforcer, "an unmanaged cgroup", &other));

    // A grant for app/, inside the managed svc/: the agent lists app/ as
    // a subject of its own.
    enforcer.manage_cgroup(app.id()).unwrap();
    enforcer
        .grant(
            21,
            vec![allow(Subject::Cgroup(app.id()), Op::Read, &object, 21)],
        )
        .unwrap();
    assert!(read(&mut enforcer, "app/ with app/'s grant", &app));
    assert!(read(
        &mut enforcer,
        "app/worker/ with app/'s grant",
        &worker
    ));
    assert!(!read(
        &mut enforcer,
        "svc/sibling/ without a grant",
        &sibling
    ));
    assert!(!read(&mut enforcer, "svc/ itself without a grant", &svc));
    enforcer.revoke(21).unwrap();
    assert!(!read(&mut enforcer, "app/ after revoke", &app));

    // A grant for svc/ reaches app/ too, though app/ is listed itself.
    enforcer
        .grant(
            22,
            vec![allow(Subject::Cgroup(svc.id()), Op::Read, &object, 22)],
        )
        .unwrap();
    assert!(read(&mut enforcer, "app/ with svc/'s grant", &app));
    assert!(read(&mut enforcer, "svc/worker with svc/'s grant", &worker));
    assert!(read(
        &mut enforcer,
        "svc/sibling with svc/'s grant",
        &sibling
    ));
    drop(worker);
    drop(app);
    drop(sibling);
}
