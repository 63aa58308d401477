//! The LDAP poller: reads the directory's people and groups every
//! `poll_interval`, and hands each read (or why there was none) to the
//! engine. Reads run outside the engine's lock.

use std::sync::Arc;

use tokio::sync::Mutex;
use ward_ldap::LdapSource;

use super::engine::Engine;

pub async fn run(engine: Arc<Mutex<Engine>>, source: LdapSource) {
    // Connect, bind and two searches, each bounded by `timeout`.
    let limit = source.timeout * 4;
    loop {
        let previous = engine.lock().await.ldap_defs();
        let read = tokio::time::timeout(limit, ward_ldap::fetch(&source, &previous)).await;
        let mut engine = engine.lock().await;
        let result = match read {
            Ok(Ok(fetched)) => {
                tracing::debug!(
                    users = fetched.users,
                    groups = fetched.groups,
                    took_ms = fetched.took.as_millis() as u64,
                    "read the LDAP directory"
                );
                engine.ldap_read(fetched)
            }
            Ok(Err(e)) => engine.ldap_unreachable(ward_proto::error_chain(&e)),
            Err(_) => engine.ldap_unreachable(format!(
                "no answer in {}",
                humantime::format_duration(limit)
            )),
        };
        drop(engine);
        if let Err(e) = result {
            tracing::error!(error = %e, "could not record an LDAP read");
        }
        tokio::time::sleep(source.poll_interval).await;
    }
}
