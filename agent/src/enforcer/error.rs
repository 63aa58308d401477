//! What can go wrong in the enforcer, named precisely.

use aya::{maps::MapError, programs::ProgramError};

use super::table::TableError;
use crate::btf::BtfError;

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error("reading kernel layout: {0}")]
    Btf(#[from] BtfError),
    #[error("loading ward's eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("kernel BTF for program load: {0}")]
    KernelBtf(#[from] aya::BtfError),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("program `{0}` is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map `{0}` is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error(
        "map `{name}` is full ({max} entries); raise its size in the config. \
         Nothing was half-applied: the previous table is still in force"
    )]
    Full { name: &'static str, max: u32 },
    #[error("attaching `{name}` to {target}: {source}")]
    Attach {
        name: &'static str,
        target: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("pinning under {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{given} uid ranges configured; the kernel side holds at most {max}")]
    TooManyUidRanges { given: usize, max: usize },
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("the event stream was already taken")]
    EventsTaken,
    #[error("event stream: {0}")]
    Events(std::io::Error),
    #[error("explain: {0}")]
    Explain(String),
    #[error("connection teardown: {0}")]
    Teardown(String),
    #[error("cgroup path `{path}`: {reason}")]
    CgroupPath { path: String, reason: String },
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> EnforcerError {
    move |source| EnforcerError::Map { name, source }
}
