//! A private PostgreSQL server for the coordinator's shared-store tests:
//! Debian's `postgresql` package, a throwaway cluster on loopback, stopped
//! when the test run ends.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap::nix_is_root, process::step};

/// Port of the test cluster (loopback only).
const PORT: u16 = 54329;

pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    /// e.g. postgres://postgres@127.0.0.1:54329/postgres
    pub url: String,
    /// The CA that signed the server's certificate (the server speaks TLS
    /// as well as plaintext): tests verify the coordinator's TLS with it.
    pub ca: PathBuf,
}

impl Postgres {
    /// The server's own `psql`, for tests that hold a real session.
    pub fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }
}

/// A throwaway CA and a server certificate for localhost and 127.0.0.1,
/// made once per cluster with the openssl command.
fn make_certificates(dir: &Path) -> Result<()> {
    if dir.join("server.crt").exists() && dir.join("ca.pem").exists() {
        return Ok(());
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    let steps = [
        format!(
            "req -x509 {ec} -keyout {} -out {} -days 3650 -subj /CN=ward-test-postgres-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
            p("ca.key"),
            p("ca.pem")
        ),
        format!(
            "req {ec} -keyout {} -out {} -subj /CN=localhost",
            p("server.key"),
            p("server.csr")
        ),
        format!(
            "x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -out {} -days 3650 -extfile {}",
            p("server.csr"),
            p("ca.pem"),
            p("ca.key"),
            p("server.crt"),
            p("server.ext")
        ),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .output()
            .context("openssl (Debian package openssl)")?;
        if !out.status.success() {
            bail!("openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    // PostgreSQL refuses a key others may read.
    std::fs::set_permissions(
        dir.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    if nix_is_root() {
        let ok = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.join("server.key"))
            .arg(dir.join("server.crt"))
            .status()?
            .success();
        if !ok {
            bail!("chown postgres the server key in {}", dir.display());
        }
    }
    Ok(())
}

/// Runs a server binary as the `postgres` user when we are root (the
/// server refuses to run as root).
fn as_postgres(bin: &Path, args: &[&str]) -> Command {
    if nix_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

fn server_bin() -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (Debian package postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no /usr/lib/postgresql/*/bin/initdb: install the Debian package postgresql")
}

pub fn start() -> Result<Postgres> {
    let bin = server_bin()?;
    let dir = std::env::temp_dir().join("ward-test-postgres");
    let data = dir.join("data");
    step(format!(
        "PostgreSQL test cluster on 127.0.0.1:{PORT} ({})",
        dir.display()
    ));
    if !data.join("PG_VERSION").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if nix_is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?
                .success();
            if !ok {
                bail!("chown postgres {}", dir.display());
            }
        }
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .output()
        .context("initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    make_certificates(&dir)?;
    let pg_ctl = bin.join("pg_ctl");
    // A server left over from an interrupted run.
    let _ = as_postgres(
        &pg_ctl,
        &["-D", &data.to_string_lossy(), "stop", "-m", "immediate"],
    )
    .output();
    let opts = format!(
        "-p {PORT} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on \
         -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
        dir = dir.display()
    );
    let log = dir.join("server.log");
    let out = as_postgres(
        &pg_ctl,
        &[
            "-D",
            &data.to_string_lossy(),
            "-l",
            &log.to_string_lossy(),
            "-w",
            "-o",
            &opts,
            "start",
        ],
    )
    .output()
    .context("pg_ctl start")?;
    if !out.status.success() {
        bail!(
            "PostgreSQL did not start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    Ok(Postgres {
        bin,
        data,
        url: format!("postgres://postgres@127.0.0.1:{PORT}/postgres"),
        ca: dir.join("ca.pem"),
    })
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &self.data.to_string_lossy(), "stop", "-m", "fast"],
        )
        .output();
    }
}
