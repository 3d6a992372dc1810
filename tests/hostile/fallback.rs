//! The referrers fallback index a registry without the referrers API serves: `push`
//! and the streamed build list the provenance under `sha256-<index hex>` through one
//! `add_to_fallback` (`remote::upload`), which reads the index there within the limits
//! on any document from a registry (size, nesting, descriptors) and never writes one
//! past them.

use super::{assert_refused, run};
use crate::support::hostile::{Hostile, Reply};
use serde_json::Value;
use std::path::Path;

/// A registry that has every blob of `layout` and takes every manifest (without the
/// referrers API: no `OCI-Subject`), and serves `fallback` as the index under the
/// fallback tag. Returns it and the reference to push to.
fn registry_with_fallback(layout: &Path, fallback: Vec<u8>) -> (Hostile, String) {
    let reg = Hostile::start();
    let repo = "acme/m";
    reg.route(
        &format!("/v2/{repo}/blobs/uploads/"),
        Reply::status(
            202,
            vec![(
                "Location".into(),
                format!("/v2/{repo}/blobs/uploads/session"),
            )],
        ),
    );
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let hex = e.unwrap().file_name().to_string_lossy().into_owned();
        reg.route(
            &format!("/v2/{repo}/blobs/sha256:{hex}"),
            Reply::status(200, vec![]),
        );
        reg.route(
            &format!("/v2/{repo}/manifests/sha256:{hex}"),
            Reply::status(201, vec![]),
        );
    }
    reg.route(
        &format!("/v2/{repo}/manifests/latest"),
        Reply::status(201, vec![]),
    );
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let index = top["manifests"][0]["digest"].as_str().unwrap();
    reg.route(
        &format!("/v2/{repo}/manifests/sha256-{}", &index[7..]),
        Reply::json(fallback, "application/vnd.oci.image.index.v1+json"),
    );
    let reference = format!("{}/{repo}:latest", reg.addr);
    (reg, reference)
}

fn layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::support::assert_ok(&crate::support::build(
        Path::new("fixtures/tiny-model"),
        "acme/m",
        &dir.path().join("layout"),
        &["--quiet"],
    ));
    dir
}

fn push_refused(fallback: Vec<u8>, want: &str) {
    let dir = layout();
    let layout = dir.path().join("layout");
    let (reg, reference) = registry_with_fallback(&layout, fallback);
    let (o, cwd) = run(&["push", layout.to_str().unwrap(), &reference, "--insecure"]);
    assert_refused(&o, cwd.path(), want);
    // Read, refused, never written back.
    let puts: Vec<String> = reg
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("/manifests/sha256-"))
        .cloned()
        .collect();
    assert!(puts.is_empty(), "{puts:?}");
}

#[test]
fn a_deeply_nested_fallback_index_is_refused() {
    let doc = format!("{{\"manifests\":{}{}}}", "[".repeat(100), "]".repeat(100));
    push_refused(doc.into_bytes(), "JSON nested more than 32 deep");
}

#[test]
fn a_fallback_index_with_too_many_descriptors_is_refused() {
    let entries = vec!["{}"; 5000].join(",");
    let doc = format!("{{\"schemaVersion\":2,\"manifests\":[{entries}]}}");
    push_refused(doc.into_bytes(), "a JSON array has more than 4096 items");
}

#[test]
fn a_fallback_index_larger_than_4_mib_is_refused() {
    let mut doc = b"{\"schemaVersion\":2,\"manifests\":[],\"x\":\"".to_vec();
    doc.resize(doc.len() + (5 << 20), b'a');
    doc.extend_from_slice(b"\"}");
    push_refused(
        doc,
        "the document is larger than 4.0 MiB (4194304 bytes), the most depotai reads",
    );
}

#[test]
fn a_fallback_index_keeps_its_entries_and_lists_the_referrer_once() {
    let dir = layout();
    let layout = dir.path().join("layout");
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let referrer = top["manifests"][1]["digest"].as_str().unwrap().to_string();
    let other = format!("sha256:{}", "0".repeat(64));
    // Another tool's referrer, and ours from an earlier push.
    let served = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other, "size": 1},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": referrer, "size": 2},
        ],
    });
    let (reg, reference) = registry_with_fallback(&layout, serde_json::to_vec(&served).unwrap());
    let (o, _cwd) = run(&[
        "push",
        layout.to_str().unwrap(),
        &reference,
        "--insecure",
        "--json",
    ]);
    crate::support::assert_ok(&o.0);
    let report: Value = serde_json::from_slice(&o.0.stdout).unwrap();
    let tag = format!("sha256-{}", &report["index_digest"].as_str().unwrap()[7..]);
    assert_eq!(report["push"]["referrers"][0]["referrers_api"], false);
    assert_eq!(report["push"]["referrers"][0]["fallback_tag"], tag.as_str());
    let puts = reg.manifests_put.lock().unwrap().clone();
    let (_, body) = puts
        .iter()
        .find(|(l, _)| *l == format!("PUT /v2/acme/m/manifests/{tag}"))
        .expect("the fallback index is put back");
    let put: Value = serde_json::from_slice(body).unwrap();
    let digests: Vec<&str> = put["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [other.as_str(), referrer.as_str()]);
    assert_eq!(
        put, served,
        "an index that lists the referrer is put back as it was"
    );
}
