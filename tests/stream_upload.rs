//! Streaming blob uploads (`remote::upload`) against a real registry (Debian's
//! `docker-registry`) on 127.0.0.1: chunked PATCHes while the blob is being written, a
//! failed PATCH continued from the registry's offset, a killed upload resumed by a rerun
//! that re-sends only what the registry lacks, and images published tag last.
//!
//! Without `docker-registry` these tests say SKIP and pass; with `CI=true` they fail.

mod support;

use depotai::digest::Digest;
use depotai::remote::upload::{ImageDocuments, UploadError, Uploader};
use depotai::remote::{Client, ClientOptions, Reference};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use support::interop::{have, Registry};
use support::registry::Proxy;
use support::*;

const MIB: usize = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn uploader(rt: &tokio::runtime::Runtime, addr: &str, chunk: usize, state: &Path) -> Uploader {
    let r = Reference::parse(&format!("{addr}/acme/streamed:latest")).unwrap();
    let opts = ClientOptions {
        insecure: true,
        retries: 2,
        backoff: std::time::Duration::from_millis(20),
        ..Default::default()
    };
    let client = Client::new(&r, opts, true).unwrap();
    Uploader::new(
        Arc::new(client),
        rt.handle().clone(),
        chunk as u64,
        Some(state.to_path_buf()),
    )
}

/// Writes `data` in odd-sized pieces, as the layer writer does.
fn write_all(sink: &mut impl Write, data: &[u8]) {
    for piece in data.chunks(333_333) {
        sink.write_all(piece).unwrap();
    }
}

/// Waits until the remembered upload in `state` has reached `offset`.
fn wait_for_pending(state: &Path, offset: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let at = std::fs::read_dir(state)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pending"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| v["offset"].as_u64())
            .max();
        if at == Some(offset) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upload stuck at {at:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn patches(proxy: &Proxy) -> usize {
    proxy
        .take_requests()
        .iter()
        .filter(|l| l.starts_with("PATCH "))
        .count()
}

#[test]
fn a_streamed_blob_is_sent_in_bounded_patches_and_stored_with_its_digest() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let up = uploader(&rt, &proxy.addr, 4 * MIB, tmp.path());
    let data = pseudo_random(10 * MIB + 7, 3);
    let mut sink = up.sink(Some("layer-a"));
    write_all(&mut sink, &data);
    let done = sink.finish().unwrap();
    assert_eq!(done.digest.to_string(), sha256(&data));
    assert_eq!(done.size, data.len() as u64);
    assert_eq!(done.sent, data.len() as u64);
    assert_eq!(done.resumed_from, 0);
    // 4 + 4 + 2 MiB (and 7 bytes): three PATCHes, then the PUT with the digest.
    let reqs = proxy.take_requests();
    assert_eq!(reqs.iter().filter(|l| l.starts_with("PATCH ")).count(), 3);
    let put = reqs.iter().find(|l| l.starts_with("PUT ")).unwrap();
    assert!(
        put.contains(&format!("digest=sha256%3A{}", done.digest.hex())),
        "{put}"
    );
    assert_eq!(
        std::fs::read(reg.blob_data(&done.digest.to_string())).unwrap(),
        data
    );
    // The next run knows the blob is there and need not make it again.
    let known = rt.block_on(up.known("layer-a")).unwrap();
    assert_eq!(known, Some((done.digest, data.len() as u64)));
    assert_eq!(rt.block_on(up.known("layer-b")).unwrap(), None);
}

#[test]
fn a_patch_cut_midway_continues_from_the_registrys_offset() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    proxy.cut_patch.store(2, Ordering::SeqCst);
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let up = uploader(&rt, &proxy.addr, 4 * MIB, tmp.path());
    let data = pseudo_random(12 * MIB, 4);
    let mut sink = up.sink(None);
    write_all(&mut sink, &data);
    let done = sink.finish().unwrap();
    assert!(proxy.cut_done.load(Ordering::SeqCst));
    assert_eq!(done.digest.to_string(), sha256(&data));
    assert_eq!(
        std::fs::read(reg.blob_data(&done.digest.to_string())).unwrap(),
        data
    );
    // The upload's status was asked for (a GET of the session) before going on.
    let reqs = proxy.take_requests();
    assert!(
        reqs.iter()
            .any(|l| l.starts_with("GET /v2/acme/streamed/blobs/uploads/")),
        "{reqs:?}"
    );
}

