//! `depotai push`, `ls` and `get` against a real registry (Debian's `docker-registry`)
//! on 127.0.0.1, with skopeo as the independent reader. A counting proxy between
//! depotai and the registry records requests and can cut one upload connection.
//!
//! Without the tools these tests say so and pass; with `CI=true` a missing tool fails.

mod support;

use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use support::interop::{have, Registry};
use support::registry::Proxy;
use support::*;

fn run(args: &[&str]) -> Output {
    depotai().args(args).output().unwrap()
}

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&o.stdout));
    })
}

fn push(out: &Path, reference: &str, extra: &[&str]) -> Output {
    let mut c = depotai();
    c.arg("push")
        .arg(out)
        .arg(reference)
        .args(["--insecure", "--json"])
        .args(extra);
    c.env_remove("DEPOTAI_REGISTRY_USER");
    c.env(
        "DEPOTAI_UPLOAD_STATE",
        out.parent().unwrap().join("upload-state"),
    );
    c.output().unwrap()
}

/// A model with a small config and a large incompressible file.
fn big_tree(root: &Path, big: usize) {
    write(
        root,
        "config.json",
        br#"{"model_type": "bert", "hidden_size": 384}"#,
    );
    write(root, "big.bin", &pseudo_random(big, 11));
}

fn blob_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The blobs of the tagged image alone: the layout's blobs minus its referrers'.
fn image_blob_names(dir: &Path) -> Vec<String> {
    let top: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut skip = Vec::new();
    for r in top["manifests"].as_array().unwrap().iter().skip(1) {
        let hex = r["digest"].as_str().unwrap()[7..].to_string();
        let m: Value =
            serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(&hex)).unwrap())
                .unwrap();
        skip.push(hex);
        skip.push(m["config"]["digest"].as_str().unwrap()[7..].to_string());
        for l in m["layers"].as_array().unwrap() {
            skip.push(l["digest"].as_str().unwrap()[7..].to_string());
        }
    }
    blob_names(dir)
        .into_iter()
        .filter(|b| !skip.contains(b))
        .collect()
}

