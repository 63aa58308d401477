//! Boots a test kernel under qemu and collects what the guest reports.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    Workspace, bootstrap, ebpf,
    guest::{self, ERROR, EXIT, READY},
    kernels::{self, Kernel},
    process::step,
};

/// What one VM run produced.
pub struct Outcome {
    /// Everything the guest wrote to the results port, without CRs.
    pub results: String,
    /// The guest's exit status, if it got to report one.
    pub exit: Option<i32>,
    /// Why the run did not complete, if it did not.
    pub failure: Option<String>,
    pub console_log: PathBuf,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none() && self.exit == Some(0)
    }
}

/// How the VM runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// One vCPU, as fast as emulation goes: the test suites. Two vCPUs
    /// under TCG keep both host threads busy (6.1's suite took 1,267 s
    /// beside 6.12 with two, about 600 s with one); the suites run one
    /// test at a time anyway.
    Test,
    /// One vCPU with `-icount shift=0`: each guest instruction advances the
    /// guest clock by 1 ns, so timings are instruction counts and repeat
    /// exactly (ARCHITECTURE.md, "Toolchains and kernels"). For benchmarks.
    Icount,
}

/// Boots `kernel` with `initramfs`; kills it after `timeout`.
pub fn boot(
    ws: &Workspace,
    kernel: &Kernel,
    initramfs: &Path,
    timeout: Duration,
) -> Result<Outcome> {
    boot_on(ws, kernel, initramfs, timeout, Machine::Test)
}

/// [`boot`] for one shard of the suites: the guest's init sees
/// `WARD_SHARD=shard` in its environment (the kernel hands unknown
/// `NAME=value` parameters to init), and the output is tagged with it.
pub fn boot_shard(
    ws: &Workspace,
    kernel: &Kernel,
    initramfs: &Path,
    timeout: Duration,
    shard: usize,
) -> Result<Outcome> {
    let tag = format!("{}/{shard}", kernel.line);
    boot_with(
        ws,
        kernel,
        initramfs,
        timeout,
        Machine::Test,
        &tag,
        &format!(" WARD_SHARD={shard}"),
    )
}

pub fn boot_on(
    ws: &Workspace,
    kernel: &Kernel,
    initramfs: &Path,
    timeout: Duration,
    machine: Machine,
) -> Result<Outcome> {
    boot_with(ws, kernel, initramfs, timeout, machine, kernel.line, "")
}

fn boot_with(
    ws: &Workspace,
    kernel: &Kernel,
    initramfs: &Path,
    timeout: Duration,
    machine: Machine,
    tag: &str,
    cmdline: &str,
) -> Result<Outcome> {
    let logs = ws.target().join("vm/logs");
    fs::create_dir_all(&logs)?;
    let file_tag = tag.replace('/', "-");
    let console_log = logs.join(format!("{file_tag}-console.log"));
    let results_log = logs.join(format!("{file_tag}-results.log"));
    fs::write(&results_log, "")?;
    step(format!(
        "booting {} in qemu (timeout {}s){}",
        kernel.version,
        timeout.as_secs(),
        cmdline
    ));
    let started = Instant::now();
    let cpus: &[&str] = match machine {
        Machine::Test => &["-smp", "1"],
        Machine::Icount => &["-smp", "1", "-icount", "shift=0"],
    };
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35", "-cpu", "max", "-m", "1024"])
        .args(cpus)
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .arg("-serial")
        .arg(format!("file:{}", results_log.display()))
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 rdinit=/init lsm=lockdown,capability,landlock,bpf{cmdline}"
        ))
        .stdin(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;

    let mut shown = 0u64;
    let mut timed_out = false;
    loop {
        let done = qemu.try_wait()?.is_some();
        shown = echo_new(&results_log, shown, tag)?;
        if done {
            break;
        }
        if started.elapsed() > timeout {
            let _ = qemu.kill();
            let _ = qemu.wait();
            echo_new(&results_log, shown, tag)?;
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let results = fs::read_to_string(&results_log)
        .unwrap_or_default()
        .replace('\r', "");
    let exit = results
        .lines()
        .filter_map(|l| l.strip_prefix(EXIT))
        .find_map(|v| v.trim().parse::<i32>().ok());
    let failure = if timed_out {
        Some(format!("timed out after {}s", timeout.as_secs()))
    } else if let Some(err) = results.lines().find_map(|l| l.strip_prefix(ERROR)) {
        Some(err.trim().to_owned())
    } else if !results.lines().any(|l| l.starts_with(READY)) {
        Some("the guest never became ready (see the console log)".to_owned())
    } else if exit.is_none() {
        Some("the guest stopped without reporting an exit status".to_owned())
    } else {
        None
    };
    let outcome = Outcome {
        results,
        exit,
        failure,
        console_log,
    };
    println!(
        "    {}: {} in {:.1}s",
        tag,
        match (&outcome.failure, outcome.exit) {
            (Some(f), _) => format!("FAILED: {f}"),
            (None, Some(0)) => "exit 0".to_owned(),
            (None, Some(c)) => format!("exit {c}"),
            (None, None) => "no exit status".to_owned(),
        },
        started.elapsed().as_secs_f32()
    );
    if outcome.succeeded() {
        let _ = fs::remove_file(&outcome.console_log);
    } else {
        println!(
            "    guest console log kept at {}",
            outcome.console_log.display()
        );
    }
    Ok(outcome)
}

/// Prints lines the guest wrote since `from`; returns the new offset.
fn echo_new(path: &Path, from: u64, tag: &str) -> Result<u64> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len <= from {
        return Ok(from);
    }
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(len - from).read_to_end(&mut buf)?;
    // Only whole lines; the rest is printed next time.
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok(from);
    };
    for line in String::from_utf8_lossy(&buf[..=end]).lines() {
        println!("[{tag}] {}", line.trim_end_matches('\r'));
    }
    Ok(from + end as u64 + 1)
}

/// Everything a VM run needs, built and fetched.
pub struct Prepared {
    pub binaries: guest::GuestBinaries,
    pub kernels: Vec<Kernel>,
}

pub fn prepare(ws: &Workspace, which: &str) -> Result<Prepared> {
    let lines = kernels::select(which)?;
    bootstrap::all(ws)?;
    let kernels = lines
        .into_iter()
        .map(|l| kernels::fetch(ws, l))
        .collect::<Result<Vec<_>>>()?;
    ebpf::build(ws)?;
    let binaries = guest::build(ws)?;
    Ok(Prepared { binaries, kernels })
}

/// `cargo xtask vm -- CMD`: runs CMD in each selected kernel.
pub fn run_command(ws: &Workspace, which: &str, timeout: u64, cmd: &[String]) -> Result<ExitCode> {
    let prepared = prepare(ws, which)?;
    let script: Vec<String> = cmd.iter().map(|a| guest::sh_quote(a)).collect();
    let image = guest::pack(
        ws,
        &prepared.binaries,
        &format!("{}{}", guest::GUEST_ENV, script.join(" ")),
    )?;
    let mut ok = true;
    for kernel in &prepared.kernels {
        let outcome = boot(ws, kernel, &image, Duration::from_secs(timeout))?;
        ok &= outcome.succeeded();
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
