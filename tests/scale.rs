//! The tools for proving depotai at real model size on a small machine, and one proof at
//! a few GiB: the Hub emulator serving generated weights (`Content::Weights`, nothing
//! stored), its CDN's whole-file limit (the real CDN refuses a GET without `Range` of a
//! file over 50 GB, huggingface/xet-core#592), and the registry that checks every
//! blob's digest and forgets its bytes (`tests/support/forgetful.rs`). `bench/scale.sh`
//! drives the same two servers at 1–100 GiB.

mod support;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;
use support::forgetful::{Forgetful, Options};
use support::hub::{
    depotai_against, generated_cache_dir, weights_model, Content, Dtype, HubServer, Origin, Repo,
    RepoFile,
};
use support::*;

const MIB: u64 = 1 << 20;

// ───────────────────────── a tiny HTTP/1.0 client ─────────────────────────

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request on its own connection (HTTP/1.0: the body ends at close).
fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = host.replace("localhost", "127.0.0.1");
    let mut s = TcpStream::connect(&addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = text.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

// ───────────────────────── the generating Hub ─────────────────────────

/// libdeflate level 1, as depotai compresses by default, of 4 MiB pieces (its chunk).
fn deflate_ratio(bytes: &[u8]) -> f64 {
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).unwrap());
    let mut out = vec![0u8; c.gzip_compress_bound(4 << 20)];
    let total: usize = bytes
        .chunks(4 << 20)
        .map(|p| c.gzip_compress(p, &mut out).unwrap())
        .sum();
    total as f64 / bytes.len() as f64
}

#[test]
fn generated_weights_compress_like_real_bf16_and_f32_safetensors() {
    // bench/gen_weights.py's tensors give gzip about 80 % (bf16) and 93 % (f32); real
    // models about 91 %. Pattern data (`Content::Generated`) compresses far better.
    let sample = |dtype| Content::weights(64 * MIB, 7, dtype).read(0, (32 * MIB) as usize);
    let (bf16, f32) = (
        deflate_ratio(&sample(Dtype::Bf16)),
        deflate_ratio(&sample(Dtype::F32)),
    );
    // Measured: 0.7953 and 0.9327.
    assert!((0.77..0.82).contains(&bf16), "bf16 ratio {bf16:.4}");
    assert!((0.91..0.95).contains(&f32), "f32 ratio {f32:.4}");
    let pattern = Content::Generated {
        size: 32 * MIB,
        seed: 7,
    };
    assert!(deflate_ratio(&pattern.read(0, (32 * MIB) as usize)) < 0.5);
}

#[test]
fn weights_bytes_depend_on_seed_and_offset_and_never_repeat_a_block() {
    let a = Content::weights(u64::MAX / 2, 1, Dtype::F32);
    let b = Content::weights(u64::MAX / 2, 2, Dtype::F32);
    let whole = a.read(0, (16 * MIB) as usize);
    // Any window reads the same bytes as the whole, far into a 100 GiB file too.
    for (off, len) in [(0u64, 1usize), (65_530, 20), (3 * MIB + 1, 70_000)] {
        assert_eq!(a.read(off, len), whole[off as usize..off as usize + len]);
    }
    let far = 100 << 30;
    assert_eq!(a.read(far + 10, 10), a.read(far, 30)[10..20]);
    assert_ne!(
        a.read(0, 4096),
        b.read(0, 4096),
        "another seed, other bytes"
    );
    // No two 64 KiB blocks of 16 MiB are equal (a compressor with a long window would
    // find them).
    let blocks: std::collections::HashSet<&[u8]> = whole.chunks(64 << 10).collect();
    assert_eq!(blocks.len(), 256);
}

#[test]
fn a_weights_sha256_is_computed_once_and_then_read_from_its_cache_file() {
    // Sizes and seeds no other test uses, so neither this process's memo nor an earlier
    // run's file has them (the files live under target/tmp in tests).
    let size = 64 * MIB + 12_345;
    let c = Content::weights(size, 99, Dtype::Bf16);
    let file = c.sha256_cache_file().expect("64 MiB and more are cached");
    assert!(file.starts_with(generated_cache_dir()));
    let _ = std::fs::remove_file(&file);
    let mut expect = Sha256::new();
    c.for_each_piece(|b| expect.update(b));
    let expect: [u8; 32] = expect.finalize().into();
    assert_eq!(c.sha256(), expect);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), hex::encode(expect));

    // A file already there is believed, not recomputed: plant a wrong hash for a
    // content not hashed yet and it comes back.
    let other = Content::weights(size, 98, Dtype::Bf16);
    let planted = other.sha256_cache_file().unwrap();
    assert_ne!(planted, file, "the name depends on the seed");
    std::fs::write(&planted, "ab".repeat(32)).unwrap();
    assert_eq!(other.sha256(), [0xab; 32]);
    std::fs::remove_file(planted).unwrap();
}

