//! `ward-coordinator` as a real process on loopback, for tests: its
//! configuration, its log, the `ward` CLI and in-process gRPC clients
//! pointed at it as a person or an agent, and the stand-ins around it (an
//! HTTPS webhook endpoint, a TCP relay that can black-hole its streams).
//!
//! ```ignore
//! let c = Coordinator::builder("coord-x").pending_ttl(Duration::from_secs(1)).start();
//! let (code, request, err) = c.ask("alice", &Ask::loopback(8080, "h1"));
//! c.wait_subscribed(1);
//! ```
//!
//! Every coordinator has its own directory holding a test CA (`ca.pem`),
//! its server certificate (`localhost.pem`), a fresh signing key, the
//! policy [`POLICY`] and the directory [`DIRECTORY`]. People and agents
//! get client certificates from that CA on demand ([`Coordinator::identity`]).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use ward_proto::v1::coordinator_client::CoordinatorClient;

use crate::{
    TempDir, coordinator_bin,
    pki::{Ca, ca, write_leaf},
};

pub mod fleet;
mod https;
mod relay;

pub use https::{Served, header, https_endpoint};
pub use relay::Relay;

/// The policy every test coordinator starts with. Most requests are for an
/// agent's test cgroup: decided for that Workload, with who asks in
/// `context.requester`.
///
/// - alice (staff) needs two approvals, for up to 1 h;
/// - dave and eve (oncall) are approved at once for connect on hosts
///   labelled env=test, for up to 30 m, no reason needed;
/// - frank (mornings) is approved at once before local noon;
/// - staff and mornings may ask for workloads of team "test";
/// - leads (bob, carol, erin) review.
pub const POLICY: &str = r#"
@id("staff-connect") @max_duration("1h") @approvals("2")
permit(principal, action == Action::"request", resource is Network)
when { context has requester && context.requester in Group::"staff" };

@id("oncall-auto") @max_duration("30m") @approvals("0") @reason("optional")
permit(principal, action == Action::"request", resource is Network)
when { context has requester && context.requester in Group::"oncall"
       && context.operation == "connect" && context.host.labels.contains("env=test") };

@id("mornings-auto") @max_duration("30m") @approvals("0") @reason("optional")
permit(principal, action == Action::"request", resource is Network)
when { context has requester && context.requester in Group::"mornings"
       && context.minute_of_day < 720 };

@id("ask-for-test-workloads")
permit(principal, action == Action::"request_for", resource is Workload)
when { resource has team && resource.team == "test"
       && (principal in Group::"staff" || principal in Group::"mornings") };

@id("leads-review")
permit(principal in Group::"leads", action == Action::"review", resource);
"#;

/// The directory every test coordinator starts with. Agents' test cgroups
/// are added as workloads of team "test" ([`Coordinator::add_workload`]).
pub const DIRECTORY: &str = r#"
[groups.staff]
[groups.oncall]
[groups.leads]
[groups.mornings]
[users.frank]
groups = ["mornings"]
[users.alice]
groups = ["staff"]
[users.dave]
groups = ["staff", "oncall"]
[users.eve]
groups = ["oncall"]
[users.bob]
groups = ["leads"]
[users.carol]
groups = ["leads"]
[users.erin]
groups = ["leads"]
[networks."127.0.0.1/32:1-65535"]
"#;

/// The log line the coordinator writes once an agent's stream is attached
/// and its snapshot sent: anything issued after it reaches the agent live.
const SUBSCRIBED: &str = "agent subscribed";

/// Polls `ok` every 25 ms until it holds; panics naming `what` after
/// `limit`.
pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Now, in Unix milliseconds: the unit of every time the coordinator and
/// the agents report.
pub fn unix_ms_now() -> i64 {
    unix_ms(SystemTime::now())
}

/// `t` in Unix milliseconds.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `ward-coordinator ARGS` (keygen, ca, token, host...): (exit code,
/// stdout, stderr).
pub fn coordinator_cli(args: &[&str]) -> (i32, String, String) {
    crate::run(&coordinator_bin(), args)
}

