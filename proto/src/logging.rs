//! Where the daemons' logs go. Under systemd (stderr is the journal
//! stream systemd names in `JOURNAL_STREAM`), each event is sent to the
//! journal natively, its fields as journal fields prefixed `WARD_`
//! (`WARD_GRANT_ID`, `WARD_SUBJECT`, ...), so `journalctl
//! WARD_GRANT_ID=...` finds every line about a grant. Anywhere else, text
//! on stderr. `RUST_LOG` filters either way (default `info`).

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Where logging went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Journal,
    Stderr,
}

/// Installs the global subscriber for the daemon named `identifier`
/// (the journal's `SYSLOG_IDENTIFIER`).
pub fn init(identifier: &str) -> Destination {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal()
        .then(|| {
            tracing_journald::layer().map(|l| {
                l.with_syslog_identifier(identifier.to_owned())
                    .with_field_prefix(Some("WARD".to_owned()))
            })
        })
        .and_then(|l| match l {
            Ok(l) => Some(l),
            Err(e) => {
                // Text on stderr still reaches the journal, unstructured.
                eprintln!("{identifier}: the journal socket is unusable ({e}); logging to stderr");
                None
            }
        });
    let destination = if journal.is_some() {
        Destination::Journal
    } else {
        Destination::Stderr
    };
    let text = journal
        .is_none()
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter())
        .with(journal)
        .with(text)
        .init();
    destination
}

/// True when systemd connected stderr to the journal: `JOURNAL_STREAM` is
/// `DEV:INODE` of the stream, and stderr is that very file (a child whose
/// stderr was redirected inherits the variable, not the stream).
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}
