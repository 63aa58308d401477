//! One read of the server: connect (TLS verified), bind, search users and
//! groups a page at a time, and map what came back.

use std::{collections::HashMap, sync::Arc, time::Instant};

use ldap3::{
    LdapConnAsync, LdapConnSettings, Scope, SearchEntry,
    adapters::{Adapter, EntriesOnly, PagedResults},
};
use rustls::pki_types::pem::PemObject;
use ward_policy::EntityDef;

use crate::{
    mapping::{Entry, Mapped, map_entries},
    source::LdapSource,
};

/// Entries asked for per page: servers cap a plain search (slapd at 500).
const PAGE: i32 = 500;

/// Why the server could not be read. The last good directory stays.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("policy.ldap.ca_file {path}: {problem}")]
    Ca {
        path: std::path::PathBuf,
        problem: String,
    },
    #[error("policy.ldap.bind_password_file {path}: {source}")]
    Password {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("LDAP server {url}: {source}")]
    Server {
        url: String,
        source: Box<ldap3::LdapError>,
    },
    #[error("LDAP server {url}: reading {base}: {source}")]
    Search {
        url: String,
        base: String,
        source: Box<ldap3::LdapError>,
    },
}

/// A read of the server, mapped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    pub mapped: Mapped,
    /// Entries the searches returned.
    pub users: usize,
    pub groups: usize,
    pub took: std::time::Duration,
}

/// Reads every user and group `source` names. `previous` is the last good
/// read's entities (see [`map_entries`]).
pub async fn fetch(source: &LdapSource, previous: &[EntityDef]) -> Result<Fetched, FetchError> {
    let started = Instant::now();
    let server = |e: ldap3::LdapError| FetchError::Server {
        url: source.url.clone(),
        source: Box::new(e),
    };
    let settings = LdapConnSettings::new()
        .set_conn_timeout(source.timeout)
        .set_starttls(source.starttls)
        .set_config(tls_config(source)?);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &source.url)
        .await
        .map_err(server)?;
    // The connection's driver ends with the connection.
    tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(error = %e, "LDAP connection ended");
        }
    });
    ldap.with_timeout(source.timeout);
    let password = source.password().map_err(|e| FetchError::Password {
        path: source.bind_password_file.clone().unwrap_or_default(),
        source: e,
    })?;
    if let (Some(dn), Some(password)) = (&source.bind_dn, password) {
        ldap.simple_bind(dn, &password)
            .await
            .and_then(ldap3::LdapResult::success)
            .map_err(server)?;
    }
    let mut user_attrs = vec![source.users.name.clone()];
    user_attrs.extend(source.users.attributes.values().cloned());
    let users = search(
        &mut ldap,
        source,
        &source.users.base,
        &source.users.filter,
        user_attrs,
    )
    .await?;
    let groups = match &source.groups {
        Some(g) => {
            let attrs = vec![g.name.clone(), g.members.clone(), g.member_uids.clone()];
            search(&mut ldap, source, &g.base, &g.filter, attrs).await?
        }
        None => Vec::new(),
    };
    let _ = ldap.unbind().await;
    Ok(Fetched {
        mapped: map_entries(source, &users, &groups, previous),
        users: users.len(),
        groups: groups.len(),
        took: started.elapsed(),
    })
}

async fn search(
    ldap: &mut ldap3::Ldap,
    source: &LdapSource,
    base: &str,
    filter: &str,
    attrs: Vec<String>,
) -> Result<Vec<Entry>, FetchError> {
    let err = |e: ldap3::LdapError| FetchError::Search {
        url: source.url.clone(),
        base: base.to_owned(),
        source: Box::new(e),
    };
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(PAGE)),
    ];
    let mut stream = ldap
        .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
        .await
        .map_err(err)?;
    let mut out = Vec::new();
    while let Some(raw) = stream.next().await.map_err(err)? {
        // ldap3 panics on an entry it cannot parse; a server's bad bytes
        // must not take the agent down.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(raw)))
        {
            Ok(e) => out.push(Entry {
                dn: e.dn,
                attrs: e.attrs.into_iter().collect::<HashMap<_, _>>(),
            }),
            Err(_) => tracing::error!(
                base,
                "the LDAP server sent an entry that does not parse; left out"
            ),
        }
    }
    stream.finish().await.success().map_err(err)?;
    Ok(out)
}

/// rustls with ring, verifying the server against `ca_file` alone, or the
/// system's roots.
fn tls_config(source: &LdapSource) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    match &source.ca_file {
        Some(path) => {
            let ca = |problem: String| FetchError::Ca {
                path: path.clone(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| ca(e.to_string()))?)
                    .map_err(|e| ca(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca("holds no certificate".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Ca {
            path: source.ca_file.clone().unwrap_or_default(),
            problem: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
