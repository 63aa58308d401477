//! Notifications: each audited `created`, `approved`, `denied`, `expired`,
//! `released` and `revoked` is POSTed as JSON to the configured webhooks,
//! signed with HMAC-SHA256 of the body under the webhook's secret
//! (`X-Ward-Signature: sha256=HEX`).
//!
//! Replicas sharing a store claim batches through a cursor row in the same
//! locked transaction, so each event is posted by one replica. A post that
//! fails is logged and not retried (at most once).

use std::{sync::Arc, time::Duration};

use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ward_proto::v1::AuditEntry;

use crate::workflow::Workflow;

/// The audit kinds that are posted.
pub const EVENTS: &[&str] = &[
    "created", "approved", "denied", "expired", "released", "revoked",
];

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// http://HOST:PORT/PATH. (https is not supported yet: relay through a
    /// local TLS proxy.)
    pub url: String,
    /// File holding the HMAC secret; never logged.
    pub secret_file: std::path::PathBuf,
}

/// The body of one notification.
pub fn body(e: &AuditEntry) -> String {
    serde_json::json!({
        "event": e.kind,
        "request_id": e.request_id,
        "actor": e.actor,
        "detail": e.detail,
        "time_unix_ms": e.time_unix_ms,
    })
    .to_string()
}

/// `sha256=HEX` of the body under `secret`.
pub fn signature(secret: &[u8], body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, body.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Splits http://host:port/path.
fn target(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_owned()))
}

/// Checks webhook URLs and reads their secrets at start.
pub fn load(hooks: &[Webhook]) -> anyhow::Result<Vec<(Webhook, Vec<u8>)>> {
    hooks
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if target(&h.url).is_none() {
                anyhow::bail!(
                    "webhooks[{i}].url `{}`: expected http://HOST[:PORT]/PATH",
                    h.url
                );
            }
            let secret = std::fs::read(&h.secret_file).map_err(|e| {
                anyhow::anyhow!("webhooks[{i}].secret_file {}: {e}", h.secret_file.display())
            })?;
            let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
            if secret.len() < 16 {
                anyhow::bail!("webhooks[{i}].secret_file: the secret must be at least 16 bytes");
            }
            Ok((h.clone(), secret))
        })
        .collect()
}

async fn post(url: &str, secret: &[u8], event: &str, body: &str) -> std::io::Result<u16> {
    let (authority, path) = target(url).ok_or_else(|| std::io::Error::other("bad webhook url"))?;
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    .map_err(|_| std::io::Error::other("connect timed out"))??;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         X-Ward-Event: {event}\r\nX-Ward-Signature: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        signature(secret, body),
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("response timed out"))??;
    let status = String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(status)
}

/// Posts new audit events, forever.
pub async fn run(
    workflow: Arc<std::sync::Mutex<Workflow>>,
    hooks: Vec<(Webhook, Vec<u8>)>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    if hooks.is_empty() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let wf = workflow.clone();
        let batch = tokio::task::spawn_blocking(move || {
            wf.lock()
                .unwrap_or_else(|p| p.into_inner())
                .claim_notifications(EVENTS)
        })
        .await;
        let entries = match batch {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "webhooks: reading events");
                continue;
            }
            Err(_) => continue,
        };
        for e in entries {
            let body = body(&e);
            for (hook, secret) in &hooks {
                match post(&hook.url, secret, &e.kind, &body).await {
                    Ok(code) if (200..300).contains(&code) => {
                        metrics.webhook("delivered");
                        tracing::debug!(url = %hook.url, event = %e.kind, "webhook delivered")
                    }
                    Ok(code) => {
                        metrics.webhook("refused");
                        tracing::warn!(url = %hook.url, event = %e.kind, status = code, "webhook refused")
                    }
                    Err(err) => {
                        metrics.webhook("failed");
                        tracing::warn!(url = %hook.url, event = %e.kind, error = %err, "webhook failed")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = super::signature(b"Jefe", "what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
