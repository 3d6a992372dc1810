//! `depotai serve` end to end: the real binary on 127.0.0.1, spoken to with a small
//! raw HTTP/1.1 client (so every byte on the wire is ours to check), and pulled from by
//! skopeo and buildah.
//!
//! Interop tests skip with a message when skopeo/buildah/umoci are missing; with
//! `CI=true` a missing tool fails.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::interop::{buildah_copies_tiny_model_files, have, run_checked};
use support::*;

const TINY: &str = "fixtures/tiny-model";

struct Serve {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Serve {
    fn start(root: &Path, extra: &[&str]) -> Serve {
        let mut child = depotai()
            .arg("serve")
            .arg("--root")
            .arg(root)
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn depotai serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let Some((_, addr)) = first.trim().rsplit_once("http://") else {
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "depotai serve did not start: {first:?}\n{}",
                log.lock().unwrap()
            );
        };
        Serve {
            child,
            addr: addr.to_string(),
            log,
        }
    }

    fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[])
    }

    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        Client::connect(&self.addr).send(method, path, headers)
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        run_checked(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.child.id().to_string()),
        );
    }

    /// Waits for the process to exit (at most `limit`).
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "depotai serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ a raw HTTP/1.1 client

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The spec's error code, checking the error body's shape on the way.
    fn error_code(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        let e = &v["errors"][0];
        assert!(e["message"].is_string(), "{v}");
        e["code"].as_str().expect("errors[0].code").to_string()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive connection.
struct Client {
    r: BufReader<TcpStream>,
    host: String,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            r: BufReader::with_capacity(256 << 10, s),
            host: addr.to_string(),
        }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.write_request(method, path, headers);
        self.read_response(method == "HEAD")
    }

    fn write_request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {}\r\n", self.host));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
    }

    fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 "), "status line {line:?}");
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("header line");
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        (status, headers)
    }

    fn read_response(&mut self, head: bool) -> Resp {
        let (status, headers) = self.read_head();
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status == 304 || status == 204 {
            return resp;
        }
        let len: usize = resp
            .header("content-length")
            .expect("every response of ours has a Content-Length")
            .parse()
            .unwrap();
        resp.body = vec![0; len];
        self.r.read_exact(&mut resp.body).unwrap();
        resp
    }
}

fn parse_content_range(v: &str) -> (u64, u64, u64) {
    let rest = v.strip_prefix("bytes ").expect("bytes unit");
    let (range, total) = rest.split_once('/').unwrap();
    let (a, b) = range.split_once('-').unwrap();
    (
        a.parse().unwrap(),
        b.parse().unwrap(),
        total.parse().unwrap(),
    )
}

/// Parses a `multipart/byteranges` body strictly: (first, last, total, data) per part.
fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<(u64, u64, u64, Vec<u8>)> {
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("content type {content_type}"));
    let delim = format!("--{boundary}").into_bytes();
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    assert!(body.starts_with(&delim), "body starts with the boundary");
    let mut pos = delim.len();
    let mut parts = Vec::new();
    loop {
        if body[pos..].starts_with(b"--\r\n") {
            assert_eq!(pos + 4, body.len(), "nothing after the closing boundary");
            return parts;
        }
        assert_eq!(&body[pos..pos + 2], b"\r\n");
        pos += 2;
        let end = pos + find(&body[pos..], b"\r\n\r\n").expect("part headers end");
        let head = std::str::from_utf8(&body[pos..end]).unwrap();
        pos = end + 4;
        let cr = head
            .split("\r\n")
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-range"))
                    .map(|(_, v)| v.trim().to_string())
            })
            .expect("part has Content-Range");
        let (a, b, total) = parse_content_range(&cr);
        let n = (b - a + 1) as usize;
        parts.push((a, b, total, body[pos..pos + n].to_vec()));
        pos += n;
        assert_eq!(&body[pos..pos + 2], b"\r\n");
        assert!(body[pos + 2..].starts_with(&delim));
        pos += 2 + delim.len();
    }
}

/// xorshift64*, for the load test's random ranges.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ------------------------------------------------------------------ fixtures

fn build_at(root: &Path, name: &str, src: &Path, extra: &[&str]) -> Layout {
    let out = root.join(name);
    let mut flags = vec!["--quiet"];
    flags.extend_from_slice(extra);
    assert_ok(&build(src, name, &out, &flags));
    Layout::read(&out)
}

