//! Interop: our images checked by code we did not write — the reference Go eStargz
//! library (this repository's `estargz-check`, built from `interop/checkers`), skopeo,
//! umoci, oci-image-tool, the CNCF distribution registry and buildah (Debian packages,
//! from `scripts/install-interop.sh`).
//!
//! Without the tools these tests say so and pass; with `CI=true` a missing tool fails.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use support::interop::{
    buildah_copies_tiny_model_files, checker, have_tools, run_checked, Registry,
};
use support::*;

/// True when every tool is there, the reference checkers included. Missing tools fail
/// the test under CI=true.
fn have(tools: &[&str]) -> bool {
    have_tools(tools, true)
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Every path under `root` (relative, sorted) with what it is: a file's bytes, a symlink's
/// target, or a directory.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("symlink -> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                format!("file {}", sha256(&fs::read(&p).unwrap()))
            };
            out.insert(rel, what);
        }
    }
    out
}

/// The end-to-end check of a layout with tools we did not write; returns one line per
/// step passed and panics, with the tool's output, at the first failure:
/// 1 oci-image-tool validates the layout; 2 skopeo reads the tagged index byte for byte;
/// 3 a push to a registry and 4 a pull back (skopeo, --all --preserve-digests) change no
/// blob; 5 umoci unpacks the linux/amd64 image, 6 whose tree equals `source` (eStargz's own
/// root entries aside); 7 estargz-check verifies every layer against the manifest, the
/// config and the annotations.
fn oci_check(layout: &Path, source: &Path, work: &Path) -> Vec<String> {
    let mut report = Vec::new();
    let tagged = Layout::read(layout);
    let tag = tagged.layout_index["manifests"][0]["annotations"]
        ["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_string();

    let v = Command::new("oci-image-tool")
        .args(["validate", "--type", "imageLayout"])
        .arg(layout)
        .output()
        .unwrap();
    if v.status.success() {
        report.push("1 oci-image-tool validate --type imageLayout".to_string());
    } else {
        // Debian's oci-image-tool (1.0.0-rc) has no imageLayout type; "image" detects a layout.
        assert!(
            String::from_utf8_lossy(&v.stderr).contains("unimplemented"),
            "oci-image-tool: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        run_checked(
            Command::new("oci-image-tool")
                .args(["validate", "--type", "image", "--ref"])
                .arg(format!("name={tag}"))
                .arg(layout),
        );
        report.push("1 oci-image-tool validate --type image".to_string());
    }

    let oci_ref = format!("oci:{}:{tag}", layout.display());
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &oci_ref])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        sha256(&raw.stdout),
        tagged.index_digest,
        "skopeo inspect --raw"
    );
    report.push("2 skopeo inspect --raw == the tagged index".to_string());

    let reg = Registry::start();
    let remote = format!("docker://{}/test/model:latest", reg.addr);
    let copy = ["copy", "-q", "--all", "--preserve-digests"];
    run_checked(
        Command::new("skopeo")
            .args(copy)
            .arg("--dest-tls-verify=false")
            .args([&oci_ref, &remote]),
    );
    let raw = run_checked(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &remote,
    ]));
    assert_eq!(sha256(raw.as_bytes()), tagged.index_digest, "pushed index");
    report.push("3 push: the registry serves the same index digest".to_string());

    let rt = work.join("roundtrip");
    run_checked(
        Command::new("skopeo")
            .args(copy)
            .arg("--src-tls-verify=false")
            .arg(&remote)
            .arg(format!("oci:{}:latest", rt.display())),
    );
    let mut blobs = vec![tagged.index_digest.clone()];
    for m in tagged.index["manifests"].as_array().unwrap() {
        let md = m["digest"].as_str().unwrap();
        let man = json(&blob_path(layout, md));
        blobs.push(md.to_string());
        blobs.push(man["config"]["digest"].as_str().unwrap().to_string());
        for l in man["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
    }
    for d in &blobs {
        assert_eq!(
            fs::read(blob_path(&rt, d)).unwrap(),
            fs::read(blob_path(layout, d)).unwrap(),
            "{d} after the round trip"
        );
    }
    report.push(format!(
        "4 round trip: {} blobs byte-identical",
        blobs.len()
    ));

    // umoci wants a manifest, not an index: tag the amd64 one in the round-tripped layout.
    let amd64 = tagged.index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap_or(&tagged.index["manifests"][0])
        .clone();
    let mut idx = json(&rt.join("index.json"));
    let mut desc = amd64.clone();
    desc.as_object_mut().unwrap().remove("platform");
    desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "amd64"});
    idx["manifests"].as_array_mut().unwrap().push(desc);
    fs::write(rt.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    let rootfs = work.join("rootfs");
    run_checked(
        Command::new("umoci")
            .args(["raw", "unpack", "--image"])
            .arg(format!("{}:amd64", rt.display()))
            .arg(&rootfs),
    );
    report.push("5 umoci raw unpack".to_string());

    let mut got = tree(&rootfs);
    for reserved in [
        ".prefetch.landmark",
        ".no.prefetch.landmark",
        "stargz.index.json",
    ] {
        got.remove(reserved);
    }
    assert_eq!(got, tree(source), "unpacked tree vs source");
    report.push(format!("6 unpacked tree == source ({} paths)", got.len()));

    let man = json(&blob_path(layout, amd64["digest"].as_str().unwrap()));
    let cfg = json(&blob_path(
        layout,
        man["config"]["digest"].as_str().unwrap(),
    ));
    for (i, l) in man["layers"].as_array().unwrap().iter().enumerate() {
        let digest = l["digest"].as_str().unwrap();
        let ann = &l["annotations"];
        let out = run_checked(
            checker("estargz-check")
                .arg("verify")
                .arg(blob_path(layout, digest))
                .args(["--digest", digest])
                .args([
                    "--toc-digest",
                    ann["containerd.io/snapshot/stargz/toc.digest"]
                        .as_str()
                        .unwrap(),
                ])
                .args(["--diff-id", cfg["rootfs"]["diff_ids"][i].as_str().unwrap()])
                .args([
                    "--uncompressed-size",
                    ann["io.containers.estargz.uncompressed-size"]
                        .as_str()
                        .unwrap(),
                ]),
        );
        let line: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(line["ok"], true, "{out}");
        report.push(format!(
            "7.{i} estargz-check: {} files, {} chunks",
            line["files"], line["chunks"]
        ));
    }
    report
}

