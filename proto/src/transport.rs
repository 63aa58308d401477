//! How ward's gRPC connections stay bounded and alive, on both ends.
//!
//! - Both ends send HTTP/2 PINGs, so a dead or black-holed peer is noticed
//!   within seconds (a client) or a minute (a server), not never.
//! - A TLS handshake must finish within `HANDSHAKE_TIMEOUT`; a listener
//!   admits at most so many connections in all and per peer address
//!   ([`Slots`]), so idle sockets cannot exhaust a server's descriptors.
//! - No call decodes more than `MAX_REQUEST_BYTES`.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A client (an agent to its coordinator) PINGs every this long, idle or
/// not, and drops a connection whose PING goes unanswered for
/// `CLIENT_KEEPALIVE_TIMEOUT`: a black-holed coordinator is noticed within
/// 15 s and the agent resyncs elsewhere or later.
pub const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const CLIENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A server PINGs far less often. It has thousands of connections and
/// only needs to free dead peers' slots; at 10,000 agents a short timeout
/// closes healthy streams whose PONG waits behind a reconnect storm's
/// handshakes on a busy CPU.
pub const SERVER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const SERVER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A TLS handshake that takes longer is dropped: long enough for a fleet's
/// queued handshakes, short enough that idle sockets are freed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request message a server decodes.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// The largest message a client decodes: a snapshot of many grants.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Concurrent calls on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// How many connections a listener admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_peer: usize,
}

/// Connection slots, counted in all and per peer (an address, a uid).
/// A slot is held by its [`Slot`] and freed when that drops.
#[derive(Debug)]
pub struct Slots<K: Eq + Hash + Clone> {
    limits: Limits,
    what: &'static str,
    state: Mutex<SlotState<K>>,
}

#[derive(Debug)]
struct SlotState<K> {
    total: usize,
    per_peer: HashMap<K, usize>,
    refused: u64,
    last_warning: Option<Instant>,
}

impl<K: Eq + Hash + Clone + std::fmt::Display> Slots<K> {
    /// `what` names the listener in logs.
    pub fn new(limits: Limits, what: &'static str) -> Arc<Slots<K>> {
        Arc::new(Slots {
            limits,
            what,
            state: Mutex::new(SlotState {
                total: 0,
                per_peer: HashMap::new(),
                refused: 0,
                last_warning: None,
            }),
        })
    }

    /// A slot for `peer`, or None when either limit is reached. Refusals
    /// are logged at most every 10 s, with a count: a flood must not
    /// flood the log too.
    pub fn admit(self: &Arc<Self>, peer: K) -> Option<Slot<K>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine = s.per_peer.get(&peer).copied().unwrap_or(0);
        if s.total >= self.limits.total || mine >= self.limits.per_peer {
            s.refused += 1;
            let due = s
                .last_warning
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
            if due {
                tracing::warn!(
                    listener = self.what,
                    peer = %peer,
                    open = s.total,
                    peer_open = mine,
                    max = self.limits.total,
                    max_per_peer = self.limits.per_peer,
                    refused = s.refused,
                    "connection limit reached; refusing connections"
                );
                s.last_warning = Some(Instant::now());
            }
            return None;
        }
        s.total += 1;
        *s.per_peer.entry(peer.clone()).or_insert(0) += 1;
        Some(Slot {
            slots: self.clone(),
            peer,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.lock().map(|s| s.total).unwrap_or(0)
    }
}

/// One admitted connection's slot.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash + Clone> {
    slots: Arc<Slots<K>>,
    peer: K,
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut s = self.slots.state.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
    }
}

/// A TCP listener's admitted connections.
pub struct Incoming {
    listener: TcpListener,
    slots: Arc<Slots<IpAddr>>,
    /// After an accept error (EMFILE, say), wait before the next.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Incoming {
    pub fn new(listener: TcpListener, limits: Limits, what: &'static str) -> Incoming {
        Incoming {
            listener,
            slots: Slots::new(limits, what),
            pause: None,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Stream for Incoming {
    type Item = io::Result<LimitedTcp>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = this.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((stream, peer)) => {
                    // Dropping the stream closes it: over the limit, the
                    // peer sees the connection end at once.
                    let Some(slot) = this.slots.admit(peer.ip()) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let info = stream.connect_info();
                    return Poll::Ready(Some(Ok(Held::new(stream, info, Some(slot)))));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; pausing accepts");
                    this.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                }
            }
        }
    }
}

/// An admitted connection: the stream, what it told at accept (tonic's
/// connect info), and its slot, freed when it closes.
pub struct Held<S, K: Eq + Hash + Clone, I> {
    stream: S,
    info: I,
    _slot: Option<Slot<K>>,
}

impl<S, K: Eq + Hash + Clone, I> Held<S, K, I> {
    pub fn new(stream: S, info: I, slot: Option<Slot<K>>) -> Self {
        Held {
            stream,
            info,
            _slot: slot,
        }
    }
}

/// An admitted TCP connection; tonic finds client certificates under
/// `TcpConnectInfo`.
pub type LimitedTcp = Held<TcpStream, IpAddr, TcpConnectInfo>;

impl<S, K, I> Connected for Held<S, K, I>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    I: Clone + Send + Sync + 'static,
{
    type ConnectInfo = I;

    fn connect_info(&self) -> I {
        self.info.clone()
    }
}

impl<S: AsyncRead + Unpin, K: Eq + Hash + Clone + Unpin, I: Unpin> AsyncRead for Held<S, K, I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin, K: Eq + Hash + Clone + Unpin, I: Unpin> AsyncWrite for Held<S, K, I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A gRPC server with ward's keepalives and per-connection limits.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(SERVER_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(SERVER_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_pending_accept_reset_streams(Some(64))
}

/// Raises this process's descriptor limit to its hard limit: a server's
/// connection limits, not the default 1,024, should decide.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_both_limits_and_free_on_drop() {
        let slots = Slots::new(
            Limits {
                total: 3,
                per_peer: 2,
            },
            "test",
        );
        let a1 = slots.admit("a").unwrap();
        let _a2 = slots.admit("a").unwrap();
        assert!(slots.admit("a").is_none(), "per peer");
        let _b1 = slots.admit("b").unwrap();
        assert!(slots.admit("c").is_none(), "in all");
        drop(a1);
        assert_eq!(slots.open(), 2);
        assert!(slots.admit("c").is_some());
    }
}