fn blob_path(l: &Layout, digest: &str) -> PathBuf {
    l.dir
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A model with one large incompressible file, so its layer is tens of MiB.
fn big_model(dir: &Path, mib: usize) {
    write(dir, "config.json", br#"{"model_type": "big"}"#);
    write(dir, "model.safetensors", &pseudo_random(mib << 20, 42));
    write(dir, "tokenizer.json", &pseudo_random(100_000, 7));
}

// ------------------------------------------------------------------ the API

#[test]
fn registry_api_serves_the_layouts_documents_and_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let tiny = build_at(&root, "acme/tiny-model", Path::new(TINY), &[]);
    let other_src = tmp.path().join("other-src");
    write(&other_src, "a.txt", b"other");
    build_at(&root, "acme/other", &other_src, &[]);
    build_at(&root, "solo", &other_src, &["--tag", "v1"]);
    // Staging leftovers and non-images are not listed.
    fs::create_dir_all(root.join("acme/.x.partial-1")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    let s = Serve::start(&root, &[]);

    let r = s.get("/v2/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{}");
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(s.get("/v2").status, 200);

    // Catalog, all at once and page by page.
    let r = s.get("/v2/_catalog");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["acme/other", "acme/tiny-model", "solo"])
    );
    let r = s.get("/v2/_catalog?n=1");
    assert_eq!(r.json()["repositories"], serde_json::json!(["acme/other"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/_catalog?n=1&last=acme%2Fother>; rel=\"next\"")
    );
    let r = s.get("/v2/_catalog?n=1&last=acme%2Fother");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["acme/tiny-model"])
    );
    let r = s.get("/v2/_catalog?n=1&last=acme/tiny-model");
    assert_eq!(r.json()["repositories"], serde_json::json!(["solo"]));
    assert_eq!(r.header("link"), None);
    let r = s.get("/v2/_catalog?n=0");
    assert_eq!(r.json()["repositories"], serde_json::json!([]));
    let r = s.get("/v2/_catalog?n=lots");
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "PAGINATION_NUMBER_INVALID");

    // Tags: give acme/other three more tags by hand, then page through them.
    let idx_path = root.join("acme/other/index.json");
    let mut idx: Value = serde_json::from_slice(&fs::read(&idx_path).unwrap()).unwrap();
    let first = idx["manifests"][0].clone();
    for t in ["b", "a", "c"] {
        let mut d = first.clone();
        d["annotations"]["org.opencontainers.image.ref.name"] = t.into();
        idx["manifests"].as_array_mut().unwrap().push(d);
    }
    fs::write(&idx_path, serde_json::to_vec(&idx).unwrap()).unwrap();
    let r = s.get("/v2/acme/other/tags/list");
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "acme/other", "tags": ["a", "b", "c", "latest"]})
    );
    let r = s.get("/v2/acme/other/tags/list?n=2");
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/acme/other/tags/list?n=2&last=b>; rel=\"next\"")
    );
    let r = s.get("/v2/acme/other/tags/list?n=2&last=b");
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "latest"]));
    assert_eq!(r.header("link"), None);
    assert_eq!(
        s.get("/v2/solo/tags/list").json()["tags"],
        serde_json::json!(["v1"])
    );

    // Manifests: the index by tag and by digest, then each platform's manifest.
    let index_bytes = Layout::blob_bytes(&tiny.dir, &tiny.index_digest);
    for reference in ["latest", tiny.index_digest.as_str()] {
        let path = format!("/v2/acme/tiny-model/manifests/{reference}");
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, index_bytes);
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(
            r.header("docker-content-digest"),
            Some(tiny.index_digest.as_str())
        );
        assert_eq!(
            r.header("etag"),
            Some(format!("\"{}\"", tiny.index_digest).as_str())
        );
        let h = s.req("HEAD", &path, &[]);
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        assert_eq!(
            h.header("content-length"),
            Some(index_bytes.len().to_string().as_str())
        );
        assert_eq!(
            h.header("docker-content-digest"),
            Some(tiny.index_digest.as_str())
        );
    }
    for m in tiny.index["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        let r = s.get(&format!("/v2/acme/tiny-model/manifests/{d}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, Layout::blob_bytes(&tiny.dir, d));
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        assert_eq!(r.header("docker-content-digest"), Some(d));
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
    }

    // Blobs: configs and the layer, whole.
    for man in &tiny.manifests {
        for d in [
            man["config"]["digest"].as_str().unwrap(),
            man["layers"][0]["digest"].as_str().unwrap(),
        ] {
            let r = s.get(&format!("/v2/acme/tiny-model/blobs/{d}"));
            assert_eq!(r.status, 200);
            assert_eq!(r.body, Layout::blob_bytes(&tiny.dir, d));
            assert_eq!(sha256(&r.body), d);
            assert_eq!(r.header("docker-content-digest"), Some(d));
            assert_eq!(r.header("content-type"), Some("application/octet-stream"));
            assert_eq!(r.header("accept-ranges"), Some("bytes"));
            assert_eq!(
                r.header("cache-control"),
                Some("public, max-age=31536000, immutable")
            );
        }
    }
    // A percent-encoded colon in the digest is the same digest.
    let r = s.get(&format!(
        "/v2/acme/tiny-model/blobs/{}",
        tiny.layer_digest.replace(':', "%3A")
    ));
    assert_eq!(r.status, 200);

    // Errors, with the spec's codes and bodies.
    let config = tiny.manifests[0]["config"]["digest"].as_str().unwrap();
    let missing = sha256(b"not here");
    for (path, status, code) in [
        (
            "/v2/acme/nope/manifests/latest".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
        ("/v2/acme/nope/tags/list".to_string(), 404, "NAME_UNKNOWN"),
        (
            "/v2/acme/nope/blobs/".to_string() + &missing,
            404,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/a/b/c/manifests/latest".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/Acme/Tiny/manifests/latest".to_string(),
            400,
            "NAME_INVALID",
        ),
        (
            "/v2/acme/tiny-model/manifests/nope".to_string(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/acme/tiny-model/manifests/{missing}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        // A config is a blob, not a manifest.
        (
            format!("/v2/acme/tiny-model/manifests/{config}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/acme/tiny-model/blobs/{missing}"),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            "/v2/acme/tiny-model/blobs/sha256:1234".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/acme/tiny-model/blobs/latest".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/acme/tiny-model/manifests/sha256:XYZ".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/acme/tiny-model/referrers/x".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "/v2/acme/tiny-model/uploads/x".to_string(),
            404,
            "UNSUPPORTED",
        ),
    ] {
        let r = s.get(&path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.error_code(), code, "{path}");
        // HEAD gets the same status and no body.
        let h = s.req("HEAD", &path, &[]);
        assert_eq!(h.status, status, "HEAD {path}");
    }
    assert_eq!(s.get("/nothing-here").status, 404);

    // Writes are refused with 405 and an UNSUPPORTED body.
    for (method, path) in [
        ("POST", "/v2/acme/tiny-model/blobs/uploads/"),
        ("PUT", "/v2/acme/tiny-model/manifests/latest"),
        ("DELETE", "/v2/acme/tiny-model/manifests/latest"),
        (
            "DELETE",
            &format!("/v2/acme/tiny-model/blobs/{}", tiny.layer_digest),
        ),
        ("PATCH", "/v2/acme/tiny-model/blobs/uploads/x"),
        ("POST", "/"),
    ] {
        let mut c = Client::connect(&s.addr);
        c.write_request(
            method,
            path,
            &[
                ("Content-Length", "2"),
                ("Content-Type", "application/json"),
            ],
        );
        c.r.get_mut().write_all(b"{}").unwrap();
        let r = c.read_response(false);
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.error_code(), "UNSUPPORTED");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }

    // The access log: one line per request, with method, path, status, bytes, time.
    let logs = s.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("\"GET /v2/ HTTP/1.1\""))
        .expect("access log line for GET /v2/");
    assert!(line.contains(" 200 2 ") && line.ends_with("ms"), "{line}");
    let layer_get = format!(
        "\"GET /v2/acme/tiny-model/blobs/{} HTTP/1.1\" 200 {} ",
        tiny.layer_digest,
        tiny.blob.len()
    );
    assert!(logs.contains(&layer_get), "{layer_get} in\n{logs}");
    assert!(logs.contains("\"POST /v2/acme/tiny-model/blobs/uploads/ HTTP/1.1\" 405 "));
}