/// How a test coordinator is configured; [`Coordinator::builder`].
#[must_use]
pub struct Builder {
    tag: String,
    database: Option<String>,
    pending_ttl: Duration,
    top_level: String,
    tables: String,
    tz: Option<String>,
}

impl Builder {
    /// Keeps its state in this database (a `postgres://` URL) instead of
    /// SQLite in its state directory.
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.database = Some(url.into());
        self
    }

    /// How long a request may wait for its reviews (the default is 1 h).
    pub fn pending_ttl(mut self, ttl: Duration) -> Self {
        self.pending_ttl = ttl;
        self
    }

    /// A top-level configuration line, such as `stream_buffer = 2`.
    pub fn setting(mut self, line: &str) -> Self {
        self.top_level.push_str(line.trim_end());
        self.top_level.push('\n');
        self
    }

    /// Configuration tables (`[metrics]`, `[[webhooks]]`, `[enrolment]`),
    /// written after the harness's own `[policy]`.
    pub fn tables(mut self, text: &str) -> Self {
        self.tables.push_str(text.trim_end());
        self.tables.push('\n');
        self
    }

    /// The coordinator's `TZ`: local time is what time policies see.
    pub fn tz(mut self, tz: impl Into<String>) -> Self {
        self.tz = Some(tz.into());
        self
    }

    /// Writes the configuration; the coordinator is not started (see
    /// [`Coordinator::start`]), so files can be added or replaced first.
    pub fn prepare(self) -> Coordinator {
        let dir = TempDir::new(&self.tag);
        let pki = ca("ward test CA");
        std::fs::write(dir.path().join("ca.pem"), pki.pem()).unwrap();
        write_leaf(&pki, dir.path(), "localhost", false);
        let key = dir.path().join("signing.pk8");
        let (code, out, err) = coordinator_cli(&["keygen", key.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        std::fs::write(dir.path().join("policy.cedar"), POLICY).unwrap();
        std::fs::write(dir.path().join("directory.toml"), DIRECTORY).unwrap();
        let mut c = Coordinator {
            dir: Arc::new(dir),
            pki: Arc::new(pki),
            name: "coordinator".into(),
            port: 0,
            public_key: out.trim().to_owned(),
            options: Arc::new(self),
            log_start: 0,
            child: None,
        };
        c.configure();
        c
    }

    /// Writes the configuration and starts the coordinator.
    pub fn start(self) -> Coordinator {
        let mut c = self.prepare();
        c.start();
        c
    }
}

/// One `ward-coordinator serve` process (killed on drop), with its
/// directory, CA and signing key.
pub struct Coordinator {
    dir: Arc<TempDir>,
    pki: Arc<Ca>,
    /// Its config is NAME.toml and its log NAME.log.
    name: String,
    port: u16,
    public_key: String,
    options: Arc<Builder>,
    /// The log's length when the process was last started.
    log_start: u64,
    child: Option<Child>,
}

impl Coordinator {
    /// A coordinator with the default configuration, started.
    pub fn new(tag: &str) -> Coordinator {
        Coordinator::builder(tag).start()
    }

    /// A coordinator to configure; `tag` names its temporary directory.
    pub fn builder(tag: &str) -> Builder {
        Builder {
            tag: tag.into(),
            database: None,
            pending_ttl: Duration::from_secs(3600),
            top_level: String::new(),
            tables: String::new(),
            tz: None,
        }
    }

    /// Another coordinator process, `name`, on the same directory, store,
    /// signing key and configuration, started; it listens on a port of
    /// its own and logs to `name.log`.
    pub fn replica(&self, name: &str) -> Coordinator {
        let mut c = Coordinator {
            dir: self.dir.clone(),
            pki: self.pki.clone(),
            name: name.into(),
            port: 0,
            public_key: self.public_key.clone(),
            options: self.options.clone(),
            log_start: 0,
            child: None,
        };
        c.configure();
        c.start();
        c
    }

    /// Picks a free port and writes NAME.toml.
    fn configure(&mut self) {
        self.port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let o = &self.options;
        let database = o
            .database
            .as_ref()
            .map(|d| format!("database = \"{d}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            self.config_path(),
            format!(
                "listen = \"127.0.0.1:{port}\"\ncert = \"localhost.pem\"\nkey = \"localhost.key\"\n\
                 client_ca = \"ca.pem\"\nstate_dir = \"state\"\nsigning_key = \"signing.pk8\"\n\
                 admins = [\"root-admin\"]\npending_ttl = \"{ttl}\"\n{database}{top}\
                 [policy]\nfiles = [\"policy.cedar\"]\ndirectory = \"directory.toml\"\n{tables}",
                port = self.port,
                ttl = humantime::format_duration(o.pending_ttl),
                top = o.top_level,
                tables = o.tables,
            ),
        )
        .unwrap();
    }

    /// Starts `ward-coordinator serve` (again, after [`Coordinator::kill`])
    /// and waits until it listens. Its stderr is appended to its log;
    /// [`Coordinator::log_since_start`] reads what this process wrote.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.log_start = log.metadata().unwrap().len();
        let mut cmd = Command::new(coordinator_bin());
        if let Some(tz) = &self.options.tz {
            cmd.env("TZ", tz);
        }
        let child = cmd
            .args(["serve", "--config"])
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_until("the coordinator to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills the process (SIGKILL: no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `ward-coordinator serve` for this configured, not started,
    /// coordinator, expected to refuse to start: its exit code (124 if it
    /// still ran after 30 s) and its stderr.
    pub fn refuses_to_serve(&self) -> (Option<i32>, String) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let out = Command::new("timeout")
            .arg("30")
            .arg(coordinator_bin())
            .args(["serve", "--config"])
            .arg(self.config_path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Its directory: config, certificates, policy, directory, logs.
    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA every certificate here comes from.
    pub fn pki(&self) -> &Ca {
        &self.pki
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its signing key, in hex: what agents trust.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join(format!("{}.toml", self.name))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join(format!("{}.log", self.name))
    }

    /// The whole log, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// What the process now running (or last started) has logged.
    pub fn log_since_start(&self) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let from = (self.log_start as usize).min(log.len());
        String::from_utf8_lossy(&log[from..]).into_owned()
    }

    /// How many agent streams the running process has attached (and sent
    /// a snapshot to). Lines from before a restart do not count.
    pub fn subscriptions_since_start(&self) -> usize {
        self.log_since_start().matches(SUBSCRIBED).count()
    }

    /// Waits until the running process has attached `streams` agent
    /// streams ([`Coordinator::subscriptions_since_start`]).
    pub fn wait_subscribed(&self, streams: usize) {
        wait_until(
            &format!("{streams} agent stream(s) since the coordinator started"),
            Duration::from_secs(20),
            || self.subscriptions_since_start() >= streams,
        );
    }

    /// How often this coordinator has reloaded its policy and directory.
    pub fn reloads(&self) -> usize {
        self.log().matches("policy reloaded").count()
    }

    /// Adds a workload of team "test" to the directory, unless its cgroup
    /// is there, and if the coordinator runs, waits until it has reloaded.
    pub fn add_workload(&self, name: &str, cgroup: &str) {
        let path = self.dir().join("directory.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains(&format!("cgroup = \"{cgroup}\"")) {
            return;
        }
        let before = self.reloads();
        // Whole or not at all: the coordinator may read it at any moment.
        let tmp = self.dir().join("directory.toml.new");
        std::fs::write(
            &tmp,
            format!("{text}[workloads.\"{name}\"]\ncgroup = \"{cgroup}\"\nteam = \"test\"\n"),
        )
        .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        if self.child.is_some() {
            wait_until("the coordinator to reload", Duration::from_secs(10), || {
                self.reloads() > before
            });
        }
    }

    /// Client certificate and key files for a person or an agent
    /// (`NAME.agent`), made afresh.
    pub fn identity(&self, name: &str) -> (PathBuf, PathBuf) {
        write_leaf(&self.pki, self.dir(), name, true)
    }

    /// Where and as whom an in-process client dials this coordinator.
    pub fn tls_target(&self, who: &str) -> ward_agent::client::TlsTarget {
        let (cert, key) = self.identity(who);
        ward_agent::client::TlsTarget {
            url: format!("https://127.0.0.1:{}", self.port),
            domain: Some("localhost".into()),
            ca: self.dir().join("ca.pem"),
            cert,
            key,
        }
    }

    /// An in-process gRPC client as `who`.
    pub async fn grpc(&self, who: &str) -> CoordinatorClient<tonic::transport::Channel> {
        let channel = ward_agent::client::connect_tls(&self.tls_target(who))
            .await
            .unwrap();
        CoordinatorClient::new(channel)
    }

    /// `ward ARGS` as the person `who`: (exit code, stdout, stderr).
    pub fn ward(&self, who: &str, args: &[&str]) -> (i32, String, String) {
        let (cert, key) = self.identity(who);
        self.ward_with(&cert, &key, args)
    }

    /// `ward ARGS` with this client certificate and key.
    pub fn ward_with(&self, cert: &Path, key: &Path, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(crate::ward_bin())
            .args(args)
            .env(
                "WARD_COORDINATOR",
                format!("https://127.0.0.1:{}", self.port),
            )
            .env("WARD_TLS_DOMAIN", "localhost")
            .env("WARD_TLS_CA", self.dir().join("ca.pem"))
            .env("WARD_TLS_CERT", cert)
            .env("WARD_TLS_KEY", key)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ward ARGS` with no client certificate: as the session `ward login`
    /// saved under `home` (`XDG_CONFIG_HOME`), if any.
    pub fn ward_session_command(&self, home: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::ward_bin());
        cmd.args(args)
            .env(
                "WARD_COORDINATOR",
                format!("https://127.0.0.1:{}", self.port),
            )
            .env("WARD_TLS_DOMAIN", "localhost")
            .env("WARD_TLS_CA", self.dir().join("ca.pem"))
            .env_remove("WARD_TLS_CERT")
            .env_remove("WARD_TLS_KEY")
            .env("XDG_CONFIG_HOME", home);
        cmd
    }

    /// [`Coordinator::ward_session_command`], run: (exit code, stdout, stderr).
    pub fn ward_session(&self, home: &Path, args: &[&str]) -> (i32, String, String) {
        let out = self.ward_session_command(home, args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ward request ... --json` as `who`: (exit code, the request as JSON
    /// or `Null`, stderr).
    pub fn ask(&self, who: &str, ask: &Ask) -> (i32, Value, String) {
        let (cert, key) = self.identity(who);
        self.ask_with(&cert, &key, ask)
    }

    /// The same, with this client certificate and key.
    pub fn ask_with(&self, cert: &Path, key: &Path, ask: &Ask) -> (i32, Value, String) {
        let args = ask.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = self.ward_with(cert, key, &args);
        (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
    }

    /// `ward audit --json` as `who`.
    pub fn audit(&self, who: &str) -> Vec<Value> {
        let (code, out, err) = self.ward(who, &["audit", "--json"]);
        assert_eq!(code, 0, "{who}: {err}");
        serde_json::from_str(&out).unwrap()
    }

    /// The `[coordinator]` section of an agent config for host `name`:
    /// its certificate as `NAME.agent`, trusting the signing key `key`,
    /// dialling 127.0.0.1:`port` (this coordinator's, or a relay's).
    pub fn agent_section(&self, name: &str, key: &str, port: u16) -> String {
        let (cert, k) = self.identity(&format!("{name}.agent"));
        format!(
            "[coordinator]\nurl = \"https://127.0.0.1:{port}\"\ndomain = \"localhost\"\n\
             ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nhost = \"{name}\"\npublic_keys = [\"{key}\"]\n",
            self.dir().join("ca.pem").display(),
            cert.display(),
            k.display()
        )
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The arguments of one `ward request --connect ... --json`.
#[derive(Debug, Clone)]
#[must_use]
pub struct Ask {
    connect: String,
    host: String,
    duration: String,
    reason: Option<String>,
    workload: Option<String>,
    at: Option<String>,
}

impl Ask {
    /// Connect to 127.0.0.1:`port` on host `host`, for 10 m, for the
    /// reason "INC-42", for oneself.
    pub fn loopback(port: u16, host: &str) -> Ask {
        Ask {
            connect: format!("127.0.0.1/32:{port}"),
            host: host.into(),
            duration: "10m".into(),
            reason: Some("INC-42".into()),
            workload: None,
            at: None,
        }
    }

    /// For how long (`--for`), as `ward` reads it: "10m", "3s".
    pub fn lasting(mut self, duration: &str) -> Ask {
        self.duration = duration.into();
        self
    }

    /// `--reason`, or none at all.
    pub fn reason(mut self, reason: Option<&str>) -> Ask {
        self.reason = reason.map(Into::into);
        self
    }

    /// On behalf of a workload: its directory name or cgroup.
    pub fn workload(mut self, workload: &str) -> Ask {
        self.workload = Some(workload.into());
        self
    }

    /// Starting at `start` (`--at`, RFC 3339).
    pub fn at(mut self, start: SystemTime) -> Ask {
        self.at = Some(humantime::format_rfc3339_millis(start).to_string());
        self
    }

    /// The `ward` command line.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "request".into(),
            "--connect".into(),
            self.connect.clone(),
            "--on".into(),
            format!("host={}", self.host),
            "--for".into(),
            self.duration.clone(),
        ];
        for (flag, value) in [
            ("--reason", &self.reason),
            ("--workload", &self.workload),
            ("--at", &self.at),
        ] {
            if let Some(v) = value {
                args.extend([flag.to_owned(), v.clone()]);
            }
        }
        args.push("--json".into());
        args
    }
}

/// A fresh database on the PostgreSQL server `cargo xtask test` starts
/// (`WARD_TEST_POSTGRES`); its URL.
pub fn postgres_database(tag: &str) -> String {
    let server = std::env::var("WARD_TEST_POSTGRES").expect(
        "WARD_TEST_POSTGRES is not set: the PostgreSQL tests run under `cargo xtask test`, \
         which starts a server",
    );
    let name = format!("ward_{tag}_{}", std::process::id());
    psql(&server, &format!("DROP DATABASE IF EXISTS {name}"));
    psql(&server, &format!("CREATE DATABASE {name}"));
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// Runs `sql` with `psql` (`WARD_TEST_PSQL`, as `cargo xtask test` sets
/// it) against `url`, as an unmanaged client; its output, unaligned and
/// without headers. Panics, with psql's error, if it fails.
pub fn psql(url: &str, sql: &str) -> String {
    let psql = std::env::var("WARD_TEST_PSQL").unwrap_or_else(|_| "psql".into());
    let out = Command::new(psql)
        .args(["-X", "-q", "-t", "-A", "-c", sql, url])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A POSIX `TZ` in which local noon falls at `instant` (for
/// [`Builder::tz`]).
pub fn tz_with_noon_at(instant: SystemTime) -> String {
    let utc = instant.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 % 86_400;
    let mut east = (43_200 - utc).rem_euclid(86_400);
    if east > 43_200 {
        east -= 86_400;
    }
    // POSIX offsets count west of UTC: east is written with a minus.
    let (sign, off) = if east >= 0 { ('-', east) } else { ('+', -east) };
    format!(
        "WRD{sign}{}:{:02}:{:02}",
        off / 3600,
        off / 60 % 60,
        off % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noon_falls_at_the_instant() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // 22:13:20 UTC: local noon is 10:13:20 behind UTC (west: a plus).
        assert_eq!(tz_with_noon_at(t), "WRD+10:13:20");
    }

    #[test]
    fn ask_names_only_what_is_set() {
        let a = Ask::loopback(80, "h1").reason(None).workload("w");
        assert_eq!(
            a.args().join(" "),
            "request --connect 127.0.0.1/32:80 --on host=h1 --for 10m --workload w --json"
        );
    }
}
