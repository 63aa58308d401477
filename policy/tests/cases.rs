//! Table-driven policy cases: each compiles real Cedar over a real
//! directory and asserts the decisions an operator would check.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ward_policy::{
    Action, Clock, Compiler, Delta, Directory, Effect, Eligibility, EntityKey, Env, FixedOffset,
    GrantCheck, Kind, Policies, Update,
};

const DIRECTORY: &str = r#"
[groups.staff]
[groups.oncall]
parents = ["staff"]

[users.alice]
groups = ["oncall"]
department = "eng"
clearance = 3

[users.bob]
groups = ["staff"]
department = "sales"
clearance = 1

[users.carol]
department = "eng"
clearance = 1

[workloads.backup]
cgroup = "system.slice/backup.service"
team = "infra"

[paths."/srv/eng/"]
department = "eng"
classification = "internal"

[paths."/srv/eng/keys/"]
department = "eng"
classification = "secret"

[paths."/srv/ops/"]
classification = "internal"

[paths."/srv/backups/"]
classification = "internal"

[executables."/usr/bin/psql"]
[networks."10.0.0.0/8:5432"]
classification = "internal"
"#;

const POLICIES: &str = r#"
@id("dept-read")
permit(principal is User, action == Action::"read", resource is Path)
when { principal has department && resource has department
       && principal.department == resource.department };

@id("clearance-write")
permit(principal is User, action == Action::"write", resource in Path::"/srv/eng/")
when { principal has clearance && principal.clearance >= 3 };

@id("oncall-ops")
permit(principal in Group::"oncall", action in [Action::"read", Action::"write"], resource in Path::"/srv/ops/");

@id("secret-guardrail")
forbid(principal is User, action, resource is Path)
when { resource has classification && resource.classification == "secret" }
unless { principal has clearance && principal.clearance >= 3 };

@id("backup-window")
permit(principal is Workload, action == Action::"read", resource in Path::"/srv/backups/")
when { principal has team && principal.team == "infra"
       && context.minute_of_day >= 120 && context.minute_of_day < 240 };

@id("prod-db")
permit(principal in Group::"staff", action == Action::"connect", resource is Network)
when { context.host.labels.contains("env=prod") };

@id("jit-oncall")
@max_duration("1h")
permit(principal in Group::"oncall", action == Action::"request", resource)
when { context.operation == "read" || context.operation == "write" };

@id("jit-staff-exec")
@max_duration("15m")
permit(principal in Group::"staff", action == Action::"request", resource is Executable);
"#;

/// 2026-11-30, a Monday, at `hh:mm` UTC.
fn monday(hh: u64, mm: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_000_000 - 1_796_000_000 % 86_400 + hh * 3600 + mm * 60)
}

fn clock(t: SystemTime) -> Clock {
    Clock::at(t, Arc::new(FixedOffset(0)))
}

fn env(labels: &[(&str, &str)]) -> Env {
    Env {
        host: "db1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        file_enforcement: true,
        kernel: "6.12".into(),
    }
}

fn compile_at(t: SystemTime, labels: &[(&str, &str)]) -> Compiler {
    let policies = Policies::parse(&[("ward.cedar".into(), POLICIES.into())]).unwrap();
    let directory = Directory::parse_toml(DIRECTORY).unwrap();
    Compiler::new(policies, directory, env(labels), &clock(t))
}

fn user(n: &str) -> EntityKey {
    EntityKey::new(Kind::User, n)
}

/// The compiled decision as "allow by X", "forbid by X" or "none".
fn decided(c: &Compiler, p: EntityKey, action: Action, resource: (Kind, &str)) -> String {
    let r = EntityKey::new(resource.0, resource.1);
    c.decisions_for(&p)
        .into_iter()
        .find(|d| d.action == action && *d.resource == r)
        .map_or("none".into(), |d| {
            let e = match d.outcome.effect {
                Effect::Allow => "allow",
                Effect::Forbid => "forbid",
            };
            format!("{e} by {}", d.outcome.reason.join(","))
        })
}