#[test]
fn range_requests_conditional_requests_and_head_on_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let tiny = build_at(&root, "acme/tiny-model", Path::new(TINY), &[]);
    let s = Serve::start(&root, &["--quiet"]);
    let blob = &tiny.blob;
    let len = blob.len() as u64;
    let path = format!("/v2/acme/tiny-model/blobs/{}", tiny.layer_digest);
    let etag = format!("\"{}\"", tiny.layer_digest);
    let mut c = Client::connect(&s.addr);
    let mut get = |headers: &[(&str, &str)]| c.send("GET", &path, headers);

    // Single ranges: first bytes (the snapshotter's size probe), suffix (the footer),
    // open-ended, and one clamped to the end.
    for (range, a, b) in [
        ("bytes=0-1".to_string(), 0, 1),
        ("bytes=-51".to_string(), len - 51, len - 1),
        (format!("bytes={}-", len - 100), len - 100, len - 1),
        (format!("bytes=10-{}", len * 2), 10, len - 1),
        ("bytes=7-7".to_string(), 7, 7),
    ] {
        let r = get(&[("Range", &range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{b}/{len}").as_str()),
            "{range}"
        );
        assert_eq!(r.body, &blob[a as usize..=b as usize], "{range}");
        assert_eq!(
            r.header("content-length"),
            Some((b - a + 1).to_string().as_str())
        );
    }
    // The footer and TOC, read the way containers/storage does.
    let footer = get(&[("Range", "bytes=-51")]).body;
    let toc_offset = depotai::layer::estargz::parse_footer(&footer).expect("footer");
    let r = get(&[("Range", &format!("bytes={toc_offset}-{}", len - 52))]);
    assert_eq!(r.status, 206);
    let toc_tar = gunzip_member(&r.body, 0);
    assert_eq!(&toc_tar[..17], b"stargz.index.json");

    // Several ranges in one request (as the stargz snapshotter sends them).
    let r = get(&[(
        "Range",
        &format!("bytes=0-9, 100-199,{}-{},-51", len - 200, len - 150),
    )]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), None);
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let parts = parse_multipart(r.header("content-type").unwrap(), &r.body);
    let want = [
        (0, 9),
        (100, 199),
        (len - 200, len - 150),
        (len - 51, len - 1),
    ];
    assert_eq!(parts.len(), want.len());
    for ((a, b, total, data), (wa, wb)) in parts.iter().zip(want) {
        assert_eq!((*a, *b, *total), (wa, wb, len));
        assert_eq!(data, &blob[wa as usize..=wb as usize]);
    }

    // Unsatisfiable and malformed ranges: 416 with the length.
    for range in [
        format!("bytes={len}-"),
        "bytes=-0".into(),
        "bytes=9-3".into(),
        format!("bytes={len}-{}", len + 5),
    ] {
        let r = get(&[("Range", &range)]);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        assert_eq!(r.error_code(), "RANGE_INVALID");
    }
    // Another unit: ignored, the whole blob.
    let r = get(&[("Range", "lines=1-2")]);
    assert_eq!((r.status, r.body.as_slice()), (200, blob.as_slice()));

    // Conditional requests on the digest.
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"x\", {etag}"),
        "*".into(),
    ] {
        let r = get(&[("If-None-Match", &inm)]);
        assert_eq!(r.status, 304, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = get(&[("If-None-Match", "\"sha256:other\"")]);
    assert_eq!(r.status, 200);
    let r = get(&[("If-Range", &etag), ("Range", "bytes=0-3")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &blob[..4]));
    let r = get(&[("If-Range", "\"sha256:other\""), ("Range", "bytes=0-3")]);
    assert_eq!((r.status, r.body.len()), (200, blob.len()));

    // HEAD: the length and no body. The next response on the same connection parsing
    // cleanly shows that no body bytes were sent.
    let h = c.send("HEAD", &path, &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(h.header("accept-ranges"), Some("bytes"));
    let h = c.send("HEAD", &path, &[("Range", "bytes=0-1")]);
    assert_eq!(h.status, 200, "HEAD describes the whole blob");
    let r = c.send("GET", &path, &[("Range", "bytes=0-1")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &blob[..2]));

    // Ranges of a small document served from memory (the index, via the blobs route).
    let idx = Layout::blob_bytes(&tiny.dir, &tiny.index_digest);
    let r = c.send(
        "GET",
        &format!("/v2/acme/tiny-model/blobs/{}", tiny.index_digest),
        &[("Range", "bytes=1-4,-2")],
    );
    let parts = parse_multipart(r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts[0].3, &idx[1..5]);
    assert_eq!(parts[1].3, &idx[idx.len() - 2..]);

    // Manifests answer If-None-Match too.
    let r = c.send(
        "GET",
        "/v2/acme/tiny-model/manifests/latest",
        &[("If-None-Match", &format!("\"{}\"", tiny.index_digest))],
    );
    assert_eq!(r.status, 304);
}

#[test]
fn traversal_symlinks_and_other_images_blobs_read_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    let tiny = build_at(&root, "acme/tiny-model", Path::new(TINY), &[]);
    let secret_src = tmp.path().join("secret-src");
    write(&secret_src, "secret.txt", b"TOP-SECRET-CONTENT");
    let secret = build_at(&outside, "acme/secret", &secret_src, &[]);
    let other_src = tmp.path().join("other-src");
    write(&other_src, "other.txt", b"other");
    let other = build_at(&root, "acme/other", &other_src, &[]);
    fs::write(tmp.path().join("passwd"), "root:x:0:0:TOP-SECRET").unwrap();

    // A symlinked image directory that leads outside the root.
    std::os::unix::fs::symlink(outside.join("acme/secret"), root.join("acme/secret")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("outside")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    // A layout inside the root whose layer blob is a symlink to a file outside it.
    copy_dir(&secret.dir, &root.join("acme/linked"));
    let linked_layer = root
        .join("acme/linked/blobs/sha256")
        .join(secret.layer_digest.strip_prefix("sha256:").unwrap());
    fs::remove_file(&linked_layer).unwrap();
    std::os::unix::fs::symlink(blob_path(&secret, &secret.layer_digest), &linked_layer).unwrap();
    // A layout inside the root whose whole blobs directory is a symlink outside.
    let dirlink = root.join("acme/dirlink");
    fs::create_dir_all(&dirlink).unwrap();
    fs::copy(secret.dir.join("index.json"), dirlink.join("index.json")).unwrap();
    fs::copy(secret.dir.join("oci-layout"), dirlink.join("oci-layout")).unwrap();
    std::os::unix::fs::symlink(secret.dir.join("blobs"), dirlink.join("blobs")).unwrap();
    // A symlink inside the root pointing at an image inside it is fine.
    std::os::unix::fs::symlink(root.join("acme/tiny-model"), root.join("alias")).unwrap();

    let s = Serve::start(&root, &[]);
    let cat = s.get("/v2/_catalog").json();
    assert_eq!(
        cat["repositories"],
        serde_json::json!([
            "acme/dirlink",
            "acme/linked",
            "acme/other",
            "acme/tiny-model",
            "alias"
        ])
    );

    let layer = &tiny.layer_digest;
    let hex = layer.strip_prefix("sha256:").unwrap();
    let probes = [
        format!("/v2/../../etc/passwd/blobs/{layer}"),
        "/v2/../../../../../../etc/passwd/manifests/latest".to_string(),
        format!("/v2/%2e%2e/%2e%2e/etc/passwd/blobs/{layer}"),
        format!("/v2/acme/%2e%2e/%2e%2e/%2e%2e/passwd/blobs/{layer}"),
        "/v2/acme/..%2f..%2f..%2fpasswd/manifests/latest".to_string(),
        "/v2/acme/tiny-model/blobs/..%2F..%2F..%2F..%2Fpasswd".to_string(),
        format!("/v2/acme/tiny-model/blobs/sha256:..%2F..%2F{hex}"),
        "/v2/acme/tiny-model/manifests/..%2F..%2Findex.json".to_string(),
        "/v2/acme/tiny-model/manifests/..%2f..%2f..%2f..%2fpasswd".to_string(),
        "/v2//etc/passwd/manifests/latest".to_string(),
        "/v2/etc/manifests/latest".to_string(),
        "/v2/etc/passwd/manifests/latest".to_string(),
        "/v2/outside/acme/secret/manifests/latest".to_string(),
        "/v2/acme/secret/manifests/latest".to_string(),
        format!("/v2/acme/secret/blobs/{}", secret.layer_digest),
        "/v2/acme/secret/tags/list".to_string(),
        // The linked layout's layer resolves outside the root.
        format!("/v2/acme/linked/blobs/{}", secret.layer_digest),
        // The dirlink layout's documents all resolve outside the root.
        "/v2/acme/dirlink/manifests/latest".to_string(),
        format!("/v2/acme/dirlink/blobs/{}", secret.layer_digest),
        // acme/other's blobs exist under the root, but acme/tiny-model does not
        // reference them.
        format!("/v2/acme/tiny-model/blobs/{}", other.layer_digest),
        format!("/v2/acme/tiny-model/blobs/{}", other.index_digest),
        format!("/v2/acme/tiny-model/manifests/{}", other.index_digest),
        format!(
            "/v2/acme/tiny-model/blobs/{}",
            other.manifests[0]["config"]["digest"].as_str().unwrap()
        ),
    ];
    for p in &probes {
        let r = s.get(p);
        assert!(
            r.status == 400 || r.status == 404,
            "{p}: {} {}",
            r.status,
            r.text()
        );
        // A spec error body, so no file content.
        r.error_code();
        assert!(!r.text().contains("TOP-SECRET"), "{p}");
    }
    // The same blob is served under the name that references it.
    assert_eq!(
        s.get(&format!("/v2/acme/other/blobs/{}", other.layer_digest))
            .status,
        200
    );
    assert_eq!(s.get(&format!("/v2/alias/blobs/{layer}")).status, 200);
    // The linked layout's own documents are inside the root and are served.
    assert_eq!(s.get("/v2/acme/linked/manifests/latest").status, 200);
}

#[test]
fn images_built_or_copied_under_the_root_later_are_served_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let s = Serve::start(&root, &["--quiet"]);
    assert_eq!(
        s.get("/v2/_catalog").json()["repositories"],
        serde_json::json!([])
    );
    assert_eq!(
        s.get("/v2/acme/late/manifests/latest").error_code(),
        "NAME_UNKNOWN"
    );

    // Copied in file by file (not atomically), after the server started.
    let staged = build_at(
        &tmp.path().join("staging"),
        "acme/late",
        Path::new(TINY),
        &[],
    );
    copy_dir(&staged.dir, &root.join("acme/late"));
    let r = s.get("/v2/acme/late/manifests/latest");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(staged.index_digest.as_str())
    );
    let r = s.get(&format!("/v2/acme/late/blobs/{}", staged.layer_digest));
    assert_eq!(r.body, staged.blob);
    assert_eq!(
        s.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["acme/late"])
    );

    // Rebuilt in place with other content and another tag: the new image is served.
    let src = tmp.path().join("v2-src");
    write(&src, "weights.bin", &pseudo_random(5000, 3));
    let rebuilt = build_at(&root, "acme/late", &src, &["--tag", "v2"]);
    assert_ne!(rebuilt.index_digest, staged.index_digest);
    assert_eq!(
        s.get("/v2/acme/late/tags/list").json()["tags"],
        serde_json::json!(["v2"])
    );
    assert_eq!(
        s.get("/v2/acme/late/manifests/latest").error_code(),
        "MANIFEST_UNKNOWN"
    );
    let r = s.get("/v2/acme/late/manifests/v2");
    assert_eq!(
        r.header("docker-content-digest"),
        Some(rebuilt.index_digest.as_str())
    );
    // The old layer is no longer referenced by the name.
    assert_eq!(
        s.get(&format!("/v2/acme/late/blobs/{}", staged.layer_digest))
            .error_code(),
        "BLOB_UNKNOWN"
    );

    // A single-segment name works too; a removed image is gone.
    build_at(&root, "solo", Path::new(TINY), &[]);
    assert_eq!(s.get("/v2/solo/manifests/latest").status, 200);
    fs::remove_dir_all(root.join("acme/late")).unwrap();
    assert_eq!(
        s.get("/v2/acme/late/manifests/v2").error_code(),
        "NAME_UNKNOWN"
    );
    assert_eq!(
        s.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["solo"])
    );
}