#[test]
fn push_round_trips_through_skopeo_and_a_second_push_uploads_no_blob() {
    if !have(&["docker-registry", "skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/tiny-model",
        &out,
        &["--quiet"],
    ));
    let layout = Layout::read(&out);
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let reference = format!("{}/acme/tiny-model:v1", proxy.addr);

    let first = json_of(&push(&out, &reference, &[]));
    assert_eq!(first["index_digest"], layout.index_digest.as_str());
    assert!(first["push"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "uploaded"));
    let reqs = proxy.take_requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("PUT /v2/acme/tiny-model/manifests/v1")),
        "{reqs:#?}"
    );

    // skopeo reads it back with the same digests.
    let copy = tmp.path().join("copy");
    let o = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:v1", copy.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let copied: Value =
        serde_json::from_slice(&fs::read(copy.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        copied["manifests"][0]["digest"],
        layout.index_digest.as_str()
    );
    // skopeo copies the image; the provenance referrer (listed after it in
    // index.json) stays behind.
    assert_eq!(blob_names(&copy), image_blob_names(&out));
    for b in image_blob_names(&out) {
        assert_eq!(
            fs::read(copy.join("blobs/sha256").join(&b)).unwrap(),
            fs::read(out.join("blobs/sha256").join(&b)).unwrap()
        );
    }

    // Again: every blob is already there; no upload request at all but the check
    // before the first blob (an upload session opened and cancelled).
    proxy.take_requests();
    let second = json_of(&push(&out, &reference, &[]));
    assert!(second["push"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["action"] == "exists"));
    assert_eq!(second["uploaded_bytes"], 0);
    let reqs = proxy.take_requests();
    assert_eq!(
        reqs[..2],
        [
            "GET /v2/ HTTP/1.1",
            "POST /v2/acme/tiny-model/blobs/uploads/ HTTP/1.1"
        ]
    );
    assert!(reqs[2].starts_with("DELETE /v2/acme/tiny-model/blobs/uploads/"));
    let uploads: Vec<_> = reqs[3..]
        .iter()
        .filter(|r| r.contains("/blobs/uploads") || r.starts_with("PATCH"))
        .collect();
    assert!(uploads.is_empty(), "{uploads:#?}");
    assert!(
        reqs.iter().filter(|r| r.starts_with("HEAD ")).count() >= 3,
        "{reqs:#?}"
    );

    // A new repository mounts the blobs from the first instead of uploading them.
    let other = format!("{}/acme/other:v1", proxy.addr);
    let third = json_of(&push(&out, &other, &["--mount-from", "acme/tiny-model"]));
    assert!(
        third["push"]["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["action"] == "mounted"),
        "{third}"
    );
    let reqs = proxy.take_requests();
    assert!(
        !reqs
            .iter()
            .any(|r| r.starts_with("PATCH") || r.contains("digest=")),
        "{reqs:#?}"
    );
}

#[test]
fn an_interrupted_chunked_upload_resumes_where_the_registry_stopped() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    big_tree(&src, 3 << 20);
    let out = tmp.path().join("out");
    assert_ok(&build(&src, "acme/big", &out, &["--quiet"]));
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    proxy.cut_patch.store(3, Ordering::SeqCst);
    let reference = format!("{}/acme/big:latest", proxy.addr);
    let o = push(&out, &reference, &["--push-chunk-size", "512KiB"]);
    let report = json_of(&o);
    assert!(
        proxy.cut_done.load(Ordering::SeqCst),
        "the proxy never cut a PATCH"
    );
    assert!(report["push"]["resumed"].as_u64().unwrap() >= 1, "{report}");
    let reqs = proxy.take_requests();
    assert!(
        reqs.iter().filter(|r| r.starts_with("PATCH")).count() >= 7,
        "{reqs:#?}"
    );

    // The registry holds the right bytes: a lazy get of the big file matches.
    let got = tmp.path().join("big.bin");
    assert_ok(&run(&[
        "get",
        &reference,
        "/big.bin",
        "--insecure",
        "-q",
        "-o",
        got.to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read(&got).unwrap(),
        fs::read(src.join("big.bin")).unwrap()
    );
}

#[test]
fn a_push_killed_mid_upload_is_continued_by_the_next_run() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    big_tree(&src, 3 << 20);
    let out = tmp.path().join("out");
    assert_ok(&build(&src, "acme/big", &out, &["--quiet"]));
    let layer_size = fs::metadata(
        out.join("blobs/sha256")
            .join(&Layout::read(&out).layer_digest[7..]),
    )
    .unwrap()
    .len();
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    proxy.cut_patch.store(3, Ordering::SeqCst);
    let reference = format!("{}/acme/big:latest", proxy.addr);
    let mut c = depotai();
    c.arg("push")
        .arg(&out)
        .arg(&reference)
        .args(["--insecure", "--push-chunk-size", "512KiB"])
        .env("DEPOTAI_REGISTRY_RETRIES", "0")
        .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"));
    let o = c.output().unwrap();
    assert!(
        !o.status.success(),
        "the cut should stop a push without retries"
    );
    assert!(proxy.cut_done.load(Ordering::SeqCst));
    proxy.take_requests();

    let r = json_of(&push(&out, &reference, &["--push-chunk-size", "512KiB"]));
    assert_eq!(r["push"]["resumed_bytes"], 2 * 512 * 1024, "{r}");
    // Everything uploaded in this run, minus what the earlier run had sent already.
    let uploaded: u64 = r["push"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == "uploaded")
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert_eq!(r["uploaded_bytes"], uploaded - 2 * 512 * 1024, "{r}");
    let reqs = proxy.take_requests();
    let patches = reqs.iter().filter(|l| l.starts_with("PATCH")).count() as u64;
    assert_eq!(
        patches,
        (layer_size - (1 << 20)).div_ceil(512 << 10),
        "{reqs:#?}"
    );
    let got = tmp.path().join("big.bin");
    assert_ok(&run(&[
        "get",
        &reference,
        "/big.bin",
        "--insecure",
        "-q",
        "-o",
        got.to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read(&got).unwrap(),
        fs::read(src.join("big.bin")).unwrap()
    );
    assert_eq!(
        fs::read_dir(tmp.path().join("upload-state"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_layout_is_pushed_two_blobs_at_once_biggest_first_with_no_chunk_held_in_memory() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "config.json", br#"{"model_type": "bert"}"#);
    write(&src, "a.bin", &pseudo_random(40 << 20, 1));
    write(&src, "b.bin", &pseudo_random(36 << 20, 2));
    let out = tmp.path().join("out");
    // Stored, not compressed: each shard's layer is about its size.
    let flags = [
        "--quiet",
        "--own-layer-above",
        "1MiB",
        "--compression-level",
        "0",
    ];
    assert_ok(&build(&src, "acme/two", &out, &flags));
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let reference = format!("{}/acme/two:latest", proxy.addr);
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "depotai-maxrss-kib=%M", env!("CARGO_BIN_EXE_depotai")])
        .arg("push")
        .arg(&out)
        .arg(&reference)
        .args(["--insecure", "--json", "--push-chunk-size", "32MiB"])
        .env_remove("DEPOTAI_REGISTRY_USER")
        .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"));
    let (o, peak) = support::hostile::with_peak(c.output().unwrap());
    let r = json_of(&o);
    assert_eq!(r["index_digest"], Layout::read(&out).index_digest.as_str());
    let reqs = proxy.take_requests();
    // After the check (GET /v2/, an upload session opened and cancelled): both shards'
    // uploads are open before the first of them is closed.
    let opened: Vec<usize> = (3..reqs.len())
        .filter(|&i| reqs[i].starts_with("POST /v2/acme/two/blobs/uploads/ "))
        .collect();
    let first_close = reqs
        .iter()
        .position(|l| l.starts_with("PUT ") && l.contains("digest="))
        .unwrap();
    assert!(opened.len() >= 2 && opened[1] < first_close, "{reqs:#?}");
    // 40 MiB and 36 MiB in 32 MiB PATCHes: 2 + 2.
    assert_eq!(
        reqs.iter().filter(|l| l.starts_with("PATCH ")).count(),
        4,
        "{reqs:#?}"
    );
    // The PATCH bodies are read from the files as they are sent: two uploads of 32 MiB
    // chunks take less memory than one such chunk held whole (as the push before
    // this engine did, twice over).
    let kib = peak.expect("/usr/bin/time reports the peak");
    eprintln!("push: peak RSS {kib} KiB");
    assert!(kib < 40 << 10, "peak RSS {kib} KiB");
}

#[test]
fn a_layout_blob_that_is_not_its_digest_is_refused_at_the_put_and_nothing_is_tagged() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    big_tree(&src, 3 << 20);
    let out = tmp.path().join("out");
    assert_ok(&build(&src, "acme/big", &out, &["--quiet"]));
    let blob = out
        .join("blobs/sha256")
        .join(&Layout::read(&out).layer_digest[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[1000] ^= 1;
    fs::write(&blob, &bytes).unwrap();
    let reg = Registry::start();
    // In one PUT (the default chunk size) and in PATCHes.
    for (repo, extra) in [
        ("one", &[][..]),
        ("chunked", &["--push-chunk-size", "512KiB"][..]),
    ] {
        let reference = format!("{}/acme/{repo}:latest", reg.addr);
        let o = push(&out, &reference, extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("HTTP 400") && err.contains("DIGEST_INVALID"),
            "{err}"
        );
        assert!(o.stdout.is_empty());
        let ls = run(&["ls", &reference, "--insecure"]);
        assert_eq!(ls.status.code(), Some(1), "nothing is tagged");
        assert!(String::from_utf8_lossy(&ls.stderr).contains("not found (HTTP 404)"));
    }
}

#[test]
fn ls_and_get_read_only_the_toc_and_the_chunks_they_need() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    big_tree(&src, 20 << 20);
    write(&src, "tokenizer/vocab.txt", b"[PAD]\n[UNK]\nhello\n");
    write(&src, "tokenizer/special.json", b"{}");
    let out = tmp.path().join("out");
    assert_ok(&build(&src, "acme/lazy", &out, &["--quiet"]));
    let layout = Layout::read(&out);
    let (toc_offset, _, _) = toc_of(&layout.blob);
    let toc_member = layout.blob.len() as u64 - 51 - toc_offset;
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let reference = format!("{}/acme/lazy:latest", proxy.addr);
    json_of(&push(&out, &reference, &[]));

    // ls: every file, from the footer and the TOC only.
    proxy.down_bytes.store(0, Ordering::SeqCst);
    let o = run(&["ls", &reference, "--insecure"]);
    assert_ok(&o);
    let listing = String::from_utf8_lossy(&o.stdout);
    for f in [
        "/config.json",
        "/big.bin",
        "/tokenizer/vocab.txt",
        "/tokenizer/special.json",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(f)),
            "{f} missing:\n{listing}"
        );
    }
    let ls_json = json_of(&run(&["ls", &reference, "--insecure", "--json"]));
    assert!(ls_json["fetched_bytes"].as_u64().unwrap() < toc_member + 16 * 1024);

    // get of a small file: a few kilobytes, not the 20 MiB layer.
    proxy.down_bytes.store(0, Ordering::SeqCst);
    let dest = tmp.path().join("got/config.json");
    let r = json_of(&run(&[
        "get",
        &reference,
        "/config.json",
        "--insecure",
        "--json",
        "-o",
        dest.to_str().unwrap(),
    ]));
    let fetched = r["fetched_bytes"].as_u64().unwrap();
    let on_wire = proxy.down_bytes.load(Ordering::SeqCst);
    let small = fs::metadata(src.join("config.json")).unwrap().len();
    eprintln!(
        "get /config.json: fetched {fetched} bytes (body), {on_wire} on the wire; file {small}, TOC member {toc_member}, layer {}",
        layout.blob.len()
    );
    assert!(fetched < small + toc_member + 64 * 1024, "{r}");
    assert!(on_wire < small + toc_member + 64 * 1024, "{on_wire}");
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(src.join("config.json")).unwrap()
    );
    assert!(!tmp.path().join("got/config.json.partial").exists());

    // Into an existing directory.
    let into = tmp.path().join("into");
    fs::create_dir_all(&into).unwrap();
    assert_ok(&run(&[
        "get",
        &reference,
        "/config.json",
        "--insecure",
        "-q",
        "-o",
        into.to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read(into.join("config.json")).unwrap(),
        fs::read(src.join("config.json")).unwrap()
    );

    // A directory: every file under it.
    let dir = tmp.path().join("tok");
    assert_ok(&run(&[
        "get",
        &reference,
        "tokenizer",
        "--insecure",
        "-q",
        "-o",
        dir.to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read(dir.join("vocab.txt")).unwrap(),
        b"[PAD]\n[UNK]\nhello\n"
    );
    assert_eq!(fs::read(dir.join("special.json")).unwrap(), b"{}");

    // Resume: a .partial holding the first 4 MiB chunk is kept, not fetched again.
    let big = tmp.path().join("big.bin");
    let original = fs::read(src.join("big.bin")).unwrap();
    fs::write(tmp.path().join("big.bin.partial"), &original[..4 << 20]).unwrap();
    let r = json_of(&run(&[
        "get",
        &reference,
        "/big.bin",
        "--insecure",
        "--json",
        "-o",
        big.to_str().unwrap(),
    ]));
    assert_eq!(r["files"][0]["reused_bytes"], 4 << 20);
    assert!(r["fetched_bytes"].as_u64().unwrap() < (17 << 20), "{r}");
    assert_eq!(fs::read(&big).unwrap(), original);

    // Missing paths are a clear error.
    let o = run(&["get", &reference, "/nope.txt", "--insecure"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such path"));
}

#[test]
fn a_corrupted_blob_fails_get_with_a_digest_error_and_leaves_no_file() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    big_tree(&src, 6 << 20);
    let out = tmp.path().join("out");
    assert_ok(&build(&src, "acme/bad", &out, &["--quiet"]));
    let layout = Layout::read(&out);
    let (_, toc, _) = toc_of(&layout.blob);
    let reg = Registry::start();
    let reference = format!("{}/acme/bad:latest", reg.addr);
    json_of(&push(&out, &reference, &[]));

    // Flip a byte inside the (stored, incompressible) data of big.bin's first chunk.
    let first = toc.entries.iter().find(|e| e.name == "big.bin").unwrap();
    let data = reg.blob_data(&layout.layer_digest);
    let mut bytes = fs::read(&data).unwrap();
    bytes[first.offset as usize + 100_000] ^= 0x01;
    fs::write(&data, &bytes).unwrap();

    let dest = tmp.path().join("big.bin");
    let o = run(&[
        "get",
        &reference,
        "/big.bin",
        "--insecure",
        "-o",
        dest.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!dest.exists());
    assert!(!tmp.path().join("big.bin.partial").exists());
    // The untouched small file still comes out right.
    let cfg = tmp.path().join("config.json");
    assert_ok(&run(&[
        "get",
        &reference,
        "/config.json",
        "--insecure",
        "-q",
        "-o",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read(&cfg).unwrap(),
        fs::read(src.join("config.json")).unwrap()
    );
}

#[test]
fn basic_auth_push_works_with_credentials_and_fails_clearly_without() {
    if !have(&["docker-registry", "htpasswd"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/tiny-model",
        &out,
        &["--quiet"],
    ));
    let reg = Registry::start_with_auth("alice", "s3cret");
    let reference = format!("{}/acme/tiny-model:latest", reg.addr);
    let empty_cfg = tmp.path().join("docker-empty");
    fs::create_dir_all(&empty_cfg).unwrap();

    // No credentials.
    let o = depotai()
        .args(["push", out.to_str().unwrap(), &reference, "--insecure"])
        .env("DOCKER_CONFIG", &empty_cfg)
        .env_remove("DEPOTAI_REGISTRY_USER")
        .env_remove("DEPOTAI_REGISTRY_PASSWORD")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("authentication failed (HTTP 401)") && err.contains("no credentials"),
        "{err}"
    );

    // Wrong password.
    let o = depotai()
        .args(["push", out.to_str().unwrap(), &reference, "--insecure"])
        .env("DOCKER_CONFIG", &empty_cfg)
        .env("DEPOTAI_REGISTRY_USER", "alice")
        .env("DEPOTAI_REGISTRY_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("check the username and password"));

    // --username with --password-stdin.
    let mut child = depotai()
        .args([
            "push",
            out.to_str().unwrap(),
            &reference,
            "--insecure",
            "--json",
        ])
        .args(["--username", "alice", "--password-stdin"])
        .env("DOCKER_CONFIG", &empty_cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let r = json_of(&o);
    assert_eq!(r["index_digest"], Layout::read(&out).index_digest.as_str());

    // The Docker config's auths (base64 user:password), for ls.
    let cfg = tmp.path().join("docker");
    fs::create_dir_all(&cfg).unwrap();
    fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let o = depotai()
        .args(["ls", &reference, "--insecure"])
        .env("DOCKER_CONFIG", &cfg)
        .env_remove("DEPOTAI_REGISTRY_USER")
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("/config.json"));

    // A credential helper named in credHelpers (`docker-credential-<name> get`).
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-depotaitest");
    fs::write(
        &helper,
        "#!/bin/sh\nread server\necho \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"alice\\\",\\\"Secret\\\":\\\"s3cret\\\"}\"\n",
    )
    .unwrap();
    fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg2 = tmp.path().join("docker2");
    fs::create_dir_all(&cfg2).unwrap();
    fs::write(
        cfg2.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "depotaitest"}}}}"#, reg.addr),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = depotai()
        .args(["ls", &reference, "--insecure"])
        .env("DOCKER_CONFIG", &cfg2)
        .env("PATH", path)
        .env_remove("DEPOTAI_REGISTRY_USER")
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("/config.json"));
}

#[test]
fn build_push_builds_and_pushes_in_one_go() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let reg = Registry::start();
    let reference = format!("{}/acme/tiny-model:v2", reg.addr);
    let o = build(
        Path::new("fixtures/tiny-model"),
        "acme/tiny-model",
        &out,
        &["--json", "--push", &reference, "--insecure"],
    );
    let s = json_of(&o);
    assert_eq!(
        s["push"]["digest"],
        Layout::read(&out).index_digest.as_str()
    );
    let o = run(&["ls", &reference, "--insecure", "--json"]);
    let l = json_of(&o);
    assert!(l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "config.json"));
}

#[test]
fn tag_goes_to_a_push_reference_without_one_and_a_disagreeing_tag_is_refused() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let reg = Registry::start();
    let bare = format!("{}/acme/tiny-model", reg.addr);
    let o = build(
        Path::new("fixtures/tiny-model"),
        "acme/tiny-model",
        &out,
        &["--json", "--tag", "v1", "--push", &bare, "--insecure"],
    );
    let s = json_of(&o);
    assert_eq!(s["tag"], "v1", "the layout's tag follows --tag");
    assert_eq!(s["push"]["reference"], format!("{bare}:v1"));
    let tags = run(&["ls", &format!("{bare}:v1"), "--insecure", "--json"]);
    assert_eq!(json_of(&tags)["reference"], format!("{bare}:v1"));
    let latest = run(&["ls", &format!("{bare}:latest"), "--insecure"]);
    assert_eq!(
        latest.status.code(),
        Some(1),
        "nothing was pushed as :latest"
    );
    // The reference's own tag, without --tag, names the layout's tag too.
    let out2 = tmp.path().join("out2");
    let o = build(
        Path::new("fixtures/tiny-model"),
        "acme/tiny-model",
        &out2,
        &["--json", "--push", &format!("{bare}:v2"), "--insecure"],
    );
    assert_eq!(json_of(&o)["tag"], "v2");
    // Two tags that disagree: refused before anything is built or sent.
    let out3 = tmp.path().join("out3");
    let o = build(
        Path::new("fixtures/tiny-model"),
        "acme/tiny-model",
        &out3,
        &["--tag", "v1", "--push", &format!("{bare}:v3"), "--insecure"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "depotai: error: --push {bare}:v3 names the tag v3, --tag says v1: give the tag once\n"
        )
    );
    assert!(!out3.exists(), "nothing is written");
}

/// A gate in front of the registry that speaks the bearer-token flow: requests without
/// `Authorization: Bearer good-token` get a 401 challenge pointing at the gate's own
/// `/token`, which hands out the token for Basic `alice:s3cret` only. Only the first
/// request of each connection is checked (the challenge and token answers close the
/// connection), which is enough to drive the client through the flow.
fn bearer_gate(upstream: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Read;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let tokens = Arc::new(AtomicUsize::new(0));
    let (up, me, issued) = (upstream.to_string(), addr.clone(), tokens.clone());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut client) = c else { continue };
            let (up, me, issued) = (up.clone(), me.clone(), issued.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let Ok(n) = client.read(&mut buf) else { return };
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let has = |h: &str| head.lines().any(|l| l.eq_ignore_ascii_case(h));
                let reply = |client: &mut TcpStream, status: &str, extra: &str, body: &str| {
                    let _ = write!(
                        client,
                        "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.shutdown(Shutdown::Both);
                };
                if head.starts_with("GET /token") {
                    if has("authorization: Basic YWxpY2U6czNjcmV0") {
                        issued.fetch_add(1, Ordering::SeqCst);
                        reply(&mut client, "200 OK", "", r#"{"token":"good-token"}"#);
                    } else {
                        reply(&mut client, "401 Unauthorized", "", r#"{"errors":[]}"#);
                    }
                    return;
                }
                if !has("authorization: Bearer good-token") {
                    let challenge = format!(
                        "WWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"gate\",scope=\"repository:acme/m:pull\"\r\n"
                    );
                    reply(
                        &mut client,
                        "401 Unauthorized",
                        &challenge,
                        r#"{"errors":[]}"#,
                    );
                    return;
                }
                let Ok(mut server) = TcpStream::connect(&up) else {
                    return;
                };
                if server.write_all(&buf[..n]).is_err() {
                    return;
                }
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(Shutdown::Both);
                });
                let _ = std::io::copy(&mut client, &mut server);
                let _ = server.shutdown(Shutdown::Write);
            });
        }
    });
    (addr, tokens)
}