#[test]
fn decisions_follow_attributes_groups_guardrails_and_labels() {
    let c = compile_at(monday(10, 0), &[("env", "prod")]);
    let wl = EntityKey::new(Kind::Workload, "backup");
    type Case<'a> = (EntityKey, Action, (Kind, &'a str), &'a str);
    let cases: &[Case] = &[
        // department rule
        (
            user("alice"),
            Action::Read,
            (Kind::Path, "/srv/eng/"),
            "allow by dept-read",
        ),
        (
            user("carol"),
            Action::Read,
            (Kind::Path, "/srv/eng/"),
            "allow by dept-read",
        ),
        (user("bob"), Action::Read, (Kind::Path, "/srv/eng/"), "none"),
        // clearance rule
        (
            user("alice"),
            Action::Write,
            (Kind::Path, "/srv/eng/"),
            "allow by clearance-write",
        ),
        (
            user("carol"),
            Action::Write,
            (Kind::Path, "/srv/eng/"),
            "none",
        ),
        // guardrail: carol's department matches, her clearance does not
        (
            user("carol"),
            Action::Read,
            (Kind::Path, "/srv/eng/keys/"),
            "forbid by secret-guardrail",
        ),
        (
            user("alice"),
            Action::Read,
            (Kind::Path, "/srv/eng/keys/"),
            "allow by dept-read",
        ),
        // group rule, through a nested group for reads and writes
        (
            user("alice"),
            Action::Write,
            (Kind::Path, "/srv/ops/"),
            "allow by oncall-ops",
        ),
        (user("bob"), Action::Read, (Kind::Path, "/srv/ops/"), "none"),
        // host label
        (
            user("bob"),
            Action::Connect,
            (Kind::Network, "10.0.0.0/8:5432"),
            "allow by prod-db",
        ),
        (
            user("carol"),
            Action::Connect,
            (Kind::Network, "10.0.0.0/8:5432"),
            "none",
        ),
        // time window, closed at 10:00
        (
            wl.clone(),
            Action::Read,
            (Kind::Path, "/srv/backups/"),
            "none",
        ),
    ];
    for (p, a, r, want) in cases {
        assert_eq!(decided(&c, p.clone(), *a, *r), *want, "{p:?} {a:?} {r:?}");
    }
    // Without the label, the network rule does not apply.
    let c = compile_at(monday(10, 0), &[("env", "staging")]);
    assert_eq!(
        decided(
            &c,
            user("bob"),
            Action::Connect,
            (Kind::Network, "10.0.0.0/8:5432")
        ),
        "none"
    );
}

#[test]
fn a_time_window_ends_at_its_boundary_and_the_compiler_knows_when() {
    // 02:30, inside 02:00-04:00: the allow carries the 04:00 deadline.
    let c = compile_at(monday(2, 30), &[]);
    let wl = EntityKey::new(Kind::Workload, "backup");
    let d = c
        .decisions_for(&wl)
        .into_iter()
        .find(|d| d.resource.id == "/srv/backups/")
        .expect("the backup window is open at 02:30");
    assert_eq!(d.outcome.effect, Effect::Allow);
    assert_eq!(d.outcome.until, Some(monday(4, 0)));
    assert_eq!(c.next_boundary(), Some(monday(4, 0)));
    // Rules that ignore the clock never expire.
    let alice = c.decisions_for(&user("alice"));
    assert!(!alice.is_empty() && alice.iter().all(|d| d.outcome.until.is_none()));

    // 01:59: closed; the next recompile is due at 02:00.
    let c = compile_at(monday(1, 59), &[]);
    assert!(c.decisions_for(&wl).is_empty());
    assert_eq!(c.next_boundary(), Some(monday(2, 0)));

    // Recompiled at 04:00 exactly: closed.
    let mut c = compile_at(monday(2, 30), &[]);
    c.recompile(&clock(monday(4, 0)));
    assert!(c.decisions_for(&wl).is_empty());
}

