//! Runs the agent: the engine, its background tasks, and both transports.

use std::{future::Future, os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use tokio::{net::UnixListener, sync::Mutex};
use tokio_stream::{StreamExt, wrappers::UnixListenerStream};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use ward_proto::{transport, v1::agent_server::AgentServer};

use super::{
    config::{Config, TlsSection},
    engine::{Engine, EngineError},
    peer::{self, PeerStream},
    service::{AgentService, SignedPushes, Transport},
    store::Store,
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
    #[error("metrics.listen `{listen}`: {source}")]
    MetricsBind {
        listen: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}; wardd exits so that its service manager restarts it (enforcement stays pinned)")]
    TaskStopped(String),
}

/// wardd's background tasks. None may stop while wardd serves: if one
/// ends or panics, wardd exits non-zero, saying which, and systemd
/// (`Restart=on-failure`) starts it again; the pinned programs enforce
/// throughout.
#[derive(Default)]
struct Essential {
    tasks: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Essential {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits until a task stops; says which and how.
    async fn stopped(&mut self) -> String {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => format!("background task `{}` stopped", self.name(id)),
            Some(Err(e)) => {
                let how = if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                format!("background task `{}` {how}", self.name(e.id()))
            }
            None => std::future::pending().await,
        }
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("unknown")
    }
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

    let mut essential = Essential::default();
    if let Some(m) = &config.metrics {
        let listener = ward_proto::metrics::bind(&m.listen)
            .await
            .map_err(|source| ServeError::MetricsBind {
                listen: m.listen.clone(),
                source,
            })?;
        tracing::info!(listen = %m.listen, "serving /metrics and /healthz");
        let scraped = engine.clone();
        essential.spawn("metrics", async move {
            if let Err(e) = super::metrics::serve(listener, scraped).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    let pump = engine.clone();
    essential.spawn("kernel event pump", async move {
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
        essential.spawn(
            "coordinator channel",
            super::fleet::run(engine.clone(), section, host, labels),
        );
    }
    if let Some(source) = config.policy.as_ref().and_then(|p| p.ldap.clone()) {
        essential.spawn(
            "LDAP directory poller",
            super::ldap::run(engine.clone(), source),
        );
    }
    const TICK: Duration = Duration::from_millis(200);
    let ticker = engine.clone();
    essential.spawn("lifecycle ticker", async move {
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

    // The kernel ends a held connection at its next send or receive on its
    // own; this resets it at the deadline itself, so its peer sees the end
    // then. Revokes and policy changes reset at once, where they apply.
    // The reset at a deadline takes no engine lock: a store write in
    // progress must not delay it.
    const TEARDOWN_POLL: Duration = Duration::from_millis(100);
    let resetter = engine.clone();
    essential.spawn("connection teardown", async move {
        // Deadlines that passed while no agent ran.
        resetter.lock().await.end_connections();
        let mut handle = None;
        let mut said = false;
        let mut handled = crate::enforcer::boot_ns();
        // The last rule change's pass that has been followed by a sweep.
        let mut swept = 0;
        loop {
            if handle.is_none() {
                match resetter.lock().await.teardown_handle() {
                    Ok(h) => handle = Some(h),
                    Err(e) if !said => {
                        said = true;
                        tracing::error!(error = %e, "connection teardown unavailable: connections whose permission ends are not reset");
                    }
                    Err(_) => {}
                }
            }
            // After the last deadline handled, not after now: one that
            // passed while the engine was busy is handled at once.
            let (now, next, ended) = {
                let e = resetter.lock().await;
                (
                    crate::enforcer::boot_ns(),
                    e.next_connect_deadline(handled),
                    e.connections_ended_at(),
                )
            };
            match (next, handle.take()) {
                // Within the next poll and the lead reset_at needs.
                (Some(deadline), Some(h))
                    if deadline <= now + TEARDOWN_POLL.as_nanos() as u64 + TEARDOWN_LEAD =>
                {
                    handle = reset_at(deadline, h).await;
                    handled = deadline;
                }
                // A rule change ended connections a moment ago: sweep
                // again for connects that raced its pass.
                (_, Some(mut h)) if ended > swept && now >= ended + SWEEP_AFTER => {
                    swept = ended;
                    handle = tokio::task::spawn_blocking(move || {
                        crate::enforcer::log_teardown(h.run());
                        h
                    })
                    .await
                    .ok();
                }
                (_, h) => {
                    handle = h;
                    tokio::time::sleep(TEARDOWN_POLL).await;
                }
            }
        }
    });

    // Connection limits, not the default 1,024 descriptors, should decide
    // how many callers are served.
    if let Err(e) = transport::raise_descriptor_limit() {
        tracing::warn!(error = %e, "could not raise the descriptor limit");
    }
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    // Listings read from their own connection, off the engine lock.
    let reader = Store::open(&config.agent.state_dir).map_err(EngineError::from)?;
    let reader = Arc::new(std::sync::Mutex::new(reader));
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
                reader.clone(),
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
            managed_uids: config.enforce.managed_uids.clone(),
        },
        reader,
    );
    let mut stop = stop_tx.subscribe();
    let slots = transport::Slots::new(
        transport::Limits {
            total: config.agent.max_local_connections,
            per_peer: config.agent.max_local_connections_per_user,
        },
        "agent socket",
    );
    let local_server = transport::server()
        .add_service(AgentServer::new(svc).max_decoding_message_size(transport::MAX_REQUEST_BYTES))
        .serve_with_incoming_shutdown(accepted(local, slots), async move {
            let _ = stop.recv().await;
        });

    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });
    tracing::info!(socket = %config.agent.socket.display(), "serving on the local socket");
    let servers = async {
        match tls_server {
            Some(tls) => {
                let (a, b) = tokio::join!(local_server, tls);
                a?;
                b?;
            }
            None => local_server.await?,
        }
        Ok::<(), ServeError>(())
    };
    tokio::select! {
        served = servers => served?,
        why = essential.stopped() => {
            tracing::error!(why = %why, "wardd cannot go on without it; exiting");
            engine.lock().await.flush_audit();
            return Err(ServeError::TaskStopped(why));
        }
    }
    signal.abort();
    engine.lock().await.flush_audit();
    let _ = std::fs::remove_file(&config.agent.socket);
    tracing::info!("wardd stopped; enforcement stays pinned");
    Ok(())
}

/// The local socket's connections, each with the credentials it was made
/// with; a non-root user over the connection limits is closed at once.
fn accepted(
    listener: UnixListener,
    slots: Arc<transport::Slots<u32>>,
) -> impl tokio_stream::Stream<Item = std::io::Result<PeerStream>> {
    UnixListenerStream::new(listener).filter_map(move |conn| match conn {
        Ok(stream) => peer::admit(stream, &slots).map(Ok),
        // Out of descriptors, say: the server goes on accepting.
        Err(e) => {
            tracing::warn!(error = %e, "accepting a local connection failed");
            None
        }
    })
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
    reader: Arc<std::sync::Mutex<Store>>,
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
    let addr: std::net::SocketAddr = tls
        .listen
        .parse()
        .map_err(|_| ServeError::TlsListen(tls.listen.clone()))?;
    let svc = AgentService::new(
        engine,
        Transport::Tls {
            allowed: tls.allowed_clients.clone(),
            signed,
        },
        reader,
    );
    let server = transport::server()
        .tls_config(
            ServerTlsConfig::new()
                .identity(identity)
                .client_ca_root(ca)
                .timeout(transport::HANDSHAKE_TIMEOUT),
        )?
        .add_service(AgentServer::new(svc).max_decoding_message_size(transport::MAX_REQUEST_BYTES));
    // Bound now, not when first polled: once the local socket accepts,
    // every listener does (callers and tests take that as "ready").
    let bind_err = |source| ServeError::TlsBind {
        listen: tls.listen.clone(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(bind_err)?;
    let incoming = transport::Incoming::new(
        listener,
        transport::Limits {
            total: tls.max_connections,
            per_peer: tls.max_connections_per_peer,
        },
        "agent tls",
    );
    tracing::info!(listen = %tls.listen, "serving mutual TLS");
    Ok(server.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop.recv().await;
    }))
}

/// How long after a rule change's teardown pass a second one sweeps up
/// connects that raced it (their hook ran before the change; their
/// socket was not yet found): time for such a connect to reach its SYN.
const SWEEP_AFTER: u64 = 20_000_000;

/// How long before a deadline the look-ahead runs: longer than a pass
/// takes (about 1 ms over every TCP socket of a host, up to 20 ms seen on
/// a busy one).
const LOOK_AHEAD: u64 = 50_000_000;
/// How long before the deadline [`reset_at`] spins rather than sleeps.
const SPIN: u64 = 2_000_000;
/// tokio's timer wakes [`reset_at`] this long before the deadline.
const COARSE_MARGIN: u64 = LOOK_AHEAD + 2_000_000;
/// How far ahead of a deadline [`reset_at`] must start.
const TEARDOWN_LEAD: u64 = COARSE_MARGIN + 5_000_000;

/// At `deadline` on the boot clock (`CLOCK_BOOTTIME`, the kernel's clock
/// for deadlines), to within the timer slack, resets the connections whose
/// permission ended. The kernel is asked which they are shortly before
/// (a look-ahead pass, as of the deadline), so that at the deadline only
/// the resets remain; a whole pass follows for what changed meanwhile.
/// tokio's millisecond timer waits for all but the last few milliseconds,
/// then a blocking thread sleeps on the boot clock itself, and spins the
/// last two when there is something to reset.
async fn reset_at(
    deadline: u64,
    mut handle: crate::enforcer::TeardownHandle,
) -> Option<crate::enforcer::TeardownHandle> {
    let now = crate::enforcer::boot_ns();
    if deadline > now + COARSE_MARGIN {
        tokio::time::sleep(Duration::from_nanos(deadline - now - COARSE_MARGIN)).await;
    }
    let done = tokio::task::spawn_blocking(move || {
        sleep_until_boot_ns(deadline.saturating_sub(LOOK_AHEAD));
        let foreseen = match handle.foresee(deadline) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "look-ahead teardown pass failed; a whole pass runs at the deadline");
                None
            }
        };
        let ready = crate::enforcer::boot_ns();
        let due = foreseen.as_ref().is_some_and(|f| !f.ending().is_empty());
        // A spinning thread that ordinary tasks preempt resets late (up to
        // 2 ms seen on a 2-CPU host): the last stretch and the resets run
        // at real-time priority when a reset is due.
        let realtime = due.then(Realtime::raise);
        if due {
            // A sleeping CPU was seen waking up to 1.4 ms late: spin the
            // last stretch when a reset is due, so it is not.
            sleep_until_boot_ns(deadline.saturating_sub(SPIN));
            while crate::enforcer::boot_ns() < deadline {
                std::hint::spin_loop();
            }
        } else {
            sleep_until_boot_ns(deadline);
        }
        let woke = crate::enforcer::boot_ns();
        let outcome = match foreseen {
            // Foreseen in time: the look-ahead stands (if no rule changed).
            Some(f) if ready < deadline => handle.reset_foreseen_then(f, || drop(realtime)),
            _ => handle.run(),
        };
        tracing::debug!(
            late_us = (woke - deadline) / 1000,
            took_us = (crate::enforcer::boot_ns() - woke) / 1000,
            foreseen_in_time = ready < deadline,
            ready_before_us = (deadline as i64 - ready as i64) / 1000,
            reset = outcome.as_ref().map_or(0, |t| t.reset),
            "teardown at a deadline"
        );
        crate::enforcer::log_teardown(outcome);
        handle
    })
    .await;
    match done {
        Ok(h) => Some(h),
        // The closure does not panic; if it ever did, the caller makes a
        // new handle.
        Err(e) => {
            tracing::error!(error = %e, "connection teardown thread failed");
            None
        }
    }
}