fn edge_tree(root: &Path) {
    write(root, "config.json", br#"{"model_type": "bert"}"#);
    write(
        root,
        "weights/model.safetensors",
        &pseudo_random(300_000, 5),
    );
    write(root, "weights/exact.bin", &pseudo_random(65536, 6));
    write(root, "empty.txt", b"");
    write(
        root,
        &format!("{}/{}.json", "d".repeat(150), "f".repeat(120)),
        b"{}",
    );
    write(root, "ünïcödé/名前.txt", "名前\n".as_bytes());
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("weights/model.safetensors", root.join("model.safetensors"))
        .unwrap();
}

#[test]
fn oci_check_passes_on_the_example_and_on_an_edge_case_tree() {
    if !have(&["skopeo", "umoci", "docker-registry", "oci-image-tool"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let edge = tmp.path().join("edge");
    edge_tree(&edge);
    let cases: [(&Path, &[&str]); 2] = [
        (Path::new("fixtures/tiny-model"), &["--quiet"]),
        (&edge, &["--quiet", "--chunk-size", "64KiB"]),
    ];
    for (i, (src, flags)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        assert_ok(&build(src, "acme/interop", &out, flags));
        let work = tmp.path().join(format!("check{i}"));
        fs::create_dir_all(&work).unwrap();
        let report = oci_check(&out, src, &work);
        assert_eq!(
            report.len(),
            7,
            "one line per step (one layer): {report:#?}"
        );
        assert!(report[6].starts_with("7.0 estargz-check"), "{report:#?}");
    }
}

#[test]
fn reference_verifier_rejects_a_layer_with_a_flipped_payload_byte() {
    if !have(&[]) {
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
    let l = Layout::read(&out);
    let verify = |blob: &Path| {
        checker("estargz-check")
            .arg("verify")
            .arg(blob)
            .output()
            .unwrap()
    };
    let good = tmp.path().join("good.blob");
    fs::write(&good, &l.blob).unwrap();
    let o = verify(&good);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        line["toc_digest"],
        l.layer_annotation("containerd.io/snapshot/stargz/toc.digest")
            .as_str()
    );
    assert_eq!(line["diff_id"], l.configs[0]["rootfs"]["diff_ids"][0]);

    let mut bad = l.blob.clone();
    let mid = l.blob.len() / 3;
    bad[mid] ^= 0x40;
    let bad_path = tmp.path().join("bad.blob");
    fs::write(&bad_path, &bad).unwrap();
    let o = verify(&bad_path);
    assert!(
        !o.status.success(),
        "a corrupted layer must fail verification"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("FAIL"));
}

#[test]
fn buildah_copies_files_from_the_pushed_image_byte_for_byte() {
    if !have(&["buildah", "skopeo", "umoci", "docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let fixture = Path::new("fixtures/tiny-model");
    assert_ok(&build(fixture, "acme/tiny-model", &out, &["--quiet"]));
    let reg = Registry::start();
    let image = format!("{}/acme/tiny-model:latest", reg.addr);
    run_checked(
        Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:latest", out.display()))
            .arg(format!("docker://{image}")),
    );

    buildah_copies_tiny_model_files(&image, fixture, tmp.path());
}