#[test]
fn one_attribute_change_recompiles_only_what_it_affects() {
    let mut c = compile_at(monday(10, 0), &[]);
    let evaluations = c.stats().evaluations;
    let moved = DIRECTORY.replace("department = \"sales\"", "department = \"eng\"");
    let update = c.set_directory(
        Directory::parse_toml(&moved).unwrap(),
        &clock(monday(10, 0)),
    );
    let Update::Delta(Delta {
        changes,
        moved: classes_moved,
        ..
    }) = update
    else {
        panic!("an attribute change must not recompile everything");
    };
    // As the kernel holds it: bob alone changed class.
    assert_eq!(classes_moved.len(), 1, "{classes_moved:#?}");
    assert_eq!(classes_moved[0].principal, user("bob"));
    assert_eq!(classes_moved[0].to, c.class_of(&user("bob")));
    assert_ne!(classes_moved[0].from, classes_moved[0].to);
    // bob now reads /srv/eng/ (and nothing else changed for anyone else).
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0].principal, user("bob"));
    assert_eq!(changes[0].resource, EntityKey::new(Kind::Path, "/srv/eng/"));
    assert!(changes[0].old.is_none());
    assert_eq!(changes[0].new.as_ref().unwrap().reason, ["dept-read"]);
    // bob moved into a new class: one row was evaluated (one evaluation
    // per resource and action that applies to it), not the whole table.
    let row: u64 = c
        .resources()
        .iter()
        .map(|k| Action::for_kind(k.kind).len() as u64)
        .sum();
    assert_eq!(c.stats().evaluations - evaluations, row);
    // carol moves into alice's class, already evaluated: nothing new.
    let before = c.stats().evaluations;
    let promoted = moved.replace(
        "[users.carol]\ndepartment = \"eng\"\nclearance = 1",
        "[users.carol]\ngroups = [\"oncall\"]\ndepartment = \"eng\"\nclearance = 3",
    );
    let Update::Delta(Delta {
        changes,
        moved: classes_moved,
        ..
    }) = c.set_directory(
        Directory::parse_toml(&promoted).unwrap(),
        &clock(monday(10, 0)),
    )
    else {
        panic!("a membership change must not recompile everything");
    };
    // One membership update: carol joins alice's class.
    assert_eq!(classes_moved.len(), 1, "{classes_moved:#?}");
    assert_eq!(classes_moved[0].to, c.class_of(&user("alice")));
    // She gains alice's writes on /srv/eng/ and /srv/ops/, and the
    // guardrail on the keys lifts: the delta cannot be empty.
    assert!(!changes.is_empty(), "carol's entries must change");
    assert!(changes.iter().all(|ch| ch.principal == user("carol")));
    assert_eq!(c.stats().evaluations, before);
    assert_eq!(
        decided(
            &c,
            user("carol"),
            Action::Read,
            (Kind::Path, "/srv/eng/keys/")
        ),
        "allow by dept-read"
    );
    let moved = promoted;

    // A resource attribute change touches one column.
    let secret = moved.replace(
        "[paths.\"/srv/ops/\"]\nclassification = \"internal\"",
        "[paths.\"/srv/ops/\"]\nclassification = \"secret\"",
    );
    let Update::Delta(Delta {
        changes,
        moved: classes_moved,
        rows,
    }) = c.set_directory(
        Directory::parse_toml(&secret).unwrap(),
        &clock(monday(10, 0)),
    )
    else {
        panic!("a resource attribute change must not recompile everything");
    };
    // No one changed class; the classes' rows changed, once per class.
    assert!(classes_moved.is_empty(), "{classes_moved:#?}");
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.resource.id == "/srv/ops/"),
        "{rows:#?}"
    );
    let per_class: std::collections::BTreeSet<_> =
        rows.iter().map(|r| (r.class, r.action)).collect();
    assert_eq!(
        per_class.len(),
        rows.len(),
        "one row change per class and action"
    );
    assert!(
        !changes.is_empty() && changes.iter().all(|ch| ch.resource.id == "/srv/ops/"),
        "{changes:#?}"
    );
    assert!(changes.iter().any(|ch| ch.principal == user("bob")
        && ch.new.as_ref().is_some_and(|o| o.effect == Effect::Forbid)));

    // A new resource means new protection: a full recompile.
    let more = format!("{secret}\n[paths.\"/srv/new/\"]\n");
    let update = c.set_directory(Directory::parse_toml(&more).unwrap(), &clock(monday(10, 0)));
    assert_eq!(update, Update::Full);
}

