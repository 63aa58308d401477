//! Runs the coordinator: the store, policy, signer, sweeper and the TLS
//! server.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use std::sync::Mutex;

use tokio::sync::Notify;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use ward_policy::{Clock, Compiler, EntityDef, Env};
use ward_proto::{
    transport,
    v1::{coordinator_server::CoordinatorServer, enrolment_server::EnrolmentServer},
};

use crate::{
    config::Config,
    database::DatabaseError,
    enrolment::EnrolError,
    fleet::Fleet,
    service::{CoordinatorService, pump},
    signer::{Signer, SignerError},
    store::{Store, StoreError},
    webhook::WebhookError,
    workflow::{Rules, Workflow, WorkflowError},
};

/// Why the coordinator could not load what it decides with, or could not
/// serve.
///
/// Each variant names what failed (the file, directory, address or
/// server it concerns) and carries the cause as its `source()`, which its
/// message does not repeat: print the whole chain (as `ward-coordinator`
/// does, or with [`ward_proto::error_chain`]). Errors that already name
/// their file are passed through as they are.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The policy files or the directory do not read or check; the source
    /// lists every error, one per line, each located by file.
    #[error("policy")]
    Policy {
        #[source]
        source: ward_policy::LoadError,
    },
    /// The grant signing key.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// `database`, `database_ca` or `database_tls` are unusable.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The SQLite store under `state_dir`.
    #[error("opening the coordinator database in {}", dir.display())]
    Sqlite {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    /// The PostgreSQL store; `server` is its host and port (never the
    /// URL, which may carry a password).
    #[error("connecting to PostgreSQL at {server}")]
    Postgres {
        server: String,
        #[source]
        source: StoreError,
    },
    /// The webhooks' delivery cursor in the store.
    #[error("webhooks: preparing the delivery cursor")]
    WebhookCursor {
        #[source]
        source: WorkflowError,
    },
    /// A `[[webhooks]]` entry.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// The outbox position agents are delivered from.
    #[error("reading the outbox position")]
    Outbox {
        #[source]
        source: WorkflowError,
    },
    /// `cert`, `key` or `client_ca`.
    #[error("{field} {}", path.display())]
    TlsFile {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `listen` is not an address.
    #[error("listen `{listen}` is not ADDR:PORT")]
    ListenAddress {
        listen: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("metrics.listen `{listen}`")]
    MetricsListen {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    /// The fleet CA `[enrolment]` signs with.
    #[error(
        "enrolment: the fleet CA (client_ca {} and enrolment.ca_key {})",
        client_ca.display(),
        ca_key.display()
    )]
    FleetCa {
        client_ca: PathBuf,
        ca_key: PathBuf,
        #[source]
        source: EnrolError,
    },
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error("enrolment.listen `{listen}`")]
    EnrolmentListen {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The mutual-TLS configuration of the main listener.
    #[error("mutual TLS on {addr}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    /// The main listener stopped with an error.
    #[error("serving on {addr}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    /// A start-up step run off the async runtime panicked; `what` says
    /// which.
    #[error("{what}: the worker failed")]
    Worker {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Runs `f` off the async runtime (the stores are synchronous clients).
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ServerError::Worker { what, source })?
}

/// Reads one of the TLS files the config names.
fn read_tls(field: &'static str, path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::TlsFile {
        field,
        path: path.to_owned(),
        source,
    })
}

