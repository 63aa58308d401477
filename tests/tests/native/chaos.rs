//! Crash consistency under load: `wardd` is SIGKILLed at random points
//! during thousands of grant pushes and revokes while a probe keeps
//! connecting to the protected destination. No allow may ever come
//! without a grant that could be active; after every restart the kernel
//! holds what the store says; no acknowledged grant is lost; and the
//! lifecycle log records every change exactly once.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ward_proto::v1 as pb;
use ward_tests::{OpenOutcome, connect_as_child, wardd::Wardd};

use crate::daemon::host;

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// When a grant could have been active: from the moment its push was
/// first sent until its revoke was acknowledged.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Option<Instant>,
}

struct Attempt {
    from: Instant,
    until: Instant,
    opened: bool,
}

fn grant(id: &str, workload: &str, port: u16) -> pb::Grant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    pb::Grant {
        id: id.into(),
        subject: Some(pb::Subject {
            kind: Some(pb::subject::Kind::Workload(workload.into())),
        }),
        operations: vec![pb::Operation::Connect as i32],
        objects: vec![pb::Object {
            kind: Some(pb::object::Kind::Network(format!("127.0.0.1/32:{port}"))),
        }],
        not_before_unix_ms: 0,
        expires_at_unix_ms: now_ms + 3_600_000,
        reason: "CHAOS-1".into(),
        ..Default::default()
    }
}

type Client = pb::agent_client::AgentClient<tonic::transport::Channel>;

async fn client(socket: &std::path::Path) -> Client {
    let started = Instant::now();
    loop {
        match ward_agent::client::connect(socket).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "wardd did not come back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// What the driver did: grant windows in time order, the grants whose push
/// was acknowledged, kills, restarts checked.
struct Driven {
    windows: Vec<Window>,
    pushed: Vec<String>,
    kills: u32,
    checked: u32,
    ops: u64,
}

#[test]
fn sigkill_at_random_points_never_fails_open_loses_a_grant_or_audits_twice() {
    let ops: u64 = std::env::var("WARD_CHAOS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos seed {seed:#x}, {ops} pushes and revokes");
    let mut rng = Rng(seed);
    let h = host("chaos", "");
    let mut wardd = h.start();

    // The probe connects again and again from the managed cgroup while the
    // driver pushes, revokes and kills.
    let stop = AtomicBool::new(false);
    let attempts = Mutex::new(Vec::<Attempt>::new());
    h.listener.set_nonblocking(true).unwrap();
    let driven = std::thread::scope(|scope| {
        // The destination accepts (and drops) every connection, so its
        // backlog never fills.
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match h.listener.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let from = Instant::now();
                let opened = connect_as_child(Some(&h.sb.managed), h.addr) == OpenOutcome::Opened;
                attempts.lock().unwrap().push(Attempt {
                    from,
                    until: Instant::now(),
                    opened,
                });
            }
        });
        let driven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drive(&h, &mut wardd, &mut rng, ops)
        }));
        stop.store(true, Ordering::Relaxed);
        driven.unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    let attempts = attempts.into_inner().unwrap();
    let windows = &driven.windows;

    // Zero fail-open outcomes: every allow overlaps a window.
    let (mut fail_open, mut allowed, mut w) = (0, 0, 0);
    for a in &attempts {
        if !a.opened {
            continue;
        }
        allowed += 1;
        while w + 1 < windows.len() && windows[w].until.is_some_and(|u| u < a.from) {
            w += 1;
        }
        let covered = windows[w..]
            .iter()
            .take(2)
            .any(|win| win.from <= a.until && win.until.is_none_or(|u| u >= a.from));
        if !covered {
            fail_open += 1;
        }
    }
    eprintln!(
        "chaos: {} pushes and revokes, {} SIGKILLs, {} restarts checked, \
         {} probe attempts ({allowed} allowed), {fail_open} fail-open",
        driven.ops,
        driven.kills,
        driven.checked,
        attempts.len()
    );
    assert_eq!(fail_open, 0, "allows with no grant that could be active");
    assert!(
        driven.kills as u64 >= (driven.ops / 300).max(1),
        "only {} kills",
        driven.kills
    );
    assert!(
        attempts.len() >= 1_000,
        "the probe ran {} times",
        attempts.len()
    );

    // No acknowledged grant lost: each is in the store, revoked.
    let states: HashMap<String, String> = h.states().into_iter().collect();
    for id in &driven.pushed {
        assert_eq!(states.get(id).map(String::as_str), Some("revoked"), "{id}");
    }
    drop(wardd);

    // Every change audited exactly once.
    let mut seen: HashMap<(String, String), u32> = HashMap::new();
    let life = std::fs::read_to_string(h.dir.path().join("lifecycle.jsonl")).unwrap();
    for line in life.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let (Some(g), Some(k)) = (v["grant_id"].as_str(), v["kind"].as_str()) {
            *seen.entry((g.to_owned(), k.to_owned())).or_default() += 1;
        }
    }
    for id in &driven.pushed {
        for kind in ["grant_pushed", "grant_revoked"] {
            let n = seen
                .get(&(id.clone(), kind.to_owned()))
                .copied()
                .unwrap_or(0);
            assert_eq!(n, 1, "{id}: {kind} audited {n} times");
        }
    }
}

