//! Helpers for ward's integration tests: real processes in real cgroups.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::Command,
};

use ward_agent::cgroup::OwnedCgroup;

/// The `ward` CLI binary: `$WARD_BIN` (set in the test VM), else the one
/// cargo built next to this test executable.
pub fn ward_bin() -> PathBuf {
    binary("WARD_BIN", "ward")
}

/// The `wardd` binary, found like [`ward_bin`].
pub fn wardd_bin() -> PathBuf {
    binary("WARDD_BIN", "wardd")
}

fn binary(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("test executable has no target directory");
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --bins`) or set {var}",
        path.display()
    );
    path
}

/// Runs `ward ARGS...` and returns (exit code, stdout, stderr).
pub fn ward(args: &[&str]) -> (i32, String, String) {
    run(&ward_bin(), args)
}

pub fn run(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How an open attempt by a child process ended.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenOutcome {
    Opened,
    /// The errno the kernel returned.
    Refused(i32),
}

/// Forks a child that (optionally) moves itself into `cgroup`, then tries to
/// open `path` with `flags`. The child does nothing that is unsafe after
/// fork in a threaded parent: raw open/write/_exit only.
pub fn open_as_child(cgroup: Option<&OwnedCgroup>, path: &Path, flags: i32) -> OpenOutcome {
    let target = CString::new(path.as_os_str().as_bytes()).expect("path has NUL");
    let procs = cgroup.map(|cg| {
        CString::new(cg.path().join("cgroup.procs").as_os_str().as_bytes()).expect("NUL")
    });
    // SAFETY: the child only calls async-signal-safe functions, then _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if let Some(procs) = &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                // "0" moves the writing process itself.
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(200);
                }
                libc::close(fd);
            }
            let fd = libc::open(target.as_ptr(), flags | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::_exit(0);
            }
            let errno = *libc::__errno_location();
            libc::_exit(errno.clamp(1, 199));
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status), "child did not exit normally");
        match libc::WEXITSTATUS(status) {
            0 => OpenOutcome::Opened,
            200 => panic!("child could not join cgroup {:?}", cgroup.map(|c| c.path())),
            errno => OpenOutcome::Refused(errno),
        }
    }
}

/// A fresh directory under /tmp, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ward-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates a file (and its parents) with some content; returns its path.
    pub fn file(&self, rel: &str) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&p, b"ward test data\n").expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
