//! The config's `[protect]` section as kernel entries, and ward's own
//! files, which no grant may reach.

use super::*;

/// The configured protections, as kernel entries with stable rule ids.
pub(super) fn protection_entries(config: &Config) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    let mut push = |name: String, op: Op, object: Object| {
        let rule_id = PROTECTION_BASE + out.len() as u64;
        out.push((
            name,
            Entry {
                subject: Subject::Protected,
                op,
                object,
                effect: Effect::Deny,
                expires: Expiry::Never,
                rule_id,
                from_grant: false,
            },
        ));
    };
    // Config::parse already checked every pattern.
    for (i, p) in config.protect.paths.iter().enumerate() {
        if let Ok(pp) = PathPattern::parse(p) {
            push(
                format!("protect.paths[{i}] {p}"),
                Op::Read,
                Object::Path(pp.clone()),
            );
            push(
                format!("protect.paths[{i}] {p}"),
                Op::Write,
                Object::Path(pp),
            );
        }
    }
    // An executable's code must not run by a copy either: it is protected
    // for read too, so only a policy or grant for read lets it be copied.
    for (i, p) in config.protect.executables.iter().enumerate() {
        if let Ok(pp) = PathPattern::parse(p) {
            push(
                format!("protect.executables[{i}] {p}"),
                Op::Exec,
                Object::Path(pp.clone()),
            );
            push(
                format!("protect.executables[{i}] {p}"),
                Op::Read,
                Object::Path(pp),
            );
        }
    }
    for (i, n) in config.protect.networks.iter().enumerate() {
        if let Ok(np) = NetPattern::parse(n) {
            push(
                format!("protect.networks[{i}] {n}"),
                Op::Connect,
                Object::Net(np),
            );
        }
    }
    for (what, path, ops) in own_files(config) {
        match PathPattern::parse(&path) {
            Ok(pp) => {
                for op in ops {
                    push(
                        format!("self-protection: {what} {path}"),
                        *op,
                        Object::Path(pp.clone()),
                    );
                }
            }
            Err(e) => tracing::warn!(%path, error = %e, "cannot protect ward's own file"),
        }
    }
    out
}

/// ward's own files, which no managed subject may change (keys: nor
/// read), as (what, path pattern, operations). A directory is a tree.
pub(super) fn own_files(config: &Config) -> Vec<(&'static str, String, &'static [Op])> {
    const W: &[Op] = &[Op::Write];
    const RW: &[Op] = &[Op::Read, Op::Write];
    let mut out: Vec<(&'static str, String, &'static [Op])> = Vec::new();
    let mut file = |what, p: &std::path::Path, ops| {
        if p.is_absolute() {
            out.push((what, p.to_string_lossy().into_owned(), ops));
        }
    };
    let tree = |p: &std::path::Path| {
        let mut s = p.to_string_lossy().into_owned();
        if !s.ends_with('/') {
            s.push('/');
        }
        std::path::PathBuf::from(s)
    };
    let a = &config.agent;
    if let Some(src) = &config.source {
        file("config", src, W);
        // ward's own configuration directory (/etc/ward/) as a whole, so
        // that it cannot be renamed away and replaced; a shared directory
        // (the config sits in /etc itself, say) keeps only the files.
        if let Some(dir) = src.parent()
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("ward"))
            // Not when the control socket lies inside: connecting to it
            // is a write, and every user must reach it.
            && !a.socket.starts_with(dir)
        {
            file("config directory", &tree(dir), W);
        }
    }
    // Kernel settings: core_pattern and modprobe name helpers the kernel
    // runs as unmanaged root, ns_last_pid picks pids, and so on.
    file("kernel settings", std::path::Path::new("/proc/sys/"), W);
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        file("binary", &exe, W);
        file("binary", &exe.with_file_name("ward"), W);
    }
    file("pins", &tree(&a.pin_dir), W);
    file("state", &tree(&a.state_dir), W);
    file("audit log", &a.audit_log, W);
    file("lifecycle log", &config.agent.lifecycle_log(), W);
    if let Some(p) = &config.policy {
        for f in &p.files {
            file("policy", f, W);
        }
        if let Some(d) = &p.directory {
            file("directory", d, W);
        }
    }
    if let Some(c) = &config.coordinator {
        file("coordinator key", &c.key, RW);
        file("coordinator certificate", &c.cert, W);
        file("coordinator CA", &c.ca, W);
    }
    if let Some(t) = &config.tls {
        file("TLS key", &t.key, RW);
        file("TLS certificate", &t.cert, W);
        file("TLS client CA", &t.client_ca, W);
    }
    for unit in [
        "/etc/systemd/system/wardd.service",
        "/lib/systemd/system/wardd.service",
        "/usr/lib/systemd/system/wardd.service",
    ] {
        let unit = std::path::Path::new(unit);
        if unit.exists() {
            file("unit", unit, W);
        }
    }
    // The kernel's memory, by its device files.
    for dev in ["/dev/mem", "/dev/kmem", "/dev/port", "/proc/kcore"] {
        let dev = std::path::Path::new(dev);
        if dev.exists() {
            file("kernel memory", dev, RW);
        }
    }
    out
}

/// A grant must not give a managed subject what would switch ward off:
/// write on (or read of a key among) ward's own files, by naming one, a
/// tree inside one, or a tree above one (`/etc/` holds `/etc/ward/`).
pub(super) fn reaches_own_files(
    config: &Config,
    valid: &grant::ValidGrant,
) -> Result<(), InvalidGrant> {
    let own = own_files(config);
    let mut index: Vec<&Object> = Vec::new();
    for (op, object) in &valid.targets {
        let Object::Path(p) = object else { continue };
        if !index.contains(&object) {
            index.push(object);
        }
        let i = index.len() - 1;
        // Compared as the files are reached: through symlinks too.
        let resolved = canonical(p.as_str());
        let granted = resolved.as_str();
        for (what, path, ops) in &own {
            if !ops.contains(op) {
                continue;
            }
            let path = &canonical(path);
            let overlaps = granted == path
                || (granted.ends_with('/') && path.starts_with(granted))
                || (path.ends_with('/') && granted.starts_with(path.as_str()));
            if overlaps {
                return Err(InvalidGrant {
                    field: format!("objects[{i}]"),
                    reason: format!(
                        "`{granted}` reaches ward's own {what} `{path}` for {}; \
                         ward does not grant what would let it be switched off",
                        format!("{op:?}").to_lowercase()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// `path` with its symlinks resolved, keeping a tree's trailing `/`; as
/// given when it does not exist.
pub(super) fn canonical(path: &str) -> String {
    match std::fs::canonicalize(path) {
        Ok(p) => {
            let mut s = p.to_string_lossy().into_owned();
            if path.ends_with('/') && !s.ends_with('/') {
                s.push('/');
            }
            s
        }
        Err(_) => path.to_owned(),
    }
}