#[test]
fn a_killed_upload_is_resumed_by_a_rerun_that_sends_only_what_the_registry_lacks() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let data = pseudo_random(16 * MIB, 5);
    {
        let up = uploader(&rt, &proxy.addr, 2 * MIB, tmp.path());
        let mut sink = up.sink(Some("layer-k"));
        write_all(&mut sink, &data[..9 * MIB]);
        // "Kill" the producer between two PATCHes, once the four full chunks are in:
        // the CNCF registry forgets a session whose PATCH was cut midway (its size no
        // longer matches the state token), and that case starts over.
        wait_for_pending(tmp.path(), 8 * MIB as u64);
        drop(sink);
    }
    let first = patches(&proxy);
    assert!(first >= 3, "{first} PATCHes before the kill");
    assert_eq!(
        std::fs::read_dir(reg.root().join("data/docker/registry/v2/blobs"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "an unfinished upload committed no blob"
    );

    // The rerun makes the same bytes and skips what the registry kept.
    let up = uploader(&rt, &proxy.addr, 2 * MIB, tmp.path());
    let mut sink = up.sink(Some("layer-k"));
    write_all(&mut sink, &data);
    let done = sink.finish().unwrap();
    assert_eq!(done.digest.to_string(), sha256(&data));
    assert!(done.resumed_from >= 6 * MIB as u64, "{done:?}");
    assert_eq!(done.sent, data.len() as u64 - done.resumed_from);
    assert!(
        patches(&proxy) < 8,
        "fewer PATCHes than the whole blob needs"
    );
    assert_eq!(
        std::fs::read(reg.blob_data(&done.digest.to_string())).unwrap(),
        data
    );
}

#[test]
fn upload_state_holding_session_urls_is_private_to_its_owner_from_the_start() {
    use std::os::unix::fs::PermissionsExt;
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    // Directories that do not exist yet, as `~/.cache/depotai/uploads` on a first push.
    let state = tmp.path().join("cache/depotai/uploads");
    let rt = runtime();
    let up = uploader(&rt, &reg.addr, 2 * MIB, &state);
    let mut sink = up.sink(Some("layer-private"));
    write_all(&mut sink, &pseudo_random(5 * MIB, 7));
    wait_for_pending(&state, 4 * MIB as u64);
    drop(sink);
    let mut sink = up.sink(Some("layer-done"));
    write_all(&mut sink, &pseudo_random(MIB, 8));
    sink.finish().unwrap();

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for dir in ["cache", "cache/depotai", "cache/depotai/uploads"] {
        assert_eq!(mode(&tmp.path().join(dir)), 0o700, "{dir}");
    }
    let mut kinds = Vec::new();
    for e in std::fs::read_dir(&state).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        let ext = p.extension().unwrap().to_string_lossy().into_owned();
        if ext == "pending" {
            // What makes it a secret: the registry's session URL.
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.contains("/v2/acme/streamed/blobs/uploads/"), "{text}");
        }
        kinds.push(ext);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["done", "pending"],
        "no temporary file is left behind"
    );
}