#[test]
fn landing_page_lists_models_and_model_pages_their_files_with_copy_lines_all_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_at(&root, "acme/tiny-model", Path::new(TINY), &[]);
    let src = tmp.path().join("odd");
    write(&src, "<img src=x onerror=alert(1)>.txt", b"x");
    write(&src, "a b/c&d.json", b"{}");
    // Another commit than support::SHA, so the page shows each image's own.
    assert_ok(
        &depotai()
            .args(["build", "--quiet", "--name", "odd", "--from-dir"])
            .arg(&src)
            .args([
                "--sha",
                "fedcba9876543210fedcba9876543210fedcba98",
                "--output",
            ])
            .arg(root.join("odd"))
            .output()
            .unwrap(),
    );
    let s = Serve::start(&root, &[]);

    let r = s.req("GET", "/", &[("Host", "models.example:5000")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    for want in [
        "acme/</span>tiny-model",
        "title=\"0123456789abcdef0123456789abcdef01234567\"",
        "title=\"fedcba9876543210fedcba9876543210fedcba98\"",
        "<span class=\"tag\">latest</span>",
        "COPY --link --from=models.example:5000/acme/tiny-model / .",
        "COPY --link --from=models.example:5000/odd / .",
    ] {
        assert!(html.contains(want), "{want} missing from\n{html}");
    }
    // Each model's files are on its own page.
    let html = s
        .req(
            "GET",
            "/acme/tiny-model",
            &[("Host", "models.example:5000")],
        )
        .text();
    for want in [
        "model.safetensors",
        "modèle-überblick.txt",
        "data-path=\"1_Pooling/config.json\"",
        "COPY --link --from=models.example:5000/acme/tiny-model /config.json .",
        "COPY --link --from=models.example:5000/acme/tiny-model /model.safetensors .",
        // model.safetensors, 16472 bytes.
        "<td class=\"num\">16.1 KiB</td>",
    ] {
        assert!(html.contains(want), "{want} missing from\n{html}");
    }
    let html = s
        .req("GET", "/odd", &[("Host", "models.example:5000")])
        .text();
    for want in [
        "&lt;img src=x onerror=alert(1)&gt;.txt",
        "COPY --link --from=models.example:5000/odd [&quot;/a b/c&amp;d.json&quot;, &quot;.&quot;]",
    ] {
        assert!(html.contains(want), "{want} missing from\n{html}");
    }
    assert!(!html.contains("<img src=x"), "unescaped file name");

    // A Host header that is not a host is not echoed; the listen address is used.
    let r = s.req("GET", "/", &[("Host", "<script>x</script>")]);
    let html = r.text();
    assert!(!html.contains("<script>x"));
    assert!(html.contains(&format!(
        "COPY --link --from={}/acme/tiny-model / .",
        s.addr
    )));
    let h = s.req("HEAD", "/", &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
}

#[test]
fn sigterm_lets_a_download_finish_then_exits_143_and_ctrl_c_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("big");
    big_model(&src, 24);
    let l = build_at(&root, "acme/big", &src, &[]);
    let mut s = Serve::start(&root, &[]);

    let mut c = Client::connect(&s.addr);
    c.write_request(
        "GET",
        &format!("/v2/acme/big/blobs/{}", l.layer_digest),
        &[],
    );
    let (status, headers) = c.read_head();
    assert_eq!(status, 200);
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    c.r.read_exact(&mut body[..4096]).unwrap();
    // Mid-download: ask the server to stop, then keep reading.
    s.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "still serving the download"
    );
    assert!(
        TcpStream::connect(&s.addr).is_err(),
        "no new connections once shutting down"
    );
    c.r.read_exact(&mut body[4096..]).unwrap();
    assert!(body == l.blob, "the download in progress completed intact");
    // 128 + the signal, as every command a signal stops.
    let status = s.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(143), "{status}");
    // The log is read by a thread: give it the exited process's last line.
    let t = Instant::now();
    while !s.logs().contains("depotai: stopped by SIGTERM: serving ") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", s.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.logs().contains("shutting down"));
    assert!(TcpStream::connect(&s.addr).is_err());

    let mut s = Serve::start(&root, &["--quiet"]);
    assert_eq!(s.get("/v2/").status, 200);
    s.signal("INT");
    assert_eq!(s.wait(Duration::from_secs(15)).code(), Some(130));
}