#[test]
fn bearer_token_challenges_are_answered_from_the_realm() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/m",
        &out,
        &["--quiet"],
    ));
    let reg = Registry::start();
    let (gate, tokens) = bearer_gate(&reg.addr);
    let reference = format!("{gate}/acme/m:latest");
    let empty_cfg = tmp.path().join("docker-empty");
    fs::create_dir_all(&empty_cfg).unwrap();

    let o = depotai()
        .args(["push", out.to_str().unwrap(), &reference, "--insecure"])
        .env("DOCKER_CONFIG", &empty_cfg)
        .env_remove("DEPOTAI_REGISTRY_USER")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("token endpoint") && err.contains("credentials needed"),
        "{err}"
    );

    let with_creds = |args: &[&str]| {
        depotai()
            .args(args)
            .env("DOCKER_CONFIG", &empty_cfg)
            .env("DEPOTAI_REGISTRY_USER", "alice")
            .env("DEPOTAI_REGISTRY_PASSWORD", "s3cret")
            .output()
            .unwrap()
    };
    let r = json_of(&with_creds(&[
        "push",
        out.to_str().unwrap(),
        &reference,
        "--insecure",
        "--json",
    ]));
    assert_eq!(r["index_digest"], Layout::read(&out).index_digest.as_str());
    assert!(tokens.load(Ordering::SeqCst) >= 1);
    let o = with_creds(&["ls", &reference, "--insecure"]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("/config.json"));
}

