//! A hostile registry: a tiny HTTP/1.1 server on 127.0.0.1 that serves whatever
//! documents, layers and headers a test crafts (sizes that lie, offsets past the blob,
//! TOC and member bombs, names that escape, enormous headers), and the builders for
//! those layers. Blobs answer Range requests; everything else is served as given.

use depotai::layer::estargz::{footer, Toc, TocEntry, TOC_DIGEST_ANNOTATION};
use depotai::layer::zstd_chunked;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sha256;

/// One canned answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Arc<Vec<u8>>,
    /// Answer `Range` with 206 and the slice asked for.
    pub ranged: bool,
    /// For a ranged answer: send this many extra bytes past the range (a registry that
    /// sends more than it was asked for).
    pub overrun: usize,
}

impl Reply {
    pub fn json(body: Vec<u8>, media_type: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), media_type.into())],
            body: Arc::new(body),
            ranged: false,
            overrun: 0,
        }
    }

    pub fn blob(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: Arc::new(body),
            ranged: true,
            overrun: 0,
        }
    }

    pub fn status(status: u16, headers: Vec<(String, String)>) -> Reply {
        Reply {
            status,
            headers,
            body: Arc::new(Vec::new()),
            ranged: false,
            overrun: 0,
        }
    }
}

/// The server. Routes are exact paths (`/v2/acme/x/manifests/latest`); `/v2/` answers
/// 200 and anything unknown 404. With a [`Guard`], requests without its `Authorization`
/// get its 401 first.
pub struct Hostile {
    pub addr: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    /// `METHOD /path [Range: …]` of each request.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Each request's whole head (request line with its query, and every header), for
    /// tests of what a server was sent.
    pub heads: Arc<Mutex<Vec<String>>>,
    /// `METHOD /path` and the body of each `PUT` of a manifest (documents a client
    /// writes), for tests of what it wrote.
    pub manifests_put: Arc<Mutex<Vec<Written>>>,
    guard: Arc<Mutex<Option<Guard>>>,
}

/// A document a client wrote: `METHOD /path` and the body.
pub type Written = (String, Vec<u8>);

/// Authentication a [`Hostile`] asks for: every path but `open` answers 401 with
/// `WWW-Authenticate: challenge` unless the request carries `Authorization: wanted`.
#[derive(Clone, Debug)]
pub struct Guard {
    pub wanted: String,
    pub challenge: String,
    /// The token endpoint, answered without authentication.
    pub open: String,
}

struct Shared {
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    log: Arc<Mutex<Vec<String>>>,
    heads: Arc<Mutex<Vec<String>>>,
    manifests_put: Arc<Mutex<Vec<Written>>>,
    guard: Arc<Mutex<Option<Guard>>>,
}

fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 << 10 || s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(head)
}

/// `bytes=A-B` (one range; what depotai sends).
fn range_of(head: &str, len: usize) -> Option<(usize, usize)> {
    let v = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("range:")
            .map(str::to_string)
    })?;
    if len == 0 {
        // A redirect or challenge: nothing to take a range of.
        return None;
    }
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    let a: usize = a.parse().ok()?;
    let b: usize = b.parse::<u64>().ok()?.min(len as u64 - 1) as usize;
    (a <= b && b < len).then_some((a, b))
}

/// A header's value (the first of that name).
fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads and drops a request body (`Content-Length` or chunked), so that an upload is
/// answered rather than cut off.
fn drain_body(s: &mut TcpStream, head: &str) {
    let mut sink = std::io::sink();
    if let Some(n) = header_of(head, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        let _ = std::io::copy(&mut (&mut *s).take(n), &mut sink);
        return;
    }
    if !header_of(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return;
    }
    loop {
        let Some(line) = read_line(s) else { return };
        let Ok(n) = u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16) else {
            return;
        };
        // The chunk and its CRLF (after the last, empty chunk: the final CRLF).
        let _ = std::io::copy(&mut (&mut *s).take(n + 2), &mut sink);
        if n == 0 {
            return;
        }
    }
}

