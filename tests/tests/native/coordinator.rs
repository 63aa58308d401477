//! The JIT workflow end to end, natively, as real processes on loopback:
//! one `ward-coordinator` and two `wardd` agents (h1, h2) on their own
//! test cgroups with the cgroup connect enforcer, and `ward` as the people.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use ward_tests::{
    OpenOutcome, TempDir, coordinator_bin,
    pki::{Ca, ca, write_leaf, write_leaf_naming},
    wardd::Wardd,
};

use crate::daemon::{Host, host};

mod enrolment;

const DENIED: OpenOutcome = OpenOutcome::Refused(libc::EPERM);

// Most requests here are for an agent's test cgroup: decided for that
// Workload, with who asks in `context.requester`.
const POLICY: &str = r#"
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

/// Agents' test cgroups are added as workloads when they start (see
/// `agent`).
const DIRECTORY: &str = r#"
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

struct Coordinator {
    dir: std::sync::Arc<TempDir>,
    pki: std::sync::Arc<Ca>,
    /// Its config is NAME.toml and its log NAME.log.
    name: String,
    port: u16,
    public_key: String,
    database: Option<String>,
    /// Extra config lines, e.g. webhooks.
    extra: String,
    /// The coordinator's `TZ`: local time is what time policies see.
    tz: Option<String>,
    child: Option<Child>,
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Coordinator {
    fn new(tag: &str) -> Coordinator {
        Coordinator::with_database(tag, None)
    }

    fn with_database(tag: &str, database: Option<String>) -> Coordinator {
        Coordinator::with(tag, database, String::new())
    }

    fn with(tag: &str, database: Option<String>, extra: String) -> Coordinator {
        let mut c = Coordinator::prepared(tag, database, extra);
        c.start();
        c
    }

    /// A configured coordinator, not yet started.
    fn prepared(tag: &str, database: Option<String>, extra: String) -> Coordinator {
        let dir = TempDir::new(tag);
        let pki = ca("ward test CA");
        std::fs::write(dir.path().join("ca.pem"), pki.pem()).unwrap();
        write_leaf(&pki, dir.path(), "localhost", false);
        let key = dir.path().join("signing.pk8");
        let out = Command::new(coordinator_bin())
            .args(["keygen", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        std::fs::write(dir.path().join("policy.cedar"), POLICY).unwrap();
        std::fs::write(dir.path().join("directory.toml"), DIRECTORY).unwrap();
        let mut c = Coordinator {
            dir: std::sync::Arc::new(dir),
            pki: std::sync::Arc::new(pki),
            name: "coordinator".into(),
            port: 0,
            public_key,
            database,
            extra,
            tz: None,
            child: None,
        };
        c.configure();
        c
    }

    /// Another coordinator process on the same store, key and policy.
    fn replica(&self, name: &str) -> Coordinator {
        let mut c = Coordinator {
            dir: self.dir.clone(),
            pki: self.pki.clone(),
            name: name.into(),
            port: 0,
            public_key: self.public_key.clone(),
            database: self.database.clone(),
            extra: self.extra.clone(),
            tz: self.tz.clone(),
            child: None,
        };
        c.configure();
        c.start();
        c
    }

    fn configure(&mut self) {
        self.port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let database = self
            .database
            .as_ref()
            .map(|d| format!("database = \"{d}\"\n"))
            .unwrap_or_default();
        // Keys before the first [table] of `extra` are top-level.
        let (top, tables) = match self.extra.find("\n[") {
            _ if self.extra.starts_with('[') => ("", self.extra.as_str()),
            Some(i) => self.extra.split_at(i + 1),
            None if self.extra.contains('=') => (self.extra.as_str(), ""),
            None => ("", self.extra.as_str()),
        };
        std::fs::write(
            self.dir.path().join(format!("{}.toml", self.name)),
            format!(
                "listen = \"127.0.0.1:{}\"\ncert = \"localhost.pem\"\nkey = \"localhost.key\"\n\
                 client_ca = \"ca.pem\"\nstate_dir = \"state\"\nsigning_key = \"signing.pk8\"\n\
                 admins = [\"root-admin\"]\npending_ttl = \"{ttl}\"\n{database}{top}\
                 [policy]\nfiles = [\"policy.cedar\"]\ndirectory = \"directory.toml\"\n{tables}",
                self.port,
                ttl = if self.extra.contains("# short ttl") {
                    "1s"
                } else {
                    "1h"
                },
            ),
        )
        .unwrap();
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", self.name)))
            .unwrap();
        let mut cmd = Command::new(coordinator_bin());
        if let Some(tz) = &self.tz {
            cmd.env("TZ", tz);
        }
        let child = cmd
            .args(["serve", "--config"])
            .arg(self.dir.path().join(format!("{}.toml", self.name)))
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

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Client certificate files for a person or an agent.
    fn identity(&self, name: &str) -> (PathBuf, PathBuf) {
        write_leaf(&self.pki, self.dir.path(), name, true)
    }

    /// Where and as whom an in-process client dials this coordinator.
    fn tls_target(&self, who: &str) -> ward_agent::client::TlsTarget {
        let (cert, key) = self.identity(who);
        ward_agent::client::TlsTarget {
            url: format!("https://127.0.0.1:{}", self.port),
            domain: Some("localhost".into()),
            ca: self.dir.path().join("ca.pem"),
            cert,
            key,
        }
    }

    /// `ward ARGS` as the person `who`.
    fn ward(&self, who: &str, args: &[&str]) -> (i32, String, String) {
        let (cert, key) = self.identity(who);
        self.ward_with(&cert, &key, args)
    }

    /// `ward ARGS` with this client certificate and key.
    fn ward_with(&self, cert: &Path, key: &Path, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(ward_tests::ward_bin())
            .args(args)
            .env(
                "WARD_COORDINATOR",
                format!("https://127.0.0.1:{}", self.port),
            )
            .env("WARD_TLS_DOMAIN", "localhost")
            .env("WARD_TLS_CA", self.dir.path().join("ca.pem"))
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

    fn request(&self, who: &str, agent: &Host, host: &str, duration: &str) -> (i32, Value, String) {
        let target = format!("127.0.0.1/32:{}", agent.addr.port());
        let (code, out, err) = self.ward(
            who,
            &[
                "request",
                "--connect",
                &target,
                "--on",
                &format!("host={host}"),
                "--for",
                duration,
                "--reason",
                "INC-42",
                "--workload",
                &agent.managed_workload(),
                "--json",
            ],
        );
        (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
    }

    /// Adds a workload to the directory, unless its cgroup is there, and
    /// waits until the coordinator decides with it.
    fn add_workload(&self, name: &str, cgroup: &str) {
        let path = self.dir.path().join("directory.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains(&format!("cgroup = \"{cgroup}\"")) {
            return;
        }
        let before = self.reloads();
        // Whole or not at all: the coordinator may read it at any moment.
        let tmp = self.dir.path().join("directory.toml.new");
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

    /// How often this coordinator has reloaded its policy and directory.
    fn reloads(&self) -> usize {
        let log = self.dir.path().join(format!("{}.log", self.name));
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("policy reloaded")
            .count()
    }

    /// An agent config section for host `name`, trusting `key`, dialling
    /// the coordinator at `port` (its own, or a relay's).
    fn agent_section_via(&self, name: &str, key: &str, port: u16) -> String {
        let (cert, k) = self.identity(&format!("{name}.agent"));
        format!(
            "[coordinator]\nurl = \"https://127.0.0.1:{}\"\ndomain = \"localhost\"\nca = \"{}\"\n\
             cert = \"{}\"\nkey = \"{}\"\nhost = \"{name}\"\npublic_keys = [\"{key}\"]\n",
            port,
            self.dir.path().join("ca.pem").display(),
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

/// An agent for host `name`, labelled env=test, subscribed to `c`; its
/// test cgroup is the directory's workload `w-TAG` of team "test".
fn agent(c: &Coordinator, tag: &str, name: &str, key: &str) -> (Host, Wardd) {
    agent_via(c, tag, name, key, c.port)
}

/// The same, dialling the coordinator at `port`.
fn agent_via(c: &Coordinator, tag: &str, name: &str, key: &str, port: u16) -> (Host, Wardd) {
    let h = test_host(c, tag, &c.agent_section_via(name, key, port));
    let w = h.start();
    (h, w)
}

/// A host labelled env=test with `section` in its config, its test cgroup
/// the directory's workload `w-TAG` of team "test".
fn test_host(c: &Coordinator, tag: &str, section: &str) -> Host {
    let h = host(tag, section);
    c.add_workload(&format!("w-{tag}"), &h.managed_workload());
    let text = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        text.replacen(
            "[agent]\n",
            "[agent]\nhost_labels = { env = \"test\" }\n",
            1,
        ),
    )
    .unwrap();
    h
}

fn subscribed(c: &Coordinator, hosts: usize) {
    let log = c.dir.path().join(format!("{}.log", c.name));
    wait_until("agents to subscribe", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("agent subscribed")
            .count()
            >= hosts
    });
}

#[test]
fn two_approvals_deliver_a_signed_grant_to_the_targeted_agent_only() {
    let c = Coordinator::new("coord-flow");
    let (h1, _w1) = agent(&c, "co-h1", "h1", &c.public_key);
    let (h2, _w2) = agent(&c, "co-h2", "h2", &c.public_key);
    subscribed(&c, 2);
    assert_eq!(h1.connect(), DENIED);

    let (code, r, err) = c.request("alice", &h1, "h1", "10m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["state"], "pending");
    assert_eq!(r["approvals_required"], 2);
    assert_eq!(r["hosts"], serde_json::json!(["h1"]));
    let id = r["id"].as_str().unwrap().to_owned();

    // Nobody approves their own request.
    let (code, _, err) = c.ward("alice", &["approve", &id]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("self-approval"), "{err}");
    // Someone policy does not name as a reviewer cannot either.
    let (code, _, err) = c.ward("dave", &["approve", &id]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not a reviewer"), "{err}");

    let (code, out, err) = c.ward("bob", &["approve", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"state\":\"pending\""), "{out}");
    assert_eq!(h1.connect(), DENIED, "one approval of two grants nothing");
    let (code, out, err) = c.ward("carol", &["approve", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let approved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(approved["state"], "approved");
    // Access time counts from approval.
    let window = approved["expires_at_unix_ms"].as_i64().unwrap()
        - approved["approved_unix_ms"].as_i64().unwrap();
    assert_eq!(window, 600_000);

    wait_until("the grant to reach h1", Duration::from_secs(10), || {
        h1.connect() == OpenOutcome::Opened
    });
    assert_eq!(h2.connect(), DENIED, "h2 was not targeted");
    assert!(
        h2.grants().is_empty(),
        "h2 holds no grant: {:?}",
        h2.grants()
    );
    let g = &h1.grants()[0];
    assert_eq!(g["id"], id.as_str());
    assert_eq!(g["issuer"], "ward-coordinator");

    // Revoke by a reviewer closes access at once.
    let (code, _, err) = c.ward("bob", &["revoke", &id, "--reason", "done"]);
    assert_eq!(code, 0, "{err}");
    wait_until("the revocation to reach h1", Duration::from_secs(5), || {
        h1.connect() == DENIED
    });

    // Release by the requester does too.
    let (_, r, _) = c.request("alice", &h1, "h1", "10m");
    let id2 = r["id"].as_str().unwrap().to_owned();
    c.ward("bob", &["approve", &id2]);
    c.ward("carol", &["approve", &id2]);
    wait_until("the second grant", Duration::from_secs(10), || {
        h1.connect() == OpenOutcome::Opened
    });
    let (code, _, err) = c.ward("bob", &["release", &id2]);
    assert_eq!(code, 4, "only the requester releases: {err}");
    let (code, _, err) = c.ward("alice", &["release", &id2]);
    assert_eq!(code, 0, "{err}");
    wait_until("the release to reach h1", Duration::from_secs(5), || {
        h1.connect() == DENIED
    });

    // One denial denies.
    let (_, r, _) = c.request("alice", &h1, "h1", "10m");
    let id3 = r["id"].as_str().unwrap().to_owned();
    let (code, out, err) = c.ward("bob", &["deny", &id3, "--reason", "not now", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"state\":\"denied\""), "{out}");
    let (code, _, err) = c.ward("carol", &["approve", &id3]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("is denied"), "{err}");

    // Clear errors: over the maximum, unknown host, not eligible.
    let (code, _, err) = c.request("alice", &h1, "h1", "2h");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("policy allows at most 1h"), "{err}");
    let (code, _, err) = c.request("alice", &h1, "h9", "10m");
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("unknown host: `h9`"), "{err}");
    let (code, _, err) = c.request("bob", &h1, "h1", "10m");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not eligible"), "{err}");

    // Every state change is audited with its actor.
    let (code, out, err) = c.ward("bob", &["audit", "--since", "1h", "--json"]);
    assert_eq!(code, 0, "{err}");
    let audit: Vec<Value> = serde_json::from_str(&out).unwrap();
    let kinds = |id: &str| -> Vec<(String, String)> {
        audit
            .iter()
            .filter(|e| e["request_id"] == id)
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().into(),
                    e["actor"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let k = kinds(&id);
    for (kind, actor) in [
        ("created", "alice"),
        ("refused", "alice"),
        ("approval", "bob"),
        ("approved", "carol"),
        ("revoked", "bob"),
    ] {
        assert!(
            k.contains(&(kind.into(), actor.into())),
            "{kind} by {actor} in {k:?}"
        );
    }
}

#[test]
fn auto_approval_by_policy_and_expiry_at_the_deadline() {
    let c = Coordinator::new("coord-auto");
    let (h1, _w1) = agent(&c, "co-auto", "h1", &c.public_key);
    subscribed(&c, 1);
    let t = Instant::now();
    let (code, r, err) = c.request("dave", &h1, "h1", "3s");
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["state"], "approved", "{r}");
    assert_eq!(r["approvals_required"], 0);
    assert_eq!(
        r["policies"],
        serde_json::json!(["oncall-auto", "staff-connect"])
    );
    wait_until("the auto-approved grant", Duration::from_secs(5), || {
        h1.connect() == OpenOutcome::Opened
    });
    println!("auto-approved request to enforced: {:?}", t.elapsed());
    let deadline = r["expires_at_unix_ms"].as_i64().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    while now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        h1.connect(),
        DENIED,
        "expired at the deadline, in the kernel"
    );
}

#[test]
fn a_grant_signed_by_an_unknown_key_is_refused_and_audited() {
    let c = Coordinator::new("coord-rogue");
    // h1 trusts some other key, not this coordinator's.
    let other = "11".repeat(32);
    let (h1, _w1) = agent(&c, "co-rogue", "h1", &other);
    subscribed(&c, 1);
    let (code, r, err) = c.request("dave", &h1, "h1", "10m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["state"], "approved");
    wait_until("the refusal to be audited", Duration::from_secs(10), || {
        h1.audit().iter().any(|e| {
            e["kind"] == "grant_refused"
                && e["detail"]["why"]
                    .as_str()
                    .is_some_and(|w| w.contains("signature does not verify"))
        })
    });
    assert_eq!(h1.connect(), DENIED);
    assert!(h1.grants().is_empty());
}

#[test]
fn agents_resync_across_coordinator_and_agent_restarts() {
    let mut c = Coordinator::new("coord-restart");
    let (h1, mut w1) = agent(&c, "co-restart", "h1", &c.public_key);
    subscribed(&c, 1);
    let (_, r, _) = c.request("dave", &h1, "h1", "10m");
    let id = r["id"].as_str().unwrap().to_owned();
    wait_until("the grant", Duration::from_secs(5), || {
        h1.connect() == OpenOutcome::Opened
    });

    // The coordinator dies mid-stream: enforcement on h1 is unaffected.
    c.kill();
    assert_eq!(h1.connect(), OpenOutcome::Opened);
    c.start();
    subscribed(&c, 1);
    // After reconnecting, new grants flow again.
    let (_, r2, _) = c.request("dave", &h1, "h1", "10m");
    let id2 = r2["id"].as_str().unwrap().to_owned();
    wait_until(
        "the agent to reconnect and take the new grant",
        Duration::from_secs(15),
        || h1.grants().iter().any(|g| g["id"] == id2.as_str()),
    );

    // The agent is down while a grant is revoked: on restart the snapshot
    // no longer lists it, and the agent ends it.
    assert!(w1.stop().success());
    let (code, _, err) = c.ward(
        "root-admin",
        &["revoke", &id, "--reason", "while h1 was down"],
    );
    assert_eq!(code, 0, "{err}");
    let _w1 = h1.start();
    wait_until(
        "the resync to end the revoked grant",
        Duration::from_secs(15),
        || h1.states().iter().any(|(g, s)| *g == id && s == "revoked"),
    );
    assert!(
        h1.states().iter().any(|(g, s)| *g == id2 && s == "active"),
        "{:?}",
        h1.states()
    );
}

/// A fresh database on the PostgreSQL server `cargo xtask test` starts.
fn postgres_database(tag: &str) -> String {
    let server = std::env::var("WARD_TEST_POSTGRES").expect(
        "WARD_TEST_POSTGRES is not set: the PostgreSQL tests run under `cargo xtask test`, \
         which starts a server",
    );
    let name = format!("ward_{tag}_{}", std::process::id());
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        let out = Command::new("psql")
            .args([server.as_str(), "-q", "-c", &sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

#[test]
fn postgres_replicas_share_state_and_race_to_approve_one_request() {
    let db = postgres_database("race");
    let a = Coordinator::with_database("coord-pg", Some(db));
    let b = a.replica("replica-b");
    // h1 streams from replica A only.
    let (h1, _w1) = agent(&a, "co-pg", "h1", &a.public_key);
    wait_until("replica B to reload", Duration::from_secs(10), || {
        b.reloads() >= 1
    });
    subscribed(&a, 1);
    for round in 0..5 {
        let (code, r, err) = a.request("alice", &h1, "h1", "10m");
        assert_eq!(code, 0, "{err}");
        let id = r["id"].as_str().unwrap().to_owned();
        // One approval through B: the state is shared.
        let (code, _, err) = b.ward("bob", &["approve", &id]);
        assert_eq!(code, 0, "{err}");
        // The deciding approval, raced through both replicas at once.
        let (ia, ib) = (id.clone(), id.clone());
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| a.ward("carol", &["approve", &ia, "--json"]));
            let tb = s.spawn(|| b.ward("erin", &["approve", &ib, "--json"]));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let won = [&ra, &rb]
            .iter()
            .filter(|r| r.0 == 0 && r.1.contains("\"state\":\"approved\""))
            .count();
        let lost: Vec<&String> = [&ra, &rb]
            .iter()
            .filter(|r| r.0 != 0)
            .map(|r| &r.2)
            .collect();
        assert_eq!(
            won, 1,
            "round {round}: exactly one approval completes the request: {ra:?} {rb:?}"
        );
        assert_eq!(lost.len(), 1, "round {round}: {ra:?} {rb:?}");
        assert!(lost[0].contains("is approved"), "{}", lost[0]);
        let (_, out, _) = a.ward("bob", &["audit", "--json"]);
        let audit: Vec<Value> = serde_json::from_str(&out).unwrap();
        let approved = audit
            .iter()
            .filter(|e| e["request_id"] == id.as_str() && e["kind"] == "approved")
            .count();
        assert_eq!(approved, 1, "round {round}: one approval transition");
        // Whichever replica decided, h1 (on A) gets the grant.
        wait_until("the grant on h1", Duration::from_secs(10), || {
            h1.grants()
                .iter()
                .any(|g| g["id"] == id.as_str() && g["state"] == "active")
        });
        let (code, _, err) = b.ward("bob", &["revoke", &id]);
        assert_eq!(code, 0, "{err}");
        wait_until(
            "the revocation, decided on B, to reach h1",
            Duration::from_secs(10),
            || {
                h1.grants()
                    .iter()
                    .any(|g| g["id"] == id.as_str() && g["state"] == "revoked")
            },
        );
    }
}

/// Reads one HTTP request: (head, body), or None if the peer went away
/// (a refused TLS handshake among other things).
fn read_request(stream: &mut impl std::io::Read) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = header(head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return Some((head.to_owned(), body[..len].to_owned()));
            }
        }
    }
}

/// A header's value, whatever the case of its name.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One request an endpoint answered: the status it gave, head, body.
type Served = (u16, String, String);

/// A real HTTPS server on `listener` with the certificate `name.pem` of
/// `dir`: it answers each request with the next of `statuses`, then 200.
fn https_endpoint(
    listener: TcpListener,
    dir: &Path,
    name: &str,
    statuses: Vec<u16>,
) -> std::sync::mpsc::Receiver<Served> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use std::io::Write;
    let certs = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for s in listener.incoming() {
            let Ok(s) = s else { break };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let Some((head, body)) = read_request(&mut tls) else {
                continue;
            };
            let status = statuses.next().unwrap_or(200);
            let _ = write!(
                tls,
                "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                if status == 200 { "OK" } else { "Unavailable" }
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
            if tx.send((status, head, body)).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn webhooks_deliver_each_event_once_over_verified_https_and_audit_what_fails() {
    let good = TcpListener::bind("127.0.0.1:0").unwrap();
    let untrusted = TcpListener::bind("127.0.0.1:0").unwrap();
    let (good_port, untrusted_port) = (
        good.local_addr().unwrap().port(),
        untrusted.local_addr().unwrap().port(),
    );
    let secret = "a-webhook-secret-of-some-length";
    let mut c = Coordinator::prepared(
        "coord-hook",
        None,
        format!(
            "[[webhooks]]\nurl = \"https://localhost:{good_port}/ward?token=not-for-logs\"\n\
             secret_file = \"hook.secret\"\nca_file = \"ca.pem\"\n\
             [[webhooks]]\nurl = \"https://localhost:{untrusted_port}/ward\"\n\
             secret_file = \"hook.secret\"\nca_file = \"ca.pem\"\nretry_for = \"2s\"\n"
        ),
    );
    std::fs::write(c.dir.path().join("hook.secret"), format!("{secret}\n")).unwrap();
    // The good endpoint's certificate is from the CA the webhook trusts;
    // the other's from a CA it does not.
    let stranger = ca("someone else's CA");
    write_leaf_naming(
        &stranger,
        c.dir.path(),
        "untrusted",
        "localhost",
        &["localhost"],
        false,
    );
    // The first two posts get 503: the third (a retry) is accepted.
    let served = https_endpoint(good, c.dir.path(), "localhost", vec![503, 503]);
    let strays = https_endpoint(untrusted, c.dir.path(), "untrusted", vec![]);
    c.start();

    let (h1, _w1) = agent(&c, "co-hook", "h1", &c.public_key);
    subscribed(&c, 1);
    let (_, r, _) = c.request("alice", &h1, "h1", "10m");
    let denied = r["id"].as_str().unwrap().to_owned();
    c.ward("bob", &["deny", &denied, "--reason", "no"]);
    let (_, r, _) = c.request("dave", &h1, "h1", "10m");
    let auto = r["id"].as_str().unwrap().to_owned();
    c.ward("root-admin", &["revoke", &auto]);
    let wanted = [
        ("created", &denied),
        ("denied", &denied),
        ("created", &auto),
        ("approved", &auto),
        ("revoked", &auto),
    ];

    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut seen: Vec<(u16, String, String, String)> = Vec::new();
    let accepted =
        |seen: &Vec<(u16, String, String, String)>| seen.iter().filter(|s| s.0 == 200).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted(&seen) < wanted.len() && Instant::now() < deadline {
        let Ok((status, head, body)) = served.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        assert!(
            head.starts_with("POST /ward?token=not-for-logs HTTP/1.1"),
            "{head}"
        );
        let sig = header(&head, "x-ward-signature")
            .and_then(|s| s.strip_prefix("sha256="))
            .expect("signed");
        let tag: Vec<u8> = (0..sig.len() / 2)
            .map(|i| u8::from_str_radix(&sig[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        ring::hmac::verify(&key, body.as_bytes(), &tag).expect("the HMAC verifies");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(header(&head, "x-ward-event"), v["event"].as_str());
        let id = header(&head, "x-ward-delivery")
            .expect("a delivery id")
            .to_owned();
        seen.push((
            status,
            id,
            v["event"].as_str().unwrap().to_owned(),
            v["request_id"].as_str().unwrap().to_owned(),
        ));
    }
    // Refused twice, then the same delivery again and accepted.
    assert!(seen.len() >= 3, "{seen:?}");
    assert_eq!(
        (seen[0].0, seen[1].0, seen[2].0),
        (503, 503, 200),
        "{seen:?}"
    );
    assert!(seen[0].1 == seen[1].1 && seen[1].1 == seen[2].1, "{seen:?}");
    // Every event is accepted exactly once.
    for want in wanted {
        let n = seen
            .iter()
            .filter(|s| s.0 == 200 && s.2 == want.0 && s.3 == *want.1)
            .count();
        assert_eq!(n, 1, "{want:?} accepted once in {seen:?}");
    }

    // The endpoint whose certificate the webhook does not trust never gets
    // a request, and each undelivered event is in the audit log.
    let failed = |c: &Coordinator| -> Vec<Value> {
        let (code, out, err) = c.ward("bob", &["audit", "--json"]);
        assert_eq!(code, 0, "{err}");
        let audit: Vec<Value> = serde_json::from_str(&out).unwrap();
        audit
            .into_iter()
            .filter(|e| e["kind"] == "webhook_failed")
            .collect()
    };
    wait_until(
        "undelivered events audited",
        Duration::from_secs(30),
        || failed(&c).len() >= wanted.len(),
    );
    let failed = failed(&c);
    for want in wanted {
        assert!(
            failed.iter().any(|e| e["request_id"] == want.1.as_str()
                && e["detail"].as_str().unwrap().starts_with(&format!(
                    "{} to https://localhost:{untrusted_port}/ward: ",
                    want.0
                ))),
            "{want:?} in {failed:?}"
        );
    }
    for e in &failed {
        let detail = e["detail"].as_str().unwrap();
        assert!(detail.contains("certificate"), "{detail}");
        assert!(!detail.contains(&format!(":{good_port}/")), "{detail}");
        assert_eq!(e["actor"], "coordinator");
    }
    assert!(
        strays.try_recv().is_err(),
        "no request over an untrusted TLS session"
    );
    // Neither the secret nor the URL's query reaches the log or the audit.
    let log = std::fs::read_to_string(c.dir.path().join("coordinator.log")).unwrap();
    assert!(!log.contains(secret));
    assert!(!log.contains("not-for-logs"), "the query is not logged");
    assert!(!format!("{failed:?}").contains("not-for-logs"));
}

#[test]
fn pending_requests_expire_reasons_and_scheduled_starts_follow_policy() {
    let c = Coordinator::with("coord-ttl", None, "# short ttl\n".into());
    let (h1, _w1) = agent(&c, "co-ttl", "h1", &c.public_key);
    subscribed(&c, 1);
    let target = format!("127.0.0.1/32:{}", h1.addr.port());
    let workload = h1.managed_workload();
    let ask = |who: &str, extra: &[&str]| {
        let mut args = vec![
            "request",
            "--connect",
            &target,
            "--on",
            "host=h1",
            "--for",
            "10m",
            "--workload",
            &workload,
            "--json",
        ];
        args.extend_from_slice(extra);
        c.ward(who, &args)
    };
    // The reason is required unless the permit waives it.
    let (code, _, err) = ask("alice", &[]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("reason: is required"), "{err}");
    // A pending request expires after the TTL (1 s here).
    let (code, out, err) = ask("alice", &["--reason", "INC-7"]);
    assert_eq!(code, 0, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(
        "the pending request to expire",
        Duration::from_secs(10),
        || {
            let (_, out, _) = c.ward("alice", &["requests", "--mine", "--json"]);
            out.contains(&format!("\"id\":\"{id}\"")) && out.contains("\"state\":\"expired\"")
        },
    );
    let (code, _, err) = c.ward("bob", &["approve", &id]);
    assert_eq!(code, 5, "{err}");
    // dave's permit waives the reason and approves at once; access is
    // scheduled to start in 2 s and lasts 10 m from then.
    let start = std::time::SystemTime::now() + Duration::from_secs(2);
    let at = humantime::format_rfc3339_millis(start).to_string();
    let (code, out, err) = ask("dave", &["--at", &at]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["state"], "approved");
    let start_ms = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (r["expires_at_unix_ms"].as_i64().unwrap() - (start_ms + 600_000)).abs() < 1000,
        "{r}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h1.connect(), DENIED, "not before the scheduled start");
    wait_until("the scheduled start", Duration::from_secs(10), || {
        h1.connect() == OpenOutcome::Opened
    });
}

/// A coordinator client as `who`, in-process (benchmarks).
async fn grpc_as(
    c: &Coordinator,
    who: &str,
) -> ward_proto::v1::coordinator_client::CoordinatorClient<tonic::transport::Channel> {
    let channel = ward_agent::client::connect_tls(&c.tls_target(who))
        .await
        .unwrap();
    ward_proto::v1::coordinator_client::CoordinatorClient::new(channel)
}

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn bench_auto_approved_request_to_enforced() {
    use ward_proto::v1 as pb;
    let iterations: usize = std::env::var("WARD_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let c = Coordinator::new("coord-bench");
    let (h1, _w1) = agent(&c, "co-bench", "h1", &c.public_key);
    subscribed(&c, 1);
    // This thread is the grantee's workload; the daemons stay outside.
    ward_tests::bench::enter_cgroup(h1.sb.managed.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut dave = rt.block_on(grpc_as(&c, "dave"));
    let mut admin = rt.block_on(grpc_as(&c, "root-admin"));
    let network = format!("127.0.0.1/32:{}", h1.addr.port());
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let r = rt
            .block_on(dave.create_request(pb::CreateRequestRequest {
                operations: vec![pb::Operation::Connect as i32],
                objects: vec![pb::Object {
                    kind: Some(pb::object::Kind::Network(network.clone())),
                }],
                hosts: vec!["h1".into()],
                duration_ms: 300_000,
                reason: "bench".into(),
                workload: h1.managed_workload(),
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        while std::net::TcpStream::connect(h1.addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never enforced"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        samples.push(started.elapsed());
        drop(h1.listener.accept().unwrap());
        rt.block_on(admin.revoke(pb::EndRequest {
            id: r.id,
            reason: "bench".into(),
        }))
        .unwrap();
        while std::net::TcpStream::connect(h1.addr).is_ok() {
            drop(h1.listener.accept().unwrap());
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    ward_tests::bench::leave_cgroup();
    ward_tests::bench::record(
        "coordinator_request_to_enforced",
        &ward_tests::bench::summary(samples),
    );
}

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn bench_fan_out_to_simulated_agents() {
    use ward_proto::v1 as pb;
    let c = Coordinator::new("coord-fanout");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results = serde_json::Map::new();
    for (round, agents) in [100usize, 1000].into_iter().enumerate() {
        let label = format!("fleet=bench{round}");
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(agents);
        let (got_tx, mut got_rx) = tokio::sync::mpsc::channel::<Instant>(agents);
        let mut tasks = Vec::new();
        for i in 0..agents {
            let name = format!("s{round}-{i}");
            let target = c.tls_target(&format!("{name}.agent"));
            let (ready, got, label) = (ready_tx.clone(), got_tx.clone(), label.clone());
            tasks.push(rt.spawn(async move {
                let ch = ward_agent::client::connect_tls(&target).await.unwrap();
                let mut client = pb::coordinator_client::CoordinatorClient::new(ch);
                let mut s = client
                    .subscribe(pb::SubscribeRequest {
                        host: name,
                        labels: vec!["env=test".into(), label],
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let _snapshot = s.message().await.unwrap();
                ready.send(()).await.unwrap();
                while let Some(m) = s.message().await.unwrap() {
                    if matches!(m.kind, Some(pb::fleet_message::Kind::Grant(_))) {
                        got.send(Instant::now()).await.unwrap();
                        break;
                    }
                }
            }));
        }
        rt.block_on(async {
            for _ in 0..agents {
                ready_rx.recv().await.unwrap();
            }
        });
        let mut dave = rt.block_on(grpc_as(&c, "dave"));
        let started = Instant::now();
        rt.block_on(dave.create_request(pb::CreateRequestRequest {
            operations: vec![pb::Operation::Connect as i32],
            objects: vec![pb::Object {
                kind: Some(pb::object::Kind::Network("10.0.0.0/8:5432".into())),
            }],
            host_labels: vec![label.clone()],
            duration_ms: 300_000,
            reason: "bench".into(),
            ..Default::default()
        }))
        .unwrap();
        let arrivals: Vec<Duration> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..agents {
                v.push(got_rx.recv().await.unwrap() - started);
            }
            v
        });
        let last = *arrivals.iter().max().unwrap();
        let mut s = ward_tests::bench::summary(arrivals);
        s["all_delivered_us"] = (last.as_micros() as u64).into();
        results.insert(format!("agents_{agents}"), s);
        for t in tasks {
            t.abort();
        }
    }
    ward_tests::bench::record("coordinator_fan_out", &Value::Object(results));
}

#[test]
#[ignore = "benchmark: run with `cargo xtask bench`"]
fn bench_approvals_per_second() {
    use ward_proto::v1 as pb;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = 200;
    let mut out = serde_json::Map::new();
    for (store, db) in [
        ("sqlite", None),
        ("postgres", Some(postgres_database("bench"))),
    ] {
        let c = Coordinator::with_database(&format!("coord-rate-{store}"), db);
        // One simulated agent so the host is known.
        let target = c.tls_target("h1.agent");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let agent = rt.spawn(async move {
            let ch = ward_agent::client::connect_tls(&target).await.unwrap();
            let mut s = pb::coordinator_client::CoordinatorClient::new(ch)
                .subscribe(pb::SubscribeRequest {
                    host: "h1".into(),
                    labels: vec!["env=test".into()],
                })
                .await
                .unwrap()
                .into_inner();
            ready_tx.send(()).unwrap();
            while let Ok(Some(_)) = s.message().await {}
        });
        ready_rx.recv().unwrap();
        let mut alice = rt.block_on(grpc_as(&c, "alice"));
        let mut bob = rt.block_on(grpc_as(&c, "bob"));
        let mut carol = rt.block_on(grpc_as(&c, "carol"));
        let ids: Vec<String> = (0..n)
            .map(|_| {
                rt.block_on(alice.create_request(pb::CreateRequestRequest {
                    operations: vec![pb::Operation::Connect as i32],
                    objects: vec![pb::Object {
                        kind: Some(pb::object::Kind::Network("10.0.0.0/8:5432".into())),
                    }],
                    hosts: vec!["h1".into()],
                    duration_ms: 600_000,
                    reason: "bench".into(),
                    ..Default::default()
                }))
                .unwrap()
                .into_inner()
                .id
            })
            .collect();
        let started = Instant::now();
        for id in &ids {
            for reviewer in [&mut bob, &mut carol] {
                rt.block_on(reviewer.approve(pb::ReviewRequest {
                    id: id.clone(),
                    reason: String::new(),
                }))
                .unwrap();
            }
        }
        let secs = started.elapsed().as_secs_f64();
        out.insert(
            store.into(),
            serde_json::json!({
                "approvals": 2 * n,
                "requests_approved": n,
                "approvals_per_second": (2 * n) as f64 / secs,
            }),
        );
        agent.abort();
    }
    ward_tests::bench::record("coordinator_approvals", &Value::Object(out));
}

/// A grant carries every operation on every object: the coordinator signs
/// it only when each of those pairs is one policy evaluated. A request with
/// any other pair is refused whole, naming the pair, and leaves nothing.
#[test]
fn a_request_with_a_pair_policy_never_evaluates_is_refused_whole() {
    use ward_proto::v1 as pb;
    let c = Coordinator::new("coord-pairs");
    let (h1, _w1) = agent(&c, "co-pairs", "h1", &c.public_key);
    subscribed(&c, 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut dave = rt.block_on(grpc_as(&c, "dave"));
    let network = pb::Object {
        kind: Some(pb::object::Kind::Network(format!(
            "127.0.0.1/32:{}",
            h1.addr.port()
        ))),
    };
    let tool = pb::Object {
        kind: Some(pb::object::Kind::Executable("/usr/bin/true".into())),
    };
    let ask = |ops: Vec<pb::Operation>, objects: Vec<pb::Object>| pb::CreateRequestRequest {
        operations: ops.into_iter().map(|o| o as i32).collect(),
        objects,
        hosts: vec!["h1".into()],
        duration_ms: 60_000,
        reason: "INC-9".into(),
        workload: h1.managed_workload(),
        ..Default::default()
    };
    // dave is auto-approved for connect; exec on a network was never
    // evaluated, and neither was connect on an executable.
    for (req, pair) in [
        (
            ask(
                vec![pb::Operation::Connect, pb::Operation::Exec],
                vec![network.clone()],
            ),
            "operations[1] on objects[0]",
        ),
        (
            ask(vec![pb::Operation::Connect], vec![network.clone(), tool]),
            "operations[0] on objects[1]",
        ),
    ] {
        let err = rt
            .block_on(dave.create_request(req))
            .expect_err("a pair policy never evaluated is refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains(pair), "{err}");
    }
    let (code, out, err) = c.ward("dave", &["requests", "--mine", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("\"id\""),
        "a refused request leaves nothing: {out}"
    );
    assert_eq!(h1.connect(), DENIED, "nothing was delivered");

    // The same request without the stray pair is approved, and the grant
    // carries exactly what was evaluated.
    let r = rt
        .block_on(dave.create_request(ask(vec![pb::Operation::Connect], vec![network])))
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::RequestState::Approved as i32);
    assert_eq!(r.operations, vec![pb::Operation::Connect as i32]);
    wait_until("the approved grant", Duration::from_secs(5), || {
        h1.connect() == OpenOutcome::Opened
    });
}

/// Issue 14.5: a certificate is one identity. An agent's certificate with
/// a reviewer's name beside it is no one; `BOB` is `bob`, so he cannot
/// approve twice, and `Alice` cannot approve alice's request. People see
/// only what they asked for or may review; admins see all.
#[test]
fn each_certificate_is_one_identity_and_people_see_only_what_they_may() {
    let c = Coordinator::new("coord-ident");
    let (h1, _w1) = agent(&c, "co-ident", "h1", &c.public_key);
    subscribed(&c, 1);
    let (code, r, err) = c.request("alice", &h1, "h1", "10m");
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["approvals_required"], 2);
    let id = r["id"].as_str().unwrap().to_owned();

    // h1's agent certificate that also names bob, a reviewer.
    let (cert, key) = write_leaf_naming(
        &c.pki,
        c.dir.path(),
        "h1-and-bob",
        "h1.agent",
        &["h1.agent", "bob"],
        true,
    );
    let (code, _, err) = c.ward_with(&cert, &key, &["approve", &id]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("exactly one identity"), "{err}");
    let (code, _, err) = c.ward_with(&cert, &key, &["requests", "--json"]);
    assert_eq!(
        code, 4,
        "an ambiguous certificate sees nothing either: {err}"
    );

    let (code, _, err) = c.ward("Alice", &["approve", &id]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("self-approval"), "{err}");
    let (code, _, err) = c.ward("bob", &["approve", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c.ward("BOB", &["approve", &id]);
    assert_ne!(code, 0, "one person, one approval");
    assert!(err.contains("already reviewed"), "{err}");
    assert_eq!(h1.connect(), DENIED, "one approval of two grants nothing");

    let ids = |who: &str| -> Vec<String> {
        let (code, out, err) = c.ward(who, &["requests", "--json"]);
        assert_eq!(code, 0, "{who}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let audited = |who: &str| -> usize {
        let (code, out, err) = c.ward(who, &["audit", "--json"]);
        assert_eq!(code, 0, "{who}: {err}");
        out.matches(&format!("\"{id}\"")).count()
    };
    // dave may neither review alice's request nor is it his.
    assert!(ids("dave").is_empty(), "{:?}", ids("dave"));
    assert_eq!(audited("dave"), 0, "nor read its audit trail");
    for who in ["alice", "carol", "root-admin"] {
        assert_eq!(ids(who), vec![id.clone()], "{who} sees it");
        assert!(audited(who) >= 2, "{who} reads its trail");
    }

    let (code, _, err) = c.ward("carol", &["approve", &id]);
    assert_eq!(code, 0, "{err}");
    wait_until("the grant of two people", Duration::from_secs(5), || {
        h1.connect() == OpenOutcome::Opened
    });
}

/// A POSIX `TZ` in which local noon falls at `instant`.
fn tz_with_noon_at(instant: std::time::SystemTime) -> String {
    let utc = instant
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        % 86_400;
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

/// Issue 14.7: a scheduled start is bounded, and policy is checked again
/// when it comes. frank is auto-approved before local noon only; he asks
/// before noon for access from just after it. The coordinator approves the
/// request, then at the start finds policy no longer allows it: it is
/// revoked, never signed, and the kernel keeps denying.
#[test]
fn a_scheduled_start_is_bounded_and_policy_is_checked_again_when_it_comes() {
    use ward_proto::v1 as pb;
    // Room for the coordinator and an agent to start under a loaded test
    // run (15 s was once not enough: the request came after noon).
    let noon = std::time::SystemTime::now() + Duration::from_secs(40);
    let mut c = Coordinator::prepared("coord-sched", None, String::new());
    c.tz = Some(tz_with_noon_at(noon));
    c.start();
    let (h1, _w1) = agent(&c, "co-sched", "h1", &c.public_key);
    subscribed(&c, 1);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut frank = rt.block_on(grpc_as(&c, "frank"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ask = |not_before: i64, duration_ms: i64| pb::CreateRequestRequest {
        operations: vec![pb::Operation::Connect as i32],
        objects: vec![pb::Object {
            kind: Some(pb::object::Kind::Network(format!(
                "127.0.0.1/32:{}",
                h1.addr.port()
            ))),
        }],
        hosts: vec!["h1".into()],
        duration_ms,
        not_before_unix_ms: not_before,
        workload: h1.managed_workload(),
        ..Default::default()
    };
    for (req, field) in [
        (ask(now_ms + 31 * 86_400_000, 60_000), "not_before"),
        (ask(i64::MAX, 60_000), "not_before"),
        (ask(0, i64::MAX), "duration"),
    ] {
        let err = rt
            .block_on(frank.create_request(req))
            .expect_err("out of bounds");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().starts_with(field), "{err}");
    }

    let start = noon + Duration::from_secs(2);
    let start_ms = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        std::time::SystemTime::now() + Duration::from_secs(2) < noon,
        "the set-up took too long: noon has come before the request"
    );
    let r = rt
        .block_on(frank.create_request(ask(start_ms, 600_000)))
        .expect("before noon, frank is auto-approved")
        .into_inner();
    assert_eq!(r.state, pb::RequestState::Approved as i32, "{r:?}");

    wait_until(
        "the request to be revoked at its start",
        Duration::from_secs(30),
        || {
            let (_, out, _) = c.ward("frank", &["requests", "--mine", "--json"]);
            out.contains("\"state\":\"revoked\"")
        },
    );
    assert!(std::time::SystemTime::now() >= start);
    let (code, out, err) = c.ward("frank", &["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy no longer allows it"), "{out}");
    assert!(!out.contains("\"activated\""), "{out}");
    assert_eq!(h1.connect(), DENIED, "never delivered");
}

/// Issue 14.2: a workload's request is decided for the Workload, and the
/// person asking must be permitted `request_for` on it. eve is on call
/// (auto-approved for connect) but may not ask for workloads; nobody may
/// ask for a workload the directory does not list, such as `user.slice`
/// (everyone's sessions). dave may, and his request for the test workload
/// is enforced.
#[test]
fn a_workload_request_is_decided_for_the_workload_and_its_asker_must_be_allowed() {
    let c = Coordinator::new("coord-wl");
    let (h1, _w1) = agent(&c, "co-wl", "h1", &c.public_key);
    subscribed(&c, 1);
    let target = format!("127.0.0.1/32:{}", h1.addr.port());
    let ask = |who: &str, workload: &str| {
        c.ward(
            who,
            &[
                "request",
                "--connect",
                &target,
                "--on",
                "host=h1",
                "--for",
                "10m",
                "--reason",
                "INC-3",
                "--workload",
                workload,
                "--json",
            ],
        )
    };
    let (code, _, err) = ask("eve", &h1.managed_workload());
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("eve may not ask for connect on behalf of workload `w-co-wl`"),
        "{err}"
    );
    for unknown in ["user.slice", "system.slice/wardd.service"] {
        let (code, _, err) = ask("dave", unknown);
        assert_eq!(code, 5, "{err}");
        assert!(
            err.contains(&format!("workload: unknown workload `{unknown}`")),
            "{err}"
        );
    }
    let (code, out, err) = c.ward("dave", &["requests", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("\"id\""), "refusals leave nothing: {out}");
    assert_eq!(h1.connect(), DENIED);

    // By its directory name or its cgroup: one workload, one grant.
    let (code, out, err) = ask("dave", "w-co-wl");
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["state"], "approved", "{r}");
    assert_eq!(r["workload"], h1.managed_workload(), "{r}");
    wait_until("the workload's grant", Duration::from_secs(5), || {
        h1.connect() == OpenOutcome::Opened
    });
}

/// A TCP relay to 127.0.0.1:`to` that can black-hole the connections it
/// holds: bytes are read and dropped both ways, and nothing is closed, as
/// when a firewall or NAT loses a flow's state. Later connections relay.
struct Relay {
    port: u16,
    holed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    fn to(to: u16) -> Relay {
        use std::{
            io::{Read, Write},
            sync::atomic::Ordering,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = holed.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let h = h.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let Ok(got) = from.read(&mut buf) else { return };
                            if got == 0 {
                                let _ = into.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            // Connection n is black-holed once the hole
                            // count passes it.
                            if h.load(Ordering::SeqCst) <= n && into.write_all(&buf[..got]).is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Relay { port, holed }
    }

    /// Every connection relayed so far goes silent.
    fn black_hole(&self, connections_so_far: usize) {
        self.holed
            .store(connections_so_far, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Issue 14.9: a black-holed stream is noticed within seconds (HTTP/2
/// keepalives on both ends) and a revocation sent meanwhile still lands:
/// the agent reconnects and resyncs, and the kernel denies again.
#[test]
fn a_black_holed_agent_stream_is_noticed_and_a_revocation_still_lands() {
    let c = Coordinator::new("coord-hole");
    let relay = Relay::to(c.port);
    let (h1, w1) = agent_via(&c, "co-hole", "h1", &c.public_key, relay.port);
    subscribed(&c, 1);
    let target = format!("127.0.0.1/32:{}", h1.addr.port());
    let (code, out, err) = c.ward(
        "dave",
        &[
            "request",
            "--connect",
            &target,
            "--on",
            "host=h1",
            "--for",
            "10m",
            "--workload",
            &h1.managed_workload(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until("the grant", Duration::from_secs(5), || {
        h1.connect() == OpenOutcome::Opened
    });

    // The agent's one connection so far goes silent.
    relay.black_hole(1);
    let holed = Instant::now();
    let (code, _, err) = c.ward("root-admin", &["revoke", &id, "--reason", "hole"]);
    assert_eq!(code, 0, "{err}");
    // Accept what got through, or the backlog fills and a connect blocks.
    h1.listener.set_nonblocking(true).unwrap();
    wait_until(
        "the revocation to land despite the black hole",
        Duration::from_secs(30),
        || {
            while h1.listener.accept().is_ok() {}
            h1.connect() == DENIED
        },
    );
    eprintln!(
        "revocation enforced {:.1} s after the black hole",
        holed.elapsed().as_secs_f64()
    );
    assert!(
        w1.log().contains("resynchronised with the coordinator"),
        "{}",
        w1.log()
    );
    subscribed(&c, 2);
}

/// Issue 14.9: an agent that stops reading is never silently skipped.
/// When its stream's queue is full the coordinator closes the stream; the
/// agent gets what was queued, then the end, and its snapshot on
/// reconnecting holds exactly the live grants: not one revoked meanwhile.
#[test]
fn an_agent_stream_that_falls_behind_is_closed_and_its_resync_has_no_revoked_grant() {
    use ward_proto::v1 as pb;
    let c = Coordinator::with("coord-full", None, "stream_buffer = 2\n".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // h9's "agent" takes 1 KiB before it must read more: it reads the
    // snapshot, then stalls.
    let target = c.tls_target("h9.agent");
    let subscribe = |window: Option<u32>| {
        let target = target.clone();
        async move {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    std::fs::read(&target.ca).unwrap(),
                ))
                .identity(tonic::transport::Identity::from_pem(
                    std::fs::read(&target.cert).unwrap(),
                    std::fs::read(&target.key).unwrap(),
                ))
                .domain_name("localhost");
            let channel = tonic::transport::Endpoint::from_shared(target.url.clone())
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .initial_stream_window_size(window)
                .connect()
                .await
                .unwrap();
            let mut stream = pb::coordinator_client::CoordinatorClient::new(channel)
                .subscribe(pb::SubscribeRequest {
                    host: "h9".into(),
                    labels: vec!["env=test".into()],
                })
                .await
                .unwrap()
                .into_inner();
            let snapshot = match stream.message().await.unwrap().and_then(|m| m.kind) {
                Some(pb::fleet_message::Kind::Snapshot(s)) => s,
                other => panic!("first a snapshot, not {other:?}"),
            };
            (stream, snapshot)
        }
    };
    let (mut stalled, _) = rt.block_on(subscribe(Some(1024)));
    let mut dave = rt.block_on(grpc_as(&c, "dave"));
    let mut ids = Vec::new();
    for i in 0..12 {
        let r = rt
            .block_on(dave.create_request(pb::CreateRequestRequest {
                operations: vec![pb::Operation::Connect as i32],
                objects: vec![pb::Object {
                    kind: Some(pb::object::Kind::Network(format!(
                        "127.0.0.1/32:{}",
                        2000 + i
                    ))),
                }],
                hosts: vec!["h9".into()],
                duration_ms: 600_000,
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        assert_eq!(r.state, pb::RequestState::Approved as i32, "{r:?}");
        ids.push(r.id);
    }
    let log = c.dir.path().join("coordinator.log");
    wait_until(
        "the full stream to be closed",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("agent stream full; closing it so the agent resyncs")
        },
    );
    let revoked = ids[0].clone();
    let mut admin = rt.block_on(grpc_as(&c, "root-admin"));
    rt.block_on(admin.revoke(pb::EndRequest {
        id: revoked.clone(),
        reason: "while h9 lagged".into(),
    }))
    .unwrap();

    // The stalled agent reads on: what was queued, then the end.
    let ended = rt.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), stalled.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Err(_) => return false,
            }
        }
    });
    assert!(ended, "the stream stayed open after messages were dropped");
    let (_fresh, snapshot) = rt.block_on(subscribe(None));
    let mut got: Vec<String> = snapshot
        .grants
        .iter()
        .map(|g| {
            let key = ward_proto::signing::parse_public_hex(&c.public_key).unwrap();
            ward_proto::signing::verify(g, &[key]).unwrap().id
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = ids.iter().filter(|i| **i != revoked).cloned().collect();
    want.sort();
    assert_eq!(got, want, "the resync holds exactly the live grants");
}

/// Issue 14.11: idle connections cannot starve the coordinator. A stranger
/// holds 600 TCP connections that never handshake; people are served, and
/// every idle connection is closed (over the per-address limit at once,
/// the rest at the handshake timeout). A request over the size limit is
/// refused and leaves nothing.
#[test]
fn a_connection_flood_cannot_starve_the_coordinator() {
    use ward_proto::v1 as pb;
    let c = Coordinator::with(
        "coord-flood",
        None,
        "max_connections_per_peer = 16\n".into(),
    );
    ward_tests::flood::raise_descriptor_limit();
    let stranger = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let idle: Vec<_> = (0..600)
        .map(|_| ward_tests::flood::idle_tcp_from(stranger, c.port))
        .collect();
    let (code, _, err) = c.ward("dave", &["requests", "--json"]);
    assert_eq!(code, 0, "served during the flood: {err}");
    let open = ward_tests::flood::still_open(&idle, Duration::from_secs(15));
    assert_eq!(open, 0, "idle connections the coordinator still holds");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut dave = rt.block_on(grpc_as(&c, "dave"));
    let err = rt
        .block_on(dave.create_request(pb::CreateRequestRequest {
            operations: vec![pb::Operation::Connect as i32],
            objects: vec![pb::Object {
                kind: Some(pb::object::Kind::Network("127.0.0.1/32:5432".into())),
            }],
            hosts: vec!["h1".into()],
            duration_ms: 60_000,
            reason: "x".repeat(1 << 20),
            ..Default::default()
        }))
        .expect_err("an oversized request is refused");
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
    let (code, out, err) = c.ward("dave", &["requests", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("\"id\""), "{out}");
}

/// `ward-coordinator serve` for a configured, not started, coordinator,
/// expected to refuse to start: its exit code and log.
fn refuses_to_serve(c: &Coordinator) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .arg("30")
        .arg(coordinator_bin())
        .args(["serve", "--config"])
        .arg(c.dir.path().join(format!("{}.toml", c.name)))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 14.8: the coordinator reaches PostgreSQL over TLS and verifies
/// the server's certificate: against the right CA it serves and the
/// server sees an SSL session; against another CA, to a server that
/// declines TLS, or to another host without a CA, it refuses to start.
#[test]
fn the_coordinator_reaches_postgres_over_verified_tls_and_never_in_the_clear() {
    let db = postgres_database("tls");
    let pg_ca = std::env::var("WARD_TEST_POSTGRES_CA")
        .expect("WARD_TEST_POSTGRES_CA is not set: run under `cargo xtask test`");
    let server = std::env::var("WARD_TEST_POSTGRES").unwrap();
    let c = Coordinator::with(
        "coord-pgtls",
        Some(db.clone()),
        format!("database_ca = \"{pg_ca}\"\n"),
    );
    let (code, _, err) = c.ward("dave", &["requests", "--json"]);
    assert_eq!(code, 0, "{err}");
    let name = db.rsplit('/').next().unwrap();
    let out = Command::new("psql")
        .args([server.as_str(), "-tAq", "-c"])
        .arg(format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND datname = '{name}'"
        ))
        .output()
        .unwrap();
    let sessions: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        sessions >= 1,
        "the coordinator's session is not SSL: {out:?}"
    );

    // Another CA: the server's certificate does not verify.
    let other = ca("not the database's CA");
    let other_pem = c.dir.path().join("other-ca.pem");
    std::fs::write(&other_pem, other.pem()).unwrap();
    let wrong = Coordinator::prepared(
        "coord-pgtls-wrong",
        Some(db.clone()),
        format!("database_ca = \"{}\"\n", other_pem.display()),
    );
    let (code, log) = refuses_to_serve(&wrong);
    assert_ne!(code, Some(0), "{log}");
    assert_ne!(code, Some(124), "it must fail, not hang: {log}");
    assert!(log.to_lowercase().contains("certificate"), "{log}");

    // A server that declines TLS is never used in the clear.
    let decliner = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = decliner.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in decliner.incoming().flatten() {
            let mut request = [0u8; 8];
            if s.read_exact(&mut request).is_ok() {
                let _ = s.write_all(b"N");
            }
        }
    });
    let clear = Coordinator::prepared(
        "coord-pgtls-clear",
        Some(format!("postgres://postgres@127.0.0.1:{port}/ward")),
        format!("database_ca = \"{pg_ca}\"\n"),
    );
    let (code, log) = refuses_to_serve(&clear);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("does not support TLS"), "{log}");

    // Another host, no CA: refused before any connection is made.
    let remote = Coordinator::prepared(
        "coord-pgtls-remote",
        Some("postgres://ward@192.0.2.7:5432/ward".into()),
        String::new(),
    );
    let (code, log) = refuses_to_serve(&remote);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("`192.0.2.7` is not on this host") && log.contains("database_ca"),
        "{log}"
    );
}

/// Issue 14.13: reads are paged and bounded, on both the coordinator and
/// the agent, and a request too big to decide quickly is refused naming
/// the field. (The reads also run on their own store connections, off the
/// decision lock.)
#[test]
fn listings_are_paged_and_a_request_too_big_to_decide_is_refused() {
    use ward_proto::v1 as pb;
    let c = Coordinator::new("coord-pages");
    let (h1, _w1) = agent(&c, "co-pages", "h1", &c.public_key);
    subscribed(&c, 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut dave = rt.block_on(grpc_as(&c, "dave"));
    let ask = |objects: Vec<pb::Object>| pb::CreateRequestRequest {
        operations: vec![pb::Operation::Connect as i32],
        objects,
        hosts: vec!["h1".into()],
        duration_ms: 600_000,
        workload: h1.managed_workload(),
        ..Default::default()
    };
    // At most four port ranges per network and subject in the kernel: one
    // address each.
    let net = |n: u32| pb::Object {
        kind: Some(pb::object::Kind::Network(format!(
            "10.{}.{}.1/32:5432",
            n / 256 % 256,
            n % 256
        ))),
    };
    let mut ids = Vec::new();
    for i in 0..30 {
        let r = rt
            .block_on(dave.create_request(ask(vec![net(3000 + i)])))
            .unwrap()
            .into_inner();
        ids.push(r.id);
    }
    // Seven at a time, in order, none twice.
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let page = rt
            .block_on(dave.list_requests(pb::ListRequestsRequest {
                mine: true,
                limit: 7,
                page_token: token.clone(),
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        assert!(page.requests.len() <= 7);
        got.extend(page.requests.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(got, ids);
    let (code, out, err) = c.ward("dave", &["requests", "--mine", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.matches("\"id\":").count(),
        30,
        "the CLI follows the pages"
    );

    let mut admin = rt.block_on(grpc_as(&c, "root-admin"));
    let whole = rt
        .block_on(admin.audit(pb::AuditRequest::default()))
        .unwrap()
        .into_inner();
    assert!(whole.entries.len() >= 60 && whole.next_page_token.is_empty());
    let mut paged = 0;
    let mut token = String::new();
    loop {
        let page = rt
            .block_on(admin.audit(pb::AuditRequest {
                limit: 7,
                page_token: token.clone(),
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        paged += page.entries.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, whole.entries.len());
    let err = rt
        .block_on(admin.audit(pb::AuditRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        }))
        .expect_err("a made-up token is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("page_token"), "{err}");

    // The agent pages its grants too.
    let started = Instant::now();
    while h1.grants().len() != 30 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the 30 grants: {} {:?}",
            h1.grants().len(),
            h1.audit()
                .iter()
                .filter(|r| r["kind"] == "grant_refused")
                .take(2)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let grants = rt.block_on(async {
        let mut agent = ward_agent::client::connect(&h1.socket).await.unwrap();
        let (mut n, mut token, mut pages) = (0, String::new(), 0);
        loop {
            let page = agent
                .list_grants(pb::ListGrantsRequest {
                    all: true,
                    limit: 7,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.grants.len() <= 7);
            n += page.grants.len();
            pages += 1;
            if page.next_page_token.is_empty() {
                break (n, pages);
            }
            token = page.next_page_token;
        }
    });
    assert_eq!(grants, (30, 5));

    // Too big to decide under the lock: refused whole, the field named.
    let many = (0..65).map(|i| net(4000 + i)).collect();
    let err = rt
        .block_on(dave.create_request(ask(many)))
        .expect_err("65 objects are too many");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("objects: 65"), "{err}");
}

/// The coordinator's `/metrics`: decisions by policy and by review, the
/// approval latency, requests by state from the store, connected agents
/// and the outbox backlog, scraped over real HTTP.
#[test]
fn coordinator_metrics_count_decisions_requests_and_agents() {
    use crate::metrics::{Prometheus, free_port, get, samples};
    let port = free_port();
    let mut c = Coordinator::prepared(
        "coord-metrics",
        None,
        format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    c.start();
    // The agent serves its metrics too: the sample dashboard reads both.
    let agent_port = crate::metrics::free_port();
    let h1 = test_host(
        &c,
        "co-metrics",
        &format!(
            "{}[metrics]\nlisten = \"127.0.0.1:{agent_port}\"\n",
            c.agent_section_via("h1", &c.public_key, c.port)
        ),
    );
    let _w1 = h1.start();
    subscribed(&c, 1);
    let (status, body) = {
        let (s, _, b) = get(port, "/healthz");
        (s, b)
    };
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let (code, r, err) = c.request("dave", &h1, "h1", "10m");
    assert_eq!((code, r["state"].as_str()), (0, Some("approved")), "{err}");
    let (_, r, _) = c.request("alice", &h1, "h1", "10m");
    let reviewed = r["id"].as_str().unwrap().to_owned();
    c.ward("bob", &["approve", &reviewed]);
    let (code, _, err) = c.ward("carol", &["approve", &reviewed]);
    assert_eq!(code, 0, "{err}");
    let (_, r, _) = c.request("alice", &h1, "h1", "10m");
    let denied = r["id"].as_str().unwrap().to_owned();
    let (code, _, err) = c.ward("bob", &["deny", &denied, "--reason", "no"]);
    assert_eq!(code, 0, "{err}");

    let scrape = || {
        let (status, content_type, text) = get(port, "/metrics");
        assert_eq!(status, 200, "{text}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        crate::metrics::promtool_check(&text);
        (samples(&text), text)
    };
    wait_until(
        "the outbox to be delivered",
        Duration::from_secs(10),
        || scrape().0.get("ward_coordinator_outbox_backlog") == Some(&0.0),
    );
    let (m, text) = scrape();
    let at = |s: &str| *m.get(s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    let decided = |decision: &str, by: &str| {
        at(&format!(
            "ward_coordinator_request_decisions_total{{decision=\"{decision}\",by=\"{by}\"}}"
        ))
    };
    assert_eq!(decided("approved", "policy"), 1.0);
    assert_eq!(decided("approved", "review"), 1.0);
    assert_eq!(decided("denied", "review"), 1.0);
    assert_eq!(at("ward_coordinator_request_approval_seconds_count"), 2.0);
    assert_eq!(at(r#"ward_coordinator_requests{state="approved"}"#), 2.0);
    assert_eq!(at(r#"ward_coordinator_requests{state="denied"}"#), 1.0);
    assert_eq!(at(r#"ward_coordinator_requests{state="pending"}"#), 0.0);
    assert_eq!(at("ward_coordinator_connected_agents"), 1.0);

    // A real Prometheus server scrapes it too.
    let data = ward_tests::TempDir::new("prometheus-coord");
    let prometheus =
        Prometheus::start(data.path(), &[("coordinator", port), ("wardd", agent_port)]);
    prometheus.wait_for(r#"up{job="coordinator"}"#, |v| v == 1.0);
    prometheus.wait_for(r#"up{job="wardd"}"#, |v| v == 1.0);
    prometheus.wait_for(
        r#"ward_coordinator_request_decisions_total{decision="denied",by="review"}"#,
        |v| v == 1.0,
    );

    // The sample Grafana dashboard: every query evaluates in this
    // Prometheus, and every metric it names is one wardd or the
    // coordinator serves.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let served = format!("{text}{}", get(agent_port, "/metrics").2);
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let q = target["expr"].as_str().unwrap().replace("$instance", ".*");
            if let Err(e) = prometheus.evaluates(&q) {
                panic!("panel {:?}: `{q}`: {e}", panel["title"]);
            }
            for name in q
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("ward_"))
                // Served only with kernel.bpf_stats_enabled=1, which this
                // host is not asked to turn on.
                .filter(|w| !w.starts_with("ward_bpf_program_"))
            {
                let family = name.strip_suffix("_bucket").unwrap_or(name);
                assert!(
                    served.contains(&format!("# TYPE {family} "))
                        || served
                            .contains(&format!("# TYPE {} ", family.trim_end_matches("_total"))),
                    "panel {:?} names `{name}`, which neither serves",
                    panel["title"]
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 12, "{queries}");
}
