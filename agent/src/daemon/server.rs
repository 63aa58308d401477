//! Runs the agent: the engine, its background tasks, and both transports.

use std::{future::Future, os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use tokio::{net::UnixListener, sync::Mutex};
use tokio_stream::{StreamExt, wrappers::UnixListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use ward_proto::v1::agent_server::AgentServer;

use super::{
    config::{Config, TlsSection},
    engine::{Engine, EngineError},
    peer::PeerStream,
    service::{AgentService, SignedPushes, Transport},
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("socket {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("tls.{field} {path}: {source}")]
    TlsFile {
        field: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("tls.listen `{0}` is not ADDR:PORT")]
    TlsListen(String),
    #[error("tls.listen `{listen}`: cannot bind: {source}")]
    TlsBind {
        listen: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` completes. Enforcement stays pinned after.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (engine, mut events) = Engine::start(config.clone())?;
    crate::memory::trim();
    let startup = engine.startup.clone();
    tracing::info!(
        kernel = %startup.kernel,
        file_and_exec = startup.file_and_exec,
        network = startup.network_hook,
        adopted = startup.adopted,
        "wardd started"
    );
    let engine = Arc::new(Mutex::new(engine));

    let pump = engine.clone();
    tokio::spawn(async move {
        loop {
            match events.next().await {
                Ok(e) => {
                    if let Err(err) = pump.lock().await.kernel_event(e) {
                        tracing::error!(error = %err, "could not record a kernel event");
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "kernel event stream failed");
                    break;
                }
            }
        }
    });
    if let Some(section) = config.coordinator.clone() {
        let labels = config
            .agent
            .host_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let host = config.host_name();
        tokio::spawn(super::fleet::run(engine.clone(), section, host, labels));
    }
    const TICK: Duration = Duration::from_millis(200);
    let ticker = engine.clone();
    tokio::spawn(async move {
        loop {
            // Every 200 ms, and exactly at a time-window boundary, so a
            // window that opens does so when the clock says it does.
            let wait = ticker.lock().await.policy_boundary().map_or(TICK, |b| {
                // Already past: recompile at once.
                b.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .min(TICK)
            });
            tokio::time::sleep(wait).await;
            let mut engine = ticker.lock().await;
            if let Err(err) = engine.tick() {
                tracing::error!(error = %err, "grant lifecycle tick failed");
            }
            if let Err(err) = engine.policy_tick() {
                tracing::error!(error = %err, "policy tick failed");
            }
        }
    });

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let tls_server = match &config.tls {
        Some(tls) => {
            if tls.allow_unsigned_pushes {
                tracing::warn!(
                    "tls.allow_unsigned_pushes is on: allowed TLS clients may push unsigned grants (break-glass)"
                );
            }
            let signed = SignedPushes {
                keys: config.tls_push_keys(),
                host: config.host_name(),
                allow_unsigned: tls.allow_unsigned_pushes,
            };
            Some(tls_server(
                tls,
                signed,
                engine.clone(),
                stop_tx.subscribe(),
            )?)
        }
        None => None,
    };
    let local = local_listener(&config.agent.socket)?;
    let svc = AgentService::new(
        engine.clone(),
        Transport::Local {
            admin_group: config.agent.admin_group.clone(),
        },
    );
    let mut stop = stop_tx.subscribe();
    let local_server = Server::builder()
        .add_service(AgentServer::new(svc))
        .serve_with_incoming_shutdown(accepted(local), async move {
            let _ = stop.recv().await;
        });

    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });
    tracing::info!(socket = %config.agent.socket.display(), "serving on the local socket");
    match tls_server {
        Some(tls) => {
            let (a, b) = tokio::join!(local_server, tls);
            a?;
            b?;
        }
        None => local_server.await?,
    }
    signal.abort();
    let _ = std::fs::remove_file(&config.agent.socket);
    tracing::info!("wardd stopped; enforcement stays pinned");
    Ok(())
}

/// The local socket's connections, each with the credentials it was made
/// with.
fn accepted(
    listener: UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<PeerStream>> {
    UnixListenerStream::new(listener).map(|conn| conn.map(PeerStream::accept))
}

/// Binds the local socket: any local user may connect; each call is
/// authorized from the caller's kernel credentials.
fn local_listener(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

fn tls_server(
    tls: &TlsSection,
    signed: SignedPushes,
    engine: Arc<Mutex<Engine>>,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>>, ServeError> {
    let read = |field: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            field,
            path: path.to_owned(),
            source,
        })
    };
    let identity = Identity::from_pem(read("cert", &tls.cert)?, read("key", &tls.key)?);
    let ca = Certificate::from_pem(read("client_ca", &tls.client_ca)?);
    let addr = tls
        .listen
        .parse()
        .map_err(|_| ServeError::TlsListen(tls.listen.clone()))?;
    let svc = AgentService::new(
        engine,
        Transport::Tls {
            allowed: tls.allowed_clients.clone(),
            signed,
        },
    );
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity).client_ca_root(ca))?
        .add_service(AgentServer::new(svc));
    // Bound now, not when first polled: once the local socket accepts,
    // every listener does (callers and tests take that as "ready").
    let incoming = tonic::transport::server::TcpIncoming::bind(addr)
        .map_err(|source| ServeError::TlsBind {
            listen: tls.listen.clone(),
            source,
        })?
        .with_nodelay(Some(true));
    tracing::info!(listen = %tls.listen, "serving mutual TLS");
    Ok(server.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop.recv().await;
    }))
}