/// The calling thread at real-time priority (`SCHED_FIFO`, the lowest
/// level) until dropped; then its earlier policy again. Without
/// `CAP_SYS_NICE` (or under systemd's `RestrictRealtime=`) the thread
/// stays as it was, and says so once.
struct Realtime(Option<(libc::c_int, libc::sched_param)>);

impl Realtime {
    fn raise() -> Realtime {
        static SAID: std::sync::Once = std::sync::Once::new();
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` outlives the calls.
        let earlier = unsafe {
            let policy = libc::sched_getscheduler(0);
            (policy >= 0 && libc::sched_getparam(0, &mut param) == 0).then_some((policy, param))
        };
        let fifo = libc::sched_param { sched_priority: 1 };
        // SAFETY: as above.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) } != 0 {
            let e = std::io::Error::last_os_error();
            SAID.call_once(|| {
                tracing::warn!(error = %e, "connection resets run at ordinary priority; under load they may land later than 1 ms after a deadline (allow CAP_SYS_NICE and real-time scheduling)");
            });
            return Realtime(None);
        }
        Realtime(earlier)
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.0 {
            // SAFETY: restores what `raise` read for this same thread.
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

/// Sleeps until `at` on the boot clock; never wakes before it (a signal's
/// early wake-up sleeps again).
fn sleep_until_boot_ns(at: u64) {
    let spec = nix::sys::time::TimeSpec::from(Duration::from_nanos(at));
    while crate::enforcer::boot_ns() < at {
        let _ = nix::time::clock_nanosleep(
            nix::time::ClockId::CLOCK_BOOTTIME,
            nix::time::ClockNanosleepFlags::TIMER_ABSTIME,
            &spec,
        );
    }
}