#[test]
fn jit_eligibility_comes_from_the_request_action() {
    let c = compile_at(monday(10, 0), &[]);
    let at = clock(monday(10, 0));
    let check = |p: &str, action, object: &str| {
        c.eligibility(
            &GrantCheck {
                requester: None,
                principal: user(p),
                action,
                object: object.into(),
            },
            &at,
        )
        .unwrap()
    };
    assert_eq!(
        check("alice", Action::Write, "/srv/backups/"),
        Eligibility::Eligible {
            max: Some(Duration::from_secs(3600)),
            policies: vec!["jit-oncall".into()],
            terms: vec![ward_policy::Terms {
                policy: "jit-oncall".into(),
                max: Some(Duration::from_secs(3600)),
                approvals: 1,
                reason_optional: false,
            }],
        }
    );
    // Inside a listed tree, the stand-in carries the tree's attributes.
    assert!(matches!(
        check("alice", Action::Read, "/srv/ops/logs/today.log"),
        Eligibility::Eligible { .. }
    ));
    assert_eq!(
        check("bob", Action::Read, "/srv/backups/"),
        Eligibility::NotEligible {
            reason: "User::\"bob\" is not eligible for read on /srv/backups/: no `request` policy permits it".into()
        }
    );
    assert!(matches!(
        check("bob", Action::Exec, "/usr/bin/psql"),
        Eligibility::Eligible { max: Some(d), .. } if d == Duration::from_secs(900)
    ));
    // The guardrail wins over eligibility: carol may not read secrets,
    // and no grant changes that.
    let mut c2 = compile_at(monday(10, 0), &[]);
    let oncall_carol =
        DIRECTORY.replace("[users.carol]\n", "[users.carol]\ngroups = [\"oncall\"]\n");
    c2.set_directory(Directory::parse_toml(&oncall_carol).unwrap(), &at);
    assert_eq!(
        c2.eligibility(
            &GrantCheck {
                requester: None,
                principal: user("carol"),
                action: Action::Read,
                object: "/srv/eng/keys/id_rsa".into()
            },
            &at
        )
        .unwrap(),
        Eligibility::Forbidden {
            policies: vec!["secret-guardrail".into()]
        }
    );
    // Someone the directory does not list is eligible for nothing.
    assert!(matches!(
        check("mallory", Action::Read, "/srv/ops/"),
        Eligibility::NotEligible { .. }
    ));
}

/// Each invalid policy and the exact error `ward policy check` prints.
#[test]
fn invalid_policies_are_rejected_with_position_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "@id(\"net\")\npermit(principal, action, resource)\nwhen { context.source_ip == \"10.1.1.1\" };\n",
            "p.cedar:3:8: policy `net`: for policy `net`, attribute `source_ip` in context for Action::\"connect\" not found",
        ),
        (
            "permit(principal, action, resource)\nwhen { context.minute_of_day + 30 > 600 };\n",
            "p.cedar:2:16: policy `p:0`: context.minute_of_day can only be compared with a number literal",
        ),
        (
            "permit(principal, action, resource) when { principal.shoe_size > 9 };\n",
            "p.cedar:1:44: policy `p:0`: for policy `p:0`, attribute `shoe_size`",
        ),
        (
            "permit(principal, action == Action::\"delete\", resource);\n",
            "p.cedar:1:29: policy `p:0`: for policy `p:0`, unrecognized action `Action::\"delete\"`",
        ),
        (
            "permit(principal, action, resource) when { principal.department == };\n",
            "p.cedar:1:",
        ),
        (
            "@max_duration(\"soon\")\npermit(principal, action == Action::\"request\", resource);\n",
            "p.cedar:1:1: policy `p:0`: @max_duration(\"soon\") is not a duration",
        ),
        (
            "@id(\"a\") permit(principal, action, resource);\n@id(\"a\") forbid(principal, action, resource);\n",
            "p.cedar:2:1: policy `a`: the id `a` is used twice",
        ),
    ];
    for (src, want) in cases {
        let errors = Policies::parse(&[("p.cedar".into(), (*src).into())]).unwrap_err();
        let got = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            got.starts_with(want),
            "for\n{src}\nwant prefix: {want}\ngot: {got}"
        );
    }
    // The kernel-never-sees-it hint names what the context does hold.
    let errors = Policies::parse(&[("p.cedar".into(), (cases[0].0).into())]).unwrap_err();
    assert!(
        errors[0].message.contains("the kernel never sees it"),
        "{}",
        errors[0]
    );
}

