//! Notifications: each audited `created`, `approved`, `denied`, `expired`,
//! `released` and `revoked` is POSTed as JSON to the configured webhooks,
//! signed with HMAC-SHA256 of the body under the webhook's secret
//! (`X-Ward-Signature: sha256=HEX`), over https with the server's
//! certificate verified (or http on loopback).
//!
//! Replicas sharing a store claim batches through a cursor row in the same
//! locked transaction, so each event is posted by one replica. Each webhook
//! has its own queue and worker, so one slow endpoint delays no other. A
//! post that fails with no answer, a 5xx, 408 or 429 is retried with
//! exponential backoff for up to `retry_for`; one that finally fails, or is
//! refused with another status, is written to the audit log as
//! `webhook_failed`, so no event is dropped silently. The one gap: events
//! claimed but not yet delivered when the process is killed are neither
//! delivered nor recorded (each retry is logged as it happens).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use ring::{digest, hmac};
use tokio::sync::mpsc;
use ward_proto::v1::AuditEntry;

use crate::{
    database::{is_loopback, pem_roots},
    metrics::Metrics,
    workflow::Workflow,
};

/// The audit kinds that are posted.
pub const EVENTS: &[&str] = &[
    "created", "approved", "denied", "expired", "released", "revoked",
];

/// The audit kind of a notification that could not be delivered.
pub const FAILED: &str = "webhook_failed";

/// Events queued for one webhook; past this, new events are recorded as
/// failed at once rather than held without bound.
const QUEUE: usize = 4_096;

/// `[[webhooks]]` in `coordinator.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `https://HOST[:PORT]/PATH`; `http://` only to a loopback address.
    pub url: String,
    /// File holding the HMAC secret (16 bytes or more); never logged.
    pub secret_file: PathBuf,
    /// PEM file of the CAs that may sign this endpoint's certificate. When
    /// set, only these are trusted; otherwise the system's roots are.
    pub ca_file: Option<PathBuf>,
    /// How long one event is retried before it is recorded as failed.
    #[serde(default = "default_retry_for", with = "crate::config::duration")]
    pub retry_for: Duration,
}

fn default_retry_for() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks[{index}].url `{url}`: {reason}")]
    Url {
        index: usize,
        url: String,
        reason: String,
    },
    #[error("webhooks[{index}].{field} {}: {reason}", path.display())]
    File {
        index: usize,
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("webhooks[{index}]: {reason}")]
    Client { index: usize, reason: String },
}

/// A webhook ready to post to.
#[derive(Clone)]
pub struct Endpoint {
    url: reqwest::Url,
    /// The URL as logged and audited: scheme, host, port and path.
    shown: String,
    secret: Vec<u8>,
    client: reqwest::Client,
    retry_for: Duration,
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
    format!("sha256={}", hex(hmac::sign(&key, body.as_bytes()).as_ref()))
}

