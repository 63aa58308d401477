//! The coordinator's channel: gRPC over mutual TLS, with client identities
//! checked against the config.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use ward_proto::v1::{self as pb, agent_client::AgentClient, object, subject};
use ward_tests::{
    OpenOutcome,
    pki::{ca, leaf},
};

use crate::daemon::host;

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

fn grant(id: &str, workload: &str, addr: &std::net::SocketAddr) -> pb::PushGrantRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    pb::PushGrantRequest {
        grant: Some(pb::Grant {
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
            hosts: Vec::new(),
            approvers: vec!["bob".into()],
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_pushes_work_and_strangers_are_refused() {
    let authority = ca("ward test CA");
    let rogue = ca("rogue CA");
    let server = leaf(&authority, "localhost", false);
    let coordinator = leaf(&authority, "coordinator.test", true);
    let intruder = leaf(&authority, "intruder.test", true);
    let forged = leaf(&rogue, "coordinator.test", true);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = ward_tests::TempDir::new("tls-pki");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let tls = format!(
        "\n[tls]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nallowed_clients = [\"coordinator.test\"]\n",
        write("server.pem", &server.0),
        write("server.key", &server.1),
        write("ca.pem", &authority.pem()),
    );
    let h = host("tls", &tls);
    let _wardd = h.start();
    let ca_pem = authority.pem();

    let mut good = client(port, &ca_pem, Some(&coordinator))
        .await
        .expect("coordinator connects");
    let first = grant("tls-1", &h.managed_workload(), &h.addr);
    let pushed = good
        .push_grant(first.clone())
        .await
        .expect("push over mTLS")
        .into_inner();
    assert!(pushed.created);
    assert_eq!(
        h.connect(),
        OpenOutcome::Opened,
        "the pushed grant is enforced"
    );
    let again = good.push_grant(first.clone()).await.unwrap().into_inner();
    assert!(!again.created, "pushing the same grant twice is idempotent");
    let mut changed = first.clone();
    if let Some(g) = changed.grant.as_mut() {
        g.reason = "something else".into();
    }
    let err = good.push_grant(changed).await.unwrap_err();
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

    // Right CA, identity not allowed: authenticated, not authorized.
    let mut stranger = client(port, &ca_pem, Some(&intruder))
        .await
        .expect("handshake succeeds");
    let err = stranger
        .push_grant(grant("tls-2", &h.managed_workload(), &h.addr))
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
    assert!(
        !h.grants().iter().any(|g| g["id"] == "tls-2"),
        "nothing from the refused caller was stored"
    );
    let refusals: Vec<_> = h
        .audit()
        .into_iter()
        .filter(|r| r["kind"] == "call_refused")
        .collect();
    assert!(!refusals.is_empty(), "the refusal is audited");
    let audit_text = std::fs::read_to_string(h.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !audit_text.contains("PRIVATE KEY"),
        "no secrets in the audit log"
    );
}
