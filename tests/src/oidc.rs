//! A real OpenID Connect provider for the SSO tests: panva/oidc-provider
//! (installed by `cargo xtask test` under target/node), over TLS with a
//! certificate from a test CA, with its own login form and the device
//! grant. [`Provider::device_login`] signs a person in through that form
//! the way `ward login`'s user would in a browser.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command},
    sync::Arc,
};

use serde_json::{Value, json};

/// A fresh RSA signing key as a private JWK set, made by Node's crypto.
pub fn signing_keys() -> Value {
    let out = Command::new("node")
        .args([
            "-e",
            "const { generateKeyPairSync } = require('node:crypto');\
             const k = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });\
             console.log(JSON.stringify({ keys: [{ ...k, kid: 'test', use: 'sig', alg: 'RS256' }] }));",
        ])
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A public client with the device grant, as `ward login` is.
pub fn device_client(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "token_endpoint_auth_method": "none",
        "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"],
        "response_types": [],
        "redirect_uris": [],
    })
}

use crate::{
    TempDir,
    coordinator::Coordinator,
    pki::{Ca, ca, write_leaf_naming},
};

/// The coordinator's own client at the provider: confidential (a secret,
/// sent in the request body), with the device grant for `ward login` and
/// the code flow for the web page, returning to `redirect_uris`.
pub fn coordinator_client(client_id: &str, secret: &str, redirect_uris: &[&str]) -> Value {
    json!({
        "client_id": client_id,
        "client_secret": secret,
        "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "authorization_code"],
        "response_types": ["code"],
        "redirect_uris": redirect_uris,
    })
}

/// The secret every test coordinator client has.
pub const CLIENT_SECRET: &str = "ward-test-client-secret";

/// An `[[oidc]]` section trusting `p` as client `client_id`, its secret in
/// a 0600 file in `dir`; groups from `groups`, department mapped.
pub fn oidc_section(p: &Provider, client_id: &str, dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join(format!("{client_id}-{}.secret", p.port()));
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[[oidc]]\nissuer = \"{}\"\nclient_id = \"{client_id}\"\nclient_secret_file = \"{}\"\n\
         ca_file = \"{}\"\n[oidc.attributes]\ndepartment = \"department\"\n",
        p.issuer,
        secret.display(),
        p.ca_file.display()
    )
}