fn read_line(s: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > 1024 || s.read(&mut b).ok()? == 0 {
            return None;
        }
        line.push(b[0]);
    }
    Some(String::from_utf8_lossy(&line).trim().to_string())
}

fn answer(mut s: TcpStream, sh: &Shared) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let Some(head) = read_head(&mut s) else {
        return;
    };
    let head = String::from_utf8_lossy(&head).to_string();
    sh.heads.lock().unwrap().push(head.clone());
    let line = head.lines().next().unwrap_or("").to_string();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("").to_string();
    let length = header_of(&head, "content-length").and_then(|v| v.parse::<u64>().ok());
    match length {
        // A manifest (at most the 4 MiB registries take) is kept.
        Some(n) if method == "PUT" && path.contains("/manifests/") && n <= 4 << 20 => {
            let mut body = Vec::new();
            let _ = (&mut s).take(n).read_to_end(&mut body);
            sh.manifests_put
                .lock()
                .unwrap()
                .push((format!("{method} {path}"), body));
        }
        _ => drain_body(&mut s, &head),
    }
    let range_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
        .map(|l| format!(" [{}]", l.trim()))
        .unwrap_or_default();
    sh.log
        .lock()
        .unwrap()
        .push(format!("{method} {path}{range_line}"));
    let guard = sh.guard.lock().unwrap().clone();
    let refused =
        guard.filter(|g| path != g.open && header_of(&head, "authorization") != Some(&g.wanted));
    let reply = match (refused, sh.routes.lock().unwrap().get(&path)) {
        (Some(g), _) => Reply::status(401, vec![("WWW-Authenticate".into(), g.challenge)]),
        (None, Some(r)) => r.clone(),
        (None, None) if path == "/v2/" => Reply::json(b"{}".to_vec(), "application/json"),
        (None, None) => Reply::status(404, vec![]),
    };
    let mut status = reply.status;
    let mut extra = Vec::new();
    let body: &[u8] = match range_of(&head, reply.body.len()) {
        Some((a, b)) if reply.ranged => {
            status = 206;
            let end = (b + 1 + reply.overrun).min(reply.body.len());
            extra.push((
                "Content-Range".to_string(),
                format!("bytes {a}-{}/{}", end - 1, reply.body.len()),
            ));
            &reply.body[a..end]
        }
        _ => &reply.body[..],
    };
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in reply.headers.iter().chain(extra.iter()) {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    if s.write_all(out.as_bytes()).is_err() {
        return;
    }
    if method != "HEAD" {
        // The client may hang up once it has what it needs (a chunk inflated to its
        // declared size): that is not an error here.
        let _ = s.write_all(body);
    }
    let _ = s.flush();
}

impl Hostile {
    pub fn start() -> Hostile {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let h = Hostile {
            addr: l.local_addr().unwrap().to_string(),
            routes: Arc::default(),
            requests: Arc::default(),
            heads: Arc::default(),
            manifests_put: Arc::default(),
            guard: Arc::default(),
        };
        let shared = Arc::new(Shared {
            routes: h.routes.clone(),
            log: h.requests.clone(),
            heads: h.heads.clone(),
            manifests_put: h.manifests_put.clone(),
            guard: h.guard.clone(),
        });
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(s) = c else { continue };
                let sh = shared.clone();
                std::thread::spawn(move || answer(s, &sh));
            }
        });
        h
    }

    /// Asks for authentication from now on (see [`Guard`]).
    pub fn guard(&self, guard: Guard) {
        *self.guard.lock().unwrap() = Some(guard);
    }

    /// Every request head received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    /// Serves `manifest` (a JSON value) as the image `repo:latest`, by tag and by digest.
    pub fn manifest(&self, repo: &str, manifest: &Value) -> String {
        let bytes = serde_json::to_vec(manifest).unwrap();
        self.raw_manifest(repo, bytes)
    }

    /// Serves raw manifest bytes as `repo:latest` (and by digest).
    pub fn raw_manifest(&self, repo: &str, bytes: Vec<u8>) -> String {
        let d = sha256(&bytes);
        let mt = "application/vnd.oci.image.manifest.v1+json";
        self.route(
            &format!("/v2/{repo}/manifests/latest"),
            Reply::json(bytes.clone(), mt),
        );
        self.route(&format!("/v2/{repo}/manifests/{d}"), Reply::json(bytes, mt));
        format!("{}/{repo}:latest", self.addr)
    }

    /// Serves an image whose one layer is `layer` with these annotations (and `size`,
    /// normally the blob's length); returns the reference.
    pub fn image(&self, repo: &str, layer: &Layer) -> String {
        self.route(
            &format!("/v2/{repo}/blobs/{}", layer.digest),
            Reply::blob(layer.blob.clone()),
        );
        self.manifest(repo, &layer.manifest())
    }
}

