//! The coordinator's channel: gRPC over mutual TLS, with client identities
//! checked against the config.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use ward_proto::v1::{self as pb, agent_client::AgentClient, object, subject};
use ward_tests::{
    OpenOutcome, flood,
    pki::{Ca, ca, leaf},
    wardd::Wardd,
};

use crate::daemon::{Host, host};

async fn client(
    port: u16,
    ca: &str,
    id: Option<&(String, String)>,
) -> Result<AgentClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = id {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(AgentClient::new(channel))
}

fn grant(id: &str, workload: &str, addr: &std::net::SocketAddr, host: &str) -> pb::Grant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    pb::Grant {
        id: id.into(),
        subject: Some(pb::Subject {
            kind: Some(subject::Kind::Workload(workload.into())),
        }),
        operations: vec![pb::Operation::Connect as i32],
        objects: vec![pb::Object {
            kind: Some(object::Kind::Network(format!(
                "{}/32:{}",
                addr.ip(),
                addr.port()
            ))),
        }],
        expires_at_unix_ms: now + 600_000,
        reason: "CHG-7".into(),
        issuer: "coordinator.test".into(),
        hosts: vec![host.into()],
        approvers: vec!["bob".into()],
        ..Default::default()
    }
}

/// A coordinator's signing key, as `ward-coordinator` signs: ed25519 over
/// the grant's protobuf encoding.
struct Key(ring::signature::Ed25519KeyPair);

