//! `wardd` as a real process, for tests.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::wardd_bin;

pub struct Wardd {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Wardd {
    /// Starts `wardd --config CONFIG` and waits until its socket answers.
    pub fn start(config: &Path, socket: &Path, envs: &[(&str, &str)]) -> Wardd {
        Wardd::spawn(Command::new(wardd_bin()), config, socket, envs)
    }

    /// The same, with a soft descriptor limit of `soft` (the stock 1,024,
    /// say), as a service manager would start it.
    pub fn start_with_nofile(config: &Path, socket: &Path, soft: u64) -> Wardd {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(wardd_bin());
        // SAFETY: getrlimit/setrlimit are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = soft.min(lim.rlim_max);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Wardd::spawn(cmd, config, socket, &[])
    }

    /// Starts `cmd --config CONFIG`, where `cmd` runs wardd (perhaps
    /// through a wrapper that execs it), and waits until its socket
    /// answers. Its stderr goes to CONFIG with the extension `log`.
    pub fn spawn(mut cmd: Command, config: &Path, socket: &Path, envs: &[(&str, &str)]) -> Wardd {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("wardd log");
        cmd.arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn wardd");
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "wardd exited ({status}) before serving:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "wardd did not start in 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Wardd {
            child: Some(child),
            socket: socket.to_owned(),
            log,
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for wardd to die on its own (a failpoint); returns its status.
    pub fn wait_dead(&mut self) -> std::process::ExitStatus {
        self.child
            .take()
            .expect("running")
            .wait()
            .expect("wait wardd")
    }

    /// Waits up to `limit` for wardd to exit on its own.
    pub fn exits_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, then wait: a clean shutdown.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("wait wardd")
    }
}

impl Drop for Wardd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `ward ARGS` against a socket, optionally as another uid/gid.
pub fn ward_as(socket: &Path, ids: Option<(u32, u32)>, args: &[&str]) -> (i32, String, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(crate::ward_bin());
    cmd.args(args).env("WARD_SOCKET", socket);
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("run ward");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