/// Pushes and revokes `ops` times in all, one grant at a time, with a
/// SIGKILL aimed inside about one call in 150; every call is retried on
/// the restarted agent until it is acknowledged.
fn drive(h: &crate::daemon::Host, wardd: &mut Wardd, rng: &mut Rng, ops: u64) -> Driven {
    let workload = h.managed_workload();
    let port = h.addr.port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut d = Driven {
        windows: Vec::new(),
        pushed: Vec::new(),
        kills: 0,
        checked: 0,
        ops: 0,
    };
    let mut c = rt.block_on(client(&h.socket));
    let mut i = 0u64;
    while d.ops < ops {
        let id = format!("g-{i}");
        i += 1;
        // One grant body per id: a retried push is the same push.
        let body = grant(&id, &workload, port);
        d.windows.push(Window {
            from: Instant::now(),
            until: None,
        });
        for revoke in [false, true] {
            loop {
                let kill = (rng.below(150) == 0).then(|| {
                    let pid = wardd.pid().unwrap() as i32;
                    let delay = Duration::from_micros(rng.below(4_000));
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        // SAFETY: kill of our own child.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    })
                });
                let result = rt.block_on(async {
                    if revoke {
                        c.revoke_grant(pb::RevokeGrantRequest {
                            id: id.clone(),
                            reason: "chaos".into(),
                        })
                        .await
                        .map(|_| ())
                    } else {
                        c.push_grant(pb::PushGrantRequest {
                            grant: Some(body.clone()),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                    }
                });
                let died = kill.map(|k| k.join().unwrap()).is_some();
                let acked = match &result {
                    Ok(()) => true,
                    // A retried revoke of a grant the killed agent had
                    // already ended.
                    Err(s) if revoke && s.message().contains("already ended") => true,
                    Err(s) if !died => panic!("op {} ({id}, revoke {revoke}): {s}", d.ops),
                    Err(_) => false,
                };
                if died {
                    d.kills += 1;
                    wardd.wait_dead();
                    *wardd = Wardd::start(&h.config, &h.socket, &[]);
                    c = rt.block_on(client(&h.socket));
                    d.checked += check_kernel_matches_store(&rt, &mut c, h);
                }
                if acked {
                    break;
                }
            }
            d.ops += 1;
            if revoke {
                if let Some(w) = d.windows.last_mut() {
                    w.until = Some(Instant::now());
                }
            } else {
                d.pushed.push(id.clone());
            }
        }
        // A gap with no grant at all, so that a fail-open would show.
        std::thread::sleep(Duration::from_micros(rng.below(3_000)));
    }
    d
}

/// After a restart: the kernel's network table holds the protection plus
/// one entry per grant the store says is active, and the probe's outcome
/// agrees. Returns 1 (a check made).
fn check_kernel_matches_store(
    rt: &tokio::runtime::Runtime,
    c: &mut Client,
    h: &crate::daemon::Host,
) -> u32 {
    let (status, active) = rt.block_on(async {
        let s = c
            .get_status(pb::GetStatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        let g = c
            .list_grants(pb::ListGrantsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .grants;
        (s, g.len() as u64)
    });
    assert!(active <= 1, "{active} grants active at once");
    assert_eq!(status.active_grants, active, "status and store disagree");
    assert_eq!(
        status.net_rules,
        1 + active,
        "kernel table: {} entries, store: {active} active grants",
        status.net_rules
    );
    let expect = if active == 1 {
        OpenOutcome::Opened
    } else {
        OpenOutcome::Refused(libc::EPERM)
    };
    assert_eq!(
        h.connect(),
        expect,
        "kernel and store disagree after a restart"
    );
    1
}
