//! Hostile registries and Hubs: every crafted answer gets a one-line error naming what
//! was wrong, exit status 1, no panic or abort, memory inside a 512 MiB address-space
//! limit (`prlimit --as`, so any allocation from a lying size fails loudly), and nothing
//! written anywhere but the output path (and there, no file).

#[path = "../support/mod.rs"]
mod support;

// The second round's cases (issue 22), one file per seam.
mod builder;
mod credentials;
mod fallback;
mod get_serve;
mod hub_cache;

use depotai::layer::estargz::{Toc, TocEntry};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;
use support::hostile::{
    depotai_bounded, estargz_layer, estargz_raw, gzip, gzip_after, gzip_zeros, toc_tar, zstd_layer,
    Hostile, Reply,
};
use support::hub::{depotai_against, Fault, HubServer, Repo, RepoFile};
use support::sha256;

/// Every file (not directory) under `dir`.
fn files_under(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().display().to_string())
        .collect()
}

/// The run failed as it should: exit status 1, one line on stderr that contains `want`,
/// no panic, no allocation failure, and no file anywhere under `cwd`.
fn assert_refused(run: &(Output, Option<u64>), cwd: &Path, want: &str) {
    let (o, peak) = run;
    let err = String::from_utf8_lossy(&o.stderr);
    if let Some(kib) = peak {
        eprintln!("peak RSS {kib} KiB: {}", err.trim());
        assert!(*kib < 512 << 10, "{kib} KiB");
    }
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("depotai: error: "), "{err}");
    assert!(err.contains(want), "wanted {want:?} in: {err}");
    for bad in [
        "panicked",
        "backtrace",
        "memory allocation",
        "RUST_BACKTRACE",
    ] {
        assert!(!err.contains(bad), "{bad}: {err}");
    }
    assert_eq!(files_under(cwd), Vec::<String>::new(), "files left behind");
}

/// `depotai ARGS` in a fresh directory (also its HOME), bounded; the directory is kept
/// for the checks.
fn run(args: &[&str]) -> ((Output, Option<u64>), tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let o = depotai_bounded(cwd.path(), args);
    (o, cwd)
}

fn ls(reference: &str) -> ((Output, Option<u64>), tempfile::TempDir) {
    run(&["ls", reference, "--insecure"])
}

fn get(reference: &str, path: &str) -> ((Output, Option<u64>), tempfile::TempDir) {
    run(&["get", reference, path, "--insecure", "-o", "out/got"])
}