/// Networks nest in the directory as paths do: a forbid on a network
/// covers every listed or asked-for network inside it, so a narrower
/// permit or grant does not get around it.
#[test]
fn a_forbid_on_a_network_covers_the_networks_inside_it() {
    let directory = r#"
[users.alice]
department = "eng"

[networks."10.9.0.0/16:*"]
classification = "restricted"

[networks."10.9.1.1/32:5432"]
"#;
    let policies = r#"
@id("db")
permit(principal is User, action == Action::"connect", resource == Network::"10.9.1.1/32:5432");

@id("restricted")
forbid(principal, action == Action::"connect", resource)
when { resource has classification && resource.classification == "restricted" };

@id("jit")
permit(principal is User, action == Action::"request", resource is Network);
"#;
    let at = clock(monday(10, 0));
    let c = Compiler::new(
        Policies::parse(&[("ward.cedar".into(), policies.into())]).unwrap(),
        Directory::parse_toml(directory).unwrap(),
        env(&[]),
        &at,
    );
    assert_eq!(
        decided(
            &c,
            user("alice"),
            Action::Connect,
            (Kind::Network, "10.9.1.1/32:5432")
        ),
        "allow by db",
        "a listed /32 carries its own attributes, as a listed path does"
    );
    let check = |object: &str| {
        c.eligibility(
            &GrantCheck {
                requester: None,
                principal: user("alice"),
                action: Action::Connect,
                object: object.into(),
            },
            &at,
        )
        .unwrap()
    };
    // Asked for but not listed: the stand-in sits in the /16 and carries
    // its attributes, so the forbid applies.
    assert_eq!(
        check("10.9.7.7/32:22"),
        Eligibility::Forbidden {
            policies: vec!["restricted".into()]
        }
    );
    assert!(
        matches!(check("10.10.0.1/32:22"), Eligibility::Eligible { .. }),
        "outside the /16"
    );

    // A forbid written on the /16 itself, by hierarchy.
    let by_parent = policies.replace(
        "when { resource has classification && resource.classification == \"restricted\" };",
        "when { resource in Network::\"10.9.0.0/16:*\" };",
    );
    let c = Compiler::new(
        Policies::parse(&[("ward.cedar".into(), by_parent)]).unwrap(),
        Directory::parse_toml(directory).unwrap(),
        env(&[]),
        &at,
    );
    assert_eq!(
        decided(
            &c,
            user("alice"),
            Action::Connect,
            (Kind::Network, "10.9.1.1/32:5432")
        ),
        "forbid by restricted",
        "the forbid beats the narrower permit"
    );
    assert!(matches!(
        c.eligibility(
            &GrantCheck {
                requester: None,
                principal: user("alice"),
                action: Action::Connect,
                object: "10.9.1.1/32:5432".into(),
            },
            &at
        )
        .unwrap(),
        Eligibility::Forbidden { .. }
    ));
}

