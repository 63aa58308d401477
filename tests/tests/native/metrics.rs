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
    try_get(port, path).expect("an HTTP answer")
}

/// [`get`], `None` when nothing answers (yet).
fn try_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Some((status, content_type, body.to_owned()))
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
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    promtool_check(&text);
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

/// A real Prometheus server scraping `targets` (`ADDR:PORT`, one job
/// each) every second, with its data in `dir`; stopped when dropped.
pub struct Prometheus {
    child: std::process::Child,
    pub port: u16,
}

impl Prometheus {
    pub fn start(dir: &std::path::Path, targets: &[(&str, u16)]) -> Prometheus {
        let port = free_port();
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let child = std::process::Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("Debian's prometheus (`cargo xtask test` installs it)");
        Prometheus { child, port }
    }

    /// Whether Prometheus evaluates `q` (it parses, and its functions and
    /// types fit); Err is Prometheus's answer.
    pub fn evaluates(&self, q: &str) -> Result<(), String> {
        let (status, _, body) = try_get(self.port, &format!("/api/v1/query?query={}", encode(q)))
            .ok_or_else(|| "no answer".to_owned())?;
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if status == 200 && v["status"] == "success" {
            Ok(())
        } else {
            Err(body)
        }
    }

    /// The value of an instant query's first sample, if any.
    pub fn query(&self, q: &str) -> Option<f64> {
        let (status, _, body) = try_get(self.port, &format!("/api/v1/query?query={}", encode(q)))?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits up to 20 s for `q` to satisfy `ok`; its last value.
    pub fn wait_for(&self, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = self.query(q).filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "Prometheus never answered `{q}` as wanted (last {:?})",
                self.query(q)
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` on an exposition: the lint Prometheus ships.
pub fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("Debian's promtool (`cargo xtask test` installs prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `q` percent-encoded for a URL's query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus server scrapes wardd, and a query for the deny
/// counter rises after each real denied connect.
#[test]
fn prometheus_scrapes_wardd_and_the_deny_counter_rises() {
    let port = free_port();
    let h = host(
        "metrics-prom",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let _wardd = h.start();
    let data = ward_tests::TempDir::new("prometheus");
    let prometheus = Prometheus::start(data.path(), &[("wardd", port)]);
    prometheus.wait_for(r#"up{job="wardd"}"#, |v| v == 1.0);
    let denies = r#"ward_kernel_decisions_total{operation="connect",outcome="deny"}"#;
    let before = prometheus.wait_for(denies, |_| true);
    assert_eq!(h.connect(), OpenOutcome::Refused(libc::EPERM));
    prometheus.wait_for(denies, |v| v == before + 1.0);
    assert_eq!(h.connect(), OpenOutcome::Refused(libc::EPERM));
    prometheus.wait_for(denies, |v| v == before + 2.0);
}
