//! Runs the coordinator: the store, policy, signer, sweeper and the TLS
//! server.

use std::{future::Future, sync::Arc, time::Duration};

use std::sync::Mutex;

use tokio::sync::Notify;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use ward_policy::{Clock, Compiler, Env};
use ward_proto::{
    transport,
    v1::{coordinator_server::CoordinatorServer, enrolment_server::EnrolmentServer},
};

use crate::{
    config::Config,
    fleet::Fleet,
    service::{CoordinatorService, pump},
    signer::Signer,
    store::Store,
    workflow::{Rules, Workflow},
};

/// The policy and directory the config names; every error is named.
fn load_policy(config: &Config) -> anyhow::Result<Compiler> {
    let (policies, directory) =
        ward_policy::load_sources(&config.policy.files, config.policy.directory.as_deref())
            .map_err(|e| anyhow::anyhow!("policy:\n{e}"))?;
    Ok(Compiler::new(
        policies,
        directory,
        Env::default(),
        &Clock::system(),
    ))
}

/// The policy and directory files, for noticing edits.
fn policy_stamps(config: &Config) -> Vec<Option<std::time::SystemTime>> {
    ward_policy::stamps(
        config
            .policy
            .files
            .iter()
            .map(|p| p.as_path())
            .chain(config.policy.directory.as_deref()),
    )
}

/// A connection to the configured store (the decision path and the read
/// path each have their own).
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    use anyhow::Context;
    Ok(match &config.database {
        Some(url) => {
            let target = crate::database::Target::new(
                url,
                config.database_ca.as_deref(),
                config.database_tls,
            )?;
            Store::open_postgres(target).context("connecting to PostgreSQL")?
        }
        None => {
            Store::open_sqlite(&config.state_dir).context("opening the coordinator database")?
        }
    })
}

/// Loads everything the coordinator decides with; every error is named.
pub fn workflow(config: &Config) -> anyhow::Result<Workflow> {
    let policy = load_policy(config)?;
    let signer = Signer::from_pkcs8(&config.signing_key)?;
    let store = open_store(config)?;
    Ok(Workflow {
        store,
        rules: Arc::new(Rules {
            policy,
            signer: Arc::new(signer),
            admins: config.admins.clone(),
        }),
        pending_ttl: config.pending_ttl,
        max_schedule_ahead: config.max_schedule_ahead,
    })
}

pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    // The PostgreSQL client is synchronous: open it off the async runtime.
    // Taken before the policy is read: an edit made from here on is
    // noticed, even one made before the watcher first runs.
    let loaded_stamps = policy_stamps(&config);
    let cfg = config.clone();
    let with_hooks = !config.webhooks.is_empty();
    let wf = tokio::task::spawn_blocking(move || -> anyhow::Result<Workflow> {
        let mut wf = workflow(&cfg)?;
        if with_hooks {
            wf.init_notifications()?;
        }
        Ok(wf)
    })
    .await??;
    tracing::info!(public_key = %wf.rules.signer.public_hex(), "grant signing key");
    let workflow = Arc::new(Mutex::new(wf));
    let fleet = Arc::new(Fleet::default());
    let hooks = crate::webhook::load(&config.webhooks)?;
    let changed = Arc::new(Notify::new());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    if let Some(m) = &config.metrics {
        let listener = ward_proto::metrics::bind(&m.listen)
            .await
            .with_context(|| format!("metrics.listen `{}`", m.listen))?;
        let cfg = config.clone();
        let store = tokio::task::spawn_blocking(move || open_store(&cfg)).await??;
        tracing::info!(listen = %m.listen, "serving /metrics and /healthz");
        let (metrics, fleet) = (metrics.clone(), fleet.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, metrics, store, fleet).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    tokio::spawn(crate::webhook::run(
        workflow.clone(),
        hooks,
        metrics.clone(),
    ));
    let sweeper = workflow.clone();
    let watched = config.clone();
    let swept_fleet = fleet.clone();
    tokio::spawn(async move {
        let mut stamps = loaded_stamps;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // An edited policy or directory decides from the next call on;
            // a bad one is refused whole and the previous keeps deciding.
            let now = policy_stamps(&watched);
            if now != stamps {
                stamps = now;
                let cfg = watched.clone();
                let wf = sweeper.clone();
                let reloaded = tokio::task::spawn_blocking(move || {
                    let policy = load_policy(&cfg)?;
                    wf.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace_policy(policy);
                    anyhow::Ok(())
                })
                .await;
                match reloaded {
                    Ok(Ok(())) => tracing::info!("policy reloaded"),
                    Ok(Err(e)) => tracing::error!(
                        error = %format!("{e:#}"),
                        "policy reload refused; the previous policy keeps deciding"
                    ),
                    Err(e) => tracing::error!(error = %e, "policy reload failed"),
                }
            }
            let wf = sweeper.clone();
            let swept = tokio::task::spawn_blocking(move || {
                let mut wf = wf.lock().unwrap_or_else(|p| p.into_inner());
                wf.sweep()?;
                wf.revoked_hosts()
            })
            .await;
            match swept {
                // A host revoked (here or by another replica, or by
                // `ward-coordinator host revoke`) loses its open streams.
                Ok(Ok(revoked)) => {
                    for host in revoked {
                        if swept_fleet.disconnect(&host) > 0 {
                            tracing::warn!(host = %host, "revoked host disconnected");
                        }
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "sweep failed"),
                Err(e) => tracing::error!(error = %e, "sweep panicked"),
            }
        }
    });
    tokio::spawn(pump(
        workflow.clone(),
        fleet.clone(),
        changed.clone(),
        metrics.clone(),
    ));
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("{what} {}", p.display()))
    };
    let identity = Identity::from_pem(read("cert", &config.cert)?, read("key", &config.key)?);
    let ca = Certificate::from_pem(read("client_ca", &config.client_ca)?);
    let addr: std::net::SocketAddr = config
        .listen
        .parse()
        .with_context(|| format!("listen `{}` is not ADDR:PORT", config.listen))?;
    let reader = {
        let cfg = config.clone();
        tokio::task::spawn_blocking(move || open_store(&cfg)).await??
    };
    let mut service = CoordinatorService::new(
        workflow.clone(),
        Arc::new(Mutex::new(reader)),
        fleet,
        changed,
        config.stream_buffer,
        metrics,
    );
    if let Some(e) = &config.enrolment {
        let ca = Arc::new(
            crate::enrolment::FleetCa::load(&config.client_ca, &e.ca_key, e.agent_cert_ttl)
                .context("enrolment: the fleet CA (client_ca and enrolment.ca_key)")?,
        );
        service = service.with_fleet_ca(ca.clone());
        let listener = tokio::net::TcpListener::bind(&e.listen)
            .await
            .with_context(|| format!("enrolment.listen `{}`", e.listen))?;
        // The chain served includes the CA: joining agents check it
        // against the fingerprint in their token.
        let mut chain = read("cert", &config.cert)?;
        if !String::from_utf8_lossy(&chain).contains(ca.ca_pem.trim()) {
            chain.extend_from_slice(ca.ca_pem.as_bytes());
        }
        let identity = Identity::from_pem(chain, read("key", &config.key)?);
        let incoming = transport::Incoming::new(
            listener,
            transport::Limits {
                total: 256,
                per_peer: 16,
            },
            "enrolment",
        );
        tracing::info!(listen = %e.listen, ca_sha256 = %ca.fingerprint, "serving enrolment (TLS, join tokens)");
        let join = crate::join::JoinService::new(workflow, ca);
        tokio::spawn(async move {
            let served = transport::server()
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(identity)
                        .timeout(transport::HANDSHAKE_TIMEOUT),
                )
                .map(|mut s| {
                    s.add_service(
                        EnrolmentServer::new(join)
                            .max_decoding_message_size(transport::MAX_REQUEST_BYTES),
                    )
                    .serve_with_incoming(incoming)
                });
            match served {
                Ok(f) => {
                    if let Err(e) = f.await {
                        tracing::error!(error = %e, "enrolment listener failed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "enrolment listener: TLS"),
            }
        });
    }
    match transport::raise_descriptor_limit() {
        Ok(n) if (n as usize) < config.max_connections + 64 => tracing::warn!(
            descriptors = n,
            max_connections = config.max_connections,
            "the descriptor limit is below max_connections; raise LimitNOFILE"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the descriptor limit"),
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let incoming = transport::Incoming::new(
        listener,
        transport::Limits {
            total: config.max_connections,
            per_peer: config.max_connections_per_peer,
        },
        "coordinator",
    );
    tracing::info!(listen = %addr, "serving mutual TLS");
    transport::server()
        .tls_config(
            ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(ca)
                .timeout(transport::HANDSHAKE_TIMEOUT),
        )?
        .add_service(
            CoordinatorServer::new(service).max_decoding_message_size(transport::MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
