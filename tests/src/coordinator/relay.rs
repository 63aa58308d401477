//! A TCP relay that can lose its flows, as a firewall or NAT does.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

/// A TCP relay on 127.0.0.1 to 127.0.0.1:`to` that can black-hole the
/// connections it holds: bytes are read and dropped both ways, and nothing
/// is closed, as when a firewall or NAT loses a flow's state. Later
/// connections relay.
pub struct Relay {
    port: u16,
    holed: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl Relay {
    /// Starts relaying, on threads of its own.
    pub fn to(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holed = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (h, a) = (holed.clone(), accepted.clone());
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                a.store(n + 1, Ordering::SeqCst);
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let h = h.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let Ok(got) = from.read(&mut buf) else { return };
                            if got == 0 {
                                let _ = into.shutdown(Shutdown::Write);
                                return;
                            }
                            // Connection n is black-holed once the hole
                            // count passes it.
                            if h.load(Ordering::SeqCst) <= n && into.write_all(&buf[..got]).is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Relay {
            port,
            holed,
            accepted,
        }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The first `connections_so_far` connections it accepted go silent
    /// ([`Relay::accepted`] silences every one so far).
    pub fn black_hole(&self, connections_so_far: usize) {
        self.holed.store(connections_so_far, Ordering::SeqCst);
    }
}
