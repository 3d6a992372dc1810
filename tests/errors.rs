//! Bad input: one clear line on stderr, a non-zero exit, and no image.

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use support::*;

fn fails_with(o: &std::process::Output, needle: &str) {
    assert!(!o.status.success(), "expected failure");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("depotai: error: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn no_image_and_no_leftovers(parent: &Path) {
    let left: Vec<_> = fs::read_dir(parent)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.starts_with("out") && !n.contains("partial")),
        "{left:?}"
    );
}

#[test]
fn missing_directory_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let o = build(
        &tmp.path().join("nope"),
        "acme/m",
        &tmp.path().join("out"),
        &[],
    );
    fails_with(&o, "does not exist");
    no_image_and_no_leftovers(tmp.path());
}

#[test]
fn empty_directory_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("only/dirs")).unwrap();
    fails_with(
        &build(&src, "acme/m", &tmp.path().join("out"), &[]),
        "has no files",
    );
    no_image_and_no_leftovers(tmp.path());
}

#[test]
fn invalid_model_names_and_shas_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Path::new("fixtures/tiny-model");
    for bad in ["acme/../x", "a/b/c", "acme/bad name", "acme/a--b"] {
        fails_with(
            &build(fx, bad, &tmp.path().join("out"), &[]),
            "invalid model name",
        );
    }
    let o = depotai()
        .args([
            "build",
            "--from-dir",
            "fixtures/tiny-model",
            "--name",
            "acme/m",
            "--sha",
            "main",
        ])
        .output()
        .unwrap();
    fails_with(&o, "40 hexadecimal digits");
    no_image_and_no_leftovers(tmp.path());
}

#[test]
fn symlink_leaving_the_tree_is_refused_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "config.json", b"{}");
    symlink("/etc/passwd", src.join("passwd")).unwrap();
    fails_with(
        &build(&src, "acme/m", &tmp.path().join("out"), &[]),
        "points outside the model directory",
    );
    fs::remove_file(src.join("passwd")).unwrap();
    symlink("../../secret", src.join("up")).unwrap();
    fails_with(
        &build(&src, "acme/m", &tmp.path().join("out"), &[]),
        "points outside the model directory",
    );
    no_image_and_no_leftovers(tmp.path());
}

#[test]
fn special_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "config.json", b"{}");
    let status = std::process::Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    fails_with(
        &build(&src, "acme/m", &tmp.path().join("out"), &[]),
        "is a FIFO",
    );
}

#[test]
fn reserved_estargz_names_in_the_model_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "stargz.index.json", b"{}");
    fails_with(
        &build(&src, "acme/m", &tmp.path().join("out"), &[]),
        "reserved",
    );
}

#[test]
fn bad_flags_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Path::new("fixtures/tiny-model");
    let out = tmp.path().join("out");
    fails_with(
        &build(fx, "acme/m", &out, &["--platform", "linux"]),
        "invalid platform",
    );
    fails_with(&build(fx, "acme/m", &out, &["--tag=-bad"]), "invalid tag");
    fails_with(
        &build(fx, "acme/m", &out, &["--prefetch", "missing.json"]),
        "not in the image",
    );
    // clap's own usage errors exit 2.
    let o = build(fx, "acme/m", &out, &["--chunk-size", "0"]);
    assert_eq!(o.status.code(), Some(2));
    no_image_and_no_leftovers(tmp.path());
}

#[test]
fn an_output_that_is_not_an_image_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("precious");
    write(&out, "thesis.tex", b"years of work");
    fails_with(
        &build(Path::new("fixtures/tiny-model"), "acme/m", &out, &[]),
        "not an image layout",
    );
    assert_eq!(fs::read(out.join("thesis.tex")).unwrap(), b"years of work");
}

#[test]
fn a_directory_whose_oci_layout_is_not_version_1_0_0_is_no_layout_to_inspect_or_ls() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/m",
        &out,
        &[],
    ));
    fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"9.9.9"}"#).unwrap();
    let why = format!(
        "layout: {}: not an OCI image layout (oci-layout gives version \"9.9.9\", not 1.0.0)",
        out.display()
    );
    for args in [
        vec!["inspect", out.to_str().unwrap()],
        vec!["ls", out.to_str().unwrap()],
    ] {
        let o = depotai().args(&args).output().unwrap();
        fails_with(&o, &why);
    }
    // Without the file at all.
    fs::remove_file(out.join("oci-layout")).unwrap();
    let o = depotai()
        .args(["inspect", out.to_str().unwrap()])
        .output()
        .unwrap();
    fails_with(
        &o,
        &format!(
            "{}: not an OCI image layout (no oci-layout file)",
            out.display()
        ),
    );
}