fn weights_repo(files: Vec<RepoFile>) -> HubServer {
    HubServer::start(vec![Repo::new("acme/huge", SHA, files)])
}

#[test]
fn a_generated_model_is_listed_with_its_lfs_sizes_and_sha256s() {
    let files = weights_model(300 * MIB + 7, 160 * MIB + 3);
    let total: u64 = files.iter().map(|f| f.content.len()).sum();
    assert_eq!(total, 300 * MIB + 7, "the model is exactly the size asked");
    let hub = weights_repo(files.clone());
    let tree = http(
        "GET",
        &format!(
            "{}/api/models/acme/huge/tree/{SHA}?recursive=true",
            hub.endpoint
        ),
        &[],
        b"",
    )
    .json();
    let listed: Vec<(String, u64, Option<String>)> = tree
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["size"].as_u64().unwrap(),
                e["lfs"]["oid"].as_str().map(str::to_string),
            )
        })
        .collect();
    let mut expect: Vec<(String, u64, Option<String>)> = files
        .iter()
        .map(|f| {
            let sha = f.lfs.then(|| {
                let mut h = Sha256::new();
                f.content.for_each_piece(|b| h.update(b));
                hex::encode(h.finalize())
            });
            (f.path.clone(), f.content.len(), sha)
        })
        .collect();
    expect.sort();
    assert_eq!(listed, expect);
    let big = &listed[1];
    assert_eq!(big.0, "model-00001-of-00003.safetensors");
    assert_eq!(big.1, 160 * MIB + 3);
}

/// The CDN URL the Hub redirects `path` to.
fn cdn_location(hub: &HubServer, path: &str) -> String {
    let r = http("GET", &hub.resolve_url("acme/huge", SHA, path), &[], b"");
    assert_eq!(r.status, 302);
    r.header("Location").unwrap().to_string()
}

#[test]
fn a_whole_get_of_a_file_above_the_limit_is_refused_with_400_while_ranges_are_served() {
    let files = weights_model(200 * MIB, 120 * MIB + 5);
    let (big, shard) = (files[0].clone(), files[1].clone());
    let hub = weights_repo(files);
    hub.set_whole_file_limit(Some(100 * MIB));
    let loc = cdn_location(&hub, &big.path);

    let r = http("GET", &loc, &[], b"");
    assert_eq!(r.status, 400);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("<Code>InvalidRequest</Code>"), "{text}");
    assert!(text.contains("only in Range requests"), "{text}");

    let r = http("GET", &loc, &[("Range", "bytes=65530-70009")], b"");
    assert_eq!(r.status, 206);
    let size = big.content.len();
    assert_eq!(
        r.header("Content-Range").unwrap(),
        format!("bytes 65530-70009/{size}")
    );
    assert_eq!(r.body, big.content.read(65_530, 4480));
    let r = http("GET", &loc, &[("Range", "bytes=-10")], b"");
    assert_eq!(r.body, big.content.read(size - 10, 10));
    // A HEAD is not a download: answered as always.
    let r = http("HEAD", &loc, &[], b"");
    assert_eq!(
        (r.status, r.header("Content-Length")),
        (200, Some(size.to_string().as_str()))
    );

    // A file under the limit is served whole, its bytes the listed sha256.
    let r = http("GET", &cdn_location(&hub, &shard.path), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), shard.content.sha256_hex());

    let log: Vec<(Origin, String, Option<String>, u16, u64)> = hub
        .requests()
        .into_iter()
        .filter(|q| q.origin == Origin::Cdn)
        .map(|q| (q.origin, q.method, q.range, q.status, q.body_len))
        .collect();
    let statuses: Vec<(u16, u64)> = log.iter().map(|l| (l.3, l.4)).collect();
    assert_eq!(
        statuses[1..5],
        [(206, 4480), (206, 10), (200, 0), (200, shard.content.len())]
    );
    assert_eq!(statuses[0].0, 400);

    // Off (the default for every other test): the same GET is served whole.
    hub.set_whole_file_limit(None);
    let r = http("GET", &loc, &[], b"");
    assert_eq!((r.status, r.body.len() as u64), (200, size));
}