#[test]
fn https_to_a_plain_http_registry_fails_at_once_with_a_hint() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let t = std::time::Instant::now();
    let o = run(&["ls", &format!("{}/acme/m:latest", reg.addr)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--insecure"));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "no retries for TLS errors"
    );
}

#[test]
fn ls_and_get_read_zstd_chunked_images_by_their_toc_and_frames() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    big_tree(&src, 6 << 20);
    write(&src, "tokenizer/vocab.txt", b"[PAD]\n[UNK]\nhello\n");
    let out = tmp.path().join("out");
    let flags = [
        "--quiet",
        "--format",
        "zstd-chunked",
        "--chunk-size",
        "1MiB",
    ];
    assert_ok(&build(&src, "acme/zc", &out, &flags));
    let layout = Layout::read(&out);
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let reference = format!("{}/acme/zc:latest", proxy.addr);
    json_of(&push(&out, &reference, &[]));

    let ls = json_of(&run(&["ls", &reference, "--insecure", "--json"]));
    assert_eq!(ls["layers"][0]["format"], "zstd-chunked");
    let names: Vec<&str> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "reg")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["big.bin", "config.json", "tokenizer/vocab.txt"]);
    assert!(ls["fetched_bytes"].as_u64().unwrap() < 16 * 1024);

    // One small file: its frame only, not the 6 MiB layer.
    proxy.down_bytes.store(0, Ordering::SeqCst);
    let dest = tmp.path().join("got/config.json");
    let r = json_of(&run(&[
        "get",
        &reference,
        "/config.json",
        "--insecure",
        "--json",
        "-o",
        dest.to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(src.join("config.json")).unwrap()
    );
    assert!(r["fetched_bytes"].as_u64().unwrap() < 32 * 1024, "{r}");
    // A file of six 1 MiB chunks, each its own frame, each verified.
    let big = tmp.path().join("got/big.bin");
    json_of(&run(&[
        "get",
        &reference,
        "/big.bin",
        "--insecure",
        "--json",
        "-o",
        big.to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read(&big).unwrap(),
        fs::read(src.join("big.bin")).unwrap()
    );

    // A flipped byte in the registry's copy: a digest (or frame checksum) error, no file.
    let data = reg.blob_data(&layout.layer_digest);
    let mut bytes = fs::read(&data).unwrap();
    bytes[3 << 20] ^= 0x01; // inside big.bin's stored (incompressible) frames
    fs::write(&data, &bytes).unwrap();
    let bad = tmp.path().join("bad.bin");
    let o = run(&[
        "get",
        &reference,
        "/big.bin",
        "--insecure",
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("digest mismatch") || err.contains("zstd"),
        "{err}"
    );
    assert!(!bad.exists());
}

/// `depotai serve --root ROOT` on a free port, and the address it prints.
fn serve(root: &Path) -> (std::process::Child, Option<String>) {
    let mut child = depotai()
        .args(["serve", "--quiet", "--addr", "127.0.0.1:0", "--root"])
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let addr = first
        .trim()
        .rsplit_once("http://")
        .map(|(_, a)| a.trim_end_matches('/').to_string());
    (child, addr)
}

#[test]
fn ls_and_get_work_against_depotai_serve_too() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    big_tree(&src, 3 << 20);
    let root = tmp.path().join("root");
    assert_ok(&build(
        &src,
        "acme/served",
        &root.join("acme/served"),
        &["--quiet"],
    ));
    assert_ok(&build(
        &src,
        "acme/served-zc",
        &root.join("acme/served-zc"),
        &["--quiet", "--format", "zstd-chunked"],
    ));
    let (mut child, addr) = serve(&root);
    let result = std::panic::catch_unwind(|| {
        let addr = addr.expect("serve prints its address");
        for name in ["acme/served", "acme/served-zc"] {
            let reference = format!("{addr}/{name}:latest");
            let ls = json_of(&run(&["ls", &reference, "--insecure", "--json"]));
            assert!(
                ls["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "big.bin"),
                "{name}: {ls}"
            );
            let dest = tmp.path().join(format!("{}.json", name.replace('/', "-")));
            let r = json_of(&run(&[
                "get",
                &reference,
                "/config.json",
                "--insecure",
                "--json",
                "-o",
                dest.to_str().unwrap(),
            ]));
            assert_eq!(
                fs::read(&dest).unwrap(),
                fs::read(src.join("config.json")).unwrap(),
                "{name}"
            );
            assert!(
                r["fetched_bytes"].as_u64().unwrap() < 64 * 1024,
                "{name}: {r}"
            );
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn ls_and_get_of_a_layout_directory_match_the_same_image_served() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new("fixtures/tiny-model");
    let root = tmp.path().join("root");
    let formats = [("acme/tiny", "estargz"), ("acme/tiny-zc", "zstd-chunked")];
    for (name, format) in formats {
        assert_ok(&build(
            src,
            name,
            &root.join(name),
            &["--quiet", "--format", format],
        ));
    }
    let (mut child, addr) = serve(&root);
    let result = std::panic::catch_unwind(|| {
        let addr = addr.expect("serve prints its address");
        for (name, format) in formats {
            let layout = root.join(name);
            let layout = layout.to_str().unwrap();
            let reference = format!("{addr}/{name}:latest");
            let local = json_of(&run(&["ls", layout, "--json"]));
            let served = json_of(&run(&["ls", &reference, "--insecure", "--json"]));
            assert_eq!(local["entries"], served["entries"], "{name}");
            assert_eq!(local["layers"], served["layers"], "{name}");
            assert_eq!(local["layers"][0]["format"], format, "{name}");
            assert!(
                local["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "modèle-überblick.txt"),
                "{name}: {local}"
            );
            assert_eq!(local["reference"], layout);
            // Only the footer and TOC are read, not the layers.
            let read = local["fetched_bytes"].as_u64().unwrap();
            assert!(
                read > 0 && read < local["image_size"].as_u64().unwrap() / 2,
                "{name}: {local}"
            );
            // The plain listing is the same text, byte for byte.
            let plain = run(&["ls", layout]);
            assert_ok(&plain);
            let plain_served = run(&["ls", &reference, "--insecure"]);
            assert_eq!(
                String::from_utf8_lossy(&plain.stdout),
                String::from_utf8_lossy(&plain_served.stdout),
                "{name}"
            );
            for (what, from) in [("layout", layout), ("served", reference.as_str())] {
                let dest = tmp
                    .path()
                    .join(format!("{}-{what}", name.replace('/', "-")));
                let r = json_of(&run(&[
                    "get",
                    from,
                    "/modèle-überblick.txt",
                    "--insecure",
                    "--json",
                    "-o",
                    dest.join("one").to_str().unwrap(),
                ]));
                assert_eq!(r["files"][0]["path"], "modèle-überblick.txt", "{r}");
                assert_eq!(
                    fs::read(dest.join("one")).unwrap(),
                    fs::read(src.join("modèle-überblick.txt")).unwrap(),
                    "{name} {what}"
                );
                let r = json_of(&run(&[
                    "get",
                    from,
                    "/1_Pooling",
                    "--insecure",
                    "--json",
                    "-o",
                    dest.join("dir").to_str().unwrap(),
                ]));
                assert_eq!(r["files"].as_array().unwrap().len(), 1, "{r}");
                assert_eq!(
                    fs::read(dest.join("dir/config.json")).unwrap(),
                    fs::read(src.join("1_Pooling/config.json")).unwrap(),
                    "{name} {what}"
                );
            }
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn ls_and_get_of_a_path_that_is_no_layout_fail_at_once_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    // Beside an `out/` (where a build writes), `out/...` is a path, not a Docker Hub
    // repository.
    fs::create_dir(tmp.path().join("out")).unwrap();
    let cases: [&[&str]; 5] = [
        &["ls", "out/does-not-exist"],
        &["ls", "out/does-not-exist", "--json"],
        &["get", "out/does-not-exist", "/config.json"],
        &["ls", "./nothing"],
        &["ls", "out"],
    ];
    for args in cases {
        let started = std::time::Instant::now();
        let o = depotai()
            .current_dir(tmp.path())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "depotai: error: {}: not an OCI layout directory (no index.json there)",
                args[1]
            )),
            "{args:?}: {stderr}"
        );
        assert!(o.stdout.is_empty(), "{args:?}");
        // No DNS lookups or retries against a registry.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{args:?}"
        );
    }
    let mut left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["out"], "get wrote nothing");
}
