//! Path, CIDR/port and cgroup patterns: `PathPattern::parse` (config
//! `protect.paths`, grant objects), `NetPattern::parse` (config
//! `protect.networks`, grant objects, directory networks) and
//! `cgroup::check_path` (workload grants). Each line is one pattern.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_agent::enforcer::{NetPattern, PathPattern};

fuzz_target!(|data: &[u8]| {
    let Some(text) = ward_fuzz::text(data) else {
        return;
    };
    let mut nets = Vec::new();
    for s in text.split('\n') {
        if let Ok(p) = PathPattern::parse(s) {
            assert_eq!(p.as_str(), s);
            assert_eq!(PathPattern::parse(&p.to_string()), Ok(p.clone()));
            assert_eq!(matches!(p, PathPattern::Subtree(_)), s.ends_with('/'));
        }
        match NetPattern::parse(s) {
            Ok(n) => {
                let max = if n.addr.is_ipv4() { 32 } else { 128 };
                assert!(n.prefix <= max, "{s}: prefix {}", n.prefix);
                assert!(n.ports.0 <= n.ports.1, "{s}: ports {:?}", n.ports);
                assert!(n.mapped_prefix_bits() <= 128);
                let shown = n.to_string();
                assert_eq!(
                    NetPattern::parse(&shown).as_ref(),
                    Ok(&n),
                    "{s} shown as {shown}"
                );
                assert!(n.contains(&n), "{s} does not contain itself");
                nets.push(n);
            }
            Err(e) => ward_fuzz::assert_message("network", &e.to_string()),
        }
        if ward_agent::cgroup::check_path(s).is_ok() {
            assert!(!s.is_empty() && !s.starts_with('/'));
            let _ = ward_agent::cgroup::path_key(s);
        }
    }
    for a in &nets {
        for b in &nets {
            if a.contains(b) && b.contains(a) {
                assert_eq!(
                    (a.mapped_addr(), a.mapped_prefix_bits(), a.ports),
                    (b.mapped_addr(), b.mapped_prefix_bits(), b.ports),
                    "{a} and {b} contain each other"
                );
            }
        }
    }
});
