//! A real HTTPS server that records what is posted to it: a webhook
//! endpoint.

use std::{io::Write, net::TcpListener, path::Path, sync::Arc, sync::mpsc};

/// One request an endpoint answered: the status it gave, head, body.
pub type Served = (u16, String, String);

/// Serves HTTPS on `listener` with the certificate `NAME.pem` and key
/// `NAME.key` of `dir`, on a thread of its own: it answers each request
/// with the next of `statuses`, then 200, and sends what it served on the
/// channel returned. Connections whose TLS handshake or request fails are
/// dropped unrecorded.
pub fn https_endpoint(
    listener: TcpListener,
    dir: &Path,
    name: &str,
    statuses: Vec<u16>,
) -> mpsc::Receiver<Served> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for s in listener.incoming() {
            let Ok(s) = s else { break };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            let Some((head, body)) = read_request(&mut tls) else {
                continue;
            };
            let status = statuses.next().unwrap_or(200);
            let _ = write!(
                tls,
                "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                if status == 200 { "OK" } else { "Unavailable" }
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
            if tx.send((status, head, body)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads one HTTP request: (head, body), or None if the peer went away
/// (a refused TLS handshake among other things).
fn read_request(stream: &mut impl std::io::Read) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = header(head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return Some((head.to_owned(), body[..len].to_owned()));
            }
        }
    }
}

/// A header's value in an HTTP head, whatever the case of its name.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