#[test]
fn a_rerun_with_other_bytes_under_the_same_key_is_refused_then_starts_over() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let up = uploader(&rt, &reg.addr, 2 * MIB, tmp.path());
    let mut sink = up.sink(Some("layer-s"));
    write_all(&mut sink, &pseudo_random(6 * MIB, 10));
    wait_for_pending(tmp.path(), 6 * MIB as u64);
    drop(sink);

    let other = pseudo_random(6 * MIB, 20);
    let mut sink = up.sink(Some("layer-s"));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for piece in other.chunks(333_333) {
            if sink.write_all(piece).is_err() {
                break;
            }
        }
    }));
    match sink.finish() {
        Err(UploadError::Stale { key }) => assert_eq!(key, "layer-s"),
        other => panic!("expected a stale upload, got {other:?}"),
    }
    // The memory of the stale upload is gone: the next try uploads from zero.
    let mut sink = up.sink(Some("layer-s"));
    write_all(&mut sink, &other);
    let done = sink.finish().unwrap();
    assert_eq!(done.resumed_from, 0);
    assert_eq!(done.digest.to_string(), sha256(&other));
}

#[test]
fn an_image_is_published_tag_last_and_a_missing_layer_leaves_no_tag() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let up = uploader(&rt, &reg.addr, 4 * MIB, tmp.path());
    let layer = pseudo_random(MIB, 8);
    let mut sink = up.sink(None);
    write_all(&mut sink, &layer);
    let layer_d = sink.finish().unwrap().digest;

    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = |layer: &Digest| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": Digest::of(config).to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer.to_string(), "size": MIB}],
        }))
        .unwrap()
    };
    let index = |m: &[u8]| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": Digest::of(m).to_string(), "size": m.len(),
                           "platform": {"os": "linux", "architecture": "amd64"}}],
        }))
        .unwrap()
    };
    const M: &str = "application/vnd.oci.image.manifest.v1+json";
    const I: &str = "application/vnd.oci.image.index.v1+json";

    // A layer the registry does not have: the manifest is refused, the tag never set.
    let missing = Digest::of(b"never uploaded");
    let (m, i) = (manifest(&missing), index(&manifest(&missing)));
    let docs = ImageDocuments {
        configs: &[config],
        manifests: &[(&m, M)],
        index: (&i, I),
        referrers: &[],
    };
    assert!(rt.block_on(up.publish(&docs, "broken")).is_err());
    let tags = |tag: &str| {
        rt.block_on(async {
            let c = up.client();
            let url = c.url(&format!("manifests/{tag}"));
            c.send(|| {
                c.request(reqwest::Method::HEAD, url.clone())
                    .header("accept", I)
            })
            .await
            .unwrap()
            .status()
            .as_u16()
        })
    };
    assert_eq!(tags("broken"), 404);

    let (m, i) = (manifest(&layer_d), index(&manifest(&layer_d)));
    let docs = ImageDocuments {
        configs: &[config],
        manifests: &[(&m, M)],
        index: (&i, I),
        referrers: &[],
    };
    rt.block_on(up.publish(&docs, "v1")).unwrap();
    assert_eq!(tags("v1"), 200);
    assert_eq!(tags(&Digest::of(&i).to_string()), 200);
}

/// A sink whose writer digests the bytes itself is closed with that digest: the right
/// one stores the blob, a wrong one is refused by the registry and nothing is stored.
#[test]
fn a_writer_digested_blob_is_closed_with_the_writers_digest_and_the_registry_checks_it() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    let up = uploader(&rt, &reg.addr, 2 * MIB, tmp.path());
    let data = pseudo_random(5 * MIB + 3, 9);
    let right = Digest::of(&data);

    let mut sink = up.sink_digested_by_writer(None);
    write_all(&mut sink, &data);
    let done = sink.finish_as(right).unwrap();
    assert_eq!(done.digest, right);
    assert_eq!(done.size, data.len() as u64);
    assert_eq!(
        std::fs::read(reg.blob_data(&right.to_string())).unwrap(),
        data
    );

    let other = pseudo_random(3 * MIB, 10);
    let wrong = Digest::of(b"not these bytes");
    let mut sink = up.sink_digested_by_writer(None);
    write_all(&mut sink, &other);
    assert!(sink.finish_as(wrong).is_err());
    assert!(!reg.blob_data(&wrong.to_string()).exists());
    assert!(!reg.blob_data(&Digest::of(&other).to_string()).exists());
}
