//! The reviewer's web page, served by the coordinator over HTTPS.
//!
//! Server-rendered HTML (`pages`), with one small script for live updates
//! and one stylesheet, both served from here (the content security policy
//! allows nothing else). People sign in through the first `[[oidc]]`
//! issuer with the authorization code flow and PKCE (`auth`); the session
//! they get is the one `ward login` gets, in a `__Host-` cookie. Every
//! decision goes through the same service calls as gRPC, so the page can
//! do nothing the CLI cannot.
//!
//! - `auth`: sign-in, cookies, CSRF, who is asking;
//! - `pages`: the HTML;
//! - `routes`: what each address does.

mod auth;
mod pages;
mod routes;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::service::{CoordinatorService, Sso};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web.listen `{listen}`: {source}")]
    Listen {
        listen: String,
        source: std::io::Error,
    },
    #[error("the web page's TLS ({what}): {reason}")]
    Tls { what: &'static str, reason: String },
}

/// Everything a page handler needs.
pub struct Web {
    pub(crate) service: CoordinatorService,
    pub(crate) sso: Sso,
    /// `https://host:port`, as browsers reach the page.
    pub(crate) public_url: String,
    /// Moves with every audited change on any replica.
    pub(crate) version: watch::Receiver<i64>,
    /// How long the session cookie lasts (the session's own lifetime).
    pub(crate) session_ttl: Duration,
}

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Connections one address may hold: nobody takes every slot alone.
const MAX_PER_PEER: usize = 32;
/// A request's headers must arrive within this, and an idle connection
/// is closed after it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the audit head is read for live updates.
const POLL: Duration = Duration::from_millis(500);

/// Serves the page on `listen` until the process ends.
pub async fn serve(
    listen: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    web: Web,
) -> Result<(), WebError> {
    let acceptor = acceptor(cert, key)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| WebError::Listen {
            listen: listen.to_owned(),
            source,
        })?;
    tracing::info!(listen, public_url = %web.public_url, "serving the reviewer's page (HTTPS)");
    let app = routes::router(Arc::new(web));
    let mut tls = TlsListener::spawn(listener, acceptor);
    tokio::spawn(async move {
        while let Some((conn, peer)) = tls.ready.recv().await {
            // Handlers learn the peer's address (for the audit) this way.
            let service = hyper_util::service::TowerToHyperService::new(
                app.clone().layer(axum::Extension(Peer(peer))),
            );
            tokio::spawn(async move {
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                if let Err(e) = http
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "web connection ended");
                }
            });
        }
    });
    Ok(())
}

/// The address a request came from.
#[derive(Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

/// Follows the audit head for live updates: one read per `POLL` for the
/// whole page, however many browsers watch.
pub fn follow_changes(service: CoordinatorService) -> watch::Receiver<i64> {
    let (tx, rx) = watch::channel(0);
    tokio::spawn(async move {
        loop {
            let head = service
                .read(|_, store| Ok(store.read(|tx| tx.audit_head())?))
                .await;
            match head {
                Ok(h) => {
                    tx.send_if_modified(|v| std::mem::replace(v, h) != h);
                }
                Err(e) => tracing::warn!(error = %e, "reading the audit head for live updates"),
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    });
    rx
}

fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, WebError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let tls = |what, reason: String| WebError::Tls { what, reason };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls("cert", format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls("key", format!("{}: {e}", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls("protocols", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| tls("cert and key", e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepted TLS connections: handshakes run in tasks of their own, so a
/// slow client never holds up the next one.
struct TlsListener {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
}

impl TlsListener {
    fn spawn(listener: tokio::net::TcpListener, acceptor: TlsAcceptor) -> TlsListener {
        let (tx, ready) = mpsc::channel(64);
        let per_peer: Arc<Mutex<HashMap<IpAddr, usize>>> = Default::default();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "web accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = PeerSlot::take(&per_peer, peer.ip()) else {
                    tracing::warn!(%peer, "web: too many connections from one address");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let shake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    if let Ok(Ok(tls)) = shake {
                        let conn = Conn {
                            tls,
                            _slot: permit,
                            _peer: slot,
                        };
                        let _ = tx.send((conn, peer)).await;
                    }
                });
            }
        });
        TlsListener { ready }
    }
}

/// One of an address's connections; counted down when dropped.
struct PeerSlot {
    peer: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PeerSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, peer: IpAddr) -> Option<PeerSlot> {
        let mut held = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(peer).or_default();
        if *n >= MAX_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peer,
            counts: counts.clone(),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.peer);
            }
        }
    }
}

/// One connection, holding its slot until it closes.
pub(crate) struct Conn {
    tls: TlsStream<tokio::net::TcpStream>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _peer: PeerSlot,
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}
