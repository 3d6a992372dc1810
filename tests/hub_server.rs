//! Self-tests of the Hub emulator (tests/support/hub.rs), with a tiny blocking HTTP/1.1
//! client on std::net so the server is checked independently of reqwest/hyper.

mod support;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::hub::*;

// ───────────────────────── mini HTTP client ─────────────────────────

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Body had exactly Content-Length bytes.
    complete: bool,
    /// Why the body stopped early (EOF = None with complete == false).
    body_error: Option<io::ErrorKind>,
}

impl Resp {
    fn h(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad json {e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn error_code(&self) -> Option<&str> {
        self.h("X-Error-Code")
    }
}

/// "http://host:port/path?q" -> ("host:port", "/path?q")
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

struct Conn {
    host: String,
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(url: &str) -> Conn {
        let (host, _) = split_url(url);
        let s = TcpStream::connect(&host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            host,
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.w.write_all(req.as_bytes()).unwrap();
        self.read_response(method == "HEAD")
    }

    fn read_response(&mut self, head_only: bool) -> Resp {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split(' ')
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
            complete: true,
            body_error: None,
        };
        if head_only || status == 304 {
            return resp;
        }
        let cl: Option<u64> = resp.h("Content-Length").map(|v| v.parse().unwrap());
        let want = cl.unwrap_or(u64::MAX);
        let mut buf = [0u8; 64 * 1024];
        while (resp.body.len() as u64) < want {
            let n = ((want - resp.body.len() as u64).min(buf.len() as u64)) as usize;
            match self.r.read(&mut buf[..n]) {
                Ok(0) => break,
                Ok(k) => resp.body.extend_from_slice(&buf[..k]),
                Err(e) => {
                    resp.body_error = Some(e.kind());
                    break;
                }
            }
        }
        resp.complete = cl.map_or(true, |c| resp.body.len() as u64 == c);
        resp
    }
}

/// One request on a fresh connection (`Connection: close`).
fn req(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    let (_, target) = split_url(url);
    let mut c = Conn::open(url);
    let mut h = headers.to_vec();
    h.push(("Connection", "close"));
    c.send(method, &target, &h)
}

fn get(url: &str) -> Resp {
    req("GET", url, &[])
}

fn get_h(url: &str, headers: &[(&str, &str)]) -> Resp {
    req("GET", url, headers)
}

fn head(url: &str) -> Resp {
    req("HEAD", url, &[])
}

// ───────────────────────── fixtures ─────────────────────────

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const C3: &str = "3333333333333333333333333333333333333333";
const GEN_SEED: u64 = 7;
const GEN_SIZE: u64 = 5 * 4096 + 123;

fn lfs_bytes() -> Vec<u8> {
    (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

fn fixture() -> Vec<Repo> {
    let c1_files = vec![
        RepoFile::regular(
            ".gitattributes",
            "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        ),
        RepoFile::regular("config.json", r#"{"hidden_size": 8}"#),
        RepoFile::regular("empty.txt", ""),
        RepoFile::regular("sub/b.txt", "bee\n"),
        RepoFile::regular("sub/dir/a.txt", "ay\n"),
        RepoFile::regular("a b#1?.bin", "special\n"),
        RepoFile::regular("ümlaut/файл.txt", "unicode\n"),
        RepoFile::regular("shared1.bin", "same\n"),
        RepoFile::regular("shared2.bin", "same\n"),
        RepoFile::lfs("model.safetensors", Content::Bytes(lfs_bytes())),
        RepoFile::lfs(
            "weights/gen.bin",
            Content::Generated {
                size: GEN_SIZE,
                seed: GEN_SEED,
            },
        ),
        RepoFile {
            path: "weights/plain-gen.bin".into(),
            content: Content::Generated {
                size: 3 * 4096 + 5,
                seed: 3,
            },
            lfs: false,
        },
    ];
    let c2_files = vec![RepoFile::regular("config.json", r#"{"hidden_size": 16}"#)];
    vec![
        Repo {
            id: "org/model".into(),
            commits: vec![
                (C1.into(), c1_files),
                (C2.into(), c2_files.clone()),
                (C3.into(), c2_files),
            ],
            branches: vec![
                ("main".into(), C1.into()),
                ("refs/pr/1".into(), C2.into()),
                ("v1.0".into(), C1.into()),
            ],
            gated: false,
            private: false,
        },
        Repo::new("solo", C1, vec![RepoFile::regular("x.txt", "x\n")]),
        Repo {
            gated: true,
            ..Repo::new(
                "org/gated",
                C1,
                vec![
                    RepoFile::regular("r.txt", "gated\n"),
                    RepoFile::lfs("w.bin", Content::Bytes(vec![9; 100])),
                ],
            )
        },
        Repo {
            private: true,
            ..Repo::new(
                "org/private",
                C1,
                vec![RepoFile::regular("p.txt", "private\n")],
            )
        },
        Repo::new(
            "org/big",
            C1,
            vec![RepoFile::lfs(
                "big.bin",
                Content::Generated {
                    size: BIG_SIZE,
                    seed: BIG_SEED,
                },
            )],
        ),
    ]
}

fn server() -> HubServer {
    HubServer::start(fixture())
}

// ───────────────────────── content ─────────────────────────

#[test]
fn generated_content_is_deterministic_offset_exact_and_blockwise_distinct() {
    let full = generated_bytes(GEN_SEED, 0, 64 * 4096);
    for (off, len) in [
        (0u64, 10usize),
        (5, 3),
        (4090, 20),
        (5000, 100),
        (8191, 4098),
        (60 * 4096 + 7, 4000),
    ] {
        assert_eq!(
            generated_bytes(GEN_SEED, off, len),
            full[off as usize..off as usize + len],
            "offset {off}"
        );
    }
    assert_eq!(full[4096..4104], 1u64.to_le_bytes());
    assert_eq!(full[2 * 4096 + 8..2 * 4096 + 16], GEN_SEED.to_le_bytes());
    let blocks: HashSet<&[u8]> = full.chunks(4096).collect();
    assert_eq!(blocks.len(), 64, "every 4 KiB block differs");
    // A shifted view of a block never equals the block (catches offset bugs).
    for d in [1usize, 2, 8, 16, 255, 256, 1024, 4095] {
        assert_ne!(full[4096 + d..8192 + d], full[4096..8192], "shift {d}");
    }
    assert_ne!(generated_bytes(GEN_SEED + 1, 0, 4096), full[..4096]);
    // High offsets (> 4 GiB) work and carry the block index.
    let hi = generated_bytes(GEN_SEED, 5 << 30, 16);
    assert_eq!(hi[..8], ((5u64 << 30) / 4096).to_le_bytes());

    let expect: [u8; 32] = Sha256::digest(generated_bytes(GEN_SEED, 0, GEN_SIZE as usize)).into();
    assert_eq!(generated_sha256(GEN_SIZE, GEN_SEED), expect);
    assert_eq!(generated_sha256_uncached(GEN_SIZE, GEN_SEED), expect);

    let t = Instant::now();
    let mut total = 0usize;
    for i in 0..4 {
        total += generated_bytes(1, i << 26, 64 << 20).len();
    }
    let rate = total as f64 / t.elapsed().as_secs_f64() / 1e9;
    eprintln!("generator: {rate:.2} GB/s (unoptimised test build)");
    assert!(rate > 0.3, "generator too slow: {rate:.2} GB/s");
}

#[test]
fn sha1_and_lfs_pointer_match_git() {
    let mut h = Sha1::new();
    h.update(b"abc");
    assert_eq!(
        hex::encode(h.finish()),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    let mut h = Sha1::new();
    for _ in 0..1000 {
        h.update(&[b'a'; 1000]);
    }
    assert_eq!(
        hex::encode(h.finish()),
        "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
    );
    assert_eq!(git_blob_sha1_hex(b""), EMPTY_BLOB_SHA1);
    assert_eq!(
        git_blob_sha1_hex(b"hello\n"),
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
    let p = lfs_pointer(&"ab".repeat(32), 440_473_133);
    assert_eq!(p.len(), 134);
    assert_eq!(p.len(), 43 + 76 + "size 440473133\n".len());
}

// ───────────────────────── API routes ─────────────────────────

#[test]
fn revision_info_with_and_without_blobs() {
    let s = server();
    let r = get(&format!(
        "{}/api/models/org/model/revision/main",
        s.endpoint
    ));
    assert_eq!(r.status, 200);
    assert!(r.h("X-Request-Id").unwrap().starts_with("Root=1-"));
    let j = r.json();
    assert_eq!(j["id"], "org/model");
    assert_eq!(j["modelId"], "org/model");
    assert_eq!(j["sha"], C1);
    assert_eq!(j["private"], false);
    assert_eq!(j["gated"], false);
    let names: BTreeSet<&str> = j["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rfilename"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 12);
    assert!(names.contains("ümlaut/файл.txt") && names.contains("weights/gen.bin"));
    assert!(
        j["siblings"][0].get("size").is_none(),
        "no sizes without blobs=true"
    );

    let j = get(&format!(
        "{}/api/models/org/model/revision/main?blobs=true",
        s.endpoint
    ))
    .json();
    let sib = |n: &str| {
        j["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["rfilename"] == n)
            .unwrap()
            .clone()
    };
    let cfg = sib("config.json");
    assert_eq!(cfg["size"], 18);
    assert_eq!(cfg["blobId"], git_blob_sha1_hex(br#"{"hidden_size": 8}"#));
    assert!(cfg.get("lfs").is_none());
    let m = sib("model.safetensors");
    let sha = hex::encode(Sha256::digest(lfs_bytes()));
    assert_eq!(m["size"], 10_000);
    assert_eq!(m["lfs"]["sha256"], sha.as_str());
    assert_eq!(m["lfs"]["size"], 10_000);
    assert_eq!(m["lfs"]["pointerSize"], 43 + 76 + "size 10000\n".len());
    assert_eq!(
        m["blobId"],
        git_blob_sha1_hex(lfs_pointer(&sha, 10_000).as_bytes())
    );
    assert_eq!(sib("shared1.bin")["blobId"], sib("shared2.bin")["blobId"]);
    let g = sib("weights/gen.bin");
    assert_eq!(
        g["lfs"]["sha256"],
        hex::encode(generated_sha256(GEN_SIZE, GEN_SEED))
    );

    // Plain `/api/models/{id}` = main; one-segment ids; revision as sha / encoded ref.
    assert_eq!(
        get(&format!("{}/api/models/org/model", s.endpoint)).json()["sha"],
        C1
    );
    assert_eq!(
        get(&format!("{}/api/models/solo/revision/main", s.endpoint)).json()["id"],
        "solo"
    );
    assert_eq!(
        get(&format!(
            "{}/api/models/org/model/revision/{C2}",
            s.endpoint
        ))
        .json()["sha"],
        C2
    );
    assert_eq!(
        get(&format!(
            "{}/api/models/org/model/revision/refs%2Fpr%2F1",
            s.endpoint
        ))
        .json()["sha"],
        C2
    );
    assert_eq!(
        get(&format!(
            "{}/api/models/org/model/revision/refs/pr/1",
            s.endpoint
        ))
        .json()["sha"],
        C2
    );
    assert_eq!(
        get(&format!(
            "{}/api/models/org/model/revision/v1.0",
            s.endpoint
        ))
        .json()["sha"],
        C1
    );
}

/// Follows `Link: <...>; rel="next"` and returns all entries plus the number of pages.
fn list_all(s: &HubServer, first: &str) -> (Vec<Value>, usize) {
    let mut url = first.to_string();
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&url);
        assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
        pages += 1;
        all.extend(r.json().as_array().unwrap().iter().cloned());
        match r.h("Link") {
            None => break,
            Some(link) => {
                let next = link
                    .strip_prefix('<')
                    .unwrap()
                    .split_once(">; rel=\"next\"")
                    .unwrap()
                    .0;
                assert!(
                    next.starts_with(&format!("{}/api/models/", s.endpoint)),
                    "absolute Link: {next}"
                );
                url = next.to_string();
            }
        }
        assert!(pages < 100);
    }
    (all, pages)
}

#[test]
fn tree_listing_pages_and_shapes() {
    let s = server();
    s.set_tree_page_size(3);
    let (all, pages) = list_all(
        &s,
        &format!(
            "{}/api/models/org/model/tree/main?recursive=true",
            s.endpoint
        ),
    );
    let paths: Vec<&str> = all.iter().map(|e| e["path"].as_str().unwrap()).collect();
    let dirs: BTreeSet<&str> = all
        .iter()
        .filter(|e| e["type"] == "directory")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    let files: BTreeSet<&str> = all
        .iter()
        .filter(|e| e["type"] == "file")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        dirs,
        BTreeSet::from(["sub", "sub/dir", "weights", "ümlaut"])
    );
    assert_eq!(files.len(), 12);
    assert_eq!(paths.len(), 16, "no duplicates across pages: {paths:?}");
    assert_eq!(pages, 6);
    // Directories first at the top level.
    assert_eq!(all[0]["type"], "directory");

    let e = |p: &str| all.iter().find(|e| e["path"] == p).unwrap().clone();
    assert_eq!(e("sub")["size"], 0);
    assert_eq!(e("sub")["oid"].as_str().unwrap().len(), 40);
    assert_eq!(
        e("config.json")["oid"],
        git_blob_sha1_hex(br#"{"hidden_size": 8}"#)
    );
    assert_eq!(e("config.json")["size"], 18);
    assert_eq!(e("empty.txt")["oid"], EMPTY_BLOB_SHA1);
    let m = e("model.safetensors");
    let sha = hex::encode(Sha256::digest(lfs_bytes()));
    assert_eq!(m["lfs"]["oid"], sha.as_str());
    assert_eq!(m["lfs"]["size"], 10_000);
    assert_eq!(
        m["oid"],
        git_blob_sha1_hex(lfs_pointer(&sha, 10_000).as_bytes())
    );
    assert!(m.get("xetHash").is_none());

    // recursive=1 works the same; the Link keeps the caller's parameters.
    let r = get(&format!(
        "{}/api/models/org/model/tree/main?recursive=1&expand=true",
        s.endpoint
    ));
    let link = r.h("Link").unwrap();
    assert!(
        link.contains("recursive=1") && link.contains("expand=true") && link.contains("cursor="),
        "{link}"
    );
    assert_eq!(r.json()[0]["lastCommit"]["id"], C1);
    let (all1, _) = list_all(
        &s,
        &format!("{}/api/models/org/model/tree/{C1}?recursive=1", s.endpoint),
    );
    assert_eq!(all1.len(), 16);

    // Non-recursive: top level only.
    s.set_tree_page_size(1000);
    let top = get(&format!("{}/api/models/org/model/tree/main", s.endpoint));
    assert!(top.h("Link").is_none());
    let top: BTreeSet<String> = top
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(top.len(), 10);
    assert!(top.contains("sub") && !top.contains("sub/b.txt"));

    // Sub-paths: multi-segment or %2F, recursive or not; missing -> EntryNotFound.
    let sub = get(&format!(
        "{}/api/models/org/model/tree/main/sub",
        s.endpoint
    ))
    .json();
    let sub: Vec<&str> = sub
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(sub, ["sub/dir", "sub/b.txt"]);
    let deep = get(&format!(
        "{}/api/models/org/model/tree/main/sub%2Fdir?recursive=true",
        s.endpoint
    ))
    .json();
    assert_eq!(deep[0]["path"], "sub/dir/a.txt");
    let u = get(&format!(
        "{}/api/models/org/model/tree/main/%C3%BCmlaut",
        s.endpoint
    ))
    .json();
    assert_eq!(u[0]["path"], "ümlaut/файл.txt");
    let r = get(&format!(
        "{}/api/models/org/model/tree/main/nope",
        s.endpoint
    ));
    assert_eq!((r.status, r.error_code()), (404, Some("EntryNotFound")));
}

// ───────────────────────── resolve ─────────────────────────

#[test]
fn resolve_shape_a_direct_with_ranges() {
    let s = server();
    let url = s.resolve_url("org/model", "main", "config.json");
    let body = br#"{"hidden_size": 8}"#;
    let etag = format!("\"{}\"", git_blob_sha1_hex(body));

    let h = head(&url);
    assert_eq!(h.status, 200);
    assert_eq!(h.h("ETag"), Some(etag.as_str()));
    assert_eq!(h.h("X-Repo-Commit"), Some(C1));
    assert_eq!(h.h("Content-Length"), Some("18"));
    assert_eq!(h.h("Accept-Ranges"), Some("bytes"));
    assert!(h.h("X-Linked-Etag").is_none() && h.h("X-Xet-Hash").is_none());

    let g = get(&url);
    assert_eq!((g.status, g.body.as_slice()), (200, &body[..]));

    for (range, status, cr, part) in [
        ("bytes=0-0", 206, "bytes 0-0/18", &body[0..1]),
        ("bytes=2-5", 206, "bytes 2-5/18", &body[2..6]),
        ("bytes=10-", 206, "bytes 10-17/18", &body[10..]),
        ("bytes=-3", 206, "bytes 15-17/18", &body[15..]),
        ("bytes=4-18", 206, "bytes 4-17/18", &body[4..]), // one past the end: clamped
        ("bytes=4-1000", 206, "bytes 4-17/18", &body[4..]),
    ] {
        let r = get_h(&url, &[("Range", range)]);
        assert_eq!(r.status, status, "{range}");
        assert_eq!(r.h("Content-Range"), Some(cr), "{range}");
        assert_eq!(r.body, part, "{range}");
        assert_eq!(r.h("X-Repo-Commit"), Some(C1));
    }
    let r = get_h(&url, &[("Range", "bytes=18-")]);
    assert_eq!((r.status, r.h("Content-Range")), (416, Some("bytes */18")));
    let r = get_h(&url, &[("Range", "bytes=0-1,4-5")]);
    assert_eq!(
        (r.status, r.body.len()),
        (200, 18),
        "multi-range -> full 200"
    );

    let r = get_h(&url, &[("If-None-Match", etag.as_str())]);
    assert_eq!((r.status, r.h("ETag")), (304, Some(etag.as_str())));

    // Empty file: well-known ETag, Range -> 416 (or 200 in the alternative mode).
    let e = s.resolve_url("org/model", "main", "empty.txt");
    let r = get(&e);
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.h("ETag"), Some(format!("\"{EMPTY_BLOB_SHA1}\"").as_str()));
    let r = get_h(&e, &[("Range", "bytes=0-0")]);
    assert_eq!((r.status, r.h("Content-Range")), (416, Some("bytes */0")));
    s.set_empty_range_200(true);
    assert_eq!(get_h(&e, &[("Range", "bytes=0-0")]).status, 200);

    // Special names, one-segment id, revisions by sha / encoded ref, non-LFS generated content.
    assert_eq!(
        get(&s.resolve_url("org/model", "main", "a b#1?.bin")).body,
        b"special\n"
    );
    let raw = format!(
        "{}/org/model/resolve/main/%C3%BCmlaut/%D1%84%D0%B0%D0%B9%D0%BB.txt",
        s.endpoint
    );
    assert_eq!(get(&raw).body, b"unicode\n");
    assert_eq!(get(&s.resolve_url("solo", "main", "x.txt")).body, b"x\n");
    let r = get(&s.resolve_url("org/model", "refs/pr/1", "config.json"));
    assert_eq!(
        (r.h("X-Repo-Commit"), r.body.as_slice()),
        (Some(C2), &br#"{"hidden_size": 16}"#[..])
    );
    assert!(s
        .resolve_url("org/model", "refs/pr/1", "x")
        .contains("/refs%2Fpr%2F1/"));
    let r = get(&s.resolve_url("org/model", C1, "weights/plain-gen.bin"));
    assert_eq!(r.body, generated_bytes(3, 0, 3 * 4096 + 5));
    assert_eq!(
        r.h("ETag").unwrap(),
        format!("\"{}\"", git_blob_sha1_hex(&r.body))
    );
}

#[test]
fn resolve_shape_c_redirects_to_cdn() {
    let s = server();
    s.add_token("hf_good", &[]);
    assert_ne!(
        split_url(&s.endpoint).0,
        split_url(&s.cdn).0,
        "different origins"
    );
    let url = s.resolve_url("org/model", "main", "model.safetensors");
    let sha = hex::encode(Sha256::digest(lfs_bytes()));
    for method in ["HEAD", "GET"] {
        let r = req(method, &url, &[("Range", "bytes=0-0")]);
        assert_eq!(r.status, 302, "{method}");
        assert_eq!(r.h("X-Repo-Commit"), Some(C1));
        assert_eq!(r.h("X-Linked-Etag"), Some(format!("\"{sha}\"").as_str()));
        assert_eq!(r.h("X-Linked-Size"), Some("10000"));
        assert!(r.h("X-Xet-Hash").is_none());
        let loc = r.h("Location").unwrap();
        assert!(
            loc.starts_with(&format!("{}/", s.cdn)),
            "absolute, on the CDN origin: {loc}"
        );
        assert!(loc.contains("Signature="));
    }
    let loc = head(&url).h("Location").unwrap().to_string();

    let h = head(&loc);
    assert_eq!(h.status, 200);
    assert_eq!(h.h("Content-Length"), Some("10000"));
    assert!(h.h("X-Repo-Commit").is_none());
    assert_ne!(
        h.h("ETag"),
        Some(format!("\"{sha}\"").as_str()),
        "CDN etag is not the sha256"
    );
    let g = get(&loc);
    assert_eq!((g.status, g.body), (200, lfs_bytes()));
    let r = get_h(&loc, &[("Range", "bytes=100-199")]);
    assert_eq!(
        (r.status, r.h("Content-Range")),
        (206, Some("bytes 100-199/10000"))
    );
    assert_eq!(r.body, lfs_bytes()[100..200]);
    assert_eq!(get_h(&loc, &[("Range", "bytes=10000-")]).status, 416);

    // Authorization must be dropped cross-origin; the query string must survive.
    assert_eq!(
        get_h(&loc, &[("Authorization", "Bearer hf_good")]).status,
        403
    );
    assert_eq!(get(&loc.replace("Signature=", "Signature=0")).status, 403);
    assert_eq!(get(loc.split('?').next().unwrap()).status, 403);
    // The CDN answers on 127.0.0.1 too (any Host).
    assert_eq!(get(&loc.replace("localhost", "127.0.0.1")).status, 200);

    // Generated LFS content by range.
    let gl = head(&s.resolve_url("org/model", "main", "weights/gen.bin"))
        .h("Location")
        .unwrap()
        .to_string();
    let r = get_h(&gl, &[("Range", "bytes=4090-8200")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, generated_bytes(GEN_SEED, 4090, 8200 - 4090 + 1));
    let full = get(&gl).body;
    assert_eq!(
        Sha256::digest(&full).as_slice(),
        generated_sha256(GEN_SIZE, GEN_SEED)
    );
}

#[test]
fn errors_follow_the_hub_table() {
    let s = server();
    s.add_token("hf_ok", &["org/gated", "org/private"]);
    s.add_token("hf_other", &[]);
    let ep = &s.endpoint;
    let check = |r: Resp, status: u16, code: Option<&str>, msg: &str| {
        assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.error_code(), code);
        assert!(
            r.h("X-Error-Message").unwrap().contains(msg),
            "{:?}",
            r.h("X-Error-Message")
        );
        assert!(r.h("X-Request-Id").is_some());
        if !r.body.is_empty() {
            assert!(r.json()["error"].as_str().unwrap().contains(msg));
        }
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let ok = bearer("hf_ok");
    let other = bearer("hf_other");

    // Unknown / private repos.
    for url in [
        format!("{ep}/api/models/org/nope/revision/main"),
        s.resolve_url("org/nope", "main", "x"),
    ] {
        check(get(&url), 401, Some("RepoNotFound"), "Repository not found");
        check(
            get_h(&url, &[("Authorization", &other)]),
            404,
            Some("RepoNotFound"),
            "Repository not found",
        );
    }
    let p = s.resolve_url("org/private", "main", "p.txt");
    check(get(&p), 401, Some("RepoNotFound"), "Repository not found");
    check(head(&p), 401, Some("RepoNotFound"), "Repository not found");
    check(
        get_h(&p, &[("Authorization", &other)]),
        404,
        Some("RepoNotFound"),
        "Repository not found",
    );
    assert_eq!(get_h(&p, &[("Authorization", &ok)]).body, b"private\n");
    check(
        get(&format!("{ep}/api/models/org/private/tree/main")),
        401,
        Some("RepoNotFound"),
        "Repository not found",
    );
    assert_eq!(
        get_h(
            &format!("{ep}/api/models/org/private"),
            &[("Authorization", &ok)]
        )
        .json()["private"],
        true
    );

    // Invalid token: even on public repos, no error code.
    check(
        get_h(
            &format!("{ep}/api/models/org/model"),
            &[("Authorization", "Bearer hf_bad")],
        ),
        401,
        None,
        "Invalid credentials in Authorization header",
    );
    check(
        get_h(
            &s.resolve_url("org/model", "main", "config.json"),
            &[("Authorization", "Basic eDp5")],
        ),
        401,
        None,
        "Invalid credentials",
    );

    // Gated: metadata public, files need an approved token.
    let gi = get(&format!("{ep}/api/models/org/gated/revision/main"));
    assert_eq!(
        (gi.status, gi.json()["gated"].clone()),
        (200, Value::from("manual"))
    );
    assert_eq!(
        get(&format!("{ep}/api/models/org/gated/tree/main")).status,
        200
    );
    for f in ["r.txt", "w.bin"] {
        let u = s.resolve_url("org/gated", "main", f);
        check(get(&u), 401, Some("GatedRepo"), "Access to model org/gated is restricted. You must have access to it and be authenticated");
        check(
            get_h(&u, &[("Authorization", &other)]),
            403,
            Some("GatedRepo"),
            "not in the authorized list",
        );
    }
    assert_eq!(
        get_h(
            &s.resolve_url("org/gated", "main", "r.txt"),
            &[("Authorization", &ok)]
        )
        .body,
        b"gated\n"
    );
    assert_eq!(
        head(&s.resolve_url("org/gated", "main", "w.bin")).status,
        401
    );
    let r = req(
        "HEAD",
        &s.resolve_url("org/gated", "main", "w.bin"),
        &[("Authorization", &ok)],
    );
    assert_eq!(r.status, 302);

    // Revisions and entries.
    let bad = "0000000000000000000000000000000000000000";
    check(
        get(&s.resolve_url("org/model", bad, "config.json")),
        404,
        Some("RevisionNotFound"),
        &format!("Invalid rev id: {bad}"),
    );
    check(
        get(&format!("{ep}/api/models/org/model/revision/nobranch")),
        404,
        Some("RevisionNotFound"),
        "Invalid rev id: nobranch",
    );
    check(
        get(&format!(
            "{ep}/api/models/org/model/tree/nobranch?recursive=true"
        )),
        404,
        Some("RevisionNotFound"),
        "nobranch",
    );
    let r = get(&s.resolve_url("org/model", "main", "missing.bin"));
    assert_eq!(r.h("X-Repo-Commit"), Some(C1));
    check(r, 404, Some("EntryNotFound"), "Entry not found");
    let r = head(&s.resolve_url("org/model", "main", "sub"));
    assert_eq!(
        (r.status, r.error_code()),
        (404, Some("EntryNotFound")),
        "a directory is not a file"
    );

    // Unknown route, wrong method.
    assert_eq!(get(&format!("{ep}/nothing/here")).status, 404);
    assert_eq!(
        req(
            "POST",
            &format!("{ep}/api/models/org/model"),
            &[("Content-Length", "0")]
        )
        .status,
        405
    );
}

#[test]
fn moving_a_branch_changes_main_but_not_pinned_shas() {
    let s = server();
    let main = s.resolve_url("org/model", "main", "config.json");
    let pinned = s.resolve_url("org/model", C1, "config.json");
    assert_eq!(head(&main).h("X-Repo-Commit"), Some(C1));
    s.move_branch("org/model", "main", C3);
    let r = get(&main);
    assert_eq!(
        (r.h("X-Repo-Commit"), r.body.as_slice()),
        (Some(C3), &br#"{"hidden_size": 16}"#[..])
    );
    assert_eq!(
        get(&format!("{}/api/models/org/model", s.endpoint)).json()["sha"],
        C3
    );
    let r = get(&pinned);
    assert_eq!(
        (r.h("X-Repo-Commit"), r.body.as_slice()),
        (Some(C1), &br#"{"hidden_size": 8}"#[..])
    );
    // Files missing at the new head.
    assert_eq!(
        get(&s.resolve_url("org/model", "main", "empty.txt")).status,
        404
    );
}

// ───────────────────────── faults ─────────────────────────

#[test]
fn fault_cut_after_closes_early_then_recovers() {
    let s = server();
    // Non-LFS: the resolve response carries the bytes.
    s.inject(Fault::CutAfter {
        path: "config.json".into(),
        bytes: 5,
        times: 1,
    });
    let url = s.resolve_url("org/model", "main", "config.json");
    let mut c = Conn::open(&url);
    let (_, target) = split_url(&url);
    let r = c.send("GET", &target, &[]); // keep-alive request: the server must close anyway
    assert_eq!(
        (r.status, r.h("Content-Length"), r.complete),
        (200, Some("18"), false)
    );
    assert_eq!(r.body, br#"{"hid"#);
    assert_eq!(r.body_error, None, "clean EOF");
    let r = get(&url);
    assert!(r.complete && r.body.len() == 18);

    // LFS: the CDN response carries the bytes; resume with a Range afterwards.
    s.inject(Fault::CutAfter {
        path: "weights/gen.bin".into(),
        bytes: 5000,
        times: 2,
    });
    let loc = head(&s.resolve_url("org/model", "main", "weights/gen.bin"))
        .h("Location")
        .unwrap()
        .to_string();
    assert_eq!(head(&loc).status, 200, "HEAD does not consume body faults");
    let r = get(&loc);
    assert_eq!((r.complete, r.body.len()), (false, 5000));
    assert_eq!(r.body, generated_bytes(GEN_SEED, 0, 5000));
    let r = get_h(&loc, &[("Range", "bytes=5000-")]);
    assert_eq!((r.status, r.complete, r.body.len()), (206, false, 5000));
    let r = get_h(&loc, &[("Range", "bytes=5000-")]);
    assert_eq!((r.status, r.complete), (206, true));
    assert_eq!(
        r.body,
        generated_bytes(GEN_SEED, 5000, (GEN_SIZE - 5000) as usize)
    );
}

#[test]
fn fault_wrong_bytes_and_wrong_length() {
    let s = server();
    let url = s.resolve_url("org/model", "main", "sub/b.txt");
    s.inject(Fault::WrongBytes {
        path: "sub/b.txt".into(),
        times: 1,
    });
    let r = get(&url);
    assert_eq!(r.body.len(), 4);
    assert_ne!(r.body, b"bee\n");
    assert_eq!(get(&url).body, b"bee\n");

    let loc = head(&s.resolve_url("org/model", "main", "model.safetensors"))
        .h("Location")
        .unwrap()
        .to_string();
    s.inject(Fault::WrongBytes {
        path: "model.safetensors".into(),
        times: 1,
    });
    let r = get(&loc);
    assert_eq!(r.body.len(), 10_000);
    assert_eq!(
        r.body
            .iter()
            .zip(lfs_bytes())
            .filter(|(a, b)| **a != *b)
            .count(),
        1
    );

    s.inject(Fault::WrongLength {
        path: "model.safetensors".into(),
        delta: -10,
        times: 1,
    });
    s.inject(Fault::WrongLength {
        path: "model.safetensors".into(),
        delta: 7,
        times: 1,
    });
    let r = get(&loc);
    assert!(r.complete);
    assert_eq!(
        (r.h("Content-Length"), r.body.as_slice()),
        (Some("9990"), &lfs_bytes()[..9990])
    );
    let r = get_h(&loc, &[("Range", "bytes=9990-")]);
    assert!(r.complete);
    assert_eq!(r.h("Content-Range"), Some("bytes 9990-10006/10007"));
    assert_eq!(r.body.len(), 17);
    assert_eq!(r.body[..10], lfs_bytes()[9990..]);
    let r = get(&loc);
    assert_eq!(r.body, lfs_bytes(), "faults exhausted");
}

#[test]
fn fault_status_times_then_success_and_429_headers() {
    let s = server();
    let url = s.resolve_url("org/model", "main", "config.json");
    s.inject(Fault::Status {
        path: "config.json".into(),
        status: 503,
        retry_after: None,
        times: 2,
    });
    assert_eq!(head(&url).status, 503);
    let r = get(&url);
    assert_eq!(r.status, 503);
    assert!(r.h("X-Request-Id").is_some());
    assert_eq!(get(&url).status, 200);

    s.inject(Fault::Status {
        path: "config.json".into(),
        status: 429,
        retry_after: Some(2),
        times: 1,
    });
    let r = get(&url);
    assert_eq!(r.status, 429);
    assert_eq!(r.h("Retry-After"), Some("2"));
    assert!(
        r.h("RateLimit").unwrap().contains("r=0"),
        "{:?}",
        r.h("RateLimit")
    );
    assert!(r.h("RateLimit-Policy").is_some());
    assert_eq!(get(&url).status, 200);

    // "*" hits API routes too, and both origins.
    s.inject(Fault::Status {
        path: "*".into(),
        status: 500,
        retry_after: None,
        times: 2,
    });
    assert_eq!(
        get(&format!("{}/api/models/org/model/tree/main", s.endpoint)).status,
        500
    );
    assert_eq!(
        get(&format!("{}/api/models/org/model", s.endpoint)).status,
        500
    );
    assert_eq!(
        get(&format!("{}/api/models/org/model", s.endpoint)).status,
        200
    );

    // A path-specific status on an LFS file hits the resolve and the CDN request.
    let res = s.resolve_url("org/model", "main", "model.safetensors");
    let loc = head(&res).h("Location").unwrap().to_string();
    s.inject(Fault::Status {
        path: "model.safetensors".into(),
        status: 502,
        retry_after: None,
        times: 2,
    });
    assert_eq!(head(&res).status, 502);
    assert_eq!(get(&loc).status, 502);
    assert_eq!(get(&loc).status, 200);
}

#[test]
fn fault_redirect_loop() {
    let s = server();
    s.inject(Fault::RedirectLoop {
        path: "config.json".into(),
    });
    let url = s.resolve_url("org/model", "main", "config.json");
    let (_, target) = split_url(&url);
    let mut next = url.clone();
    for _ in 0..12 {
        let r = get(&next);
        assert_eq!(r.status, 307);
        let loc = r.h("Location").unwrap();
        assert_eq!(loc, target, "relative, to itself");
        next = format!("{}{loc}", s.endpoint);
    }
    s.clear_faults();
    assert_eq!(get(&url).status, 200);
}

#[test]
fn fault_stall_holds_then_drop_releases() {
    let s = server();
    s.inject(Fault::Stall {
        path: "weights/gen.bin".into(),
        after_bytes: 4096,
        times: 1,
    });
    let loc = head(&s.resolve_url("org/model", "main", "weights/gen.bin"))
        .h("Location")
        .unwrap()
        .to_string();
    let (_, target) = split_url(&loc);
    let mut c = Conn::open(&loc);
    c.w.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let r = c.send("GET", &target, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 4096);
    assert!(
        matches!(
            r.body_error,
            Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        ),
        "{:?}",
        r.body_error
    );

    // Dropping the server ends the stalled connection promptly.
    let t = Instant::now();
    drop(s);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "drop took {:?}",
        t.elapsed()
    );
    c.w.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut rest = Vec::new();
    let n = c.r.read_to_end(&mut rest);
    assert!(
        matches!(n, Ok(0)) || n.is_err(),
        "connection closed after drop: {n:?}"
    );
}

#[test]
fn fault_traversal_names_are_listed_verbatim() {
    let s = server();
    for name in ["../evil", "/etc/passwd", "a\\b", "a//b", "sub/../../x"] {
        s.inject(Fault::TraversalName {
            repo: "org/model".into(),
            commit: C1.into(),
            name: name.into(),
        });
    }
    let (all, _) = list_all(
        &s,
        &format!(
            "{}/api/models/org/model/tree/main?recursive=true",
            s.endpoint
        ),
    );
    let paths: Vec<&str> = all.iter().map(|e| e["path"].as_str().unwrap()).collect();
    for name in ["../evil", "/etc/passwd", "a\\b", "a//b", "sub/../../x"] {
        assert!(paths.contains(&name), "{name} in tree");
    }
    let j = get(&format!(
        "{}/api/models/org/model/revision/main?blobs=true",
        s.endpoint
    ))
    .json();
    let sib: Vec<&str> = j["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rfilename"].as_str().unwrap())
        .collect();
    assert!(sib.contains(&"../evil") && sib.contains(&"a//b"));
    // Other commits are unaffected.
    let j = get(&format!(
        "{}/api/models/org/model/revision/{C2}",
        s.endpoint
    ))
    .json();
    assert_eq!(j["siblings"].as_array().unwrap().len(), 1);
    // An entry that survives URL normalisation can be fetched.
    let r = get(&format!("{}/org/model/resolve/main/a//b", s.endpoint));
    assert_eq!(r.body, TRAVERSAL_CONTENT);
}

// ───────────────────────── big file, log, connections ─────────────────────────

#[test]
fn big_generated_file_metadata_and_tail_ranges() {
    let s = server();
    let t = Instant::now();
    let sha = hex::encode(generated_sha256(BIG_SIZE, BIG_SEED));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "big sha256 must come from the table"
    );

    let tree = get(&format!("{}/api/models/org/big/tree/main", s.endpoint)).json();
    assert_eq!(tree[0]["size"], BIG_SIZE);
    assert_eq!(tree[0]["lfs"]["oid"], sha.as_str());
    assert_eq!(
        tree[0]["lfs"]["pointerSize"],
        43 + 76 + format!("size {BIG_SIZE}\n").len()
    );

    let r = head(&s.resolve_url("org/big", "main", "big.bin"));
    assert_eq!(r.status, 302);
    assert_eq!(r.h("X-Linked-Size"), Some("8589934593"));
    assert_eq!(r.h("X-Linked-Etag"), Some(format!("\"{sha}\"").as_str()));
    let loc = r.h("Location").unwrap().to_string();
    let h = head(&loc);
    assert_eq!(h.h("Content-Length"), Some("8589934593"));
    let r = get_h(&loc, &[("Range", "bytes=0-0")]);
    assert_eq!(r.h("Content-Range"), Some("bytes 0-0/8589934593"));
    let r = get_h(&loc, &[("Range", "bytes=8589934590-8589934593")]);
    assert_eq!(
        (r.status, r.h("Content-Range")),
        (206, Some("bytes 8589934590-8589934592/8589934593"))
    );
    assert_eq!(r.body, generated_bytes(BIG_SEED, BIG_SIZE - 3, 3));
    let r = get_h(&loc, &[("Range", "bytes=-1")]);
    assert_eq!(r.body, generated_bytes(BIG_SEED, BIG_SIZE - 1, 1));
    let four_g = 1u64 << 32;
    let r = get_h(
        &loc,
        &[("Range", &format!("bytes={}-{}", four_g - 10, four_g + 10))],
    );
    assert_eq!(r.body, generated_bytes(BIG_SEED, four_g - 10, 21));
    assert_eq!(get_h(&loc, &[("Range", "bytes=8589934593-")]).status, 416);
}

#[test]
#[ignore = "streams 8 GiB through sha256 (~10 s); run when changing the generator"]
fn big_generated_sha256_table_is_correct() {
    let got = hex::encode(generated_sha256_uncached(BIG_SIZE, BIG_SEED));
    eprintln!("sha256(BIG) = {got}");
    assert_eq!(got, hex::encode(generated_sha256(BIG_SIZE, BIG_SEED)));
}

#[test]
fn request_log_records_both_origins_in_order() {
    let s = server();
    s.add_token("hf_ok", &[]);
    let url = s.resolve_url("org/model", "main", "model.safetensors");
    let r = get_h(
        &url,
        &[("Authorization", "Bearer hf_ok"), ("Range", "bytes=0-9")],
    );
    get_h(r.h("Location").unwrap(), &[("Range", "bytes=0-9")]);
    let log = s.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0].origin, log[0].method.as_str(), log[0].status),
        (Origin::Hub, "GET", 302)
    );
    assert_eq!(log[0].path, "/org/model/resolve/main/model.safetensors");
    assert_eq!(log[0].authorization.as_deref(), Some("Bearer hf_ok"));
    assert_eq!(log[0].range.as_deref(), Some("bytes=0-9"));
    assert_eq!((log[1].origin, log[1].status), (Origin::Cdn, 206));
    assert!(log[1].path.starts_with("/lfs/") && log[1].path.contains("Signature="));
    assert_eq!(log[1].authorization, None);
    assert!(log[1]
        .headers
        .iter()
        .any(|(k, v)| k == "range" && v == "bytes=0-9"));
    s.clear_requests();
    assert!(s.requests().is_empty());
}

#[test]
fn keep_alive_and_connection_close() {
    let s = server();
    let url = s.resolve_url("org/model", "main", "config.json");
    let (_, target) = split_url(&url);
    let mut c = Conn::open(&url);
    for _ in 0..3 {
        let r = c.send("GET", &target, &[]);
        assert_eq!((r.status, r.body.len()), (200, 18));
        assert!(r.h("Connection").is_none());
        let r = c.send("HEAD", &target, &[]);
        assert_eq!(r.h("Content-Length"), Some("18"));
        let r = c.send("GET", "/api/models/org/model/tree/main", &[]);
        assert_eq!(r.status, 200);
    }
    let r = c.send("GET", &target, &[("Connection", "close")]);
    assert_eq!((r.status, r.h("Connection")), (200, Some("close")));
    let mut rest = Vec::new();
    assert_eq!(
        c.r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after Connection: close"
    );
}

#[test]
fn in_tests_a_file_above_the_whole_file_limit_is_served_only_in_range_requests() {
    let size = TEST_WHOLE_FILE_LIMIT + 1;
    let s = HubServer::start(vec![Repo::new(
        "org/weights",
        C1,
        vec![
            RepoFile::lfs("big.bin", Content::Generated { size, seed: 9 }),
            RepoFile::regular("config.json", "{}"),
        ],
    )]);
    let loc = head(&s.resolve_url("org/weights", "main", "big.bin"))
        .h("Location")
        .unwrap()
        .to_string();
    // As the Hub's CDN answers a GET of a file above 50 GB without Range.
    let r = get(&loc);
    assert_eq!(r.status, 400);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains(&format!(
            "The file is {size} bytes; files over {TEST_WHOLE_FILE_LIMIT} bytes are served only in Range requests."
        )),
        "{body}"
    );
    let r = get_h(&loc, &[("Range", &format!("bytes=0-{}", size - 1))]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, generated_bytes(9, 0, size as usize));
    // Small files and HEAD are served whole; the limit can be lifted.
    assert_eq!(
        get(&s.resolve_url("org/weights", "main", "config.json")).status,
        200
    );
    assert_eq!(
        head(&loc).h("Content-Length"),
        Some(size.to_string().as_str())
    );
    s.set_whole_file_limit(None);
    assert_eq!(get(&loc).body, generated_bytes(9, 0, size as usize));
}