// ───────────────────────── the forgetful registry ─────────────────────────

fn reg_url(reg: &Forgetful, path: &str) -> String {
    format!("http://{}{path}", reg.addr)
}

fn error_code(a: &Answer) -> String {
    a.json()["errors"][0]["code"].as_str().unwrap().to_string()
}

/// Opens an upload session in `repo`; returns its path.
fn open_upload(reg: &Forgetful, repo: &str) -> String {
    let r = http(
        "POST",
        &reg_url(reg, &format!("/v2/{repo}/blobs/uploads/")),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.header("Range"), Some("0-0"));
    r.header("Location").unwrap().to_string()
}

fn with_digest(loc: &str, digest: &str) -> String {
    format!("{loc}?digest={digest}")
}

#[test]
fn a_blob_whose_bytes_do_not_match_its_digest_is_refused_with_digest_invalid() {
    let reg = Forgetful::start();
    let loc = open_upload(&reg, "acme/m");
    let (sent, claimed) = (b"the bytes sent".to_vec(), sha256(b"other bytes"));
    let r = http(
        "PUT",
        &reg_url(&reg, &with_digest(&loc, &claimed)),
        &[],
        &sent,
    );
    assert_eq!(r.status, 400);
    assert_eq!(error_code(&r), "DIGEST_INVALID");
    assert_eq!(r.json()["errors"][0]["detail"]["computed"], sha256(&sent));
    assert_eq!(reg.digest_mismatches(), 1);
    assert!(reg.blobs().is_empty(), "nothing is recorded");
    let r = http(
        "HEAD",
        &reg_url(&reg, &format!("/v2/acme/m/blobs/{claimed}")),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
    // The session ended with the refusal, as in distribution.
    let r = http("GET", &reg_url(&reg, &loc), &[], b"");
    assert_eq!(
        (r.status, error_code(&r)),
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );
}

#[test]
fn a_chunked_upload_cut_midway_resumes_at_the_offset_the_registry_reports() {
    let reg = Forgetful::start_opts(Options {
        keep_blobs_up_to: 0,
        ..Options::default()
    });
    let blob = pseudo_random(3000, 4);
    let loc = open_upload(&reg, "acme/m");
    let url = reg_url(&reg, &loc);
    let r = http("PATCH", &url, &[("Content-Range", "0-999")], &blob[..1000]);
    assert_eq!((r.status, r.header("Range")), (202, Some("0-999")));

    // A PATCH that does not start where the upload is: 416, with where it is.
    let r = http(
        "PATCH",
        &url,
        &[("Content-Range", "500-1499")],
        &blob[500..1500],
    );
    assert_eq!((r.status, r.header("Range")), (416, Some("0-999")));

    // A PATCH whose connection drops after 700 of its 2000 bytes: those 700 stay.
    let mut s = TcpStream::connect(&reg.addr).unwrap();
    write!(s, "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: 1000-2999\r\nContent-Length: 2000\r\n\r\n").unwrap();
    s.write_all(&blob[1000..1700]).unwrap();
    s.shutdown(std::net::Shutdown::Both).unwrap();
    let mut held = None;
    for _ in 0..100 {
        let r = http("GET", &url, &[], b"");
        assert_eq!(r.status, 204);
        assert_eq!(r.header("Docker-Upload-UUID"), loc.rsplit('/').next());
        held = r.header("Range").map(str::to_string);
        if held.as_deref() == Some("0-1699") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(held.as_deref(), Some("0-1699"));

    let r = http(
        "PATCH",
        &url,
        &[("Content-Range", "1700-2999")],
        &blob[1700..],
    );
    assert_eq!((r.status, r.header("Range")), (202, Some("0-2999")));
    let d = sha256(&blob);
    let r = http("PUT", &reg_url(&reg, &with_digest(&loc, &d)), &[], b"");
    assert_eq!(
        (r.status, r.header("Docker-Content-Digest")),
        (201, Some(d.as_str()))
    );
    let seen = &reg.blobs()[&d];
    assert_eq!((seen.size, seen.uploads, seen.discarded()), (3000, 1, true));
    let patched: Vec<(String, u16, u64)> = reg
        .requests()
        .into_iter()
        .filter(|l| l.method == "PATCH")
        .map(|l| (l.method, l.status, l.bytes_in))
        .collect();
    assert_eq!(
        patched,
        [
            ("PATCH".into(), 202, 1000),
            ("PATCH".into(), 416, 0),
            ("PATCH".into(), 400, 700),
            ("PATCH".into(), 202, 1300)
        ]
    );
}

#[test]
fn a_head_after_the_bytes_are_discarded_answers_size_and_digest_and_a_get_says_discarded() {
    let reg = Forgetful::start();
    let big = pseudo_random((2 * MIB) as usize, 5);
    let small = b"{\"config\": true}".to_vec();
    for b in [&big, &small] {
        let url = reg_url(
            &reg,
            &format!("/v2/acme/m/blobs/uploads/?digest={}", sha256(b)),
        );
        assert_eq!(
            http("POST", &url, &[], b).status,
            201,
            "a monolithic upload"
        );
    }
    let url = reg_url(&reg, &format!("/v2/acme/m/blobs/{}", sha256(&big)));
    let r = http("HEAD", &url, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Length"),
        Some((2 * MIB).to_string().as_str())
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(sha256(&big).as_str())
    );
    assert!(r.body.is_empty());
    let r = http("GET", &url, &[], b"");
    assert_eq!(r.status, 410);
    assert_eq!(error_code(&r), "BLOB_UNKNOWN");
    let msg = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("discarded its bytes"), "{msg}");
    // Small blobs (configs) are kept and served.
    let r = http(
        "GET",
        &reg_url(&reg, &format!("/v2/acme/m/blobs/{}", sha256(&small))),
        &[],
        b"",
    );
    assert_eq!((r.status, r.body), (200, small));
    // Another repository has not seen it.
    let r = http(
        "HEAD",
        &reg_url(&reg, &format!("/v2/acme/other/blobs/{}", sha256(&big))),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
}

#[test]
fn a_manifest_naming_a_blob_not_in_its_repository_is_refused_until_mounted() {
    let reg = Forgetful::start();
    let config = b"{}".to_vec();
    let cd = sha256(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
        "layers": []
    }))
    .unwrap();
    let mt = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")];
    let put = |repo: &str| {
        http(
            "PUT",
            &reg_url(&reg, &format!("/v2/{repo}/manifests/v1")),
            &mt,
            &manifest,
        )
    };
    let r = put("acme/b");
    assert_eq!(
        (r.status, error_code(&r)),
        (400, "MANIFEST_BLOB_UNKNOWN".into())
    );
    assert_eq!(r.json()["errors"][0]["detail"]["missing"][0], cd.as_str());

    let url = reg_url(&reg, &format!("/v2/acme/a/blobs/uploads/?digest={cd}"));
    assert_eq!(http("POST", &url, &[], &config).status, 201);
    // A mount of a blob the source has not got opens an ordinary session.
    let r = http(
        "POST",
        &reg_url(
            &reg,
            &format!(
                "/v2/acme/b/blobs/uploads/?mount={}&from=acme/a",
                sha256(b"x")
            ),
        ),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    let r = http(
        "POST",
        &reg_url(
            &reg,
            &format!("/v2/acme/b/blobs/uploads/?mount={cd}&from=acme/a"),
        ),
        &[],
        b"",
    );
    assert_eq!(
        (r.status, r.header("Docker-Content-Digest")),
        (201, Some(cd.as_str()))
    );
    assert_eq!((reg.blobs()[&cd].uploads, reg.blobs()[&cd].mounts), (1, 1));

    let r = put("acme/b");
    assert_eq!(
        (r.status, r.header("Docker-Content-Digest")),
        (201, Some(sha256(&manifest).as_str()))
    );
    assert_eq!(reg.tag("acme/b", "v1"), Some(sha256(&manifest)));
    let r = http("GET", &reg_url(&reg, "/v2/acme/b/manifests/v1"), &[], b"");
    assert_eq!((r.status, &r.body), (200, &manifest));
    assert_eq!(r.header("Content-Type"), Some(mt[0].1));
    let log: Vec<(String, u16, u64, u64)> = reg
        .requests()
        .into_iter()
        .filter(|l| l.target.contains("/manifests/"))
        .map(|l| (l.method, l.status, l.bytes_in, l.bytes_out))
        .collect();
    let n = manifest.len() as u64;
    assert_eq!(
        log[1..],
        [("PUT".into(), 201, n, 0), ("GET".into(), 200, 0, n)]
    );
    assert_eq!((log[0].1, log[0].2), (400, n));
}

// ───────────────────────── the whole path ─────────────────────────

/// The configs and layers (digest, size) of every platform manifest of a layout.
fn layout_blobs(layout: &std::path::Path, index_digest: &str) -> Vec<(String, u64)> {
    let blob = |d: &str| -> Value {
        let p = layout
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap());
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let mut out = Vec::new();
    for m in blob(index_digest)["manifests"].as_array().unwrap() {
        let man = blob(m["digest"].as_str().unwrap());
        let layers = man["layers"].as_array().unwrap().iter();
        for d in std::iter::once(&man["config"]).chain(layers) {
            out.push((
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn a_model_streamed_from_the_generating_hub_into_the_forgetful_registry_equals_its_from_dir_build()
{
    // 2 GiB, one file above a lowered "50 GB" limit: the shape of a 100 GiB model.
    const TOTAL: u64 = 2 << 30;
    const BIG: u64 = (1 << 30) + 4099;
    const LIMIT: u64 = 768 * MIB;
    let files = weights_model(TOTAL, BIG);
    // Hashed before the Hub answers a listing (once ever: the sums are kept on disk).
    for f in &files {
        f.content.sha256();
    }
    let hub = weights_repo(files.clone());
    hub.set_whole_file_limit(Some(LIMIT));
    let reg = Forgetful::start();
    let tmp = tempfile::tempdir().unwrap();

    let started = Instant::now();
    let out = depotai_against(&hub, &tmp.path().join("hf-home"))
        .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"))
        .env("DEPOTAI_IDLE_TIMEOUT", "60")
        .args(["build", "acme/huge", "--sha", SHA, "--push"])
        .arg(format!("{}/acme/huge:latest", reg.addr))
        .args(["--insecure", "--no-cache", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let streamed: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "streamed {TOTAL} bytes in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // The Hub: every byte requested once, the big file only in ranges.
    let log = hub.requests();
    // File bytes: the CDN's and `resolve`'s answers (not the listing's).
    let served: u64 = log
        .iter()
        .filter(|r| r.file_path().is_some() && r.method == "GET")
        .filter(|r| matches!(r.status, 200 | 206))
        .map(|r| r.body_len)
        .sum();
    assert_eq!(served, TOTAL, "each byte of the model fetched once");
    let big_gets: Vec<_> = log
        .iter()
        .filter(|r| r.method == "GET" && r.file_path().as_ref() == Some(&files[0].path))
        .filter(|r| r.origin == Origin::Cdn)
        .collect();
    assert!(big_gets
        .iter()
        .all(|r| r.range.is_some() && r.status == 206));
    assert!(
        big_gets.len() as u64 >= BIG / (8 * MIB),
        "{} ranges",
        big_gets.len()
    );
    assert!(
        !log.iter().any(|r| r.status == 400),
        "no request was refused"
    );

    // The same files through --from-dir: the same image.
    let dir = tmp.path().join("model");
    for f in &files {
        f.content.write_file(&dir.join(&f.path)).unwrap();
    }
    let layout = tmp.path().join("layout");
    let o = build(&dir, "acme/huge", &layout, &["--json"]);
    assert_ok(&o);
    std::fs::remove_dir_all(&dir).unwrap();
    let reference: Value = serde_json::from_slice(&o.stdout).unwrap();
    let index = reference["index_digest"].as_str().unwrap();
    assert_eq!(streamed["index_digest"], index);
    assert_eq!(reg.tag("acme/huge", "latest").as_deref(), Some(index));

    // The registry verified every blob of the image, each uploaded once, and kept none
    // of the layers' bytes.
    let seen = reg.blobs();
    let expected = layout_blobs(&layout, index);
    assert!(
        expected.len() >= 5,
        "configs and the layers of three large files and the small ones"
    );
    for (d, size) in &expected {
        let b = seen
            .get(d)
            .unwrap_or_else(|| panic!("{d} was not verified"));
        assert_eq!((b.size, b.uploads, b.mounts), (*size, 1, 0), "{d}");
        assert!(b.discarded() || *size <= MIB, "{d} kept");
    }
    assert!(seen.values().all(|b| b.uploads == 1), "no blob sent twice");
    assert_eq!(reg.digest_mismatches(), 0);
    assert_eq!(reg.stats()["open_uploads"], 0);
}
