//! People and groups from LDAP for the coordinator's `request`,
//! `request_for` and `review` policies: read before serving, then polled;
//! each change reloads the policy as a directory edit does. An unreachable
//! server or a bad entry is logged (once) and the last good read decides.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use ward_ldap::{LdapSource, fetch};
use ward_policy::EntityDef;

use crate::{config::Config, server::load_policy, workflow::Workflow};

/// The first read, bounded by the source's timeout. Without it the
/// coordinator still starts: until the server answers, people from LDAP
/// are not in the directory, so no policy permits them anything.
pub async fn first_read(source: &LdapSource) -> Vec<EntityDef> {
    match tokio::time::timeout(source.timeout * 4, fetch(source, &[])).await {
        Ok(Ok(f)) => {
            report_bad(&f.mapped.bad, &mut BTreeSet::new());
            tracing::info!(url = %source.url, users = f.users, groups = f.groups, "read the LDAP directory");
            f.mapped.defs
        }
        Ok(Err(e)) => {
            tracing::error!(url = %source.url, error = %ward_proto::error_chain(&e), "LDAP directory unreachable at start: its people are not in the directory until it answers");
            Vec::new()
        }
        Err(_) => {
            tracing::error!(url = %source.url, "LDAP directory did not answer at start: its people are not in the directory until it does");
            Vec::new()
        }
    }
}

/// Polls `source`; a read that changes the people reloads the policy.
pub async fn poll(
    source: LdapSource,
    config: Config,
    people: Arc<Mutex<Vec<EntityDef>>>,
    workflow: Arc<Mutex<Workflow>>,
) {
    let mut said_bad = BTreeSet::new();
    let mut down: Option<String> = None;
    loop {
        tokio::time::sleep(source.poll_interval).await;
        let previous = people.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let read = match tokio::time::timeout(source.timeout * 4, fetch(&source, &previous)).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                let why = ward_proto::error_chain(&e);
                if down.as_deref() != Some(why.as_str()) {
                    tracing::error!(url = %source.url, error = %why, "LDAP directory unreachable; the last good read keeps deciding");
                    down = Some(why);
                }
                continue;
            }
            Err(_) => {
                if down.is_none() {
                    tracing::error!(url = %source.url, "LDAP directory did not answer; the last good read keeps deciding");
                    down = Some("no answer".into());
                }
                continue;
            }
        };
        if down.take().is_some() {
            tracing::info!(url = %source.url, "LDAP directory reachable again");
        }
        report_bad(&read.mapped.bad, &mut said_bad);
        if read.mapped.defs == previous {
            continue;
        }
        let (cfg, defs, wf) = (config.clone(), read.mapped.defs.clone(), workflow.clone());
        let reloaded = tokio::task::spawn_blocking(move || {
            let policy = load_policy(&cfg, defs)?;
            wf.lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace_policy(policy);
            Ok::<_, crate::server::ServerError>(())
        })
        .await;
        match reloaded {
            Ok(Ok(())) => {
                *people.lock().unwrap_or_else(|p| p.into_inner()) = read.mapped.defs;
                tracing::info!(
                    users = read.users,
                    groups = read.groups,
                    "LDAP directory changed; policy reloaded"
                );
            }
            Ok(Err(e)) => tracing::error!(
                error = %ward_proto::error_chain(&e),
                "LDAP directory refused; the previous directory keeps deciding"
            ),
            Err(e) => tracing::error!(error = %e, "LDAP reload failed"),
        }
    }
}

/// Logs each bad entry once, by DN and attribute.
fn report_bad(bad: &[ward_ldap::BadEntry], said: &mut BTreeSet<String>) {
    for b in bad {
        if said.insert(b.to_string()) {
            tracing::warn!(dn = %b.dn, attribute = %b.attribute, problem = %b.problem, "LDAP entry refused");
        }
    }
}