/// A stable id for one event, the same on every retry, so that a receiver
/// can drop a delivery it has already accepted.
pub fn delivery_id(body: &str) -> String {
    hex(&digest::digest(&digest::SHA256, body.as_bytes()).as_ref()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the webhooks and reads their secrets and CAs, at start: a bad
/// one stops the coordinator with the field named.
pub fn load(hooks: &[Webhook]) -> Result<Vec<Endpoint>, WebhookError> {
    hooks
        .iter()
        .enumerate()
        .map(|(index, h)| endpoint(index, h))
        .collect()
}

fn endpoint(index: usize, h: &Webhook) -> Result<Endpoint, WebhookError> {
    let bad_url = |reason: &str| WebhookError::Url {
        index,
        url: h.url.clone(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(&h.url).map_err(|e| bad_url(&e.to_string()))?;
    let host = url.host_str().ok_or_else(|| bad_url("names no host"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad_url(
            "carries credentials; the endpoint authenticates ward by the signature",
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {
            if h.ca_file.is_some() {
                return Err(bad_url("ca_file is for an https:// endpoint"));
            }
        }
        "http" => return Err(bad_url("http:// is allowed only to loopback; use https://")),
        _ => return Err(bad_url("expected https://HOST[:PORT]/PATH")),
    }
    let secret = std::fs::read(&h.secret_file).map_err(|e| WebhookError::File {
        index,
        field: "secret_file",
        path: h.secret_file.clone(),
        reason: e.to_string(),
    })?;
    let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
    if secret.len() < 16 {
        return Err(WebhookError::File {
            index,
            field: "secret_file",
            path: h.secret_file.clone(),
            reason: "the secret must be at least 16 bytes".into(),
        });
    }
    let roots = match &h.ca_file {
        Some(path) => pem_roots(path).map_err(|reason| WebhookError::File {
            index,
            field: "ca_file",
            path: path.clone(),
            reason,
        })?,
        None => system_roots(),
    };
    if url.scheme() == "https" && roots.is_empty() {
        return Err(WebhookError::Client {
            index,
            reason: "this host has no system CA certificates; set ca_file".into(),
        });
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| WebhookError::Client {
        index,
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        // A redirect would send the signed event somewhere not configured.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ward-coordinator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WebhookError::Client {
            index,
            reason: e.to_string(),
        })?;
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    Ok(Endpoint {
        shown: shown.to_string(),
        url,
        secret,
        client,
        retry_for: h.retry_for,
    })
}

fn system_roots() -> rustls::RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "webhooks: reading a system CA certificate");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::warn!(
            added,
            ignored,
            "webhooks: some system CA certificates do not parse"
        );
    }
    roots
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Worth another try: no answer, 5xx, 408 or 429.
    Retry(String),
    /// The endpoint refused it for good (another 4xx, or a 3xx).
    Refused(String),
}

impl Endpoint {
    async fn attempt(&self, event: &str, body: &str, id: &str) -> Attempt {
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Ward-Event", event)
            .header("X-Ward-Delivery", id)
            .header("X-Ward-Signature", signature(&self.secret, body))
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r) => {
                let s = r.status();
                let why = format!("HTTP {s}");
                if s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429 {
                    Attempt::Retry(why)
                } else {
                    Attempt::Refused(why)
                }
            }
            // The source chain says why (e.g. the certificate's issuer is
            // unknown), which the top error alone does not.
            Err(e) => Attempt::Retry(ward_proto::error_chain(&e.without_url())),
        }
    }

    /// Posts one event until it is delivered, refused, or `retry_for` has
    /// passed; Err says why it finally failed.
    async fn deliver(&self, e: &AuditEntry, metrics: &Metrics) -> Result<u32, String> {
        let body = body(e);
        let id = delivery_id(&body);
        let start = Instant::now();
        let mut wait = Duration::from_millis(500);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let why = match self.attempt(&e.kind, &body, &id).await {
                Attempt::Delivered => return Ok(tries),
                Attempt::Refused(why) => return Err(format!("{why} after {tries} attempts")),
                Attempt::Retry(why) => why,
            };
            if start.elapsed() + wait > self.retry_for {
                return Err(format!(
                    "{why} after {tries} attempts over {}s",
                    start.elapsed().as_secs()
                ));
            }
            metrics.webhook("retried");
            tracing::warn!(url = %self.shown, event = %e.kind, request_id = %e.request_id,
                attempt = tries, error = %why, retry_in_ms = wait.as_millis() as u64,
                "webhook not delivered; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }
}

/// Records a notification that will not be delivered.
async fn record_failure(
    workflow: &Arc<std::sync::Mutex<Workflow>>,
    e: &AuditEntry,
    detail: String,
) {
    let wf = workflow.clone();
    let id = e.request_id.clone();
    let written = tokio::task::spawn_blocking(move || {
        wf.lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&id, "coordinator", FAILED, detail)
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(error = %err, request_id = %e.request_id,
            "could not audit an undelivered webhook"),
        Err(err) => tracing::error!(error = %err, "auditing an undelivered webhook panicked"),
    }
}

/// One webhook's worker: delivers its queue in order.
async fn work(
    hook: Endpoint,
    mut queue: mpsc::Receiver<AuditEntry>,
    workflow: Arc<std::sync::Mutex<Workflow>>,
    metrics: Arc<Metrics>,
) {
    while let Some(e) = queue.recv().await {
        match hook.deliver(&e, &metrics).await {
            Ok(tries) => {
                metrics.webhook("delivered");
                tracing::debug!(url = %hook.shown, event = %e.kind, tries, "webhook delivered");
            }
            Err(why) => {
                metrics.webhook("failed");
                tracing::error!(url = %hook.shown, event = %e.kind, request_id = %e.request_id,
                    error = %why, "webhook delivery failed; recorded in the audit log");
                let detail = format!("{} to {}: {why}", e.kind, hook.shown);
                record_failure(&workflow, &e, detail).await;
            }
        }
    }
}

/// Claims new audit events and queues them for every webhook, forever.
pub async fn run(
    workflow: Arc<std::sync::Mutex<Workflow>>,
    hooks: Vec<Endpoint>,
    metrics: Arc<Metrics>,
) {
    if hooks.is_empty() {
        return;
    }
    let queues: Vec<(mpsc::Sender<AuditEntry>, String)> = hooks
        .into_iter()
        .map(|hook| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let shown = hook.shown.clone();
            tokio::spawn(work(hook, rx, workflow.clone(), metrics.clone()));
            (tx, shown)
        })
        .collect();
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
            Err(e) => {
                tracing::error!(error = %e, "webhooks: reading events panicked");
                continue;
            }
        };
        for e in entries {
            for (queue, shown) in &queues {
                if let Err(err) = queue.try_send(e.clone()) {
                    let why = match err {
                        mpsc::error::TrySendError::Full(_) => "its queue is full",
                        mpsc::error::TrySendError::Closed(_) => "its worker stopped",
                    };
                    metrics.webhook("failed");
                    tracing::error!(url = %shown, event = %e.kind, reason = why,
                        "webhook event dropped; recorded in the audit log");
                    record_failure(&workflow, &e, format!("{} to {shown}: {why}", e.kind)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", "what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn hook(url: &str, secret_file: &std::path::Path) -> Webhook {
        Webhook {
            url: url.into(),
            secret_file: secret_file.to_owned(),
            ca_file: None,
            retry_for: default_retry_for(),
        }
    }

    #[test]
    fn urls_are_checked_with_the_field_named() {
        let dir = std::env::temp_dir().join(format!("ward-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("s");
        std::fs::write(&secret, "0123456789abcdef0123").unwrap();
        for (url, says) in [
            ("http://hooks.example.com/x", "only to loopback"),
            ("ftp://127.0.0.1/x", "expected https://"),
            ("https://user:pw@hooks.example.com/x", "carries credentials"),
            ("not a url", "relative URL"),
        ] {
            let err = load(&[hook(url, &secret)]).err().expect(url).to_string();
            assert!(err.starts_with("webhooks[0].url"), "{err}");
            assert!(err.contains(says), "{url}: {err}");
        }
        assert!(load(&[hook("http://127.0.0.1:9/x", &secret)]).is_ok());
        let short = dir.join("short");
        std::fs::write(&short, "tiny").unwrap();
        let err = load(&[hook("http://127.0.0.1:9/x", &short)]).err().unwrap();
        assert!(err.to_string().contains("secret_file"), "{err}");
        let mut with_ca = hook("https://127.0.0.1:9/x", &secret);
        with_ca.ca_file = Some(secret.clone());
        let err = load(&[with_ca]).err().unwrap().to_string();
        assert!(err.contains("webhooks[0].ca_file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_delivery_keeps_its_id_across_retries() {
        let b = r#"{"event":"created"}"#;
        assert_eq!(delivery_id(b), delivery_id(b));
        assert_ne!(delivery_id(b), delivery_id(r#"{"event":"approved"}"#));
        assert_eq!(delivery_id(b).len(), 32);
    }
}