/// `ward login --json` as a real process with its session under `home`
/// (`XDG_CONFIG_HOME`), signing `who` in at `p` when it shows the code:
/// (exit code, the result line as JSON or `Null`, stderr).
pub fn ward_login(
    c: &Coordinator,
    p: &Provider,
    who: &str,
    home: &std::path::Path,
    extra: &[&str],
) -> (i32, Value, String) {
    use std::io::{BufRead, Read};
    let mut child = c
        .ward_session_command(home, &[&["login", "--json"][..], extra].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut prompt = String::new();
    out.read_line(&mut prompt).unwrap();
    if let Ok(prompt) = serde_json::from_str::<Value>(&prompt) {
        let code = prompt["user_code"].as_str().unwrap().to_owned();
        assert!(
            prompt["verification_uri"]
                .as_str()
                .unwrap()
                .starts_with(&p.issuer),
            "{prompt}"
        );
        p.device_login(&code, who);
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    (
        status.code().unwrap_or(-1),
        serde_json::from_str(rest.trim()).unwrap_or(Value::Null),
        err,
    )
}

pub struct Provider {
    pub issuer: String,
    /// The CA that issued the provider's certificate (PEM file).
    pub ca_file: PathBuf,
    ca: Ca,
    child: Child,
    _dir: TempDir,
}

/// Where `cargo xtask test` installed the tests' Node.js parts.
pub fn installed() -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/node");
    for (module, what) in [
        ("oidc-provider", "the test OIDC provider"),
        ("playwright-core", "the browser driver"),
    ] {
        assert!(
            root.join("node_modules").join(module).exists(),
            "{what} is not installed under {}: run under `cargo xtask test`",
            root.display()
        );
    }
    root
}

impl Provider {
    /// Starts a provider whose people are `accounts` (name -> claims such
    /// as `groups` and `department`) and whose clients are `clients`
    /// (oidc-provider client metadata); ID tokens last `id_token_ttl` s.
    pub fn start(tag: &str, accounts: Value, clients: Value, id_token_ttl: u64) -> Provider {
        Provider::start_keyed(tag, accounts, clients, id_token_ttl, None)
    }

    /// [`Provider::start`], signing with `jwks` (see [`signing_keys`]).
    pub fn start_keyed(
        tag: &str,
        accounts: Value,
        clients: Value,
        id_token_ttl: u64,
        jwks: Option<Value>,
    ) -> Provider {
        let dir = TempDir::new(&format!("oidc-{tag}"));
        let ca = ca(&format!("oidc-{tag}"));
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let (cert, key) = write_leaf_naming(
            &ca,
            dir.path(),
            "provider",
            "localhost",
            &["localhost"],
            false,
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let issuer = format!("https://localhost:{port}");
        let config = dir.path().join("provider.json");
        std::fs::write(
            &config,
            json!({
                "issuer": issuer,
                "port": port,
                "tls": { "cert": cert, "key": key },
                "clients": clients,
                "accounts": accounts,
                "id_token_ttl": id_token_ttl,
                "jwks": jwks,
            })
            .to_string(),
        )
        .unwrap();
        let root = installed();
        // Its notices go to a file: a closed pipe would kill it (EPIPE).
        let log = dir.path().join("provider.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("node")
            .arg(root.join("provider.mjs"))
            .arg(&config)
            .current_dir(&root)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("node starts the OIDC provider");
        crate::coordinator::wait_until(
            "the OIDC provider",
            std::time::Duration::from_secs(20),
            || std::fs::read_to_string(&log).is_ok_and(|l| l.lines().any(|l| l == "listening")),
        );
        Provider {
            issuer,
            ca_file,
            ca,
            child,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.issuer
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// A blocking HTTPS client that trusts only this provider's CA and
    /// keeps cookies, and follows no redirect (each step is checked).
    fn browser(&self) -> reqwest::blocking::Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(&self.ca.pem()) {
            roots.add(cert).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// Signs `who` in through the provider's own pages for the device
    /// code shown as `user_code` (what a person does in a browser after
    /// `ward login` prints the code): confirm the code, the login form,
    /// then consent.
    pub fn device_login(&self, user_code: &str, who: &str) {
        let b = self.browser();
        let page = |url: &str| b.get(url).send().unwrap();
        let form = |url: &str, fields: &[(&str, &str)]| b.post(url).form(fields).send().unwrap();
        let device = format!("{}/device", self.issuer);
        let body = page(&format!("{device}?user_code={user_code}"))
            .text()
            .unwrap();
        let body = form(&device, &[("xsrf", &xsrf(&body)), ("user_code", user_code)])
            .text()
            .unwrap();
        let mut r = form(
            &device,
            &[
                ("xsrf", &xsrf(&body)),
                ("user_code", user_code),
                ("confirm", "yes"),
            ],
        );
        // The login prompt, then the consent prompt, each an interaction.
        for (prompt, fields) in [
            ("login", vec![("login", who), ("password", "any")]),
            ("consent", vec![]),
        ] {
            while let Some(to) = location(&r) {
                if to.contains("/interaction/") {
                    let mut all = vec![("prompt", prompt)];
                    all.extend(fields.iter().copied());
                    let url = self.absolute(&to);
                    let _ = page(&url);
                    r = form(&url, &all);
                    break;
                }
                r = page(&self.absolute(&to));
            }
        }
        while let Some(to) = location(&r) {
            r = page(&self.absolute(&to));
        }
        let done = r.text().unwrap();
        assert!(done.contains("Success"), "device sign-in failed: {done}");
    }

    /// An ID token for `who`, issued to `client_id` (a public client with
    /// the device grant) by the whole device flow.
    pub fn device_token(&self, client_id: &str, who: &str) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).unwrap())
            .build()
            .unwrap();
        let auth: Value = client
            .post(format!("{}/device/auth", self.issuer))
            .form(&[("client_id", client_id), ("scope", "openid profile")])
            .send()
            .unwrap()
            .json()
            .unwrap();
        self.device_login(auth["user_code"].as_str().unwrap(), who);
        let token: Value = client
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", auth["device_code"].as_str().unwrap()),
                ("client_id", client_id),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        token["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no ID token: {token}"))
            .to_owned()
    }

    fn absolute(&self, to: &str) -> String {
        if to.starts_with("http") {
            to.to_owned()
        } else {
            format!("{}{to}", self.issuer)
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn location(r: &reqwest::blocking::Response) -> Option<String> {
    r.status()
        .is_redirection()
        .then(|| {
            r.headers()
                .get("location")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .flatten()
}

fn xsrf(page: &str) -> String {
    let at = page.find("name=\"xsrf\" value=\"").expect("an xsrf field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}
