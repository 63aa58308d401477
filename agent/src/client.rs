//! Talking to a running `wardd` over its local socket, and to the
//! coordinator over mutual TLS.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use ward_proto::v1::agent_client::AgentClient;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("wardd is not running: no socket at {0} (start it with `systemctl start wardd`)")]
    NoSocket(PathBuf),
    #[error("wardd is not accepting connections on {path}: {source}")]
    Refused {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to {path}: {source}")]
    Transport {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

/// A client on the unix socket at `path`.
pub async fn connect(path: &Path) -> Result<AgentClient<Channel>, ConnectError> {
    if !path.exists() {
        return Err(ConnectError::NoSocket(path.to_owned()));
    }
    // Probe once so a dead socket gives a clear error, not a gRPC one.
    tokio::net::UnixStream::connect(path)
        .await
        .map_err(|source| ConnectError::Refused {
            path: path.to_owned(),
            source,
        })?;
    let socket = path.to_owned();
    // The URI is required by the API and unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://wardd.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|source| ConnectError::Transport {
            path: path.to_owned(),
            source,
        })?;
    Ok(AgentClient::new(channel))
}

/// Where and as whom to reach the coordinator.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub url: String,
    /// The name in the server's certificate, if not the URL's host.
    pub domain: Option<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connecting to {url}: {source}")]
    Transport {
        url: String,
        source: tonic::transport::Error,
    },
}

/// A mutual-TLS channel to `t.url`.
pub async fn connect_tls(t: &TlsTarget) -> Result<Channel, TlsConnectError> {
    tls_channel(&t.url, t.domain.as_deref(), &t.ca, Some((&t.cert, &t.key))).await
}

/// A TLS channel to `url` that presents no client certificate: a person
/// signing in, or calling with a session.
pub async fn connect_tls_as_session(
    url: &str,
    domain: Option<&str>,
    ca: &Path,
) -> Result<Channel, TlsConnectError> {
    tls_channel(url, domain, ca, None).await
}

async fn tls_channel(
    url: &str,
    domain: Option<&str>,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Channel, TlsConnectError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsConnectError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(d) = domain {
        tls = tls.domain_name(d.to_owned());
    }
    let transport = |source| TlsConnectError::Transport {
        url: url.to_owned(),
        source,
    };
    Endpoint::from_shared(url.to_owned())
        .map_err(transport)?
        .tls_config(tls)
        .map_err(transport)?
        .connect_timeout(std::time::Duration::from_secs(5))
        // A dead or black-holed server is noticed in seconds.
        .http2_keep_alive_interval(ward_proto::transport::CLIENT_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(ward_proto::transport::CLIENT_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(transport)
}