impl Key {
    fn new() -> Key {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Key(ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn public_hex(&self) -> String {
        use ring::signature::KeyPair;
        self.0
            .public_key()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn push(&self, g: &pb::Grant) -> pb::PushGrantRequest {
        use prost::Message;
        let bytes = g.encode_to_vec();
        pb::PushGrantRequest {
            signed: Some(pb::SignedGrant {
                signature: self.0.sign(&bytes).as_ref().to_vec(),
                grant: bytes,
                key_id: self.public_hex()[..16].to_owned(),
                host_proof: None,
            }),
            ..Default::default()
        }
    }
}

fn unsigned(g: &pb::Grant) -> pb::PushGrantRequest {
    pb::PushGrantRequest {
        grant: Some(g.clone()),
        ..Default::default()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// A host whose wardd listens for TLS on a free port with a server
/// certificate from `authority`, trusting it for clients named
/// `coordinator.test`; `extra` adds lines to `[tls]`. The directory holding
/// the PEM files is returned to keep it alive.
fn tls_host(tag: &str, authority: &Ca, extra: &str) -> (Host, u16, ward_tests::TempDir) {
    let server = leaf(authority, "localhost", false);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = ward_tests::TempDir::new(&format!("{tag}-pki"));
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let tls = format!(
        "\n[tls]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nallowed_clients = [\"coordinator.test\"]\n{extra}",
        write("server.pem", &server.0),
        write("server.key", &server.1),
        write("ca.pem", &authority.pem()),
    );
    (host(tag, &tls), port, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_pushes_work_and_strangers_are_refused() {
    let authority = ca("ward test CA");
    let rogue = ca("rogue CA");
    let coordinator = leaf(&authority, "coordinator.test", true);
    let intruder = leaf(&authority, "intruder.test", true);
    let forged = leaf(&rogue, "coordinator.test", true);
    let key = Key::new();
    let other_key = Key::new();
    let (h, port, _pki) = tls_host(
        "tls",
        &authority,
        &format!("public_keys = [\"{}\"]\n", key.public_hex()),
    );
    let _wardd = h.start();
    let ca_pem = authority.pem();
    let here = hostname();

    let mut good = client(port, &ca_pem, Some(&coordinator))
        .await
        .expect("coordinator connects");
    let first = grant("tls-1", &h.managed_workload(), &h.addr, &here);
    let pushed = good
        .push_grant(key.push(&first))
        .await
        .expect("a signed push over mTLS")
        .into_inner();
    assert!(pushed.created);
    assert_eq!(
        h.connect(),
        OpenOutcome::Opened,
        "the pushed grant is enforced"
    );
    let again = good
        .push_grant(key.push(&first))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created, "pushing the same grant twice is idempotent");
    let mut changed = first.clone();
    changed.reason = "something else".into();
    let err = good.push_grant(key.push(&changed)).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::AlreadyExists,
        "an id is never reused for other contents"
    );
    good.revoke_grant(pb::RevokeGrantRequest {
        id: "tls-1".into(),
        reason: "done".into(),
    })
    .await
    .unwrap();
    assert_eq!(h.connect(), OpenOutcome::Refused(libc::EPERM));

    // An allowed certificate says who calls, not what was approved: an
    // unsigned grant, one signed by a key the agent does not trust, and one
    // signed for another host are all refused.
    let workload = h.managed_workload();
    for (push, why) in [
        (
            unsigned(&grant("tls-3", &workload, &h.addr, &here)),
            "unsigned grants are refused over TLS",
        ),
        (
            other_key.push(&grant("tls-4", &workload, &h.addr, &here)),
            "does not verify",
        ),
        (
            key.push(&grant("tls-5", &workload, &h.addr, "elsewhere")),
            "not for this host",
        ),
    ] {
        let err = good.push_grant(push).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        assert!(err.message().contains(why), "{err}");
    }
    assert_eq!(
        h.connect(),
        OpenOutcome::Refused(libc::EPERM),
        "nothing refused was enforced"
    );

    // Right CA, identity not allowed: authenticated, not authorized.
    let mut stranger = client(port, &ca_pem, Some(&intruder))
        .await
        .expect("handshake succeeds");
    let err = stranger
        .push_grant(key.push(&grant("tls-2", &workload, &h.addr, &here)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // A certificate from another CA, or none: no session at all.
    for id in [Some(&forged), None] {
        let refused = match client(port, &ca_pem, id).await {
            Err(_) => true,
            Ok(mut c) => c.get_status(pb::GetStatusRequest {}).await.is_err(),
        };
        assert!(
            refused,
            "a client without a certificate from the configured CA is refused"
        );
    }
    let stored = h.grants();
    for id in ["tls-2", "tls-3", "tls-4", "tls-5"] {
        assert!(
            !stored.iter().any(|g| g["id"] == id),
            "nothing refused was stored ({id})"
        );
    }
    let audit = h.audit();
    assert!(
        audit.iter().any(|r| r["kind"] == "call_refused"),
        "the stranger's refusal is audited"
    );
    assert!(
        audit
            .iter()
            .filter(|r| r["kind"] == "grant_refused")
            .count()
            >= 3,
        "each refused push is audited"
    );
    let audit_text = std::fs::read_to_string(h.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !audit_text.contains("PRIVATE KEY"),
        "no secrets in the audit log"
    );
}

/// The break-glass switch: with `tls.allow_unsigned_pushes`, an allowed
/// client's unsigned grant is accepted (and wardd starts without keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_tls_pushes_need_the_break_glass_switch() {
    let authority = ca("ward test CA");
    let coordinator = leaf(&authority, "coordinator.test", true);
    let (h, port, _pki) = tls_host("tls-glass", &authority, "allow_unsigned_pushes = true\n");
    let _wardd = h.start();
    let mut c = client(port, &authority.pem(), Some(&coordinator))
        .await
        .expect("coordinator connects");
    let g = grant("glass-1", &h.managed_workload(), &h.addr, "any");
    c.push_grant(unsigned(&g)).await.expect("break-glass push");
    assert_eq!(h.connect(), OpenOutcome::Opened);
}

/// Issue 14.11: a flood of idle connections cannot exhaust wardd. With the
/// stock limit of 1,024 descriptors, a stranger opens 1,100 TCP
/// connections that never handshake and a local user holds 1,100 on the
/// socket. Root is still served, the coordinator's push still lands; the
/// idle connections are closed (over the per-address limit at once, the
/// rest at the handshake timeout); a call over the size limit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_cannot_exhaust_wardd_and_oversized_calls_are_refused() {
    let authority = ca("ward test CA");
    let coordinator = leaf(&authority, "coordinator.test", true);
    let key = Key::new();
    let (h, port, _pki) = tls_host(
        "flood",
        &authority,
        &format!("public_keys = [\"{}\"]\n", key.public_hex()),
    );
    let wardd = Wardd::start_with_nofile(&h.config, &h.socket, 1024);
    flood::raise_descriptor_limit();

    let stranger = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let idle: Vec<_> = (0..1100)
        .map(|_| flood::idle_tcp_from(stranger, port))
        .collect();
    let mut hog = flood::hold_local_connections(&h.socket, 1100);
    eprintln!("holding 1,100 local connections");

    eprintln!("1,100 idle TCP connections open");
    // Root is served on the socket, within seconds.
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut agent = ward_agent::client::connect(&h.socket).await?;
        agent.get_status(pb::GetStatusRequest {}).await?;
        anyhow::Ok(())
    })
    .await;
    assert!(
        matches!(status, Ok(Ok(()))),
        "root must be served during the flood: {status:?}\n{}",
        wardd.log()
    );
    // The coordinator (another address) pushes; the kernel enforces it.
    let mut c = client(port, &authority.pem(), Some(&coordinator))
        .await
        .expect("the coordinator connects during the flood");
    let g = grant("during-flood", &h.managed_workload(), &h.addr, &hostname());
    c.push_grant(key.push(&g)).await.expect("pushed");
    assert_eq!(h.connect(), OpenOutcome::Opened);

    eprintln!("root served, coordinator pushed");
    // Every idle connection is closed by the handshake timeout (10 s).
    let open = flood::still_open(&idle, std::time::Duration::from_secs(15));
    assert_eq!(open, 0, "idle connections wardd still holds");
    let _ = hog.kill();
    let _ = hog.wait();
    let log = wardd.log();
    assert!(
        log.contains("connection limit reached") && log.contains("agent socket"),
        "refusals are logged, once in a while: {log}"
    );
    assert!(
        log.matches("connection limit reached").count() < 20,
        "a flood does not flood the log"
    );

    // A call over the size limit is refused; wardd goes on.
    let mut big = grant("too-big", &h.managed_workload(), &h.addr, &hostname());
    big.reason = "x".repeat(1 << 20);
    let err = c
        .push_grant(key.push(&big))
        .await
        .expect_err("an oversized call is refused");
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
    let (code, out, err) = h.ward(&["grants", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("during-flood") && !out.contains("too-big"),
        "{out}"
    );
}
