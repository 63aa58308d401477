//! wardd's Prometheus metrics and health check, on a listener of their
//! own: scraped over real HTTP after real kernel decisions and pushes.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
};

use ward_tests::OpenOutcome;

use crate::daemon::host;

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0: (status, content type, body).
pub fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics listener");
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The samples of an exposition, `name{labels}` -> value; also checks
/// that every sample's family was declared with `# TYPE` first.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut declared = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split_whitespace().next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name = series.split('{').next().unwrap();
        assert!(
            declared.iter().any(|d| name.starts_with(d.as_str())),
            "{name} has no # TYPE before it"
        );
        assert!(name.starts_with("ward_"), "{name}: every metric is ward_");
        out.insert(series.to_owned(), value.parse().expect("a number"));
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    out
}

#[test]
fn metrics_count_the_kernels_decisions_and_pushes_and_health_answers() {
    let port = free_port();
    let h = host(
        "metrics",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let _wardd = h.start();
    let (status, _, body) = get(port, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    assert_eq!(h.connect(), OpenOutcome::Refused(libc::EPERM));
    assert_eq!(h.connect(), OpenOutcome::Refused(libc::EPERM));
    let (code, _, err) = h.grant("m1", "1h");
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.connect(), OpenOutcome::Opened);
    // The same id with other contents: refused whole.
    let (code, _, _) = h.grant("m1", "2h");
    assert_ne!(code, 0, "a reused grant id is refused");

    let (status, content_type, text) = get(port, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let m = samples(&text);
    let at = |series: &str| {
        m.get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        at(r#"ward_kernel_decisions_total{operation="connect",outcome="deny"}"#),
        2.0,
        "the kernel's own count of the two denied connects"
    );
    assert_eq!(
        at(r#"ward_kernel_decisions_total{operation="connect",outcome="allow_by_grant"}"#),
        1.0
    );
    assert_eq!(
        at(r#"ward_grant_pushes_total{outcome="accepted",reason="none"}"#),
        1.0
    );
    assert_eq!(
        at(r#"ward_grant_pushes_total{outcome="refused",reason="already_exists"}"#),
        1.0
    );
    assert_eq!(at(r#"ward_grants{state="active"}"#), 1.0);
    assert!(
        at(r#"ward_table_entries{map="net_rules"}"#) >= 2.0,
        "the protection and the grant"
    );
    assert_eq!(at(r#"ward_table_capacity{map="held_sockets"}"#), 65536.0);
    assert_eq!(at("ward_events_lost_total"), 0.0);
    assert_eq!(at("ward_coordinator_stream_up"), 0.0, "no coordinator");

    // Anything else is not served.
    let (status, _, _) = get(port, "/debug");
    assert_eq!(status, 404);
}
