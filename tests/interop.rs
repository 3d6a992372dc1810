//! Interop: our images checked by code we did not write — the reference Go eStargz
//! library (this repository's `estargz-check`, built from `interop/checkers`), skopeo,
//! umoci, oci-image-tool, the CNCF distribution registry and buildah (Debian packages,
//! from `scripts/install-interop.sh`).
//!
//! Without the tools these tests say so and pass; with `CI=true` a missing tool fails.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use support::interop::{
    buildah_copies_tiny_model_files, checker, have_tools, oci_check, run_checked, Registry,
};
use support::*;

/// True when every tool is there, the reference checkers included. Missing tools fail
/// the test under CI=true.
fn have(tools: &[&str]) -> bool {
    have_tools(tools, &["estargz-check"])
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