fn config() -> (&'static str, Vec<u8>) {
    ("config.json", br#"{"hidden_size": 8}"#.to_vec())
}

#[test]
fn a_toc_declaring_a_1_tib_file_is_refused_before_anything_is_allocated() {
    let h = Hostile::start();
    let layer = estargz_layer(&[config()], |toc, _| {
        toc.entries[0].size = 1 << 40;
        toc.entries[0].chunk_size = 1 << 40;
    });
    let r = h.image("acme/tib", &layer);
    let (o, cwd) = get(&r, "/config.json");
    assert_refused(
        &o,
        cwd.path(),
        "\"config.json\": the chunk at 0 declares 1099511627776 bytes from",
    );
    let (o, cwd) = ls(&r);
    assert_refused(&o, cwd.path(), "declares 1099511627776 bytes");
}

#[test]
fn a_toc_member_that_inflates_past_the_limit_is_stopped() {
    // A PAX header claiming 200 MiB of extended attributes: 200 KiB compressed, read
    // into memory by a tar reader unless the inflating stops.
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("pax").unwrap();
    h.set_size(200 << 20);
    h.set_cksum();
    let member = gzip_after(h.as_bytes(), 200 << 20);
    assert!(member.len() < 1 << 20, "{}", member.len());
    let h = Hostile::start();
    let layer = estargz_raw(&[], &member, &sha256(b"{}"));
    let (o, cwd) = ls(&h.image("acme/tocbomb", &layer));
    assert_refused(
        &o,
        cwd.path(),
        "the TOC member inflates to more than 51.0 MiB",
    );
}

#[test]
fn a_toc_whose_tar_declares_more_than_the_limit_is_refused() {
    let json = b"{\"version\":1,\"entries\":[]}";
    let mut tar_bytes = toc_tar(json);
    // Rewrite the size field: 3 GiB, and a valid checksum for the changed header.
    let mut h = tar::Header::new_ustar();
    h.as_mut_bytes().copy_from_slice(&tar_bytes[..512]);
    h.set_size(3 << 30);
    h.set_cksum();
    tar_bytes[..512].copy_from_slice(h.as_bytes());
    let h = Hostile::start();
    let layer = estargz_raw(&[], &gzip(&tar_bytes), &sha256(json));
    let (o, cwd) = ls(&h.image("acme/bigtoc", &layer));
    assert_refused(&o, cwd.path(), "the TOC declares 3221225472 bytes");
}

#[test]
fn a_member_that_inflates_past_its_chunk_is_cut_at_the_chunk_size() {
    // 1 GiB of zeros in one member; the TOC says the file is its first 1 MiB.
    let bomb = gzip_zeros(1 << 30);
    let want = vec![0u8; 1 << 20];
    let toc = Toc {
        version: 1,
        entries: vec![TocEntry {
            name: "weights.bin".into(),
            kind: "reg".into(),
            size: want.len() as u64,
            mode: 0o644,
            offset: 0,
            digest: sha256(&want),
            chunk_digest: sha256(&want),
            ..Default::default()
        }],
    };
    let json = toc.to_json();
    let layer = estargz_raw(
        std::slice::from_ref(&bomb),
        &gzip(&toc_tar(&json)),
        &sha256(&json),
    );
    let h = Hostile::start();
    let r = h.image("acme/memberbomb", &layer);
    let cwd = tempfile::tempdir().unwrap();
    let (o, peak) = depotai_bounded(
        cwd.path(),
        &[
            "get",
            &r,
            "/weights.bin",
            "--insecure",
            "--json",
            "-o",
            "out/w",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("member bomb: peak RSS {peak:?} KiB");
    assert!(peak.unwrap_or(0) < 128 << 10, "{peak:?} KiB");
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read(cwd.path().join("out/w")).unwrap(), want);
    assert_eq!(files_under(cwd.path()).len(), 1);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    // It stopped reading the member once the chunk was out (what was already in
    // flight aside): less than the member, let alone the 1 GiB it inflates to.
    let fetched = report["fetched_bytes"].as_u64().unwrap();
    assert!(fetched < bomb.len() as u64, "{fetched} of {}", bomb.len());
}

#[test]
fn a_chunk_that_inflates_to_less_than_declared_is_refused_and_leaves_no_partial() {
    let h = Hostile::start();
    let layer = estargz_layer(&[config()], |toc, _| {
        toc.entries[0].size = 100;
    });
    let (o, cwd) = get(&h.image("acme/short", &layer), "/config.json");
    assert_refused(
        &o,
        cwd.path(),
        "\"config.json\": chunk at 0: the compressed data inflates to 18 bytes, not the 100 the TOC says",
    );
}

#[test]
fn a_toc_that_differs_from_its_annotation_is_refused() {
    let h = Hostile::start();
    let mut layer = estargz_layer(&[config()], |_, _| {});
    layer.annotations = json!({ depotai::layer::estargz::TOC_DIGEST_ANNOTATION: sha256(b"other") });
    let (o, cwd) = ls(&h.image("acme/mismatch", &layer));
    assert_refused(
        &o,
        cwd.path(),
        &format!(
            "digest mismatch in TOC of layer {}: expected {}",
            layer.digest,
            sha256(b"other")
        ),
    );
}

#[test]
fn names_that_escape_or_cannot_be_files_are_refused() {
    let long = "a/".repeat(2100) + "b";
    let long_component = "x".repeat(300);
    for (name, why) in [
        ("../../evil", "(empty, '.' or '..' component)"),
        ("a/../../evil", "(empty, '.' or '..' component)"),
        ("/etc/passwd", "(absolute name)"),
        ("a\\b", "(backslash in the name)"),
        ("a\0b", "(NUL in the name)"),
        ("a\nb", "(control character in the name)"),
        (long.as_str(), "(name of 4201 bytes (at most 4096))"),
        (
            long_component.as_str(),
            "(component of 300 bytes (at most 255))",
        ),
    ] {
        let h = Hostile::start();
        let layer = estargz_layer(&[config()], |toc, _| toc.entries[0].name = name.into());
        let (o, cwd) = get(&h.image("acme/names", &layer), "/");
        assert_refused(&o, cwd.path(), "unsafe name in the TOC: ");
        assert!(String::from_utf8_lossy(&o.0.stderr).contains(why), "{why}");
    }
}

#[test]
fn duplicate_entries_are_refused() {
    let h = Hostile::start();
    let layer = estargz_layer(&[config(), config()], |_, _| {});
    let (o, cwd) = get(&h.image("acme/dup", &layer), "/");
    assert_refused(&o, cwd.path(), "\"config.json\" is in the TOC twice");
}

#[test]
fn a_file_where_a_directory_is_needed_is_refused() {
    let h = Hostile::start();
    let layer = estargz_layer(&[("a", b"x".to_vec()), ("a/b", b"y".to_vec())], |_, _| {});
    let (o, cwd) = get(&h.image("acme/filedir", &layer), "/");
    assert_refused(
        &o,
        cwd.path(),
        "\"a\" is in the TOC both as a file and as a directory",
    );
}

#[test]
fn a_footer_pointing_outside_the_blob_is_refused() {
    let h = Hostile::start();
    let mut layer = estargz_layer(&[config()], |_, _| {});
    let n = layer.blob.len();
    let far = n as u64 + 1000;
    layer.blob[n - 51..].copy_from_slice(&depotai::layer::estargz::footer(far));
    layer.digest = sha256(&layer.blob);
    let (o, cwd) = ls(&h.image("acme/footer", &layer));
    assert_refused(
        &o,
        cwd.path(),
        &format!("the footer puts the TOC at {far}, outside the {n}-byte blob"),
    );
}

#[test]
fn chunk_offsets_beyond_the_data_are_refused() {
    let h = Hostile::start();
    let layer = estargz_layer(&[config()], |toc, toc_offset| {
        toc.entries[0].offset = toc_offset + 10;
    });
    let (o, cwd) = get(&h.image("acme/offset", &layer), "/config.json");
    assert_refused(&o, cwd.path(), "outside the layer's data");
}

#[test]
fn negative_and_overflowing_sizes_and_positions_are_refused() {
    let h = Hostile::start();
    let mut layer = estargz_layer(&[config()], |_, _| {});
    layer.size = json!(-1);
    let (o, cwd) = ls(&h.image("acme/negative", &layer));
    assert_refused(&o, cwd.path(), "layer without a size");

    let z = zstd_layer(
        &[],
        b"{\"version\":1,\"entries\":[]}",
        Some(format!("{}:100:100:1", u64::MAX - 10)),
    );
    let (o, cwd) = ls(&h.image("acme/overflow", &z));
    assert_refused(
        &o,
        cwd.path(),
        &format!("the TOC at {} (100 bytes) is outside the", u64::MAX - 10),
    );

    let z = zstd_layer(&[], b"{}", Some(format!("0:10:{}:1", 1u64 << 40)));
    let (o, cwd) = ls(&h.image("acme/hugeulen", &z));
    assert_refused(
        &o,
        cwd.path(),
        "(1.0 TiB uncompressed), more than the 50.0 MiB",
    );
}

#[test]
fn a_zstd_toc_that_inflates_past_its_position_is_stopped() {
    // 64 MiB of spaces compress to a few KiB; the position says 1000 bytes.
    let json = vec![b' '; 64 << 20];
    let compressed_len = zstd::bulk::compress(&json, 3).unwrap().len();
    let z = zstd_layer(&[], &json, Some(format!("0:{compressed_len}:1000:1")));
    let h = Hostile::start();
    let (o, cwd) = ls(&h.image("acme/zstdbomb", &z));
    assert_refused(
        &o,
        cwd.path(),
        "the TOC inflates to more than 1000 bytes, not the 1000 its position says",
    );
}

#[test]
fn a_toc_with_too_many_entries_is_refused_before_it_is_parsed() {
    let entry = r#"{"name":"d","type":"dir"},"#;
    let mut json = String::from(r#"{"version":1,"entries":["#);
    json.push_str(&entry.repeat(300_000));
    json.push_str(r#"{"name":"e","type":"dir"}]}"#);
    let h = Hostile::start();
    let layer = estargz_raw(
        &[],
        &gzip(&toc_tar(json.as_bytes())),
        &sha256(json.as_bytes()),
    );
    let (o, cwd) = ls(&h.image("acme/entries", &layer));
    assert_refused(
        &o,
        cwd.path(),
        "TOC: a JSON array has more than 262144 items",
    );
}

#[test]
fn a_manifest_larger_than_4_mib_is_refused() {
    let h = Hostile::start();
    let mut doc = b"{\"schemaVersion\":2,\"x\":\"".to_vec();
    doc.resize(doc.len() + (5 << 20), b'a');
    doc.extend_from_slice(b"\"}");
    let (o, cwd) = ls(&h.raw_manifest("acme/bigdoc", doc));
    assert_refused(
        &o,
        cwd.path(),
        "the document is larger than 4.0 MiB (4194304 bytes), the most depotai reads",
    );
}

#[test]
fn a_deeply_nested_manifest_is_refused() {
    let h = Hostile::start();
    let doc = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (o, cwd) = ls(&h.raw_manifest("acme/deep", doc.into_bytes()));
    assert_refused(&o, cwd.path(), "JSON nested more than 32 deep");
}

#[test]
fn an_enormous_www_authenticate_header_is_refused() {
    let h = Hostile::start();
    let challenge = format!(
        "Bearer realm=\"https://auth.example/{}\"",
        "x".repeat(100_000)
    );
    h.route(
        "/v2/acme/auth/manifests/latest",
        Reply::status(401, vec![("WWW-Authenticate".into(), challenge.clone())]),
    );
    let (o, cwd) = ls(&format!("{}/acme/auth:latest", h.addr));
    assert_refused(
        &o,
        cwd.path(),
        &format!(
            "the registry sent a www-authenticate header of {} bytes (at most 8192)",
            challenge.len()
        ),
    );
}

#[test]
fn enormous_response_headers_fail_in_one_line() {
    let h = Hostile::start();
    let mut r = Reply::json(b"{}".to_vec(), "application/json");
    r.headers.push(("X-Junk".into(), "j".repeat(2 << 20)));
    h.route("/v2/acme/junk/manifests/latest", r);
    let (o, cwd) = ls(&format!("{}/acme/junk:latest", h.addr));
    assert_refused(&o, cwd.path(), "/v2/acme/junk/manifests/latest: ");
}

#[test]
fn a_registry_that_sends_more_than_the_range_is_refused() {
    let h = Hostile::start();
    let layer = estargz_layer(&[config()], |_, _| {});
    let r = h.image("acme/overrun", &layer);
    let mut blob = Reply::blob(layer.blob.clone());
    blob.overrun = 1000;
    h.route(&format!("/v2/acme/overrun/blobs/{}", layer.digest), blob);
    let (o, cwd) = ls(&r);
    // The footer is the blob's end (nothing to add); the TOC member's range is not.
    assert_refused(&o, cwd.path(), "/blobs/");
    let err = String::from_utf8_lossy(&o.0.stderr);
    assert!(err.contains("the range is larger than"), "{err}");
    assert!(err.contains("bytes), the most depotai reads"), "{err}");
}

// ---- the Hub ----

const HUB_SHA: &str = "1111111111111111111111111111111111111111";

fn hub_with_files(n: usize) -> HubServer {
    let files = (0..n)
        .map(|i| RepoFile::regular(&format!("f{i:03}.txt"), format!("file {i}\n")))
        .collect();
    let server = HubServer::start(vec![Repo::new("acme/model", HUB_SHA, files)]);
    server.set_tree_page_size(2);
    server
}

/// `depotai build acme/model` against `server`, bounded like the registry runs.
fn hub_build(server: &HubServer) -> ((Output, Option<u64>), tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let cmd = depotai_against(server, &cwd.path().join("hf-home"));
    let mut c = std::process::Command::new("prlimit");
    c.arg(format!("--as={}", 512u64 << 20))
        .arg("--")
        .arg(cmd.get_program())
        .args(["build", "acme/model", "--sha", HUB_SHA, "--output", "out/m"])
        .current_dir(cwd.path())
        .env("HOME", cwd.path());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output().unwrap();
    ((o, None), cwd)
}

#[test]
fn endless_tree_pagination_is_stopped() {
    let server = hub_with_files(3);
    server.inject(Fault::EndlessTree);
    let (o, cwd) = hub_build(&server);
    assert_refused(
        &o,
        cwd.path(),
        "the tree listing goes on for more than 1000 pages",
    );
    let pages = server
        .requests()
        .iter()
        .filter(|r| format!("{r:?}").contains("/tree/"))
        .count();
    assert_eq!(pages, 1000);
}

#[test]
fn tree_pagination_that_repeats_a_page_is_stopped() {
    let server = hub_with_files(3);
    server.inject(Fault::RepeatingTree);
    let (o, cwd) = hub_build(&server);
    assert_refused(
        &o,
        cwd.path(),
        "the tree listing's next page is one it sent before",
    );
}

#[test]
fn an_enormous_tree_page_is_refused() {
    let server = hub_with_files(3);
    server.inject(Fault::PaddedTree { bytes: 20 << 20 });
    let (o, cwd) = hub_build(&server);
    assert_refused(
        &o,
        cwd.path(),
        "the answer is larger than 16.0 MiB (16777216 bytes), the most depotai reads",
    );
}

#[test]
fn a_file_listed_with_an_absurd_size_is_refused_before_download() {
    let server = hub_with_files(1);
    server.inject(Fault::ListedSize { size: 1 << 50 });
    let (o, cwd) = hub_build(&server);
    assert_refused(
        &o,
        cwd.path(),
        "\"f000.txt\" is listed with 1125899906842624 bytes, more than the 1.0 TiB depotai accepts for a file",
    );
    assert!(!server
        .requests()
        .iter()
        .any(|r| format!("{r:?}").contains("/resolve/")));
}

// ---- serve under hostile clients ----

mod serve_attack {
    use super::support::{build, pseudo_random, write, Layout};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    pub(super) use super::support::serve;

    /// One request on a new connection; the status and the body.
    pub(super) fn request(addr: &str, method: &str, path: &str, headers: &str) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n"
        )
        .unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let head_end = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let status = std::str::from_utf8(&all[9..12]).unwrap().parse().unwrap();
        (status, all[head_end + 4..].to_vec())
    }

    /// Seconds to download the blob whole, checking every byte.
    fn download(addr: &str, path: &str, want: &[u8]) -> f64 {
        let t = Instant::now();
        let (status, body) = request(addr, "GET", path, "");
        assert_eq!(status, 200);
        assert!(body == want, "the blob's bytes");
        t.elapsed().as_secs_f64()
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    pub(super) fn proc_status(pid: u32) -> (u64, usize) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        (rss_kib, fds)
    }

    /// The attack opens some 1,200 sockets: more than a default soft limit of 1,024.
    pub(super) fn raise_nofile() {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: only reads and writes the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
                rl.rlim_cur = rl.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            }
        }
    }

    #[test]
    fn serve_stays_bounded_and_serves_a_good_client_during_an_attack() {
        raise_nofile();
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write(&src, "model.bin", &pseudo_random(32 << 20, 13));
        write(&src, "config.json", b"{}");
        let out = tmp.path().join("out/acme/m");
        super::support::assert_ok(&build(&src, "acme/m", &out, &["--quiet"]));
        let layout = Layout::read(&out);
        let blob_path = format!("/v2/acme/m/blobs/{}", layout.layer_digest);
        let s = serve(&tmp.path().join("out"));
        let pid = s.child.id();

        let base: Vec<f64> = (0..5)
            .map(|_| download(&s.addr, &blob_path, &layout.blob))
            .collect();
        let (rss_before, fds_before) = proc_status(pid);

        // 1,000 idle connections that never send a byte.
        let idle: Vec<TcpStream> = (0..1000)
            .map(|_| TcpStream::connect(&s.addr).unwrap())
            .collect();
        // 50 slow readers: ask for the 32 MiB blob and never read.
        let slow: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut c = TcpStream::connect(&s.addr).unwrap();
                write!(c, "GET {blob_path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                c
            })
            .collect();
        // Thousands of tiny overlapping ranges: refused, not multiplied.
        let ranges = (0..3000)
            .map(|i| format!("{i}-{}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let (status, body) = request(
            &s.addr,
            "GET",
            &blob_path,
            &format!("Range: bytes={ranges}\r\n"),
        );
        assert_eq!(status, 416);
        assert!(String::from_utf8_lossy(&body).contains("more than 16 ranges overlap others"));
        // A 100 KB request head: 431, the connection closed.
        let (status, _) = request(
            &s.addr,
            "GET",
            "/v2/",
            &format!("X-Junk: {}\r\n", "j".repeat(100_000)),
        );
        assert_eq!(status, 431);
        let during: Vec<f64> = (0..5)
            .map(|_| download(&s.addr, &blob_path, &layout.blob))
            .collect();
        let (rss_during, fds_during) = proc_status(pid);

        // Then many concurrent HEADs (100 threads, as fast as they can) on top.
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(AtomicUsize::new(0));
        let storm: Vec<_> = (0..100)
            .map(|_| {
                let (addr, path, stop, heads) = (
                    s.addr.clone(),
                    blob_path.clone(),
                    stop.clone(),
                    heads.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let (status, _) = request(&addr, "HEAD", &path, "");
                        assert_eq!(status, 200);
                        heads.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let t = Instant::now();
        let storm_dl: Vec<f64> = (0..3)
            .map(|_| download(&s.addr, &blob_path, &layout.blob))
            .collect();
        let storm_secs = t.elapsed().as_secs_f64();
        let (rss_storm, fds_storm) = proc_status(pid);
        stop.store(true, Ordering::Relaxed);
        for t in storm {
            t.join().unwrap();
        }
        let (b, d, h) = (median(base), median(during), median(storm_dl));
        let mib = layout.blob.len() as f64 / (1 << 20) as f64;
        eprintln!(
            "serve under attack: a good client downloads the {mib:.0} MiB blob at {:.0} MiB/s \
             before, {:.0} MiB/s with 1000 idle connections and 50 stalled readers open, \
             {:.0} MiB/s with 100 threads sending HEADs as fast as they can too ({:.0} HEAD/s); \
             RSS {rss_before} -> {rss_during} -> {rss_storm} KiB, \
             fds {fds_before} -> {fds_during} -> {fds_storm}",
            mib / b,
            mib / d,
            mib / h,
            heads.load(Ordering::Relaxed) as f64 / storm_secs,
        );
        // Idle and stalled connections cost the good client nothing to speak of (the
        // machine is shared: the bound is generous).
        assert!(d < 2.0 * b + 0.3, "{d} s with idle/stalled vs {b} s before");
        // A HEAD flood competes for the same two cores; the good client still gets
        // every byte, slower.
        assert!(
            h < 30.0 * b + 3.0,
            "{h} s during the HEAD flood vs {b} s before"
        );
        // Memory and descriptors stay bounded: 1,050 attack connections cost a few
        // KiB each plus one 256 KiB piece per stalled reader, not a blob each.
        for rss in [rss_during, rss_storm] {
            assert!(rss < rss_before + 128 * 1024, "{rss} KiB");
        }
        for fds in [fds_during, fds_storm] {
            assert!(
                fds < depotai::limits::MAX_CONNECTIONS + depotai::limits::RESERVED_FDS as usize,
                "{fds}"
            );
        }

        // Idle connections are closed once the head timeout (or the idle timeout)
        // passes.
        let t = Instant::now();
        let mut first = &idle[0];
        first
            .set_read_timeout(Some(Duration::from_secs(40)))
            .unwrap();
        let mut byte = [0u8; 1];
        let n = first.read(&mut byte).unwrap_or(0);
        let waited = t.elapsed();
        eprintln!("an idle connection was closed after {waited:?} more");
        assert_eq!(n, 0, "closed without a response byte");
        assert!(
            waited < Duration::from_secs(depotai::limits::IDLE_TIMEOUT_SECS + 5),
            "{waited:?}"
        );
        drop(slow);
        let (_, fds_after) = proc_status(pid);
        eprintln!("fds after the idle ones closed: {fds_after}");
    }
}

#[test]
fn digests_that_are_not_digests_never_reach_a_url() {
    let h = Hostile::start();
    let mut layer = estargz_layer(&[config()], |_, _| {});
    layer.digest = "../../../../v2/acme/other/blobs/sha256:x".into();
    let (o, cwd) = ls(&h.image("acme/notdigest", &layer));
    assert_refused(
        &o,
        cwd.path(),
        "layer digest \"../../../../v2/acme/other/blobs/sha256:x\" is not sha256:<64 hex>",
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": "../../secret", "size": 2,
                       "platform": {"os": "linux", "architecture": "amd64"}}]
    });
    let (o, cwd) = ls(&h.manifest("acme/badindex", &index));
    assert_refused(&o, cwd.path(), "not a digest or tag: \"../../secret\"");
    assert!(!h
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.contains("secret") || r.contains("other")));
}