/// A workload's request is decided for the Workload, with who asks in
/// `context.requester`; asking on its behalf is `request_for`.
#[test]
fn a_workload_request_is_decided_for_the_workload_with_its_requester() {
    let policies = Policies::parse(&[(
        "coordinator.cedar".into(),
        r#"
@id("infra-asks") permit(principal in Group::"infra", action == Action::"request_for", resource is Workload)
when { resource has team && resource.team == "infra" };
@id("infra-workloads") @approvals("0")
permit(principal is Workload, action == Action::"request", resource is Path)
when { principal has team && principal.team == "infra"
       && context has requester && context.requester in Group::"infra" };
"#
        .into(),
    )])
    .unwrap();
    let directory = Directory::parse_toml(
        r#"
[groups.infra]
[users.ivan]
groups = ["infra"]
[users.mallory]
[workloads.backup]
cgroup = "system.slice/backup.service"
team = "infra"
[workloads.web]
cgroup = "system.slice/web.service"
team = "web"
[paths."/srv/prod/"]
"#,
    )
    .unwrap();
    let at = clock(monday(10, 0));
    let c = Compiler::new(policies, directory, env(&[]), &at);
    let backup = c.known_workload("system.slice/backup.service").unwrap();
    assert_eq!(backup.def.id, "backup", "found by cgroup");
    assert!(c.known_workload("user.slice").is_none());
    let wl = |n: &str| EntityKey::new(Kind::Workload, n);
    let eligible = |principal, requester: &str| {
        matches!(
            c.eligibility(
                &GrantCheck {
                    principal,
                    requester: Some(user(requester)),
                    action: Action::Read,
                    object: "/srv/prod/".into(),
                },
                &at,
            )
            .unwrap(),
            Eligibility::Eligible { .. }
        )
    };
    assert!(eligible(wl("backup"), "ivan"));
    assert!(!eligible(wl("backup"), "mallory"), "the requester counts");
    assert!(
        !eligible(wl("web"), "ivan"),
        "the workload is the principal"
    );
    assert!(
        !eligible(user("ivan"), "ivan"),
        "ivan himself is not eligible"
    );
    let asks = |who: &str, w: &str| {
        c.may_request_for(
            &env(&[]),
            &user(who),
            &wl(w),
            Action::Read,
            &ward_policy::People::default(),
            &at,
        )
        .unwrap()
    };
    assert!(asks("ivan", "backup"));
    assert!(!asks("mallory", "backup"));
    assert!(!asks("ivan", "web"));
    assert!(!asks("ivan", "no-such-workload"), "unknown workloads never");
}

/// `load_sources` refuses with every policy error, located, or with the
/// directory's, naming the file and entity; its text is what wardd and the
/// coordinator show.
#[test]
fn load_sources_errors_carry_their_location() {
    use ward_policy::{DirectoryError, LoadError, load_sources};
    let dir = std::env::temp_dir().join(format!("ward-policy-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("p.cedar");
    let directory = dir.join("d.toml");
    std::fs::write(
        &policy,
        "@id(\"a\") permit(principal, action, resource) when { principal.shoe_size > 9 };\n\
         @id(\"b\") @approvals(\"many\") permit(principal, action == Action::\"request\", resource);\n",
    )
    .unwrap();
    std::fs::write(&directory, "[users.bob]\ngroups = [\"opps\"]\n").unwrap();

    let e = load_sources(std::slice::from_ref(&policy), Some(&directory)).unwrap_err();
    let LoadError::Policies(errors) = &e else {
        panic!("{e:?}");
    };
    assert_eq!(errors.len(), 2, "{e}");
    let ids: Vec<_> = errors.iter().map(|e| e.policy.as_deref()).collect();
    assert_eq!(ids, [Some("a"), Some("b")]);
    assert!(
        errors
            .iter()
            .all(|e| e.file == policy.display().to_string())
    );
    assert_eq!(errors[0].position.map(|p| p.line), Some(1));
    assert_eq!(errors[1].position.map(|p| p.line), Some(2));
    // One located error per line.
    let text = e.to_string();
    assert_eq!(text.lines().count(), 2, "{text}");
    for (line, err) in text.lines().zip(errors) {
        assert_eq!(line, err.to_string());
        assert!(
            line.starts_with(&format!("{}:", policy.display())),
            "{line}"
        );
    }

    std::fs::write(&policy, "@id(\"a\") permit(principal, action, resource);\n").unwrap();
    let e = load_sources(std::slice::from_ref(&policy), Some(&directory)).unwrap_err();
    assert_eq!(
        e,
        LoadError::Directory(DirectoryError::Entity {
            path: Some(directory.clone()),
            entity: EntityKey::new(Kind::User, "bob"),
            field: Some("groups[0]".into()),
            message: "no Group `opps` in the directory".into(),
        })
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{}: users.bob: groups[0]: no Group `opps` in the directory",
            directory.display()
        )
    );

    let missing = dir.join("missing.cedar");
    let e = load_sources(std::slice::from_ref(&missing), None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{e}"
    );

    std::fs::write(&directory, "[users.bob]\n").unwrap();
    let (p, d) = load_sources(std::slice::from_ref(&policy), Some(&directory)).unwrap();
    assert_eq!((p.len(), d.len()), (1, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}