/// The policy and directory the config names, the directory joined by
/// `people` from LDAP; every error is named.
pub(crate) fn load_policy(
    config: &Config,
    people: Vec<EntityDef>,
) -> Result<Compiler, ServerError> {
    let (policies, directory) = ward_policy::load_sources_with(
        &config.policy.files,
        config.policy.directory.as_deref(),
        people,
    )
    .map_err(|source| ServerError::Policy { source })?;
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
pub fn open_store(config: &Config) -> Result<Store, ServerError> {
    match &config.database {
        Some(url) => {
            let target = crate::database::Target::new(
                url,
                config.database_ca.as_deref(),
                config.database_tls,
            )?;
            let server = target.server();
            Store::open_postgres(target).map_err(|source| ServerError::Postgres { server, source })
        }
        None => Store::open_sqlite(&config.state_dir).map_err(|source| ServerError::Sqlite {
            dir: config.state_dir.clone(),
            source,
        }),
    }
}

/// Device sign-ins waiting at a provider at once: each polls it.
const MAX_WAITING_SIGN_INS: usize = 256;

/// Loads everything the coordinator decides with; every error is named.
pub fn workflow(config: &Config) -> Result<Workflow, ServerError> {
    workflow_with(config, Vec::new())
}

/// [`workflow`], with people and groups read from LDAP.
fn workflow_with(config: &Config, people: Vec<EntityDef>) -> Result<Workflow, ServerError> {
    let policy = load_policy(config, people)?;
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
) -> Result<(), ServerError> {
    // The PostgreSQL client is synchronous: open it off the async runtime.
    // Taken before the policy is read: an edit made from here on is
    // noticed, even one made before the watcher first runs.
    let loaded_stamps = policy_stamps(&config);
    // People and groups from LDAP, when configured: read once before
    // serving, then polled.
    let people = Arc::new(Mutex::new(match &config.policy.ldap {
        Some(source) => crate::ldap::first_read(source).await,
        None => Vec::new(),
    }));
    let cfg = config.clone();
    let with_hooks = !config.webhooks.is_empty();
    let first_people = people.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let wf = blocking("loading the policy, signing key and store", move || {
        let mut wf = workflow_with(&cfg, first_people)?;
        if with_hooks {
            wf.init_notifications()
                .map_err(|source| ServerError::WebhookCursor { source })?;
        }
        Ok(wf)
    })
    .await?;
    tracing::info!(public_key = %wf.rules.signer.public_hex(), "grant signing key");
    let workflow = Arc::new(Mutex::new(wf));
    let fleet = Arc::new(Fleet::default());
    let hooks = crate::webhook::load(&config.webhooks)?;
    let changed = Arc::new(Notify::new());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    if let Some(m) = &config.metrics {
        let listener = ward_proto::metrics::bind(&m.listen)
            .await
            .map_err(|source| ServerError::MetricsListen {
                listen: m.listen.clone(),
                source,
            })?;
        let cfg = config.clone();
        let store = blocking("opening the metrics' store", move || open_store(&cfg)).await?;
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
    if let Some(source) = config.policy.ldap.clone() {
        tokio::spawn(crate::ldap::poll(
            source,
            config.clone(),
            people.clone(),
            workflow.clone(),
        ));
    }
    let sweeper = workflow.clone();
    let watched = config.clone();
    let watched_people = people.clone();
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
                let people = watched_people
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let reloaded = tokio::task::spawn_blocking(move || {
                    let policy = load_policy(&cfg, people)?;
                    wf.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .replace_policy(policy);
                    Ok::<_, ServerError>(())
                })
                .await;
                match reloaded {
                    Ok(Ok(())) => tracing::info!("policy reloaded"),
                    Ok(Err(e)) => tracing::error!(
                        error = %ward_proto::error_chain(&e),
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
    // Where delivery starts, read before any agent can subscribe: a
    // snapshot taken later reflects at least this, and the pump delivers
    // everything after it, so nothing committed in between is missed.
    let wf = workflow.clone();
    let head = blocking("reading the outbox position", move || {
        wf.lock()
            .unwrap_or_else(|p| p.into_inner())
            .outbox_head()
            .map_err(|source| ServerError::Outbox { source })
    })
    .await?;
    tokio::spawn(pump(
        head,
        workflow.clone(),
        fleet.clone(),
        changed.clone(),
        metrics.clone(),
    ));
    let identity = Identity::from_pem(
        read_tls("cert", &config.cert)?,
        read_tls("key", &config.key)?,
    );
    let ca = Certificate::from_pem(read_tls("client_ca", &config.client_ca)?);
    let addr: SocketAddr = config
        .listen
        .parse()
        .map_err(|source| ServerError::ListenAddress {
            listen: config.listen.clone(),
            source,
        })?;
    let reader = {
        let cfg = config.clone();
        blocking("opening the read path's store", move || open_store(&cfg)).await?
    };
    let mut service = CoordinatorService::new(
        workflow.clone(),
        Arc::new(Mutex::new(reader)),
        fleet,
        changed,
        config.stream_buffer,
        metrics,
    );
    let sso = (!config.oidc.is_empty()).then(|| {
        let signer = workflow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rules
            .signer
            .clone();
        let issuers = Arc::new(crate::oidc::Issuers::new(&config.oidc));
        crate::service::Sso {
            sessions: Arc::new(crate::session::Sessions::new(
                signer,
                issuers.names(),
                config.session_ttl,
            )),
            issuers,
            waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING_SIGN_INS)),
            waiting_by_peer: Default::default(),
        }
    });
    if let Some(sso) = &sso {
        service = service.with_sso(sso.clone());
        tracing::info!(issuers = ?sso.issuers.names(), "people may sign in through these issuers");
    }
    if let Some(e) = &config.enrolment {
        let ca = Arc::new(
            crate::enrolment::FleetCa::load(&config.client_ca, &e.ca_key, e.agent_cert_ttl)
                .map_err(|source| ServerError::FleetCa {
                    client_ca: config.client_ca.clone(),
                    ca_key: e.ca_key.clone(),
                    source,
                })?,
        );
        service = service.with_fleet_ca(ca.clone());
        let listener = tokio::net::TcpListener::bind(&e.listen)
            .await
            .map_err(|source| ServerError::EnrolmentListen {
                listen: e.listen.clone(),
                source,
            })?;
        // The chain served includes the CA: joining agents check it
        // against the fingerprint in their token.
        let mut chain = read_tls("cert", &config.cert)?;
        if !String::from_utf8_lossy(&chain).contains(ca.ca_pem.trim()) {
            chain.extend_from_slice(ca.ca_pem.as_bytes());
        }
        let identity = Identity::from_pem(chain, read_tls("key", &config.key)?);
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
    if let (Some(w), Some(sso)) = (&config.web, &sso) {
        let web = crate::web::Web {
            version: crate::web::follow_changes(service.clone()),
            service: service.clone(),
            sso: sso.clone(),
            public_url: w.public_url.trim_end_matches('/').to_owned(),
            session_ttl: config.session_ttl,
        };
        crate::web::serve(&w.listen, &config.cert, &config.key, web).await?;
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
        .map_err(|source| ServerError::Listen { addr, source })?;
    let incoming = transport::Incoming::new(
        listener,
        transport::Limits {
            total: config.max_connections,
            per_peer: config.max_connections_per_peer,
        },
        "coordinator",
    );
    // With sign-in configured, a person may connect without a certificate
    // and present a session instead; each call still needs one or the
    // other (`service::caller`).
    tracing::info!(listen = %addr, sessions = sso.is_some(), "serving TLS");
    transport::server()
        .tls_config(
            ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(ca)
                .client_auth_optional(sso.is_some())
                .timeout(transport::HANDSHAKE_TIMEOUT),
        )
        .map_err(|source| ServerError::Tls { addr, source })?
        .add_service(
            CoordinatorServer::new(service).max_decoding_message_size(transport::MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|source| ServerError::Serve { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &str) -> Config {
        let text = format!(
            "listen = \"127.0.0.1:0\"\ncert = \"c.pem\"\nkey = \"c.key\"\n\
             client_ca = \"ca.pem\"\nstate_dir = \"{}\"\nsigning_key = \"s.key\"\n\
             {extra}\n[policy]\nfiles = [\"{}\"]\n",
            dir.join("state").display(),
            dir.join("policy.cedar").display(),
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn errors_name_what_failed_and_keep_the_cause() {
        let dir = std::env::temp_dir().join(format!("ward-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        std::fs::write(dir.join("policy.cedar"), "permit(").unwrap();
        let e = load_policy(&config(&dir, ""), Vec::new()).err().unwrap();
        assert!(matches!(e, ServerError::Policy { .. }), "{e:?}");
        let text = ward_proto::error_chain(&e);
        assert!(text.starts_with("policy: "), "{text}");
        assert!(text.contains("policy.cedar"), "{text}");

        // A state_dir that cannot be made: named, with the reason.
        std::fs::write(dir.join("state"), "a file").unwrap();
        let e = open_store(&config(&dir, "")).err().unwrap();
        match &e {
            ServerError::Sqlite { dir: d, .. } => assert_eq!(d, &dir.join("state")),
            other => panic!("{other:?}"),
        }
        assert!(std::error::Error::source(&e).is_some());

        // The PostgreSQL server is named, never its password.
        let e = open_store(&config(
            &dir,
            "database = \"postgres://ward:s3cret@127.0.0.1:1/ward\"",
        ))
        .err()
        .unwrap();
        let text = ward_proto::error_chain(&e);
        assert!(
            text.starts_with("connecting to PostgreSQL at 127.0.0.1:1: "),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