/// A crafted layer and the descriptor a manifest gives it.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub digest: String,
    pub size: Value,
    pub media_type: String,
    pub annotations: Value,
}

impl Layer {
    pub fn manifest(&self) -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(b"{}"),
                "size": 2
            },
            "layers": [{
                "mediaType": self.media_type,
                "digest": self.digest,
                "size": self.size,
                "annotations": self.annotations
            }]
        })
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gzip member of `n` zero bytes, written in pieces (never held whole).
pub fn gzip_zeros(n: u64) -> Vec<u8> {
    gzip_after(&[], n)
}

/// One gzip member of `head` followed by `n` zero bytes.
pub fn gzip_after(head: &[u8], n: u64) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(head).unwrap();
    let piece = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(piece.len() as u64) as usize;
        e.write_all(&piece[..k]).unwrap();
        left -= k as u64;
    }
    e.finish().unwrap()
}

/// A tar holding `stargz.index.json` with `json`, as an eStargz TOC member holds it.
pub fn toc_tar(json: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("stargz.index.json").unwrap();
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, json).unwrap();
    b.into_inner().unwrap()
}

/// An eStargz blob: one gzip member per file (its payload, so a chunk's bytes start the
/// member), then `toc_member` (normally gzip of [`toc_tar`]) and the footer. `files`
/// gives each member's bytes; returns the blob and each member's offset, and the TOC
/// offset.
pub fn estargz_blob(members: &[Vec<u8>], toc_member: &[u8]) -> (Vec<u8>, Vec<u64>, u64) {
    let mut blob = Vec::new();
    let mut offsets = Vec::new();
    for m in members {
        offsets.push(blob.len() as u64);
        blob.extend_from_slice(m);
    }
    let toc_offset = blob.len() as u64;
    blob.extend_from_slice(toc_member);
    blob.extend_from_slice(&footer(toc_offset));
    (blob, offsets, toc_offset)
}

/// A well-formed eStargz layer of `files` (name, content), whose TOC `edit` may then
/// change (sizes, offsets, names, …) before it is written; the annotation carries the
/// digest of the TOC as written.
pub fn estargz_layer(files: &[(&str, Vec<u8>)], edit: impl FnOnce(&mut Toc, u64)) -> Layer {
    let members: Vec<Vec<u8>> = files.iter().map(|(_, c)| gzip(c)).collect();
    // Offsets first (the TOC member comes after the files and does not move them).
    let (_, offsets, toc_offset) = estargz_blob(&members, &[]);
    let mut toc = Toc {
        version: 1,
        entries: files
            .iter()
            .zip(&offsets)
            .map(|((name, c), &offset)| TocEntry {
                name: name.to_string(),
                kind: "reg".into(),
                size: c.len() as u64,
                mode: 0o644,
                offset,
                digest: sha256(c),
                chunk_digest: sha256(c),
                ..Default::default()
            })
            .collect(),
    };
    edit(&mut toc, toc_offset);
    let json = toc.to_json();
    let (blob, _, _) = estargz_blob(&members, &gzip(&toc_tar(&json)));
    Layer {
        digest: sha256(&blob),
        size: json!(blob.len()),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        annotations: json!({ TOC_DIGEST_ANNOTATION: sha256(&json) }),
        blob,
    }
}

