//! Hostile registries and Hubs: every crafted answer gets a one-line error naming what
//! was wrong, exit status 1, no panic or abort, memory inside a 512 MiB address-space
//! limit (`prlimit --as`, so any allocation from a lying size fails loudly), and nothing
//! written anywhere but the output path (and there, no file).

mod support;

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
fn assert_refused(o: &Output, cwd: &Path, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
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
fn run(args: &[&str]) -> (Output, tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let o = depotai_bounded(cwd.path(), args);
    (o, cwd)
}

fn ls(reference: &str) -> (Output, tempfile::TempDir) {
    run(&["ls", reference, "--insecure"])
}

fn get(reference: &str, path: &str) -> (Output, tempfile::TempDir) {
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
    let o = depotai_bounded(
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
        assert!(String::from_utf8_lossy(&o.stderr).contains(why), "{why}");
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
    let err = String::from_utf8_lossy(&o.stderr);
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
fn hub_build(server: &HubServer) -> (Output, tempfile::TempDir) {
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
    (o, cwd)
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
