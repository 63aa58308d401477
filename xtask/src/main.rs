//! `cargo xtask`: ward's build, bootstrap, VM test runner, and test pipeline.
//!
//! Everything expensive is cached under `target/`: bpf-linker in
//! `target/tools`, kernel images in `target/kernels`, VM logs in `target/vm`.

mod bench;
mod bootstrap;
mod dist;
mod ebpf;
mod fuzz;
mod guest;
mod install;
mod kernels;
mod postgres;
mod process;
mod tally;
mod test;
mod vm;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "ward's build and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: rust-src (nightly), bpf-linker (built against
    /// nightly's own LLVM), qemu, busybox and cpio (Debian), and the 6.1 and
    /// 6.12 test kernels.
    Bootstrap,
    /// Build the eBPF object that the agent embeds.
    BuildEbpf,
    /// Run one command in a test VM, on each selected kernel.
    ///
    /// The guest has busybox, the `ward` binary at /ward/bin/ward and the
    /// test binaries under /ward/tests. Example:
    /// `cargo xtask vm -- /ward/bin/ward doctor`
    Vm {
        /// Kernel line to boot: 6.1, 6.12, or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Command (and arguments) to run in the guest.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Run everything: fmt, clippy, unit and native integration tests, every
    /// fuzz target for 20 s, and the kernel suites in a VM on every test
    /// kernel. Ends with one line `N passed, M failed`; exits non-zero on
    /// any failure.
    Test {
        /// Seconds before each VM suite is killed.
        #[arg(long, default_value_t = 2400)]
        vm_timeout: u64,
    },
    /// Run the `fuzz/` targets (cargo-fuzz, nightly) for a bounded time each
    /// and print executions, exec/s and crashes per target. A crash's input
    /// is copied into `fuzz/corpus/TARGET/`; exits non-zero on any crash.
    Fuzz {
        /// Seconds per target (libFuzzer's -max_total_time).
        #[arg(long, default_value_t = fuzz::TEST_SECONDS)]
        seconds: u64,
        /// Build with AddressSanitizer at opt-level 3, which also watches
        /// the C code the targets run (SQLite, ring): for long runs. The
        /// default is the test command's build (opt-level 1, no sanitizer),
        /// about 4x the executions per second.
        #[arg(long)]
        asan: bool,
        /// Targets to run (default: all; `cargo fuzz list` names them).
        targets: Vec<String>,
    },
    /// Boot a VM with wardd enforcing a sample config, and walk a JIT grant
    /// for alice from deny to allow to expiry, narrated on the console.
    Demo {
        /// Kernel line to boot: 6.12 or 6.1.
        #[arg(long, default_value = "6.12")]
        kernel: String,
    },
    /// Measure enforcement cost, propagation, expiry precision, compile,
    /// memory and the coordinator. Writes target/bench/report.md,
    /// report.json and one overhead_*.svg per syscall loop.
    Bench {
        /// Measure only these sections (repeatable); the report takes the
        /// other sections' figures from earlier runs.
        #[arg(long, value_enum)]
        only: Vec<bench::Section>,
        /// Measure nothing: rebuild report.md, report.json and the plots
        /// from the figures already in target/bench.
        #[arg(long, conflicts_with = "only")]
        report_only: bool,
    },
    /// Install wardd, ward, the systemd unit, the tmpfiles entry and a
    /// sample config (never overwriting an existing one).
    Install {
        /// Install under this root instead of `/`.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Build the Debian packages `ward` (wardd, ward, the unit, tmpfiles,
    /// sample config as conffiles) and `ward-coordinator` with dpkg-deb,
    /// into target/dist.
    Dist {
        /// The Debian revision: VERSION-REVISION.
        #[arg(long, default_value_t = 1)]
        revision: u32,
        /// Which build goes in (`debug` packages the test build as is).
        #[arg(long, value_enum, default_value = "release")]
        profile: dist::Profile,
        /// Write the packages here instead of target/dist.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let ws = Workspace::locate();
    match cli.command {
        Command::Bootstrap => {
            bootstrap::all(&ws)?;
            bootstrap::node_parts(&ws)?;
            kernels::fetch_all(&ws)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BuildEbpf => {
            bootstrap::ebpf_toolchain(&ws)?;
            ebpf::build(&ws)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Vm {
            kernel,
            timeout,
            cmd,
        } => vm::run_command(&ws, &kernel, timeout, &cmd),
        Command::Test { vm_timeout } => test::run(&ws, vm_timeout),
        Command::Fuzz {
            seconds,
            asan,
            targets,
        } => {
            // The agent crate embeds the eBPF object, which must be no
            // older than its sources (cargo rebuilds only what changed).
            bootstrap::ebpf_toolchain(&ws)?;
            ebpf::build(&ws)?;
            let how = if asan {
                fuzz::Build::Asan
            } else {
                fuzz::Build::Quick
            };
            fuzz::command(&ws, &targets, seconds, how)
        }
        Command::Bench { only, report_only } => {
            if report_only {
                bench::report(&ws)?;
            } else {
                bench::run_all(&ws, &only)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Install { root } => {
            install::install(&ws, &root)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dist {
            revision,
            profile,
            out,
        } => {
            bootstrap::debian(bootstrap::DIST_PACKAGES)?;
            let out = out.unwrap_or_else(|| ws.target().join("dist"));
            dist::build(&ws, profile, revision, &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { kernel } => vm::run_command(
            &ws,
            &kernel,
            600,
            &[
                "/ward/tests/kernel".into(),
                "--exact".into(),
                "demo::jit_access_from_request_to_review_to_expiry".into(),
                "--nocapture".into(),
                "--test-threads=1".into(),
            ],
        ),
    }
}

/// Paths inside the ward workspace.
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    fn locate() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        Workspace { root }
    }

    pub fn target(&self) -> PathBuf {
        self.root.join("target")
    }

    pub fn tools_bin(&self) -> PathBuf {
        self.target().join("tools/bin")
    }

    /// PATH with the project's tools first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.tools_bin()];
        if let Some(p) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(paths).unwrap_or_default()
    }
}