/// An eStargz layer from raw parts: members, a TOC member, and the annotation's digest.
pub fn estargz_raw(members: &[Vec<u8>], toc_member: &[u8], toc_digest: &str) -> Layer {
    let (blob, _, _) = estargz_blob(members, toc_member);
    Layer {
        digest: sha256(&blob),
        size: json!(blob.len()),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        annotations: json!({ TOC_DIGEST_ANNOTATION: toc_digest }),
        blob,
    }
}

/// A zstd:chunked layer: one zstd frame per file, then the compressed TOC (`json`)
/// found through the manifest-position annotation `position` (`None`: the true one).
pub fn zstd_layer(frames: &[Vec<u8>], json: &[u8], position: Option<String>) -> Layer {
    let mut blob = Vec::new();
    for f in frames {
        blob.extend_from_slice(f);
    }
    let offset = blob.len();
    let compressed = zstd::bulk::compress(json, 3).unwrap();
    blob.extend_from_slice(&compressed);
    let position =
        position.unwrap_or_else(|| format!("{offset}:{}:{}:1", compressed.len(), json.len()));
    Layer {
        digest: sha256(&blob),
        size: json!(blob.len()),
        media_type: zstd_chunked::MEDIA_TYPE.into(),
        annotations: json!({
            zstd_chunked::MANIFEST_CHECKSUM_ANNOTATION: sha256(&compressed),
            zstd_chunked::MANIFEST_POSITION_ANNOTATION: position,
        }),
        blob,
    }
}

/// Runs the depotai binary as a user would, in `cwd` with `HOME` there too, under an
/// address-space limit of 512 MiB (`prlimit --as`), with no retries (a hostile answer
/// is not transient). Returns the output and, where `/usr/bin/time` exists, the peak
/// resident memory in KiB (its line is taken out of stderr).
pub fn depotai_bounded(cwd: &Path, args: &[&str]) -> (Output, Option<u64>) {
    depotai_bounded_env(cwd, args, &[])
}

/// [`depotai_bounded`] with these environment variables set as well.
pub fn depotai_bounded_env(
    cwd: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Output, Option<u64>) {
    let mut c = Command::new("prlimit");
    c.arg(format!("--as={}", 512u64 << 20)).arg("--");
    let timed = Path::new("/usr/bin/time").exists();
    if timed {
        c.args(["/usr/bin/time", "-f", "depotai-maxrss-kib=%M"]);
    }
    c.arg(env!("CARGO_BIN_EXE_depotai"))
        .args(args)
        .current_dir(cwd)
        .env("HOME", cwd)
        .env("DEPOTAI_REGISTRY_RETRIES", "0")
        .env("RUST_BACKTRACE", "1")
        .env_remove("DOCKER_CONFIG")
        .env_remove("DEPOTAI_REGISTRY_USER")
        .env_remove("DEPOTAI_REGISTRY_PASSWORD")
        .envs(env.iter().copied());
    let o = c.output().expect("run prlimit depotai");
    with_peak(o)
}

/// Splits `/usr/bin/time`'s `depotai-maxrss-kib=N` line off stderr.
pub fn with_peak(mut o: Output) -> (Output, Option<u64>) {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let mut peak = None;
    let kept: Vec<&str> = err
        .lines()
        .filter(|l| match l.strip_prefix("depotai-maxrss-kib=") {
            Some(n) => {
                peak = n.trim().parse().ok();
                false
            }
            // time's note on a non-zero exit status.
            None => !l.starts_with("Command exited with non-zero status"),
        })
        .collect();
    o.stderr = kept
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes();
    (o, peak)
}