// ------------------------------------------------------------------ load

#[test]
fn load_64_clients_reading_random_ranges_get_every_byte_right() {
    const CLIENTS: usize = 64;
    let secs: u64 = std::env::var("DEPOTAI_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("big");
    big_model(&src, 32);
    let l = build_at(&root, "acme/big", &src, &["--chunk-size", "1MiB"]);
    let s = Serve::start(&root, &["--quiet"]);
    let blob = Arc::new(l.blob.clone());
    let path = Arc::new(format!("/v2/acme/big/blobs/{}", l.layer_digest));
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (blob, path, requests, bytes, addr) = (
                blob.clone(),
                path.clone(),
                requests.clone(),
                bytes.clone(),
                s.addr.clone(),
            );
            std::thread::spawn(move || {
                let len = blob.len() as u64;
                let mut rng = Rng(0x9E3779B97F4A7C15 ^ ((i as u64 + 1) * 0x1000193));
                let mut c = Client::connect(&addr);
                let check = |a: u64, b: u64, data: &[u8]| {
                    if data != &blob[a as usize..=b as usize] {
                        panic!("client {i}: wrong bytes in {a}-{b}");
                    }
                };
                while Instant::now() < deadline {
                    let kind = rng.below(10);
                    let (range, want): (String, Vec<(u64, u64)>) = match kind {
                        0 => {
                            let k = 1 + rng.below(65536);
                            (format!("bytes=-{k}"), vec![(len - k.min(len), len - 1)])
                        }
                        1 => {
                            let a = len - 1 - rng.below(1 << 20);
                            (format!("bytes={a}-"), vec![(a, len - 1)])
                        }
                        2 | 3 => {
                            // Several 50 000-byte-aligned windows, as the snapshotter asks.
                            let n = 2 + rng.below(4);
                            let mut w: Vec<(u64, u64)> = (0..n)
                                .map(|_| {
                                    let a = rng.below(len / 50_000) * 50_000;
                                    (a, (a + 50_000 * (1 + rng.below(4))).min(len) - 1)
                                })
                                .collect();
                            w.sort();
                            w.dedup_by(|x, y| x.0 <= y.1);
                            let spec = w
                                .iter()
                                .map(|(a, b)| format!("{a}-{b}"))
                                .collect::<Vec<_>>()
                                .join(",");
                            (format!("bytes={spec}"), w)
                        }
                        _ => {
                            let a = rng.below(len);
                            let b = (a + rng.below(1 << 20)).min(len - 1);
                            (format!("bytes={a}-{b}"), vec![(a, b)])
                        }
                    };
                    let r = c.send("GET", &path, &[("Range", &range)]);
                    assert_eq!(r.status, 206, "client {i}: {range}");
                    if want.len() == 1 {
                        let (a, b, total) = parse_content_range(r.header("content-range").unwrap());
                        assert_eq!((a, b, total), (want[0].0, want[0].1, len), "{range}");
                        check(a, b, &r.body);
                    } else {
                        let parts = parse_multipart(r.header("content-type").unwrap(), &r.body);
                        assert_eq!(parts.len(), want.len(), "{range}");
                        for ((a, b, total, data), w) in parts.iter().zip(&want) {
                            assert_eq!((*a, *b, *total), (w.0, w.1, len), "{range}");
                            check(*a, *b, data);
                        }
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(r.body.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in threads {
        if let Err(e) = t.join() {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} clients failed: {failures:?}",
        failures.len()
    );
    let secs = start.elapsed().as_secs_f64();
    let (n, b) = (
        requests.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
    );
    println!(
        "load: {CLIENTS} clients, {secs:.1}s, {n} range requests ({:.0} req/s), {:.1} MiB verified ({:.1} MiB/s), 0 wrong bytes",
        n as f64 / secs,
        b as f64 / (1 << 20) as f64,
        b as f64 / (1 << 20) as f64 / secs
    );
    assert!(n > 0);
}

// ------------------------------------------------------------------ interop

#[test]
fn skopeo_copies_every_blob_from_the_server_with_identical_digests() {
    if !have(&["skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let tiny = build_at(&root, "acme/tiny-model", Path::new(TINY), &[]);
    // A file of three chunks, so chunked members are copied too.
    let chunked = tmp.path().join("chunked");
    support::write(&chunked, "w.bin", &support::pseudo_random(150_000, 3));
    build_at(&root, "solo", &chunked, &["--chunk-size", "64KiB"]);
    build_at(
        &root,
        "acme/zc",
        Path::new(TINY),
        &["--format", "zstd-chunked"],
    );
    let s = Serve::start(&root, &[]);
    for name in ["acme/tiny-model", "solo", "acme/zc"] {
        let dest = tmp.path().join(format!("copy-{}", name.replace('/', "-")));
        run_checked(
            Command::new("skopeo")
                .args([
                    "copy",
                    "--all",
                    "--preserve-digests",
                    "--src-tls-verify=false",
                ])
                .arg(format!("docker://{}/{name}:latest", s.addr))
                .arg(format!("oci:{}:latest", dest.display())),
        );
        let original = root.join(name);
        let idx = |d: &Path| -> Value {
            serde_json::from_slice(&fs::read(d.join("index.json")).unwrap()).unwrap()
        };
        assert_eq!(
            idx(&dest)["manifests"][0]["digest"],
            idx(&original)["manifests"][0]["digest"],
            "{name}: index digest"
        );
        let blobs = |d: &Path| -> BTreeMap<String, Vec<u8>> {
            fs::read_dir(d.join("blobs/sha256"))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().into_string().unwrap(),
                        fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        };
        // skopeo copies the tagged image; the provenance referrer listed after it in
        // index.json (and its blobs) stays behind.
        let (got, mut want) = (blobs(&dest), blobs(&original));
        for r in idx(&original)["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
        {
            let hex = &r["digest"].as_str().unwrap()[7..];
            let m: Value = serde_json::from_slice(&want[hex]).unwrap();
            want.remove(hex);
            want.remove(&m["config"]["digest"].as_str().unwrap()[7..]);
            for l in m["layers"].as_array().unwrap() {
                want.remove(&l["digest"].as_str().unwrap()[7..]);
            }
        }
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}: blob set"
        );
        assert!(got == want, "{name}: blob bytes");
        for (hex, bytes) in &got {
            assert_eq!(sha256_hex(bytes), *hex);
        }
    }
    assert!(s.logs().contains(&format!(
        "\"GET /v2/acme/tiny-model/blobs/{} HTTP/1.1\" 200",
        tiny.layer_digest
    )));
}

#[test]
fn buildah_copy_from_the_served_image_gets_the_files_byte_for_byte() {
    if !have(&["buildah", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let fixture = Path::new(TINY);
    build_at(&root, "acme/tiny-model", fixture, &[]);
    let s = Serve::start(&root, &[]);
    let image = format!("{}/acme/tiny-model:latest", s.addr);

    buildah_copies_tiny_model_files(&image, fixture, tmp.path());
    // buildah pulled from us: the manifest and the layer went over the wire.
    let logs = s.logs();
    assert!(
        logs.contains("\"GET /v2/acme/tiny-model/manifests/latest HTTP/1.1\" 200"),
        "{logs}"
    );
    assert!(logs.contains("/blobs/sha256:"), "{logs}");
}

/// Reads ranges the way the stargz snapshotter does (fs/remote/resolver.go): one GET with
/// all ranges and `Accept-Encoding: identity`, a multipart reply split with Go's
/// `mime/multipart` and each part placed by its `Content-Range`.
const GO_RANGE_READER: &str = r#"package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
)

func part(cr string, r io.Reader) {
	var start, end, total int64
	if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &start, &end, &total); err != nil {
		panic(fmt.Sprintf("Content-Range %q: %v", cr, err))
	}
	data, err := io.ReadAll(r)
	if err != nil {
		panic(err)
	}
	if int64(len(data)) != end-start+1 {
		panic(fmt.Sprintf("part %d-%d has %d bytes", start, end, len(data)))
	}
	fmt.Printf("%d %d %d %x\n", start, end, total, sha256.Sum256(data))
}

func main() {
	req, _ := http.NewRequest("GET", os.Args[1], nil)
	req.Header.Set("Range", os.Args[2])
	req.Header.Set("Accept-Encoding", "identity")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusPartialContent {
		panic(fmt.Sprintf("status %d", res.StatusCode))
	}
	mt, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err == nil && strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(res.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return
			}
			if err != nil {
				panic(err)
			}
			part(p.Header.Get("Content-Range"), p)
		}
	}
	part(res.Header.Get("Content-Range"), res.Body)
}
"#;

#[test]
fn gos_mime_multipart_reads_our_range_replies_as_the_snapshotter_does() {
    if !have(&["go"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("big");
    big_model(&src, 2);
    let l = build_at(&root, "acme/big", &src, &["--chunk-size", "256KiB"]);
    let s = Serve::start(&root, &["--quiet"]);
    let prog = tmp.path().join("rangeread.go");
    fs::write(&prog, GO_RANGE_READER).unwrap();
    let url = format!("http://{}/v2/acme/big/blobs/{}", s.addr, l.layer_digest);
    let len = l.blob.len() as u64;
    for (range, want) in [
        (
            "bytes=0-49999,100000-149999,1000000-1049999".to_string(),
            vec![(0, 49_999), (100_000, 149_999), (1_000_000, 1_049_999)],
        ),
        (
            "bytes=-51,0-1".to_string(),
            vec![(len - 51, len - 1), (0, 1)],
        ),
        ("bytes=0-1".to_string(), vec![(0, 1)]),
    ] {
        let out = run_checked(
            Command::new("go")
                .arg("run")
                .arg(&prog)
                .arg(&url)
                .arg(&range)
                .env("GO111MODULE", "off"),
        );
        let got: Vec<String> = out.lines().map(str::to_string).collect();
        let expected: Vec<String> = want
            .iter()
            .map(|&(a, b)| {
                format!(
                    "{a} {b} {len} {}",
                    sha256_hex(&l.blob[a as usize..=b as usize])
                )
            })
            .collect();
        assert_eq!(got, expected, "{range}");
    }
}

#[test]
fn podman_pulls_by_tag_and_by_digest() {
    if !have(&["podman"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let tiny = build_at(&root, "acme/tiny-model", Path::new(TINY), &[]);
    let s = Serve::start(&root, &["--quiet"]);
    let store = tmp.path().join("store");
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    let by_tag = format!("{}/acme/tiny-model:latest", s.addr);
    let by_digest = format!("{}/acme/tiny-model@{}", s.addr, tiny.index_digest);
    for image in [&by_tag, &by_digest] {
        run_checked(&mut podman(&["pull", "-q", "--tls-verify=false", image]));
    }
    let out = run_checked(&mut podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Digest}}",
        &by_tag,
    ]));
    assert_eq!(out.trim(), tiny.index_digest);
    let _ = podman(&["rmi", "--all", "--force"]).output();
}

#[test]
fn zstd_chunked_images_are_served_with_their_files_on_their_page() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let l = build_at(
        &root,
        "acme/zc",
        Path::new(TINY),
        &["--format", "zstd-chunked"],
    );
    let s = Serve::start(&root, &[]);
    let html = s
        .req("GET", "/acme/zc", &[("Host", "models.example")])
        .text();
    for want in [
        "acme/</span>zc",
        ">zstd:chunked<",
        "data-path=\"1_Pooling/config.json\"",
        "COPY --link --from=models.example/acme/zc /config.json .",
    ] {
        assert!(html.contains(want), "{want} not on the page");
    }
    // The layer by range, as a partial pull reads frames.
    let r = s.req(
        "GET",
        &format!("/v2/acme/zc/blobs/{}", l.layer_digest),
        &[("Range", "bytes=0-99")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, l.blob[..100]);
}
