//! A counting TCP proxy in front of a registry that can cut one upload connection (the
//! registry itself is [`super::interop::Registry`]).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A TCP proxy in front of a registry that records request lines, counts the bytes
/// sent back to the client, and can drop the connection carrying the N-th PATCH (once).
pub struct Proxy {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub down_bytes: Arc<AtomicU64>,
    /// Bytes the client sent (requests and uploads), as on the wire.
    pub up_bytes: Arc<AtomicU64>,
    pub cut_patch: Arc<AtomicUsize>,
    pub cut_done: Arc<AtomicBool>,
}

const METHODS: [&[u8]; 6] = [
    b"GET /v2/",
    b"HEAD /v2/",
    b"PUT /v2/",
    b"POST /v2/",
    b"PATCH /v2/",
    b"DELETE /v2/",
];

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let p = Proxy {
            addr,
            requests: Arc::default(),
            down_bytes: Arc::default(),
            up_bytes: Arc::default(),
            cut_patch: Arc::new(AtomicUsize::new(0)),
            cut_done: Arc::default(),
        };
        let up = p.up_bytes.clone();
        let (requests, down, cut, done) = (
            p.requests.clone(),
            p.down_bytes.clone(),
            p.cut_patch.clone(),
            p.cut_done.clone(),
        );
        let upstream = upstream.to_string();
        let patches = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_r, mut c_w) = (client.try_clone().unwrap(), client);
                let (mut s_r, mut s_w) = (server.try_clone().unwrap(), server);
                let down = down.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = s_r.read(&mut buf) {
                        if n == 0 || c_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        down.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let _ = c_w.shutdown(Shutdown::Both);
                });
                let (requests, cut, done, patches, up) = (
                    requests.clone(),
                    cut.clone(),
                    done.clone(),
                    patches.clone(),
                    up.clone(),
                );
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = c_r.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let b = &buf[..n];
                        let mut drop_it = false;
                        for m in METHODS {
                            let mut from = 0;
                            while let Some(i) = find(b, m, from) {
                                let end = find(b, b"\r\n", i).unwrap_or(b.len());
                                let line = String::from_utf8_lossy(&b[i..end]).to_string();
                                if m == b"PATCH /v2/" {
                                    let k = patches.fetch_add(1, Ordering::SeqCst) + 1;
                                    if k == cut.load(Ordering::SeqCst)
                                        && !done.swap(true, Ordering::SeqCst)
                                    {
                                        drop_it = true;
                                    }
                                }
                                requests.lock().unwrap().push(line);
                                from = i + 1;
                            }
                        }
                        if drop_it {
                            let _ = c_r.shutdown(Shutdown::Both);
                            let _ = s_w.shutdown(Shutdown::Both);
                            return;
                        }
                        if s_w.write_all(b).is_err() {
                            break;
                        }
                        up.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let _ = s_w.shutdown(Shutdown::Write);
                });
            }
        });
        p
    }

    pub fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}
