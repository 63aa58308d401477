//! A real OpenLDAP server (Debian's `slapd`, which `cargo xtask test`
//! installs) for tests: its own configuration, database and port, StartTLS
//! with a test CA, and the base `dc=ward,dc=test`. Killed on drop. Entries
//! are written with `ldapadd`/`ldapmodify` from `ldap-utils`.

use std::{
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    TempDir,
    pki::{ca, write_leaf_naming},
};

pub const BASE: &str = "dc=ward,dc=test";
pub const ADMIN: &str = "cn=admin,dc=ward,dc=test";
const ADMIN_PASSWORD: &str = "ward-test-admin";
/// The read-only account wardd binds as.
pub const READER: &str = "cn=reader,dc=ward,dc=test";
pub const READER_PASSWORD: &str = "ward-test-reader";

pub struct Slapd {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Slapd {
    /// Configures a server under a temporary directory, starts it, and
    /// adds the base, `ou=people`, `ou=groups` and the reader account.
    pub fn start(tag: &str) -> Slapd {
        let dir = TempDir::new(&format!("slapd-{tag}"));
        let d = dir.path();
        let pki = ca("ward test LDAP CA");
        std::fs::write(d.join("ca.pem"), pki.pem()).unwrap();
        write_leaf_naming(
            &pki,
            d,
            "server",
            "localhost",
            &["localhost", "127.0.0.1"],
            false,
        );
        std::fs::create_dir_all(d.join("db")).unwrap();
        let config = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {d}/slapd.pid\n\
             argsfile {d}/slapd.args\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             database mdb\n\
             maxsize 268435456\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ADMIN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {d}/db\n\
             limits dn.exact=\"{READER}\" size=unlimited\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to * by dn.exact=\"{READER}\" read by * none\n",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), config).unwrap();
        let mut s = Slapd {
            dir,
            port: 0,
            child: None,
        };
        s.run();
        s.add(&format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: ward\no: ward\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: {READER}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\n\
             cn: reader\nuserPassword: {READER_PASSWORD}\n"
        ));
        s
    }

    /// Starts slapd (again, on the same port after [`Slapd::stop`]) and
    /// waits until it answers.
    pub fn run(&mut self) {
        if self.port == 0 {
            self.port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
        }
        let log = std::fs::File::create(self.dir.path().join("slapd.log")).unwrap();
        // `-d` keeps it in the foreground, as our child.
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .args(["-h", &self.url(), "-d", "stats"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd (Debian's slapd package; `cargo xtask test` installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("slapd exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "slapd did not listen in 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server; [`Slapd::run`] starts it again with its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `ldap://127.0.0.1:PORT`: plain, upgraded with StartTLS by clients
    /// that are told to.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server's certificate (for `localhost` and
    /// `127.0.0.1`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// `ldapadd` of `ldif`, as the admin.
    pub fn add(&self, ldif: &str) {
        self.ldap("ldapadd", ldif);
    }

    /// `ldapmodify` of `ldif`, as the admin.
    pub fn modify(&self, ldif: &str) {
        self.ldap("ldapmodify", ldif);
    }

    fn ldap(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN, "-w", ADMIN_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool} (Debian's ldap-utils): {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The LDIF of a person: `uid=NAME,ou=people`, with these attributes.
    pub fn person(name: &str, attrs: &[(&str, &str)]) -> String {
        let mut s = format!(
            "dn: uid={name},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {name}\n\
             cn: {name}\nsn: {name}\n"
        );
        for (k, v) in attrs {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push('\n');
        s
    }

    /// The LDIF of a `groupOfNames` whose members are these DNs.
    pub fn group(name: &str, members: &[String]) -> String {
        let mut s =
            format!("dn: cn={name},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {name}\n");
        for m in members {
            s.push_str(&format!("member: {m}\n"));
        }
        s.push('\n');
        s
    }

    /// A person's DN.
    pub fn dn(name: &str) -> String {
        format!("uid={name},ou=people,{BASE}")
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
