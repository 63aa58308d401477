//! Running commands with visible progress.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Instant,
};

use anyhow::{Context, Result, bail};

/// One progress line, prefixed so it stands out among cargo's output,
/// with the seconds since the first (where a long run spent its time) and
/// the disk space left (a full disk once ended a CI run mid-build).
pub fn step(msg: impl AsRef<str>) {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    let at = STARTED.get_or_init(Instant::now).elapsed().as_secs();
    let free = free_gib(".")
        .map(|g| format!(" ({g:.1} GiB free)"))
        .unwrap_or_default();
    println!("==> [{at:>4}s] {}{free}", msg.as_ref());
    let _ = std::io::stdout().flush();
}

/// Space left for an unprivileged writer on the file system holding `path`.
pub fn free_gib(path: &str) -> Option<f64> {
    let path = std::ffi::CString::new(path).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-struct of the right type.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64 / (1u64 << 30) as f64)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; fails if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let started = Instant::now();
    let status = cmd.status().with_context(|| format!("starting `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    tracing_elapsed(&what, started);
    Ok(())
}

/// Runs a command and returns whether it succeeded.
pub fn succeeds(cmd: &mut Command) -> Result<bool> {
    let what = describe(cmd);
    Ok(cmd
        .status()
        .with_context(|| format!("starting `{what}`"))?
        .success())
}

/// Runs a command, captures its stdout (stderr inherited).
pub fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting `{what}`"))?;
    if !out.status.success() {
        bail!("`{what}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command, echoing its stdout and stderr live, in the order they
/// were written, and returning both with the status: cargo says which
/// test binary it runs on stderr, the binary its results on stdout.
pub fn tee(cmd: &mut Command) -> Result<(bool, String)> {
    let what = describe(cmd);
    let (reader, writer) = std::io::pipe().context("a pipe")?;
    let mut child = cmd
        .stdout(writer.try_clone().context("a pipe")?)
        .stderr(writer)
        .spawn()
        .with_context(|| format!("starting `{what}`"))?;
    // The command holds the pipe's write end until told otherwise, and
    // the read below would wait for it forever.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut captured = String::new();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap_or_default();
        println!("{line}");
        captured.push_str(&line);
        captured.push('\n');
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{what}`"))?;
    Ok((status.success(), captured))
}

fn tracing_elapsed(what: &str, started: Instant) {
    let secs = started.elapsed().as_secs_f32();
    if secs > 5.0 {
        let short: String = what.chars().take(60).collect();
        println!("    ({short}... took {secs:.0}s)");
    }
}
