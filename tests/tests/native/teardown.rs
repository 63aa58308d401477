//! A connection made under a grant ends when the grant does, for its peer
//! too: `wardd` resets it at the deadline and at revoke. Here, on the
//! host's cgroup hooks (no BPF LSM), against a real listener and a real
//! PostgreSQL server with a `psql` session, as a user would see it.

use std::{
    ffi::CString,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::{ffi::OsStrExt, process::CommandExt},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use ward_agent::cgroup::OwnedCgroup;
use ward_tests::{
    OpenOutcome,
    holder::{Holder, Target, Use},
};

use crate::daemon::{Host, host, host_protecting};

const DENIED: OpenOutcome = OpenOutcome::Refused(libc::EPERM);

/// What the peer sees next, waiting up to 10 s: data, the end, or a reset.
fn peer_sees(peer: &mut TcpStream) -> std::io::Result<usize> {
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut b = [0u8; 16];
    peer.read(&mut b)
}

fn is_reset(r: &std::io::Result<usize>) -> bool {
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_connection_is_reset_at_its_grants_deadline_and_at_revoke() {
    let h = host("reset", "");
    let _wardd = h.start();
    // Taken before the push, so never later than the grant's own start.
    let granted = Instant::now();
    let (code, out, err) = h.grant("g1", "2s");
    assert_eq!(code, 0, "{out}{err}");
    let mut holder = Holder::start(&h.sb.managed, Target::Tcp(h.addr));
    assert_eq!(
        holder.opened,
        OpenOutcome::Opened,
        "connected under the grant"
    );
    let (mut peer, _) = h.listener.accept().expect("accept");
    assert_eq!(holder.try_use(Use::Send), OpenOutcome::Opened);
    assert_eq!(peer_sees(&mut peer).expect("the byte"), 1);
    // Nothing but the deadline: the holder stays quiet, the peer waits.
    let seen = peer_sees(&mut peer);
    let after = granted.elapsed();
    assert!(is_reset(&seen), "the peer sees a reset: {seen:?}");
    assert!(
        after >= Duration::from_secs(2),
        "reset before the deadline ({after:?})"
    );
    assert_ne!(
        holder.try_use(Use::Send),
        OpenOutcome::Opened,
        "the holder's next send fails"
    );
    assert_eq!(h.connect(), DENIED, "a new connect after the deadline");

    let (code, _, err) = h.grant("g2", "1h");
    assert_eq!(code, 0, "{err}");
    let mut holder = Holder::start(&h.sb.managed, Target::Tcp(h.addr));
    assert_eq!(holder.opened, OpenOutcome::Opened);
    let (mut peer, _) = h.listener.accept().expect("accept");
    assert_eq!(holder.try_use(Use::Send), OpenOutcome::Opened);
    assert_eq!(peer_sees(&mut peer).expect("the byte"), 1);
    let (code, _, err) = h.ward(&["revoke", "g2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        is_reset(&peer_sees(&mut peer)),
        "the peer sees a reset at revoke"
    );
    assert_ne!(holder.try_use(Use::Send), OpenOutcome::Opened);
    assert_eq!(h.connect(), DENIED, "a new connect after revoke");
}

/// The look-ahead wardd takes before a deadline (so that at the deadline
/// only the resets remain) resets nothing early, and nothing a rule
/// written since allows: here through the library, on the cgroup hooks.
#[test]
fn a_look_ahead_resets_at_its_deadline_only_and_a_rule_written_since_voids_it() {
    use ward_abi::Op;
    use ward_agent::enforcer::{Expiry, NetPattern, Object, boot_ns};
    use ward_tests::lifecycle::{grant_for, protection};

    let sb = crate::connect::sandbox("ahead");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let object = Object::Net(NetPattern::parse(&format!("127.0.0.1/32:{}", addr.port())).unwrap());
    let mut enforcer = crate::connect::cgroup_enforcer(&sb, 1024);
    enforcer.manage_cgroup(sb.managed.id()).unwrap();
    enforcer.apply(&[protection(Op::Connect, &object)]).unwrap();
    let grant = |until: u64| {
        vec![grant_for(
            &sb.managed,
            Op::Connect,
            &object,
            1,
            Expiry::AtBootNs(until),
        )]
    };
    let deadline = boot_ns() + 1_500_000_000;
    enforcer.grant(1, grant(deadline)).unwrap();
    let mut holder = Holder::start(&sb.managed, Target::Tcp(addr));
    assert_eq!(
        holder.opened,
        OpenOutcome::Opened,
        "connected under the grant"
    );
    let (mut peer, _) = listener.accept().expect("accept");
    let mut handle = enforcer.teardown_handle().unwrap();

    let early = handle
        .foresee(deadline)
        .unwrap()
        .expect("no write under way");
    assert_eq!(
        early.ending().len(),
        1,
        "the look-ahead names the connection"
    );
    let t = handle.reset_foreseen(early).unwrap();
    assert_eq!(t.reset, 0, "nothing is reset before the deadline");

    let voided = handle
        .foresee(deadline)
        .unwrap()
        .expect("no write under way");
    assert_eq!(voided.ending().len(), 1);
    // Extended after the look-ahead, before the deadline.
    enforcer
        .grant(1, grant(boot_ns() + 3_600_000_000_000))
        .unwrap();
    assert!(!handle.stands(&voided), "a grant voids it");
    while boot_ns() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = handle.reset_foreseen(voided).unwrap();
    assert_eq!(t.reset, 0, "a rule written since the look-ahead voids it");
    assert_eq!(holder.try_use(Use::Send), OpenOutcome::Opened);
    assert_eq!(
        peer_sees(&mut peer).expect("the byte"),
        1,
        "still connected"
    );

    let deadline = boot_ns() + 1_000_000_000;
    enforcer.grant(1, grant(deadline)).unwrap();
    let other = Object::Net(NetPattern::parse("127.0.0.9/32:1").unwrap());
    enforcer
        .grant(
            2,
            vec![grant_for(
                &sb.managed,
                Op::Connect,
                &other,
                2,
                Expiry::Never,
            )],
        )
        .unwrap();
    let foreseen = handle
        .foresee(deadline)
        .unwrap()
        .expect("no write under way");
    assert_eq!(foreseen.ending().len(), 1);
    // Revoking allows can only end more: the look-ahead stands.
    enforcer.revoke(2).unwrap();
    assert!(
        handle.stands(&foreseen),
        "a revoke of allows leaves it standing"
    );
    while boot_ns() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = handle.reset_foreseen(foreseen).unwrap();
    assert_eq!(
        (t.reset, t.failed.len()),
        (1, 0),
        "reset at the deadline: {t:?}"
    );
    assert!(is_reset(&peer_sees(&mut peer)), "the peer sees the reset");
}

/// Where the kernel has no BPF LSM, no hook sees a held connection's
/// sends and receives, and the agent's reset ends it. With no agent there
/// (here the library, whose teardown nobody runs, as when wardd is down),
/// a connection past its deadline must still carry nothing more, either
/// way, and a connected UDP socket's send must fail. When a teardown pass
/// runs again, the peer sees the reset.
#[test]
fn past_its_deadline_a_held_connection_carries_nothing_with_no_agent_to_reset_it() {
    use std::net::{TcpListener, UdpSocket};
    use ward_abi::Op;
    use ward_agent::enforcer::{Expiry, NetPattern, Object, boot_ns};
    use ward_tests::lifecycle::{grant_for, protection};

    let sb = crate::connect::sandbox("quiet");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Another address, so that the TCP and UDP uses are told apart.
    let udp = UdpSocket::bind("127.0.0.2:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (tcp_addr, udp_addr) = (listener.local_addr().unwrap(), udp.local_addr().unwrap());
    let objects = [tcp_addr, udp_addr]
        .map(|a| Object::Net(NetPattern::parse(&format!("{}/32:{}", a.ip(), a.port())).unwrap()));
    let mut enforcer = crate::connect::cgroup_enforcer(&sb, 1024);
    enforcer.manage_cgroup(sb.managed.id()).unwrap();
    let protections: Vec<_> = objects.iter().map(|o| protection(Op::Connect, o)).collect();
    enforcer.apply(&protections).unwrap();
    let deadline = boot_ns() + 2_000_000_000;
    let grants = objects
        .iter()
        .map(|o| grant_for(&sb.managed, Op::Connect, o, 1, Expiry::AtBootNs(deadline)))
        .collect();
    enforcer.grant(1, grants).unwrap();

    let mut tcp = Holder::start(&sb.managed, Target::Tcp(tcp_addr));
    assert_eq!(tcp.opened, OpenOutcome::Opened, "connected under the grant");
    let (mut peer, _) = listener.accept().expect("accept");
    // One more, idle throughout: with nothing of its peer's unacknowledged,
    // only the agent's own reset can tell that peer the connection ended.
    let quiet = Holder::start(&sb.managed, Target::Tcp(tcp_addr));
    assert_eq!(quiet.opened, OpenOutcome::Opened);
    let (mut quiet_peer, _) = listener.accept().expect("accept");
    let mut dgram = Holder::start(&sb.managed, Target::Udp(udp_addr));
    assert_eq!(
        dgram.opened,
        OpenOutcome::Opened,
        "UDP connected under the grant"
    );
    let received = |udp: &UdpSocket| udp.recv(&mut [0u8; 4]).is_ok();
    // Under the grant, both ways.
    assert_eq!(tcp.try_use(Use::Send), OpenOutcome::Opened);
    assert_eq!(peer_sees(&mut peer).expect("the byte"), 1);
    peer.write_all(b"x").unwrap();
    wait_until(
        "the holder receives the peer's byte",
        Duration::from_secs(5),
        || tcp.try_use(Use::Received) == OpenOutcome::Opened,
    );
    assert_eq!(dgram.try_use(Use::Send), OpenOutcome::Opened);
    assert!(received(&udp), "the datagram arrives under the grant");

    while boot_ns() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past the deadline, nobody has reset anything.
    assert_eq!(
        dgram.try_use(Use::Send),
        OpenOutcome::Refused(libc::EPERM),
        "a connected UDP socket's send fails"
    );
    assert!(!received(&udp), "no datagram arrives");
    // TCP queues what it cannot send: the send itself may succeed.
    let _ = tcp.try_use(Use::Send);
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let seen = peer.read(&mut [0u8; 16]);
    assert!(
        matches!(&seen, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the peer receives nothing from the holder: {seen:?}"
    );
    peer.write_all(b"y").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        tcp.try_use(Use::Received),
        OpenOutcome::Refused(libc::EAGAIN),
        "the holder receives nothing from the peer"
    );

    // The agent is back: its teardown resets both connections, and the
    // resets get through.
    let t = enforcer.teardown_handle().unwrap().run().unwrap();
    assert_eq!((t.reset, t.failed.len()), (2, 0), "two resets: {t:?}");
    for p in [&mut quiet_peer, &mut peer] {
        let seen = peer_sees(p);
        assert!(is_reset(&seen), "the peer sees the reset: {seen:?}");
    }
    drop(quiet);
}

/// The test PostgreSQL server (`cargo xtask test` starts it).
struct Server {
    url: String,
    port: u16,
    psql: String,
}

fn server() -> Server {
    let url = std::env::var("WARD_TEST_POSTGRES")
        .expect("WARD_TEST_POSTGRES is not set: the PostgreSQL tests run under `cargo xtask test`");
    let psql = std::env::var("WARD_TEST_PSQL")
        .expect("WARD_TEST_PSQL is not set: the PostgreSQL tests run under `cargo xtask test`");
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a port in WARD_TEST_POSTGRES");
    Server { url, port, psql }
}

impl Server {
    fn url_for(&self, app: &str) -> String {
        format!("{}?application_name={app}&connect_timeout=5", self.url)
    }

    /// Backends of `app` the server has, asked as an unmanaged client.
    fn backends(&self, app: &str) -> usize {
        ward_tests::coordinator::psql(
            &self.url,
            &format!("select count(*) from pg_stat_activity where application_name = '{app}'"),
        )
        .trim()
        .parse()
        .unwrap()
    }
}

/// `psql` in `cgroup`, reading queries from its stdin.
struct Session {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Session {
    fn start(s: &Server, cgroup: &OwnedCgroup, app: &str) -> Session {
        let procs = CString::new(cgroup.path().join("cgroup.procs").as_os_str().as_bytes())
            .expect("path has NUL");
        let mut cmd = Command::new(&s.psql);
        cmd.args(["-X", "-t", "-A", "-q"])
            .arg(s.url_for(app))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: open and write only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("psql starts");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Session { child, lines }
    }

    /// Runs `select 'WORD'`; whether the answer came back.
    fn alive(&mut self, word: &str) -> bool {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        if writeln!(stdin, "select '{word}';").is_err() {
            return false;
        }
        let _ = stdin.flush();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(l) if l == word => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Ends psql; its stderr.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().expect("psql exits");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn psql_host(tag: &str, s: &Server) -> Host {
    host_protecting(
        tag,
        false,
        &format!("[protect]\nnetworks = [\"127.0.0.1/32:{}\"]", s.port),
    )
}

fn grant_db(h: &Host, s: &Server, id: &str, duration: &str) {
    let (code, out, err) = h.ward(&[
        "grant",
        "--workload",
        &h.managed_workload(),
        "--connect",
        &format!("127.0.0.1:{}", s.port),
        "--for",
        duration,
        "--reason",
        "INC-7 database access",
        "--id",
        id,
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_psql_session_ends_at_its_grants_deadline() {
    let s = server();
    let h = psql_host("psql-deadline", &s);
    let _wardd = h.start();
    let app = "ward-held-deadline";
    let granted = Instant::now();
    grant_db(&h, &s, "db1", "3s");
    let mut session = Session::start(&s, &h.sb.managed, app);
    assert!(session.alive("alive-1"), "a query under the grant");
    assert_eq!(s.backends(app), 1, "the server serves the session");
    // The session sits idle; at the deadline the server's backend sees the
    // reset and goes, with nothing sent by psql.
    wait_until(
        "the server to drop the session",
        Duration::from_secs(15),
        || s.backends(app) == 0,
    );
    assert!(granted.elapsed() >= Duration::from_secs(3), "ended early");
    assert!(!session.alive("alive-2"), "psql's next query fails");
    let stderr = session.finish();
    assert!(
        stderr.to_lowercase().contains("connection"),
        "psql says the connection is gone: {stderr}"
    );
    let fresh = Session::start(&s, &h.sb.managed, app);
    let stderr = fresh.finish();
    assert!(
        stderr.contains("Operation not permitted"),
        "a new session is refused: {stderr}"
    );
}

#[test]
fn a_psql_session_ends_at_revoke() {
    let s = server();
    let h = psql_host("psql-revoke", &s);
    let _wardd = h.start();
    let app = "ward-held-revoke";
    grant_db(&h, &s, "db2", "1h");
    let mut session = Session::start(&s, &h.sb.managed, app);
    assert!(session.alive("alive-1"), "a query under the grant");
    assert_eq!(s.backends(app), 1);
    let (code, _, err) = h.ward(&["revoke", "db2"]);
    assert_eq!(code, 0, "{err}");
    // The revoke resets at once: poll briefly, then the session is gone.
    wait_until(
        "the server to drop the session",
        Duration::from_secs(5),
        || s.backends(app) == 0,
    );
    assert!(!session.alive("alive-2"), "psql's next query fails");
    session.finish();
}

/// A connect that races a revoke fails at once, never hangs. Its hook
/// may allow it just before the rule goes, and the revoke's pass may not
/// find its socket yet; the packet hooks then drop its SYN, and without
/// a second pass shortly after (wardd sweeps 20 ms after a rule change)
/// it would sit in SYN-SENT for two minutes of retransmits. A child in
/// the test cgroup connects in a loop with a 3 s timeout while grants are
/// pushed and revoked under it, 150 times. The race is narrow: the
/// coordinator benchmark (1,000 cycles through the fleet channel) met it
/// about once in 200 cycles before the sweep, and this loop may pass
/// without it; it holds the property, not the proof of the fix.
#[test]
fn a_connect_racing_a_revoke_fails_at_once_and_never_hangs() {
    let h = host("race", "");
    let _wardd = h.start();
    h.listener.set_nonblocking(true).unwrap();
    let addr = h.addr;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepting = {
        let (listener, done) = (h.listener.try_clone().unwrap(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                while listener.accept().is_ok() {}
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let (family, sa, len) = ward_tests::sockaddr(addr);
    let managed = &h.sb.managed;
    let hammer = std::thread::scope(|s| {
        let child = s.spawn(|| {
            // SAFETY: raw syscalls only in the child.
            unsafe {
                ward_tests::in_child(Some(managed), move || {
                    let mut start = std::mem::zeroed::<libc::timespec>();
                    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut start);
                    let timeout = libc::timeval {
                        tv_sec: 3,
                        tv_usec: 0,
                    };
                    loop {
                        let mut now = std::mem::zeroed::<libc::timespec>();
                        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
                        if now.tv_sec - start.tv_sec > 12 {
                            return 0;
                        }
                        let fd = libc::socket(family, libc::SOCK_STREAM, 0);
                        libc::setsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_SNDTIMEO,
                            (&timeout as *const libc::timeval).cast(),
                            std::mem::size_of::<libc::timeval>() as u32,
                        );
                        let r =
                            libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len);
                        // A timed-out connect says EINPROGRESS.
                        if r != 0 && *libc::__errno_location() == libc::EINPROGRESS {
                            return libc::ETIMEDOUT;
                        }
                        libc::close(fd);
                    }
                })
            }
        });
        let started = Instant::now();
        let mut cycles = 0;
        while started.elapsed() < Duration::from_secs(10) && cycles < 150 {
            let id = format!("race-{cycles}");
            let (code, _, err) = h.grant(&id, "1h");
            assert_eq!(code, 0, "{err}");
            let (code, _, err) = h.ward(&["revoke", &id]);
            assert_eq!(code, 0, "{err}");
            cycles += 1;
        }
        eprintln!("{cycles} grant/revoke cycles under a connect loop");
        child.join().unwrap()
    });
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    accepting.join().unwrap();
    assert_eq!(
        hammer,
        OpenOutcome::Opened,
        "a connect hung for 3 s (ETIMEDOUT) after racing a revoke"
    );
}
