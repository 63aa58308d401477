//! A generated organisation for the benchmarks: the policy compiler's and
//! the kernel's benchmarks compile the same directory (10,000 people in
//! 20 departments at 4 clearances, 1,000 protected paths, executables and
//! networks) under the same policies.

/// The benchmark's policies: department reads and writes, an on-call
/// group, a secret guardrail, a time window and a host label.
pub const POLICIES: &str = r#"
@id("dept-read")
permit(principal is User, action == Action::"read", resource is Path)
when { principal has department && resource has department && principal.department == resource.department };
@id("dept-write")
permit(principal is User, action == Action::"write", resource is Path)
when { principal has department && resource has department && principal.department == resource.department
       && principal has clearance && principal.clearance >= 2 };
@id("oncall-ops")
permit(principal in Group::"oncall", action in [Action::"read", Action::"write"], resource in Path::"/srv/ops/");
@id("secret-guardrail")
forbid(principal is User, action, resource)
when { resource has classification && resource.classification == "secret" }
unless { principal has clearance && principal.clearance >= 3 };
@id("tools")
permit(principal in Group::"staff", action == Action::"exec", resource is Executable)
when { context.minute_of_day >= 480 && context.minute_of_day < 1200 };
@id("db")
permit(principal is User, action == Action::"connect", resource is Network)
when { context.host.labels.contains("env=prod") && principal has department && resource has department
       && principal.department == resource.department };
@id("jit") @max_duration("1h")
permit(principal in Group::"staff", action == Action::"request", resource);
"#;

const CLASSIFICATIONS: [&str; 4] = ["public", "internal", "confidential", "secret"];

/// The name of person `i`.
pub fn user(i: usize) -> String {
    format!("u{i}")
}

/// The directory, as TOML: `users` people and `resources` resources. With
/// `moved`, that person is in the department named (`d0` to `d19` exist):
/// one attribute change.
pub fn directory(users: usize, resources: usize, moved: Option<(usize, &str)>) -> String {
    let mut s = String::from("[groups.staff]\n[groups.oncall]\nparents = [\"staff\"]\n");
    for i in 0..users {
        let dept = match moved {
            Some((who, to)) if who == i => to.to_owned(),
            _ => format!("d{}", i % 20),
        };
        let group = if i % 50 == 0 { "oncall" } else { "staff" };
        s += &format!(
            "[users.{}]\ngroups = [\"{group}\"]\ndepartment = \"{dept}\"\nclearance = {}\n",
            user(i),
            (i / 20) % 4
        );
    }
    s += "[paths.\"/srv/ops/\"]\nclassification = \"internal\"\n";
    let paths = resources * 8 / 10;
    let execs = resources / 10;
    for j in 0..paths {
        s += &format!(
            "[paths.\"/srv/d{}/r{j}/\"]\ndepartment = \"d{}\"\nclassification = \"{}\"\n",
            j % 20,
            j % 20,
            CLASSIFICATIONS[(j / 20) % 4]
        );
    }
    for j in 0..execs {
        s += &format!("[executables.\"/opt/tools/t{j}\"]\n");
    }
    for j in 0..resources - paths - execs - 1 {
        s += &format!(
            "[networks.\"10.{}.{}.0/24:5432\"]\ndepartment = \"d{}\"\n",
            j / 256,
            j % 256,
            j % 20
        );
    }
    s
}
