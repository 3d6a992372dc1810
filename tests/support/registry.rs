//! A throwaway CNCF distribution registry (Debian's `docker-registry`) on 127.0.0.1,
//! killed on drop, optionally with htpasswd basic auth; and a counting TCP proxy that
//! can cut one upload connection.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// True when every tool is on PATH; a missing tool fails the test under CI=true and
/// skips it (with a message) otherwise.
pub fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "tools missing: {} (Debian: docker-registry, skopeo, apache2-utils; scripts/test.sh installs them)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    false
}

pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// With `Some((user, password))`, the registry asks for htpasswd basic auth.
    pub fn start_with(basic: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut auth = String::new();
        if let Some((u, p)) = basic {
            let o = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd");
            assert!(o.status.success());
            let f = dir.path().join("htpasswd");
            fs::write(&f, &o.stdout).unwrap();
            auth = format!(
                "auth: {{htpasswd: {{realm: depotai-test, path: {}}}}}\n",
                f.display()
            );
        }
        let cfg = dir.path().join("config.yml");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(&addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                if resp.starts_with("HTTP/1.0 200")
                    || resp.starts_with("HTTP/1.1 200")
                    || resp.starts_with("HTTP/1.1 401")
                    || resp.starts_with("HTTP/1.0 401")
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { child, addr, dir }
    }

    /// The on-disk data file of a blob (`sha256:…`).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of a registry that records request lines, counts the bytes
/// sent back to the client, and can drop the connection carrying the N-th PATCH (once).
pub struct Proxy {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub down_bytes: Arc<AtomicU64>,
    pub cut_patch: Arc<AtomicUsize>,
    pub cut_done: Arc<AtomicBool>,
}

const METHODS: [&[u8]; 5] = [
    b"GET /v2/",
    b"HEAD /v2/",
    b"PUT /v2/",
    b"POST /v2/",
    b"PATCH /v2/",
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
            cut_patch: Arc::new(AtomicUsize::new(0)),
            cut_done: Arc::default(),
        };
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
                let (requests, cut, done, patches) =
                    (requests.clone(), cut.clone(), done.clone(), patches.clone());
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
